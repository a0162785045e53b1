"""The service end to end: a real tritonserver, real clients (tritonclient gRPC, HTTP SSE)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import melstream
from melstream.cli import main
from melstream.errors import ClientError
from melstream.serving.repo import build_repository
from melstream.serving.server import TritonServer
from melstream_client import Client, HttpClient
from tests.servers import network_calls_key, poll, quiet, start_server, streams_key, wait_for

VOICES = ["fastvoice", "tacovoice"]
TEXT = "Hello from melstream, streaming 80 mel bins at a time."
LONG = " ".join(["A long paragraph keeps the server busy for a good while, frame after frame."] * 20)


class RawStream:
    """A plain tritonclient gRPC stream, as any Triton user would write it."""

    def __init__(self, server: TritonServer) -> None:
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put((result, error)))

    def send(self, voice: str, text: Any, *, dtype: str = "BYTES", chunk_frames: int | None = None, pace: float | None = None) -> None:
        if dtype == "BYTES":
            inp = grpcclient.InferInput("TEXT", [1], "BYTES")
            inp.set_data_from_numpy(np.array([text.encode()], dtype=np.object_))
        else:
            inp = grpcclient.InferInput("TEXT", [1], dtype)
            inp.set_data_from_numpy(np.array([text], dtype=np.float32))
        inputs = [inp]
        if chunk_frames is not None:
            c = grpcclient.InferInput("CHUNK_FRAMES", [1], "INT32")
            c.set_data_from_numpy(np.array([chunk_frames], np.int32))
            inputs.append(c)
        if pace is not None:
            p = grpcclient.InferInput("PACE", [1], "FP32")
            p.set_data_from_numpy(np.array([pace], np.float32))
            inputs.append(p)
        self.client.async_stream_infer(voice, inputs, enable_empty_final_response=True)

    def next(self) -> tuple[np.ndarray | None, str | None, bool]:
        """(MEL or None, error message or None, final flag) of the next response."""
        result, error = self.responses.get(timeout=60)
        if error is not None:
            return None, str(error), True  # an error is its request's last response
        final = result.get_response().parameters["triton_final_response"].bool_param
        return (None if final else result.as_numpy("MEL")), None, final

    def collect(self) -> tuple[list[np.ndarray], list[str]]:
        chunks, errors = [], []
        while True:
            mel, err, final = self.next()
            if err is not None:
                errors.append(err)
            elif not final:
                assert mel is not None
                chunks.append(mel)
            if final:
                return chunks, errors

    def close(self, *, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


@pytest.fixture
def raw(server: TritonServer) -> Iterator[RawStream]:
    s = RawStream(server)
    yield s
    s.close()


@pytest.fixture(scope="module")
def references(root: Path) -> dict[str, melstream.StreamablePipeline]:
    return {v: melstream.load_addon(root / "addons" / v).build() for v in VOICES}


@pytest.mark.parametrize("voice", VOICES)
def test_plain_grpc_stream_equals_in_process(raw: RawStream, voice: str, references: dict[str, Any]) -> None:
    raw.send(voice, TEXT)
    chunks, errors = raw.collect()
    assert not errors and len(chunks) > 1
    assert all(c.dtype == np.float32 and c.ndim == 2 and c.shape[1] == 80 and len(c) > 0 for c in chunks)
    expected = references[voice].synthesize(TEXT)
    assert float(np.abs(np.concatenate(chunks) - expected).max()) <= 1e-4


@pytest.mark.parametrize("voice", VOICES)
def test_http_generate_stream_sse(server: TritonServer, voice: str, references: dict[str, Any]) -> None:
    conn = http.client.HTTPConnection("localhost", server.http_port, timeout=60)
    text = "hello, and welcome to melstream"
    conn.request("POST", f"/v2/models/{voice}/generate_stream", body=json.dumps({"TEXT": text}))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    events = [json.loads(line[len(b"data: "):]) for line in resp.read().splitlines() if line.startswith(b"data: ")]
    conn.close()
    mel = np.concatenate([np.asarray(e["MEL"], np.float32).reshape(-1, 80) for e in events])
    assert len(events) > 1
    assert float(np.abs(mel - references[voice].synthesize(text)).max()) <= 1e-4
    client_mel = HttpClient(server.http_url).synthesize(text, voice=voice)
    np.testing.assert_array_equal(client_mel, mel)


def test_http_error_event(server: TritonServer) -> None:
    with pytest.raises(ClientError, match="TextError: text has nothing to speak"):
        HttpClient(server.http_url).synthesize("   ", voice="fastvoice")


@pytest.mark.parametrize("voice", VOICES)
def test_client_library_stream_and_synthesize(server: TritonServer, voice: str, references: dict[str, Any]) -> None:
    with Client(server.grpc_url) as client:
        chunks = list(client.stream(TEXT, voice=voice, chunk_frames=5))
        assert all(len(c) == 5 for c in chunks[:-1])
        whole = client.synthesize(TEXT, voice=voice)
    assert float(np.abs(np.concatenate(chunks) - whole).max()) <= 1e-4  # other chunk size, same frames
    assert float(np.abs(whole - references[voice].synthesize(TEXT)).max()) <= 1e-4


@pytest.mark.parametrize("voice", VOICES)
def test_remote_stack_equals_server_pipeline(server: TritonServer, voice: str, references: dict[str, Any], root: Path) -> None:
    with Client(server.grpc_url) as client:
        assert json.loads(client.addon_json(voice)) == json.loads((root / "addons" / voice / "addon.json").read_text())
        remote = client.remote_pipeline(voice)  # rebuilt from the server's addon JSON alone
        assert remote.describe() == references[voice].describe()  # the block tree of the addon in this checkout
        np.testing.assert_allclose(remote.synthesize(TEXT), client.synthesize(TEXT, voice=voice), atol=1e-5)


def test_voices_lists_both(server: TritonServer, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(server.grpc_url) as client:
        assert client.voices() == VOICES
    assert main(["voices", "--url", server.grpc_url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("fastvoice\t1.2.0\t") and "\ntacovoice\t1.1.0\t" in out


def test_both_voices_stream_concurrently(server: TritonServer, references: dict[str, Any]) -> None:
    jobs = [(v, f"Stream number {i} of voice {v}.") for i in range(4) for v in VOICES]
    results: dict[int, np.ndarray | BaseException] = {}

    def run(i: int, voice: str, text: str) -> None:
        try:
            with Client(server.grpc_url) as client:
                results[i] = client.synthesize(text, voice=voice, chunk_frames=4)
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i, v, t)) for i, (v, t) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i, (voice, text) in enumerate(jobs):
        got = results[i]
        assert isinstance(got, np.ndarray), got
        assert float(np.abs(got - references[voice].synthesize(text)).max()) <= 1e-4


def test_error_reaches_the_client_and_the_stream_keeps_serving(raw: RawStream) -> None:
    raw.send("fastvoice", "")
    chunks, errors = raw.collect()
    assert chunks == [] and len(errors) == 1 and "TextError: text has nothing to speak: it is empty" in errors[0]
    raw.send("fastvoice", "a" * 10001)
    assert "text is 10001 characters; the limit is 10000" in raw.collect()[1][0]
    raw.send("fastvoice", "ok", pace=-1.0)
    assert "input PACE must be a finite number from 0.25 to 4.0" in raw.collect()[1][0]
    raw.send("fastvoice", "Still serving on the same stream.")
    chunks, errors = raw.collect()
    assert not errors and chunks


def test_wrong_tensor_type_is_refused(raw: RawStream) -> None:
    raw.send("fastvoice", 1.0, dtype="FP32")
    mel, err, final = raw.next()  # Triton refuses it before the model: one error, no final response
    assert mel is None and err is not None
    assert "input 'TEXT' data-type is 'FP32', but model 'fastvoice' expects 'BYTES'" in err
    raw.send("fastvoice", "The stream still serves.")
    chunks, errors = raw.collect()
    assert chunks and not errors


def test_unknown_voice(server: TritonServer) -> None:
    with Client(server.grpc_url) as client, pytest.raises(ClientError, match="nosuchvoice"):
        client.synthesize("x", voice="nosuchvoice")


# --- cancellation: the server stops working for a stream nobody listens to ---------------------------------
#
# Each test streams LONG at one frame per chunk (about 12 000 chunks, one decoder call each, if nobody
# stopped it), walks away after a few chunks, then waits (with a deadline) for that stream's own outcome,
# melstream_streams_total{outcome="cancelled"} + 1: a server that stalls or finishes the text fails here.
# Only then is the work counted: the voice model sends every chunk it makes, so the decoder calls are at most
# the chunks it sent (the client's, plus those in flight when it left) + one.

DECODER_CALLS = network_calls_key("fastvoice", "decoder")
SENT_FRAMES = 'melstream_frames_total{voice="fastvoice"}'
# chunks the server may send between the client's last read and its seeing the cancellation: at one frame
# per chunk a chunk is one decoder call, so this is a fraction of a second of latency, and under 2% of the text
MAX_IN_FLIGHT = 200


def cancelled_stream_work(server: TritonServer, before: dict[str, float]) -> tuple[int, int]:
    """(decoder calls, chunks sent) for the one fastvoice stream that began after ``before``, once its own
    cancellation is recorded (an AssertionError if it is not within 30 s, or if it completed instead)."""
    after = wait_for(server, streams_key("fastvoice", "cancelled"), before.get(streams_key("fastvoice", "cancelled"), 0.0) + 1)
    for outcome in ("cancelled", "completed", "error"):
        expected = 1 if outcome == "cancelled" else 0
        assert after.get(streams_key("fastvoice", outcome), 0.0) - before.get(streams_key("fastvoice", outcome), 0.0) == expected, outcome
    sent = int(after[SENT_FRAMES] - before.get(SENT_FRAMES, 0.0))  # one frame per chunk
    # the voice exports its network calls as a stream ends, before the stream's outcome: they are all counted
    return int(after.get(DECODER_CALLS, 0.0) - before.get(DECODER_CALLS, 0.0)), sent


def assert_stopped_within_a_chunk(calls: int, sent: int, received: int) -> None:
    assert received <= sent <= received + MAX_IN_FLIGHT, f"the server sent {sent} chunks; the client took {received} and left"
    assert sent <= calls <= sent + 1, f"{calls} decoder calls for {sent} chunks sent: work went on after the cancellation"


def test_cancel_stops_the_servers_work_within_a_chunk(server: TritonServer) -> None:
    before = quiet(server, "fastvoice")
    stream = RawStream(server)
    stream.send("fastvoice", LONG, chunk_frames=1)  # one decoder call per frame: thousands in all
    received = 0
    while received < 5:
        mel, err, _ = stream.next()
        assert err is None
        received += mel is not None
    stream.close(cancel=True)
    while not stream.responses.empty():  # chunks that had arrived but were not read yet
        received += stream.responses.get()[0] is not None
    calls, sent = cancelled_stream_work(server, before)
    assert_stopped_within_a_chunk(calls, sent, received)
    with Client(server.grpc_url) as client:  # and the server keeps serving
        assert len(client.synthesize("After a cancel.", voice="fastvoice")) > 0


def test_client_library_cancels_an_abandoned_stream(server: TritonServer) -> None:
    before = quiet(server, "fastvoice")
    with Client(server.grpc_url) as client:
        it = client.stream(LONG, voice="fastvoice", chunk_frames=1)
        for _ in range(3):
            next(it)
        it.close()  # the caller walks away
    calls, sent = cancelled_stream_work(server, before)
    assert_stopped_within_a_chunk(calls, sent, 3)


def test_disconnected_client_stops_the_servers_work(server: TritonServer) -> None:
    before = quiet(server, "fastvoice")
    script = ("import sys; from melstream_client import Client\n"
              f"it = Client('{server.grpc_url}').stream({LONG!r}, voice='fastvoice', chunk_frames=1)\n"
              "for mel in it:\n    print(len(mel), flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    for _ in range(3):
        assert proc.stdout.readline()
    proc.kill()  # no goodbye: the TCP connection just drops
    proc.wait()
    calls, sent = cancelled_stream_work(server, before)
    assert_stopped_within_a_chunk(calls, sent, 3)


def test_a_voice_that_fails_to_load_does_not_stop_the_other(root: Path, tmp_path: Path) -> None:
    shutil.copytree(root / "addons", tmp_path / "addons")
    build_repository(tmp_path / "addons", tmp_path / "repo")
    (tmp_path / "addons" / "tacovoice" / "decoder_step.onnx").write_bytes(b"not an onnx file")
    srv = start_server(tmp_path / "repo", tmp_path / "triton.log")
    try:
        with Client(srv.grpc_url) as client:
            assert client.voices() == ["fastvoice"]
            assert len(client.synthesize("Still here.", voice="fastvoice")) > 0
            with pytest.raises(ClientError, match="tacovoice"):
                client.synthesize("x", voice="tacovoice")
    finally:
        srv.stop()


def processes_in_group(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # field 5 of stat is the process group; zombies are gone already
            pids.append(int(stat.parent.name))
    return pids


def test_stopping_a_crashed_server_ends_its_backend_stubs(root: Path, tmp_path: Path) -> None:
    srv = start_server(root / "model_repository", tmp_path / "triton.log")
    pgid = srv.pid
    assert pgid is not None
    try:
        stubs = [p for p in processes_in_group(pgid) if p != pgid]
        assert len(stubs) >= 7  # one stub per model: 2 voices + 5 networks
        # After Triton segfaulted under load, its stubs were seen to live on, orphaned; stop() now ends
        # the server's whole process group.  Stopped (SIGSTOP) stubs outlive the killed server: without
        # stop()'s os.killpg they are still here below (checked; tests/unit/test_server_process.py too).
        for pid in stubs:
            os.kill(pid, signal.SIGSTOP)
        os.kill(pgid, signal.SIGKILL)  # the crash
        srv.stop()
        # SIGKILL is delivered asynchronously: poll until the kernel has reaped them
        assert poll(lambda: processes_in_group(pgid), lambda pids: not pids, timeout_s=10) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # never leak stubs from this test, pass or fail


def test_http_client_that_hangs_up_stops_the_servers_work(server: TritonServer) -> None:
    before = quiet(server, "fastvoice")
    conn = http.client.HTTPConnection("localhost", server.http_port, timeout=60)
    conn.request("POST", "/v2/models/fastvoice/generate_stream", body=json.dumps({"TEXT": LONG, "CHUNK_FRAMES": 1}))
    resp = conn.getresponse()
    events = 0
    while events < 3:
        events += resp.readline().startswith(b"data: ")
    assert conn.sock is not None
    conn.sock.close()  # hang up mid-stream
    conn.close()
    calls, sent = cancelled_stream_work(server, before)
    assert_stopped_within_a_chunk(calls, sent, events)


def test_a_voice_whose_stack_ends_in_a_vocoder_streams_audio(root: Path, tmp_path: Path) -> None:
    addons = tmp_path / "addons"
    shutil.copytree(root / "addons" / "fastvoice", addons / "fastvoice")
    cfg = addons / "fastvoice" / "addon.json"
    data = json.loads(cfg.read_text())
    data["stack"].append({"type": "GriffinLim", "iterations": 4})
    cfg.write_text(json.dumps(data))
    build_repository(addons, tmp_path / "repo")
    expected = [c for c in melstream.load_addon(addons / "fastvoice").build().stream_outputs(TEXT)]
    audio = np.concatenate([c["audio"] for c in expected])
    srv = start_server(tmp_path / "repo", tmp_path / "triton.log")
    try:
        with Client(srv.grpc_url) as client:
            got = list(client.stream_outputs(TEXT, voice="fastvoice"))
        assert all(set(c) == {"mel", "audio"} for c in got)
        assert float(np.abs(np.concatenate([c["audio"] for c in got]) - audio).max()) <= 1e-4
        over_http = list(HttpClient(srv.http_url).stream_outputs(TEXT, voice="fastvoice"))
        assert float(np.abs(np.concatenate([c["audio"] for c in over_http]) - audio).max()) <= 1e-4
        wav = tmp_path / "x.wav"
        assert main(["synth", TEXT, "--voice", "fastvoice", "--url", srv.grpc_url, "--out", str(wav)]) == 0
        with wave.open(str(wav)) as f:
            assert f.getnframes() == len(audio)
    finally:
        srv.stop()
