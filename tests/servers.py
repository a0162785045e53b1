"""A real tritonserver (from the nvidia-pytriton wheel) on free ports, and reading its metrics: shared by the
integration and system tiers (the ``server`` fixture lives in tests/conftest.py)."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from melstream.serving.server import TritonServer

T = TypeVar("T")


def start_server(repo: Path, log_file: Path) -> TritonServer:
    return TritonServer.on_free_ports(repo, log_file=log_file).start(timeout_s=180)


def scrape(server: TritonServer) -> dict[str, float]:
    """Every sample on the server's metrics endpoint, keyed by its name and labels exactly as exported."""
    with urllib.request.urlopen(f"http://localhost:{server.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^([a-z_]+\{[^}]*\}|[a-z_]+) (\S+)$", text, re.M)}


def metric(server: TritonServer, name: str, model: str) -> float:
    """One Prometheus counter of ``model`` from the server's metrics endpoint (0 if absent)."""
    return scrape(server).get(f'{name}{{model="{model}",version="1"}}', 0.0)


def poll(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float, interval_s: float = 0.05) -> T:
    """``fetch()`` again every ``interval_s`` until ``done`` says yes or ``timeout_s`` passes; the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)  # polling interval


def wait_for(server: TritonServer, key: str, value: float, *, timeout_s: float = 30.0) -> dict[str, float]:
    """All samples, once the sample ``key`` has reached ``value``; an AssertionError if it has not within
    ``timeout_s`` (a stream's metrics are recorded after its final response)."""
    samples = poll(lambda: scrape(server), lambda s: s.get(key, 0.0) >= value, timeout_s=timeout_s)
    if samples.get(key, 0.0) < value:
        raise AssertionError(f"{key} is {samples.get(key)} after {timeout_s} s, expected {value}")
    return samples


def streams_key(voice: str, outcome: str) -> str:
    """The sample of ``melstream_streams_total`` counting ``voice``'s streams that ended with ``outcome``."""
    return f'melstream_streams_total{{outcome="{outcome}",voice="{voice}"}}'


def quiet(server: TritonServer, *voices: str, timeout_s: float = 30.0) -> dict[str, float]:
    """All samples, once no stream of ``voices`` is active (every earlier stream has recorded its outcome), so
    that what changes from here on is the caller's own streams' doing."""
    keys = [f'melstream_active_streams{{voice="{v}"}}' for v in voices]
    samples = poll(lambda: scrape(server), lambda s: all(s.get(k, 0.0) == 0 for k in keys), timeout_s=timeout_s)
    busy = {k: samples[k] for k in keys if samples.get(k, 0.0) != 0}
    assert not busy, f"streams still active after {timeout_s} s: {busy}"
    return samples
