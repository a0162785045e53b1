"""``melstream.spec`` is ``melstream_client.spec`` (the client distribution, ``client/``, holds it: clients need it without
the server package); this name is the same module, not a copy."""

import sys

import melstream_client.spec

sys.modules[__name__] = melstream_client.spec
