"""melstream's client library is the ``melstream-client`` distribution (``client/``, imported as
``melstream_client``: numpy and tritonclient only); this name is the same package, kept so that
``from melstream.client import Client`` goes on working."""

import sys

import melstream_client

sys.modules[__name__] = melstream_client
