"""A real tritonserver (from the nvidia-pytriton wheel) on free ports, and reading its metrics: shared by the
integration and system tiers (the ``server`` fixture lives in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from melstream.serving.health import READY_PATH
from melstream.serving.server import SHM_DIR, TritonServer, free_port, group_members, metric_samples
from melstream.serving.server import poll as poll  # the package's, re-exported: existing imports work


def start_server(repo: Path, log_file: Path) -> TritonServer:
    return TritonServer.on_free_ports(repo, log_file=log_file).start(timeout_s=180)


def scrape(server: TritonServer) -> dict[str, float]:
    """Every sample on the server's metrics endpoint, keyed by its name and labels exactly as exported."""
    return metric_samples(f"localhost:{server.metrics_port}", timeout_s=5)


def metric(server: TritonServer, name: str, model: str) -> float:
    """One Prometheus counter of ``model`` from the server's metrics endpoint (0 if absent)."""
    return scrape(server).get(f'{name}{{model="{model}",version="1"}}', 0.0)


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


def network_calls_key(voice: str, network: str) -> str:
    """The sample of the calls ``voice`` made to its ``network``, wherever the network runs (in the voice model's
    process or as a Triton model): the voice's own counter, exported as each stream ends, before its outcome."""
    return f'melstream_network_calls_total{{network="{network}",voice="{voice}"}}'


def quiet(server: TritonServer, *voices: str, timeout_s: float = 30.0) -> dict[str, float]:
    """All samples, once no stream of ``voices`` is active (every earlier stream has recorded its outcome), so
    that what changes from here on is the caller's own streams' doing."""
    keys = [f'melstream_active_streams{{voice="{v}"}}' for v in voices]
    samples = poll(lambda: scrape(server), lambda s: all(s.get(k, 0.0) == 0 for k in keys), timeout_s=timeout_s)
    busy = {k: samples[k] for k in keys if samples.get(k, 0.0) != 0}
    assert not busy, f"streams still active after {timeout_s} s: {busy}"
    return samples


@dataclass
class Serve:
    proc: subprocess.Popen[str]
    grpc_url: str
    http_url: str
    metrics_port: int
    pid: int  # tritonserver's, also its process group
    lines: list[str] = field(default_factory=list)
    drainer: threading.Thread | None = None  # reads serve's stderr until serve has closed it
    health_url: str = ""  # its readiness (serve --health-port)

    def stderr(self) -> str:
        return "".join(self.lines)

    def current_pid(self) -> int:
        """tritonserver's pid now: the last one serve named (it restarts a dead one)."""
        pids = named_pids(self.stderr())
        return pids[-1] if pids else self.pid

    def all_stderr(self, timeout_s: float = 10) -> str:
        """Everything serve wrote, once it has exited and its stderr is read to the end."""
        if self.drainer is not None:
            self.drainer.join(timeout_s)
        return self.stderr()


def named_pids(serve_output: str) -> list[int]:
    """The tritonserver pids `melstream serve` named, in order: at its start, then at each restart."""
    named = re.findall(r"tritonserver pid (\d+)|tritonserver is serving again \(pid (\d+)\)", serve_output)
    return [int(first or again) for first, again in named]


def stub_regions(pgid: int) -> list[str]:
    """The shared-memory regions of the Python backend stubs in process group ``pgid``."""
    regions = []
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"triton_python_backend_stub"):
                regions.append(argv[2].decode())
    return regions


@contextlib.contextmanager
def serve(root: Path, *args: str) -> Iterator[Serve]:
    """`melstream serve` of the committed model_repository/ on free ports, as a user runs it (a subprocess);
    killed if it still runs at the end."""
    http, grpc, metrics, health = free_port(), free_port(), free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "melstream.cli", "serve", "--repo", str(root / "model_repository"),
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                             "--health-port", str(health), "--health-host", "127.0.0.1", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    ready: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # read all of serve's stderr (tritonserver's log goes there too), so it never blocks
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "melstream serving" in line:
                ready.put(line)
        ready.put("")

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    try:
        line = ready.get(timeout=240)
        assert line, f"serve ended before it was serving:\n{''.join(lines)[-3000:]}"
        match = re.search(r"tritonserver pid (\d+)", line)
        assert match, line
        yield Serve(proc, f"localhost:{grpc}", f"localhost:{http}", metrics, int(match.group(1)), lines, drainer,
                    health_url=f"http://127.0.0.1:{health}{READY_PATH}")
    finally:
        if proc.poll() is None:
            # a test that failed half-way: stop serve as a user would (it stops tritonserver and cleans up);
            # SIGKILL only if it does not, and then tritonserver's process group too (serve cannot any more)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                for pgid in named_pids("".join(lines)):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pgid, signal.SIGKILL)


def assert_nothing_left(srv: Serve, regions: list[str], *, by_prefix: bool = True) -> None:
    """No process of the server's group and none of ``regions`` left (with ``by_prefix``, no region with the
    server's prefix either: not for a dead server that was restarted with the same prefix)."""
    prefix = regions[0][:-36]  # the server's prefix: the region name without its UUID
    deadline = time.monotonic() + 5
    while group_members(srv.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel ends killed processes asynchronously
    assert group_members(srv.pid) == [], f"processes of the server's group still alive: {group_members(srv.pid)}"
    left = sorted({r for r in regions if (SHM_DIR / r).exists()}
                  | ({p.name for p in SHM_DIR.glob(prefix + "*")} if by_prefix else set()))
    assert not left, f"shared-memory regions of the server left in {SHM_DIR}: {left}"
