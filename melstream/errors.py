"""melstream's errors: one root, a few kinds, each message says what was wrong and where.

Standard library only: clients import it.
"""


class MelstreamError(Exception):
    """Root of every error melstream raises on purpose."""


class AddonError(MelstreamError):
    """An addon directory or its ``addon.json`` is malformed (the message names the JSON path or file)."""


class StackError(AddonError):
    """A stack cannot be built: unknown component type, bad parameter, wrong nesting, mis-wired tensors."""


class RegistryError(MelstreamError):
    """A component registration is refused (duplicate name, not a block class)."""


class InputError(MelstreamError):
    """A request's input is wrong (the message names the input): the server answers Triton's INVALID_ARG."""


class TextError(InputError):
    """The input text cannot be spoken (empty, too long, not UTF-8)."""


class SynthesisError(MelstreamError):
    """A network or block failed while producing frames."""


class ServerError(MelstreamError):
    """The local Triton server could not be started or stopped."""


class ServerDiedError(ServerError):
    """tritonserver exited while it was starting (a supervisor tries again: Triton 2.51 aborts now and then)."""


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
