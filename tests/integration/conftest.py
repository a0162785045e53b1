"""The integration tier: a real tritonserver (from the nvidia-pytriton wheel) on free ports, with the shipped
voices.  The ``server`` fixture lives in tests/conftest.py (the system tier shares it); the helpers in
tests/servers.py, re-exported here for the tests that import them from this module."""

from __future__ import annotations

from tests.servers import metric, poll, quiet, scrape, start_server, streams_key, wait_for

__all__ = ["metric", "poll", "quiet", "scrape", "start_server", "streams_key", "wait_for"]
