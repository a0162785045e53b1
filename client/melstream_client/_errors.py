"""From what a client sees of a failure (message, HTTP status, gRPC status) to melstream's typed client errors.

Which Triton error code a failure carries is the wire contract's to say (:func:`melstream_client.wire.error_code`:
the voice model's ``[CODE]`` tag, a gRPC status, Triton's own messages, the HTTP status); this module maps the
code to an error class and keeps the server's message whole.
"""

from __future__ import annotations

from melstream_client import wire
from melstream_client.errors import (
    ClientError,
    ClientTimeoutError,
    InvalidInputError,
    ServerBusyError,
    ServerUnavailableError,
    UnknownVoiceError,
)

#: Triton error code -> the client error raised for it (any other code: ClientError)
ERROR_CLASSES: dict[str, type[ClientError]] = {"NOT_FOUND": UnknownVoiceError,  # also a voice that failed to load
                                               "INVALID_ARG": InvalidInputError,
                                               "UNAVAILABLE": ServerUnavailableError}


def client_error(message: str, *, where: str, http_status: int | None = None, grpc_status: str | None = None) -> ClientError:
    """The typed error for a failure the server (or the connection to it) reported; its text is
    ``"<where>: <message>"``, the server's message kept whole.  gRPC's DEADLINE_EXCEEDED (the client's own
    ``timeout_s`` ran out) is a :class:`ClientTimeoutError`; an UNAVAILABLE that says the server is at capacity
    (:func:`melstream_client.wire.is_busy`) is a :class:`ServerBusyError`."""
    text = f"{where}: {message}"
    if grpc_status is not None and grpc_status.removeprefix("StatusCode.").upper() == "DEADLINE_EXCEEDED":
        return ClientTimeoutError(text)
    code = wire.error_code(message, http_status=http_status, grpc_status=grpc_status)
    if code == wire.BUSY_ERROR and wire.is_busy(message):
        return ServerBusyError(text)
    return ERROR_CLASSES.get(code, ClientError)(text)


def grpc_error(error: BaseException, *, where: str) -> ClientError:
    """tritonclient's ``InferenceServerException`` (from a call or a stream's callback) as a typed error."""
    message = error.message() if callable(getattr(error, "message", None)) else None  # type: ignore[attr-defined]
    status = error.status() if callable(getattr(error, "status", None)) else None  # type: ignore[attr-defined]
    return client_error(str(message or error), where=where, grpc_status=None if status is None else str(status))
