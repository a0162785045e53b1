"""melstream's client library: stream mel frames from a melstream server over gRPC or HTTP (SSE).

    from melstream.client import Client
    client = Client("localhost:8001")
    for mel in client.stream("Hello there.", voice="fastvoice"):   # [frames, n_mels] float32 chunks
        ...
    whole = client.synthesize("Hello there.", voice="fastvoice")
    client.spec("fastvoice").audio.n_mels                           # the voice's addon, as plain data

Failures are typed (:mod:`melstream.errors`), each a :class:`ClientError` keeping the server's message:
:class:`UnknownVoiceError`, :class:`InvalidInputError`, :class:`ServerUnavailableError` (and its
:class:`ServerBusyError`: the voice serves as many streams as it admits), :class:`ClientTimeoutError`.

Listing voices and reading their specs imports no component or plugin; ``remote_pipeline(voice)``
rebuilds the voice's stack from the addon JSON the server publishes, with its networks bound to the
server's network models.
"""

from melstream.client.grpc import Client, stream, synthesize
from melstream.client.http import HttpClient
from melstream.errors import (
    ClientError,
    ClientTimeoutError,
    InvalidInputError,
    ServerBusyError,
    ServerUnavailableError,
    UnknownVoiceError,
)

__all__ = ["Client", "ClientError", "ClientTimeoutError", "HttpClient", "InvalidInputError", "ServerBusyError",
           "ServerUnavailableError", "UnknownVoiceError", "stream", "synthesize"]
