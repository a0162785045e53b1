"""From what a client sees of a failure (message, HTTP status, gRPC status) to melstream's typed client errors.

The classification (a Triton error code name from what the client saw) is behind one function,
:func:`error_code`.
"""

from __future__ import annotations

from melstream.errors import (
    ClientError,
    ClientTimeoutError,
    InvalidInputError,
    ServerUnavailableError,
    UnknownVoiceError,
)

# gRPC status code -> Triton error code name (grpc_server.cc maps them the other way)
_GRPC_CODES = {"INVALID_ARGUMENT": "INVALID_ARG", "NOT_FOUND": "NOT_FOUND", "UNAVAILABLE": "UNAVAILABLE",
               "RESOURCE_EXHAUSTED": "UNAVAILABLE", "INTERNAL": "INTERNAL", "UNIMPLEMENTED": "UNSUPPORTED",
               "ALREADY_EXISTS": "ALREADY_EXISTS", "CANCELLED": "CANCELLED", "DEADLINE_EXCEEDED": "DEADLINE_EXCEEDED"}
# HTTP status -> Triton error code name (Triton's HTTP server answers these for its codes)
_HTTP_CODES = {400: "INVALID_ARG", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "UNAVAILABLE", 500: "INTERNAL",
               501: "UNSUPPORTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}
# what a gRPC stream's error carries is the message alone: its start names the cause
_MESSAGE_CODES = (("Request for unknown model", "NOT_FOUND"), ("InputError:", "INVALID_ARG"), ("TextError:", "INVALID_ARG"),
                  ("[request id:", "INVALID_ARG"), ("Exceeds maximum queue size", "UNAVAILABLE"))


def _fallback_code(message: str, *, http_status: int | None = None, grpc_status: str | None = None) -> str:
    if grpc_status and grpc_status not in ("UNKNOWN", "OK") and grpc_status in _GRPC_CODES:
        return _GRPC_CODES[grpc_status]
    if http_status is not None and http_status in _HTTP_CODES:
        return _HTTP_CODES[http_status]
    for start, code in _MESSAGE_CODES:
        if message.startswith(start):
            return code
    return "UNKNOWN"


def error_code(message: str, *, http_status: int | None = None, grpc_status: str | None = None) -> str:
    """The Triton error code name (``INVALID_ARG``, ``NOT_FOUND``, ``UNAVAILABLE``, ``INTERNAL``...) of a failure.
    ``grpc_status`` is the name of a gRPC status code (``"NOT_FOUND"``; tritonclient's ``"StatusCode.NOT_FOUND"`` too)."""
    if grpc_status is not None:
        grpc_status = grpc_status.removeprefix("StatusCode.")
    return _fallback_code(message, http_status=http_status, grpc_status=grpc_status)


def client_error(message: str, *, where: str, http_status: int | None = None, grpc_status: str | None = None) -> ClientError:
    """The typed error for a failure the server (or the connection to it) reported; its text is
    ``"<where>: <message>"``, the server's message kept whole."""
    status = grpc_status.removeprefix("StatusCode.") if grpc_status is not None else None
    text = f"{where}: {message}"
    if status == "DEADLINE_EXCEEDED":
        return ClientTimeoutError(text)
    code = error_code(message, http_status=http_status, grpc_status=status)
    if code == "NOT_FOUND" or "unknown model" in message:  # also a voice that failed to load: "has no available versions"
        return UnknownVoiceError(text)
    if code == "INVALID_ARG":
        return InvalidInputError(text)
    if code == "UNAVAILABLE":
        return ServerUnavailableError(text)
    return ClientError(text)


def grpc_error(error: BaseException, *, where: str) -> ClientError:
    """tritonclient's ``InferenceServerException`` (from a call or a stream's callback) as a typed error."""
    message = error.message() if callable(getattr(error, "message", None)) else None  # type: ignore[attr-defined]
    status = error.status() if callable(getattr(error, "status", None)) else None  # type: ignore[attr-defined]
    return client_error(str(message or error), where=where, grpc_status=None if status is None else str(status))
