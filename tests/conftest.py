"""Test tiers, one directory each, marked here by directory (``-m`` selects them; each runs alone):

* ``tests/unit/`` (``unit``): no server, no trained voice, no espeak-ng; the synthetic voices of
  tests/synthetic.py.  Its rules are enforced in tests/unit/conftest.py.
* ``tests/integration/`` (``integration``): a real tritonserver from the wheel, the shipped voices.
* ``tests/system/`` (``system``): docker-compose validation, locust and benchmark runs, the command line
  end to end.
* ``tests/quality/`` (``quality``, ``slow``): the shipped voices against the espeak-ng teacher, the espeak-ng
  binding, training smoke runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import melstream
from melstream.serving.server import TritonServer, not_ready
from tests.servers import start_server

#: `make reliability` sets MELSTREAM_FULL=1: the reliability tests then run at full size (more cases, rounds,
#: streams); `make test` runs their quick versions
FULL = os.environ.get("MELSTREAM_FULL", "") not in ("", "0")

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
TIERS = {"unit": ("unit",), "integration": ("integration",), "system": ("system",), "quality": ("quality", "slow")}


def tier_of(item: pytest.Item) -> str | None:
    try:
        return item.path.resolve().relative_to(TESTS).parts[0]
    except ValueError:
        return None  # not under tests/ (a path given on the command line elsewhere)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier (its directory under tests/; a test outside the tiers is an error), and run
    the tiers in the order above: the fast one first, and the unit tier before anything loads libespeak-ng."""
    order = list(TIERS)
    for item in items:
        tier = tier_of(item)
        if tier is None:
            continue
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in a tier directory: tests/{{{','.join(TIERS)}}}/")
        for marker in TIERS[tier]:
            item.add_marker(marker)
    items.sort(key=lambda item: order.index(tier) if (tier := tier_of(item)) in TIERS else len(order))  # stable: files stay together


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# Each tier that builds voices in-process defines fast_addon and taco_addon (unit: the synthetic voices,
# quality: the shipped ones); their pipelines are built the same way everywhere.
@pytest.fixture(scope="session")
def fast_pipeline(fast_addon: melstream.Addon) -> melstream.StreamablePipeline:
    return fast_addon.build()


@pytest.fixture(scope="session")
def taco_pipeline(taco_addon: melstream.Addon) -> melstream.StreamablePipeline:
    return taco_addon.build()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One tritonserver with the committed model_repository/ (the shipped voices), shared by the integration
    and system tiers for the whole session."""
    srv = start_server(ROOT / "model_repository", tmp_path_factory.mktemp("triton") / "tritonserver.log")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(autouse=True)
def _shared_server_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that brings the shared server down fails, with the end of the server's log; the server is then
    started again on the same ports, so the tests after it do not all fail with "connection refused"."""
    yield
    if "server" not in request.fixturenames:
        return
    srv: TritonServer = request.getfixturevalue("server")
    why = not_ready(srv.http_url, timeout_s=5)
    if why is None:
        return
    log = srv.log_file.read_text(errors="replace") if srv.log_file is not None and srv.log_file.exists() else ""
    tail = "\n".join(line for line in log.splitlines() if not line.startswith(("|", "+")))[-3000:]
    srv.stop()
    srv.log_file = srv.log_file.with_name(srv.log_file.stem + "-restarted.log") if srv.log_file is not None else None
    srv.start(timeout_s=180)
    pytest.fail(f"the shared tritonserver went down during this test ({why}); restarted for the next tests. Its log ended:\n{tail}",
                pytrace=False)
