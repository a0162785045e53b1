"""TritonServer's process handling, on a stand-in server (a Python script that answers the readiness probe):
starting, a server that dies before it is ready, and stopping a crashed server that left children behind."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from melstream.errors import ServerError
from melstream.serving.server import TritonServer, free_port

# Started as the server: leaves a child in its process group (as tritonserver leaves its Python backend stubs),
# writes the child's pid, then answers /v2/health/ready with 200 (or exits at once with "die").
STAND_IN = r"""
import http.server, subprocess, sys
port, pid_file, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "die":
    sys.exit(3)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # survives its parent's death
open(pid_file, "w").write(str(child.pid))

class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/v2/health/ready" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", port), Ready).serve_forever()
"""


class StandIn(TritonServer):
    pid_file: Path = Path()
    mode: str = "serve"

    def command(self) -> list[str]:
        return [sys.executable, "-c", STAND_IN, str(self.http_port), str(self.pid_file), self.mode]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended


def stand_in(tmp_path: Path, mode: str = "serve") -> StandIn:
    srv = StandIn(repo=tmp_path, http_port=free_port())
    srv.pid_file, srv.mode = tmp_path / "child.pid", mode
    return srv


def test_stop_after_a_crash_ends_what_the_server_left_running(tmp_path: Path) -> None:
    srv = stand_in(tmp_path).start(timeout_s=30)
    pgid = srv.pid
    assert pgid is not None
    child = int(srv.pid_file.read_text())
    try:
        assert alive(child) and os.getpgid(child) == pgid
        os.kill(pgid, signal.SIGKILL)  # the crash: the server is gone, its child is not
        deadline = time.monotonic() + 10
        while alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)  # until the kernel has reaped the server (stop() below also waits for it)
        assert alive(child), "the child died with the server: this stand-in would not show what stop() does"
        srv.stop()
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.02)  # SIGKILL is delivered asynchronously
        assert not alive(child), "stop() left the crashed server's child running"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_server_that_exits_before_it_is_ready(tmp_path: Path) -> None:
    srv = stand_in(tmp_path, "die")
    with pytest.raises(ServerError, match="tritonserver exited with code 3 before it was ready"):
        srv.start(timeout_s=30)
    assert srv.pid is None  # and it is stopped: a later start() is allowed


def test_start_refuses_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist; run `melstream build-repo` first"):
        StandIn(repo=tmp_path / "nothing", http_port=free_port()).start(timeout_s=5)
