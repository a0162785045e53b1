"""melstream: serve text-to-speech acoustic models of any architecture, streaming mel frames.

Importing the package imports only its errors: ``melstream.Addon``, the blocks and the registry load
on first use, so a client that only talks to a server (``melstream.client``) never imports components,
plugins or ONNX Runtime.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from melstream.errors import (
    AddonError,
    ClientError,
    InputError,
    MelstreamError,
    RegistryError,
    ServerError,
    StackError,
    SynthesisError,
    TextError,
)

if TYPE_CHECKING:
    from melstream.addon import Addon, load_addon
    from melstream.blocks import (
        SequenceBlock,
        SequenceBlockContainer,
        StreamableBlock,
        StreamablePipeline,
        StreamableStack,
    )
    from melstream.registry import register_component

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first access (PEP 562)
_LAZY = {
    "Addon": "melstream.addon", "load_addon": "melstream.addon",
    "SequenceBlock": "melstream.blocks", "SequenceBlockContainer": "melstream.blocks", "StreamableBlock": "melstream.blocks",
    "StreamablePipeline": "melstream.blocks", "StreamableStack": "melstream.blocks",
    "register_component": "melstream.registry",
}

__all__ = [
    "Addon", "AddonError", "ClientError", "InputError", "MelstreamError", "RegistryError", "SequenceBlock",
    "SequenceBlockContainer", "ServerError", "StackError", "StreamableBlock", "StreamablePipeline",
    "StreamableStack", "SynthesisError", "TextError", "load_addon", "register_component",
]


#: modules that are the client distribution's (melstream.wire is melstream_client.wire): `melstream.wire` works
#: as an attribute without importing it first, as it did when the module lived here
_CLIENT_MODULES = ("client", "wire", "spec", "audio")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _CLIENT_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'melstream' has no attribute {name!r}")
