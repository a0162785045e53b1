"""A real tritonserver (from the nvidia-pytriton wheel) on free ports, shared by the integration tests."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from melstream.serving.server import TritonServer

pytestmark = pytest.mark.integration


def start_server(repo: Path, log_file: Path) -> TritonServer:
    return TritonServer.on_free_ports(repo, log_file=log_file).start(timeout_s=180)


@pytest.fixture(scope="session")
def server(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    srv = start_server(root / "model_repository", tmp_path_factory.mktemp("triton") / "tritonserver.log")
    try:
        yield srv
    finally:
        srv.stop()


def scrape(server: TritonServer) -> dict[str, float]:
    """Every sample on the server's metrics endpoint, keyed by its name and labels exactly as exported."""
    with urllib.request.urlopen(f"http://localhost:{server.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+\{[^}]*\}|[a-z_]+) (\S+)$", text, re.M)}


def metric(server: TritonServer, name: str, model: str) -> float:
    """One Prometheus counter of ``model`` from the server's metrics endpoint (0 if absent)."""
    return scrape(server).get(f'{name}{{model="{model}",version="1"}}', 0.0)


T = TypeVar("T")


def poll(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float, interval_s: float = 0.05) -> T:
    """``fetch()`` again every ``interval_s`` until ``done`` says yes or ``timeout_s`` passes; the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)  # polling interval


def settled_metric(server: TritonServer, name: str, model: str, *, quiet_s: float = 1.0, timeout_s: float = 30.0) -> float:
    """The counter once it has not moved for ``quiet_s`` (work has stopped), polled."""
    deadline = time.monotonic() + timeout_s
    last, since = metric(server, name, model), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)  # polling interval
        value = metric(server, name, model)
        if value != last:
            last, since = value, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return value
    raise AssertionError(f"{name} of {model} still moving after {timeout_s} s")
