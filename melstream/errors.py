"""melstream's errors: one root, a few kinds, each message says what was wrong and where.

The root and the kinds a client meets live in the client distribution (``melstream_client.errors``, which
applications install alone); they are the same classes here, with the server's own kinds added.
"""

# the same classes as the client's (re-exported: `X as X`)
from melstream_client.errors import (
    AddonError as AddonError,
)
from melstream_client.errors import (
    ClientError as ClientError,
)
from melstream_client.errors import (
    ClientTimeoutError as ClientTimeoutError,
)
from melstream_client.errors import (
    InvalidInputError as InvalidInputError,
)
from melstream_client.errors import (
    MelstreamError as MelstreamError,
)
from melstream_client.errors import (
    ServerBusyError as ServerBusyError,
)
from melstream_client.errors import (
    ServerUnavailableError as ServerUnavailableError,
)
from melstream_client.errors import (
    UnknownVoiceError as UnknownVoiceError,
)


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
