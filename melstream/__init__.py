"""melstream: serve text-to-speech acoustic models of any architecture, streaming mel frames."""

from melstream.addon import Addon, load_addon
from melstream.blocks import (
    SequenceBlock,
    SequenceBlockContainer,
    StreamableBlock,
    StreamablePipeline,
    StreamableStack,
)
from melstream.errors import (
    AddonError,
    ClientError,
    MelstreamError,
    RegistryError,
    ServerError,
    StackError,
    SynthesisError,
    TextError,
)
from melstream.registry import register_component

__version__ = "0.1.0"

__all__ = [
    "Addon", "AddonError", "ClientError", "MelstreamError", "RegistryError", "SequenceBlock",
    "SequenceBlockContainer", "ServerError", "StackError", "StreamableBlock", "StreamablePipeline",
    "StreamableStack", "SynthesisError", "TextError", "load_addon", "register_component",
]
