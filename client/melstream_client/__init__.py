"""melstream's client library: stream mel frames from a melstream server over gRPC or HTTP (SSE).

The ``melstream-client`` distribution (``pip install ./client``): numpy and tritonclient only, Python 3.9 and
later; the ``melstream`` server package depends on it and re-exports it as ``melstream.client``.

    from melstream_client import Client
    client = Client("localhost:8001")
    for mel in client.stream("Hello there.", voice="fastvoice"):   # [frames, n_mels] float32 chunks
        ...
    whole = client.synthesize("Hello there.", voice="fastvoice")
    client.spec("fastvoice").audio.n_mels                           # the voice's addon, as plain data

Failures are typed (:mod:`melstream_client.errors`), each a :class:`ClientError` keeping the server's message:
:class:`UnknownVoiceError`, :class:`InvalidInputError`, :class:`ServerUnavailableError` (and its
:class:`ServerBusyError`: the voice serves as many streams as it admits), :class:`ClientTimeoutError`.

Listing voices and reading their specs imports no component or plugin; ``remote_pipeline(voice)`` (which
needs the whole ``melstream`` package) rebuilds the voice's stack from the addon JSON the server publishes,
with its networks bound to the server's network models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from melstream_client.errors import (
    ClientError,
    ClientTimeoutError,
    InvalidInputError,
    MelstreamError,
    ServerBusyError,
    ServerUnavailableError,
    UnknownVoiceError,
)

if TYPE_CHECKING:
    from melstream_client._text_in import FLUSH
    from melstream_client.grpc import Client, stream, synthesize
    from melstream_client.http import HttpClient

__version__ = "0.1.0"

# The clients are imported on first use: the package's plain-data modules (spec, errors, wire) are imported by
# the server's voice models too, which must not pay for tritonclient's gRPC stack in every stub.
_LAZY = {"FLUSH": "melstream_client._text_in",
         "Client": "melstream_client.grpc", "stream": "melstream_client.grpc", "synthesize": "melstream_client.grpc",
         "HttpClient": "melstream_client.http"}

__all__ = ["FLUSH", "Client", "ClientError", "ClientTimeoutError", "HttpClient", "InvalidInputError", "MelstreamError",
           "ServerBusyError", "ServerUnavailableError", "UnknownVoiceError", "stream", "synthesize"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once
        return value
    raise AttributeError(f"module 'melstream_client' has no attribute {name!r}")
