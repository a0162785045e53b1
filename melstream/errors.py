"""melstream's errors: one root, a few kinds, each message says what was wrong and where."""


class MelstreamError(Exception):
    """Root of every error melstream raises on purpose."""


class AddonError(MelstreamError):
    """An addon directory or its ``addon.json`` is malformed (the message names the JSON path or file)."""


class StackError(AddonError):
    """A stack cannot be built: unknown component type, bad parameter, wrong nesting."""


class RegistryError(MelstreamError):
    """A component registration is refused (duplicate name, not a block class)."""


class TextError(MelstreamError):
    """The input text cannot be spoken (empty, too long, not UTF-8)."""


class SynthesisError(MelstreamError):
    """A network or block failed while producing frames."""


class ServerError(MelstreamError):
    """The local Triton server could not be started or stopped."""


class ClientError(MelstreamError):
    """A request to a melstream server failed (wraps tritonclient's errors)."""
