"""``melstream.wire`` is ``melstream_client.wire`` (the client distribution, ``client/``, holds it: clients need it without
the server package); this name is the same module, not a copy."""

import sys

import melstream_client.wire

sys.modules[__name__] = melstream_client.wire
