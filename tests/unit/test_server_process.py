"""TritonServer's process handling, on a stand-in server (a Python script that answers the readiness probe):
starting, a server that dies before it is ready, stopping a crashed server that left children behind, a server
that does not stop in time; and removing a server's shared-memory regions (fake files in a tmp dir)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from melstream.errors import ServerDiedError, ServerError
from melstream.serving.server import (
    DEFAULT_SHM_PREFIX,
    StopReport,
    TritonServer,
    describe_exit,
    free_port,
    group_members,
    remove_shm_regions,
    shm_regions,
)

# Started as the server: leaves a child in its process group (as tritonserver leaves its Python backend stubs),
# writes the child's pid, then answers /v2/health/ready with 200 (or exits at once with "die").
STAND_IN = r"""
import http.server, subprocess, sys
port, pid_file, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "die":
    sys.exit(3)
if mode == "die-once":  # dies at its first start only (as Triton 2.51 now and then aborts while loading)
    import os
    marker = pid_file + ".died"
    if not os.path.exists(marker):
        open(marker, "w").close()
        sys.exit(3)
import signal
if mode == "deaf":  # ignores SIGINT, as a server that hangs while stopping
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:  # stops at SIGINT as tritonserver does (it installs its own handler), even if started with SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # survives its parent's death
open(pid_file, "w").write(str(child.pid))

import time
started = time.monotonic()

class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # the metrics answer on the same port; "metrics-late": only 0.5 s after the start
        metrics = self.path == "/metrics" and (mode != "metrics-late" or time.monotonic() - started > 0.5)
        self.send_response(200 if self.path == "/v2/health/ready" or metrics else 404)
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
    port = free_port()
    srv = StandIn(repo=tmp_path, http_port=port, metrics_port=port)
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
        assert srv.poll() == -signal.SIGKILL and srv.wait(0) == -signal.SIGKILL  # what a supervisor sees
        report = srv.stop()
        assert not alive(child), "stop() left the crashed server's child running"
        assert report.returncode == -signal.SIGKILL and report.leftover_processes == [child] and not report.clean
        assert "killed by signal 9 (SIGKILL)" in report.describe() and "1 leftover process" in report.describe()
        assert group_members(pgid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_server_that_dies_while_starting_is_started_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv = stand_in(tmp_path, "die-once")
    srv.start(timeout_s=30, retry_after_s=0.01)
    try:
        assert srv.poll() is None
        assert "tritonserver exited (exit status 3) before it was ready (attempt 1 of 3); starting it again" in capsys.readouterr().err
    finally:
        srv.stop()


def test_start_returns_only_once_the_metrics_answer_too(tmp_path: Path) -> None:
    """Triton 2.51 reports ready a moment before its metrics service listens: start() waits for both, so that a
    scrape right after it is answered (the stand-in's metrics answer 0.5 s after it starts, its readiness at once)."""
    srv = stand_in(tmp_path, "metrics-late")
    began = time.monotonic()
    srv.start(timeout_s=30)
    try:
        assert time.monotonic() - began >= 0.5
        from melstream.serving.server import metric_samples

        assert metric_samples(f"localhost:{srv.metrics_port}", timeout_s=5) == {}
    finally:
        srv.stop()


def test_a_server_that_exits_before_it_is_ready(tmp_path: Path) -> None:
    srv = stand_in(tmp_path, "die")
    with pytest.raises(ServerDiedError, match=r"tritonserver exited \(exit status 3\) before it was ready"):
        srv.start(timeout_s=30, retry_after_s=0.01)
    assert srv.pid is None  # and it is stopped: a later start() is allowed


def test_start_refuses_a_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="does not exist; run `melstream build-repo` first"):
        StandIn(repo=tmp_path / "nothing", http_port=free_port()).start(timeout_s=5)


def test_stop_kills_a_server_that_does_not_stop_in_time_and_removes_its_regions(tmp_path: Path) -> None:
    srv = stand_in(tmp_path, "deaf")
    srv.shm_dir = tmp_path / "shm"
    srv.shm_dir.mkdir()
    srv.start(timeout_s=30)
    pgid = srv.pid
    assert pgid is not None
    child = int(srv.pid_file.read_text())
    (srv.shm_dir / f"{srv.shm_prefix}0f1e").write_bytes(b"x")  # as a stub that died without removing its region
    other = srv.shm_dir / f"{DEFAULT_SHM_PREFIX}0f1e"  # another server's
    other.write_bytes(b"x")
    try:
        t0 = time.monotonic()
        report = srv.stop(timeout_s=1.0)
        assert time.monotonic() - t0 < 8
        assert report.killed and report.returncode == -signal.SIGKILL and not report.clean
        assert [p.name for p in report.leftover_regions] == [f"{srv.shm_prefix}0f1e"]
        assert other.exists() and not shm_regions(srv.shm_prefix, srv.shm_dir)
        assert not alive(child) and group_members(pgid) == []
        assert srv.pid is None and srv.stop().clean  # stopping again: nothing to do
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_stopped_server_that_exits_by_itself_is_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = stand_in(tmp_path)
    srv.shm_dir = tmp_path
    srv.start(timeout_s=30)
    child = int(srv.pid_file.read_text())
    os.kill(child, signal.SIGKILL)  # this stand-in's child is not a stub: a real server ends its stubs itself
    report = srv.stop(timeout_s=20)  # SIGINT: the stand-in ends with KeyboardInterrupt
    assert not report.killed and report.returncode is not None and report.leftover_processes == []
    monkeypatch.setattr("melstream.serving.server.triton_home", lambda: tmp_path)  # no copy of the wheel's server
    args = TritonServer(repo=tmp_path).command()[1:]  # a real server is started with its own prefix
    assert any(a.startswith("--backend-config=python,shm-region-prefix-name=melstream_") for a in args)
    assert any(a.startswith("--exit-timeout-secs=") for a in args)


def test_remove_shm_regions_removes_exactly_the_prefixed_files(tmp_path: Path) -> None:
    mine = ["melstream_1_ab_0000", "melstream_1_ab_ffff"]
    others = ["melstream_1_abc_0000", "melstream_2_ab_0000", f"{DEFAULT_SHM_PREFIX}0000", "x_melstream_1_ab_0"]
    for name in mine + others:
        (tmp_path / name).write_bytes(b"\0" * 16)
    assert [p.name for p in shm_regions("melstream_1_ab_", tmp_path)] == mine
    assert [p.name for p in remove_shm_regions("melstream_1_ab_", tmp_path)] == mine
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert remove_shm_regions("melstream_1_ab_", tmp_path) == []
    assert remove_shm_regions("melstream_1_ab_", tmp_path / "missing") == []


@pytest.mark.parametrize("prefix", ["", "a/b", "../x"])
def test_remove_shm_regions_refuses_what_is_not_a_prefix(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        remove_shm_regions(prefix, tmp_path)


def test_remove_shm_regions_refuses_the_python_backends_shared_default(tmp_path: Path) -> None:
    (tmp_path / f"{DEFAULT_SHM_PREFIX}0000").write_bytes(b"x")
    with pytest.raises(ValueError, match="default prefix"):
        remove_shm_regions(DEFAULT_SHM_PREFIX, tmp_path)
    assert (tmp_path / f"{DEFAULT_SHM_PREFIX}0000").exists()
    with pytest.raises(ServerError, match="prefix of its own"):
        TritonServer(repo=tmp_path, shm_prefix=DEFAULT_SHM_PREFIX).start(timeout_s=1)


def test_every_server_has_its_own_prefix(tmp_path: Path) -> None:
    a, b = TritonServer(repo=tmp_path), TritonServer(repo=tmp_path)
    assert a.shm_prefix != b.shm_prefix and a.shm_prefix.startswith(f"melstream_{os.getpid()}_")


def test_describe_exit_and_stop_report() -> None:
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(-9) == "killed by signal 9 (SIGKILL)"
    assert describe_exit(-11) == "killed by signal 11 (SIGSEGV)"
    assert StopReport(returncode=0).clean and StopReport().clean
    assert not StopReport(returncode=1).clean  # Triton's exit timeout ran out with models still loaded
    assert not StopReport(returncode=0, leftover_regions=[Path("r")]).clean
    assert StopReport(returncode=0, seconds=2.5).describe() == "clean (exit status 0) in 2.5 s"


def test_stub_processes_reads_model_and_instance_from_the_command_line(tmp_path: Path) -> None:
    from melstream.serving.server import stub_processes

    def proc(pid: int, pgid: int, argv: list[str], state: str = "S") -> None:
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "stat").write_text(f"{pid} (x) {state} 1 {pgid} {pgid} 0")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    stub = "/t/backends/python/triton_python_backend_stub"
    proc(10, 10, ["/t/bin/tritonserver", "--model-repository=/r"])
    proc(11, 10, [stub, "/r/fastvoice__decoder/1/model.py", "shm_a", "1", "1", "10", "/t/b", "3", "fastvoice__decoder_0_1", "DEFAULT", ""])
    proc(12, 10, [stub, "/r/fastvoice/1/model.py", "shm_b", "1", "1", "10", "/t/b", "3", "fastvoice_0_0", "DEFAULT", ""])
    proc(13, 99, [stub, "/r/tacovoice/1/model.py", "shm_c", "1", "1", "98", "/t/b", "3", "tacovoice_0_0", "DEFAULT", ""])
    proc(14, 10, [stub, "/r/tacovoice/1/model.py", "shm_d", "1", "1", "10", "/t/b", "3", "tacovoice_0_0"], state="Z")
    proc(15, 10, ["/usr/bin/python3", "/r/x/1/model.py"])
    stubs = stub_processes(10, tmp_path)
    assert [(s.pid, s.model, s.instance) for s in stubs] == [(12, "fastvoice", "fastvoice_0_0"),
                                                             (11, "fastvoice__decoder", "fastvoice__decoder_0_1")]


def test_crashed_reads_a_fatal_signal_from_the_log_written_since_the_start(tmp_path: Path) -> None:
    log = tmp_path / "tritonserver.log"
    log.write_text("Signal (11) received.\n")  # an earlier run's crash in the same (appended) log
    srv = TritonServer(repo=tmp_path, log_file=log)
    srv._log_read = log.stat().st_size  # what start() does
    assert srv.crashed() is None
    with log.open("a") as f:
        f.write("I1125 model_lifecycle.cc] loaded\nSignal (2) received.\n")  # a stop, not a crash
    assert srv.crashed() is None
    with log.open("a") as f:
        f.write(" 0# 0x000 in tritonserver\nSignal (6) rec")  # half a line: read when it is whole
    assert srv.crashed() is None
    with log.open("a") as f:
        f.write("eived.\nSignal (11) received.\n")
    assert srv.crashed() == "Signal (6) received."  # the first one


def test_process_memory_reads_rss_and_pss_of_a_live_process(tmp_path: Path) -> None:
    from melstream.serving.server import Memory, process_memory

    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "smaps_rollup").write_text("00400000-7ffd [rollup]\nRss:     2048 kB\nPss:      512 kB\nPss_Anon:  100 kB\n")
    assert process_memory(7, tmp_path) == Memory(rss=2048 * 1024, pss=512 * 1024)
    assert process_memory(8, tmp_path) is None  # gone
    assert process_memory(7, tmp_path) + Memory(1, 2) == Memory(2048 * 1024 + 1, 512 * 1024 + 2)
    own = process_memory(os.getpid())  # this process, from the real /proc
    assert own is not None and own.rss > 0 and 0 < own.pss <= own.rss


def test_model_ready_and_live_read_the_answer_not_just_the_connection(tmp_path: Path) -> None:
    import http.server
    import threading

    from melstream.serving.server import live, model_ready

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            code = {"/v2/models/up/ready": 200, "/v2/health/live": 503}.get(self.path, 400)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"127.0.0.1:{server.server_address[1]}"
    try:
        assert model_ready(url, "up") and not model_ready(url, "down")  # Triton: 400 when not ready
        assert live(url, timeout_s=2)  # any answer: it is not hung
    finally:
        server.shutdown()
        server.server_close()
    assert not live(url, timeout_s=2) and not model_ready(url, "up")  # no answer at all


def test_wait_answering_returns_once_answered_and_says_why_not_otherwise() -> None:
    import subprocess
    import sys

    from melstream.errors import ServerError
    from melstream.serving.server import wait_answering

    calls = {"n": 0}

    def third_time() -> bool:
        calls["n"] += 1
        if calls["n"] < 3:
            raise OSError("connection refused")  # not listening yet
        return True

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        wait_answering(alive, third_time, what="thing", timeout_s=5, interval_s=0.01)
        assert calls["n"] == 3
        with pytest.raises(ServerError, match=r"thing did not answer within 0.05 s:\ntail"):
            wait_answering(alive, lambda: False, what="thing", timeout_s=0.05, interval_s=0.01, log_tail=lambda: "tail")
    finally:
        alive.kill()
        alive.wait()
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(RuntimeError, match="thing exited with status 3 before it answered"):
        wait_answering(dead, lambda: True, what="thing", timeout_s=5, error=RuntimeError)
