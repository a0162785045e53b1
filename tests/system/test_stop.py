"""Stopping `melstream serve`: SIGTERM with streams in flight, and a tritonserver that dies under it.

Either way nothing of the server may be left: no process of its process group (tritonserver and its Python
backend stubs) and no shared-memory region of it in /dev/shm.  The regions are found from the stubs' own
command lines (a stub's second argument is its region: the server's prefix + a UUID), so this checks the
regions the server really made, not what serve says it made.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melstream.errors import ServerUnavailableError
from tests.servers import assert_nothing_left, serve, stub_regions

# about 9 minutes of speech (8,200 characters, under the front end's 10,000): no stream may end before the stop,
# even the first of 20 to start on a loaded machine (the texts are read sentence by sentence: length costs no
# first chunk)
LONG_TEXT = " ".join(["This sentence is long, and it keeps a stream busy for quite a while."] * 120)
STREAMS = 20


class _Stream:
    """One gRPC stream with one long request; records how it ended."""

    def __init__(self, url: str, voice: str) -> None:
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(url)
        self.first = threading.Event()
        self.ended = threading.Event()
        self.error: str | None = None
        self.completed = False
        self.client.start_stream(callback=self._on_response)
        text = grpcclient.InferInput("TEXT", [1], "BYTES")
        text.set_data_from_numpy(np.array([LONG_TEXT.encode()], dtype=object))
        chunk = grpcclient.InferInput("CHUNK_FRAMES", [1], "INT32")
        chunk.set_data_from_numpy(np.array([4], np.int32))
        self.client.async_stream_infer(voice, [text, chunk], enable_empty_final_response=True)

    def _on_response(self, result: Any, error: Any) -> None:
        if self.ended.is_set():
            return  # after its request ended, the stream's own end (the server's GOAWAY) says nothing more
        if error is not None:
            self.error = str(error)
            self.ended.set()
            return
        self.first.set()
        final = result.get_response().parameters.get("triton_final_response")
        if final is not None and final.bool_param:
            self.completed = True
            self.ended.set()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.stop_stream(cancel_requests=True)
        with contextlib.suppress(Exception):
            self.client.close()


def test_sigterm_with_streams_in_flight_stops_within_seconds_and_leaves_nothing(root: Path) -> None:
    with serve(root) as srv:
        regions = stub_regions(srv.pid)
        assert regions, "no Python backend stub found in the server's process group"
        streams = [_Stream(srv.grpc_url, ("fastvoice", "tacovoice")[i % 2]) for i in range(STREAMS)]
        try:
            for s in streams:
                assert s.first.wait(timeout=120) or s.ended.is_set(), "a stream got nothing in 120 s"
            assert not any(s.ended.is_set() for s in streams), "a stream ended before SIGTERM: the text is too short"
            t0 = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            returncode = srv.proc.wait(timeout=60)
            seconds = time.monotonic() - t0
            for s in streams:  # each stream's end reaches its client at once; a few seconds only for a busy machine
                s.ended.wait(timeout=5)
        finally:
            for s in streams:
                s.close()
        hung = [i for i, s in enumerate(streams) if not s.ended.is_set()]
        errors = sorted({re.sub(r"\d+", "N", s.error or "") for s in streams if s.error})
        print(f"serve exited {returncode} {seconds:.1f} s after SIGTERM; stream errors: {errors}")
        if os.environ.get("MELSTREAM_STOP_LOG"):
            Path(os.environ["MELSTREAM_STOP_LOG"]).write_text(srv.stderr())
        assert not hung, f"streams {hung} got neither a final error nor their last response"
        assert seconds < 10, f"serve took {seconds:.1f} s to stop:\n{srv.stderr()[-3000:]}"
        # With clients' streams still open Triton 2.51 cannot unload their voices (see TritonServer.stop): serve
        # then says that the stop was not clean, and exits 1.
        assert returncode == 0 or (returncode == 1 and "did not stop cleanly" in srv.stderr()), srv.stderr()[-3000:]
        assert_nothing_left(srv, regions)


class _ClientStream(threading.Thread):
    """One long utterance through melstream's own client, which closes its gRPC stream when the request ends."""

    def __init__(self, url: str, voice: str) -> None:
        super().__init__(daemon=True)
        self.url, self.voice = url, voice
        self.first = threading.Event()
        self.error: BaseException | None = None
        self.completed = False
        self.start()

    def run(self) -> None:
        from melstream_client import Client

        try:
            with Client(self.url, timeout_s=60) as client:
                for _ in client.stream_outputs(LONG_TEXT, voice=self.voice, chunk_frames=4):
                    self.first.set()
            self.completed = True
        except BaseException as e:  # noqa: BLE001 - recorded for the test to judge
            self.error = e
        finally:
            self.first.set()


def test_sigterm_with_melstream_clients_in_flight_ends_each_stream_as_shutting_down(root: Path) -> None:
    """melstream's client closes its stream when its request ends, so Triton can unload the voices; every stream
    ends with the voice's "shutting down" (Triton refuses the voices' network calls first).  The stop is usually
    clean; on a loaded machine (the whole suite) a voice has stayed loaded until the exit timeout in several runs,
    cause not found yet (reliability work): serve then says so, and nothing is left behind either way.
    (A long exit timeout: on a busy machine unloading alone can take seconds; that a stop is bounded is the test
    above's.)"""
    with serve(root, "--exit-timeout-s", "30") as srv:
        regions = stub_regions(srv.pid)
        streams = [_ClientStream(srv.grpc_url, ("fastvoice", "tacovoice")[i % 2]) for i in range(STREAMS)]
        for s in streams:
            assert s.first.wait(timeout=120), "a stream got nothing in 120 s"
        assert not any(s.error or s.completed for s in streams), [s.error for s in streams]
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        returncode = srv.proc.wait(timeout=60)
        seconds = time.monotonic() - t0
        for s in streams:
            s.join(timeout=5)
        hung = [i for i, s in enumerate(streams) if s.is_alive() or not (s.error or s.completed)]
        errors = sorted({re.sub(r"\d+", "N", f"{type(s.error).__name__}: {s.error}") for s in streams if s.error})
        print(f"serve exited {returncode} {seconds:.1f} s after SIGTERM; stream errors: {errors}")
        if os.environ.get("MELSTREAM_STOP_LOG"):
            Path(os.environ["MELSTREAM_STOP_LOG"]).write_text(srv.stderr())
        assert not hung, f"streams {hung} got neither a final error nor their last response"
        for s in streams:
            assert isinstance(s.error, ServerUnavailableError) and "is shutting down" in str(s.error), s.error
        assert ((returncode == 0 and "tritonserver stopped cleanly" in srv.stderr())
                or (returncode == 1 and "did not stop cleanly" in srv.stderr())), srv.stderr()[-3000:]
        assert_nothing_left(srv, regions)


def test_unsupervised_serve_says_so_when_tritonserver_dies(root: Path) -> None:
    with serve(root, "--no-supervise") as srv:
        regions = stub_regions(srv.pid)
        assert regions, "no Python backend stub found in the server's process group"
        os.kill(srv.pid, signal.SIGKILL)
        returncode = srv.proc.wait(timeout=30)
        err = srv.all_stderr()
        print(err[err.index("melstream serve: tritonserver died"):])
        assert returncode != 0
        assert "tritonserver died (killed by signal 9 (SIGKILL))" in err, err[-3000:]
        tail = err.split("The last lines of its log:", 1)[1]
        assert re.search(r"^  \| .*successfully loaded", tail, re.M), err[-3000:]  # Triton's own log lines
        assert_nothing_left(srv, regions)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_server_stops_cleanly(root: Path, signum: int) -> None:
    with serve(root, "--exit-timeout-s", "30") as srv:
        regions = stub_regions(srv.pid)
        t0 = time.monotonic()
        srv.proc.send_signal(signum)
        returncode = srv.proc.wait(timeout=60)
        print(f"serve exited {returncode} {time.monotonic() - t0:.1f} s after {signal.Signals(signum).name}")
        assert returncode == 0, srv.stderr()[-3000:]
        assert "tritonserver stopped cleanly" in srv.stderr()
        assert_nothing_left(srv, regions)
