"""The errors a melstream client can meet: one root, :class:`MelstreamError`, shared with the server package
(``melstream.errors`` re-exports these and adds the server's own kinds).  Each message says what was wrong and
where.  Standard library only."""


class MelstreamError(Exception):
    """Root of every error melstream raises on purpose."""


class AddonError(MelstreamError):
    """An addon directory or its ``addon.json`` is malformed (the message names the JSON path or file)."""


class ClientError(MelstreamError):
    """A request to a melstream server failed (wraps tritonclient's errors)."""


class UnknownVoiceError(ClientError):
    """The server serves no voice of that name (or it is not ready)."""


class InvalidInputError(ClientError):
    """The server refused the request's input (Triton's INVALID_ARG); the message names the input."""


class ServerUnavailableError(ClientError):
    """The server cannot be reached, or is too busy to take the request now; trying again later may work."""


class ServerBusyError(ServerUnavailableError):
    """The server is up but at capacity: the voice already serves as many streams as it admits (or a network
    model's bounded queue is full).  Refused at once, nothing computed; trying again later may work."""


class ClientTimeoutError(ClientError):
    """No response came within the client's ``timeout_s``."""
