"""One utterance over the wire, timed by the code that reads it, and the correctness check.

gRPC: the plain Triton stub (``ModelStreamInfer``) with one request and the request side closed, so
the response iterator ends when Triton has sent the last response.  Every response is timestamped in
the loop that iterates it: no callback thread and no queue between the wire and the clock (under
locust a thread is a greenlet, and a queue hop would add scheduling delay to every chunk).

HTTP: ``POST /v2/models/<voice>/generate_stream`` on a kept-alive ``http.client`` connection,
server-sent events read line by line; an event's time is when its ``data:`` line has arrived.

The wire's names, request encoding, server-sent event parsing, chunk decoding and error texts are
:mod:`melstream.wire`'s, the same the clients use.

Nothing here imports locust or gevent: under locust the sockets are gevent's, outside it they are
plain, and the unit tests use the pure parts without a server.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melstream_client import wire


class StreamError(Exception):
    """A failed utterance; the message is the server's (Triton's) text where there is one."""


@dataclass
class Utterance:
    """What the client saw: chunks in order, each chunk's arrival (seconds from the request), the time
    of the final response (or of the stream's end), and the error if the stream failed."""

    chunks: list[np.ndarray] = field(default_factory=list)
    arrivals_s: list[float] = field(default_factory=list)
    total_s: float = 0.0
    error: str | None = None

    @property
    def frames(self) -> list[int]:
        return [len(c) for c in self.chunks]


@dataclass(frozen=True)
class VoiceInfo:
    """What the load test needs of a voice, from the addon JSON in its model config."""

    name: str
    addon_json: str
    frame_s: float  # seconds of speech per mel frame: hop_length / sample_rate
    n_mels: int


def voice_info(name: str, addon_json: str) -> VoiceInfo:
    audio = _spec(name, addon_json).audio
    return VoiceInfo(name, addon_json, audio.hop_length / audio.sample_rate, audio.n_mels)


def _spec(name: str, addon_json: str) -> Any:
    """The voice's addon as plain data (nothing built, no component imported)."""
    from melstream.errors import AddonError
    from melstream_client.spec import addon_spec_from_json

    try:
        return addon_spec_from_json(addon_json, source=f"voice {name!r}")
    except AddonError as e:
        raise StreamError(str(e)) from None


# --- gRPC -------------------------------------------------------------------------------------
def grpc_request(voice: str, text: str, *, chunk_frames: int | None = None) -> Any:
    """The ModelInferRequest that melstream.client sends: TEXT BYTES[1], optional CHUNK_FRAMES, and the
    empty final response switched on so the end of an utterance is explicit."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=voice, id=uuid.uuid4().hex)
    for inp, value in wire.request_tensors(text, chunk_frames=chunk_frames):
        request.inputs.add(name=inp.name, datatype=inp.datatype, shape=list(value.shape))
        request.raw_input_contents.append(wire.raw_contents(inp, value))  # in input order
    request.parameters[wire.EMPTY_FINAL_RESPONSE_PARAMETER].bool_param = True
    return request


def _grpc_mel(response: Any, n_mels: int) -> np.ndarray | None:
    """The response's MEL chunk (raw little-endian FP32 of the shape it declares), or None for the final response."""
    for i, out in enumerate(response.outputs):
        if out.name == wire.MEL:
            if out.datatype != "FP32":
                raise StreamError(f"{wire.MEL} datatype is {out.datatype}, expected FP32")
            mel = np.frombuffer(response.raw_output_contents[i], dtype="<f4").reshape(tuple(out.shape))
            chunk = wire.decode_chunk({wire.MEL: mel}, n_mels=n_mels)
            return None if chunk is None else chunk["mel"]
    return None


class GrpcVoices:
    """A gRPC channel to one server: voice listing, voice configs, and utterances."""

    def __init__(self, url: str) -> None:
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        self.url = url
        # Triton's own client lifts gRPC's 4 MiB cap the same way: a whole paragraph in one response is larger.
        self.channel = grpc.insecure_channel(url, options=[("grpc.max_send_message_length", -1),
                                                          ("grpc.max_receive_message_length", -1)])
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def addon_json(self, voice: str, *, timeout_s: float = 30.0) -> str:
        import grpc
        from google.protobuf.json_format import MessageToDict
        from tritonclient.grpc import service_pb2

        try:
            config = self.stub.ModelConfig(service_pb2.ModelConfigRequest(name=voice), timeout=timeout_s).config
        except grpc.RpcError as e:
            raise StreamError(_rpc_message(e)) from None
        try:  # the config as tritonclient's as_json gives it: the shape wire.py reads
            return wire.addon_json_from_config(MessageToDict(config, preserving_proto_field_name=True),
                                               model=f"model {voice!r} at {self.url}")
        except wire.WireError as e:
            raise StreamError(str(e)) from None

    def voices(self, *, timeout_s: float = 30.0) -> list[str]:
        import grpc
        from tritonclient.grpc import service_pb2

        try:
            stats = self.stub.ModelStatistics(service_pb2.ModelStatisticsRequest(), timeout=timeout_s).model_stats
            ready = {m.name for m in stats
                     if self.stub.ModelReady(service_pb2.ModelReadyRequest(name=m.name), timeout=timeout_s).ready}
        except grpc.RpcError as e:
            raise StreamError(f"cannot list voices at {self.url}: {_rpc_message(e)}") from None
        networks = {}
        for name in sorted(ready):
            if not wire.is_network_model(name):
                try:
                    networks[name] = list(_spec(name, self.addon_json(name, timeout_s=timeout_s)).networks)
                except StreamError:
                    continue  # a model that is not a melstream voice
        return wire.servable_voices(ready, networks)

    def utterance(self, voice: str, text: str, *, n_mels: int, chunk_frames: int | None = None, timeout_s: float = 60.0,
                  clock: Callable[[], float] = time.perf_counter) -> Utterance:
        import grpc

        request = grpc_request(voice, text, chunk_frames=chunk_frames)
        out = Utterance()
        t0 = clock()
        # the iterator of one request ends the request side: Triton ends the stream after that request's last response
        call = self.stub.ModelStreamInfer(iter([request]), timeout=timeout_s)
        finished = False
        try:
            for response in call:
                now = clock() - t0
                if response.error_message:
                    out.error = response.error_message
                    continue  # Triton may still send the final flag; the stream ends on its own
                mel = _grpc_mel(response.infer_response, n_mels)
                if mel is not None:
                    out.chunks.append(mel)
                    out.arrivals_s.append(now)
                if response.infer_response.parameters[wire.FINAL_RESPONSE_PARAMETER].bool_param:
                    out.total_s = now
                    finished = True
            if not finished:
                out.total_s = clock() - t0
                if out.error is None:
                    out.error = "the stream ended without a final response"
            finished = True
        except grpc.RpcError as e:
            out.total_s = clock() - t0
            out.error = _rpc_message(e)
        except (StreamError, wire.WireError) as e:
            out.total_s = clock() - t0
            out.error = str(e)
        finally:
            if not finished:  # a killed user (locust stop) or a bad response: tell the server to stop the work
                call.cancel()
        return out


def _rpc_message(e: Any) -> str:
    try:
        return f"{e.code().name}: {e.details()}"
    except Exception:  # noqa: BLE001 - an RpcError that is not a Call
        return str(e)


# --- HTTP SSE ---------------------------------------------------------------------------------
class HttpVoices:
    """One kept-alive HTTP/1.1 connection to a server (Triton answers generate_stream chunked, so it stays open)."""

    def __init__(self, url: str, *, timeout_s: float = 60.0) -> None:
        hostport = url.removeprefix("http://").rstrip("/")
        host, _, port = hostport.partition(":")
        self.url = hostport
        self.conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout_s)

    def close(self) -> None:
        self.conn.close()

    def _json(self, method: str, path: str, body: str | None = None) -> Any:
        try:
            self.conn.request(method, path, body=body)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            raise StreamError(f"http://{self.url}{path}: {type(e).__name__}: {e}") from None
        if resp.status != 200:
            raise StreamError(wire.http_error_message(resp.status, data))
        return json.loads(data)

    def _ready(self, model: str) -> bool:
        try:
            self.conn.request("GET", wire.model_ready_path(model))
            resp = self.conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException) as e:
            self.conn.close()
            raise StreamError(f"http://{self.url}: {type(e).__name__}: {e}") from None
        return resp.status == 200

    def addon_json(self, voice: str) -> str:
        config = self._json("GET", wire.model_config_path(voice))
        try:
            return wire.addon_json_from_config(config, model=f"model {voice!r} at http://{self.url}")
        except wire.WireError as e:
            raise StreamError(str(e)) from None

    def voices(self) -> list[str]:
        ready = {m for m in wire.loaded_models(self._json("GET", wire.MODEL_STATS_PATH)) if self._ready(m)}
        networks = {}
        for name in sorted(ready):
            if not wire.is_network_model(name):
                try:
                    networks[name] = list(_spec(name, self.addon_json(name)).networks)
                except StreamError:
                    continue  # a model that is not a melstream voice
        return wire.servable_voices(ready, networks)

    def utterance(self, voice: str, text: str, *, n_mels: int, chunk_frames: int | None = None, timeout_s: float = 60.0,
                  clock: Callable[[], float] = time.perf_counter) -> Utterance:
        out = Utterance()
        self.conn.timeout = timeout_s  # per socket operation: a stalled stream fails after timeout_s without a byte
        t0 = clock()
        clean = False
        try:
            self.conn.request("POST", wire.generate_stream_path(voice), body=wire.request_json(text, chunk_frames=chunk_frames),
                              headers=wire.GENERATE_STREAM_HEADERS)
            resp = self.conn.getresponse()
            if resp.status != 200:
                out.error = wire.http_error_message(resp.status, resp.read())
            else:
                for arrival, event in wire.timed_sse_events(resp, lambda: clock() - t0):
                    error = wire.event_error(event)
                    if error is not None:
                        out.error = error
                        continue
                    chunk = wire.decode_chunk(event, n_mels=n_mels)
                    if chunk is not None:
                        out.chunks.append(chunk["mel"])
                        out.arrivals_s.append(arrival)
            out.total_s = clock() - t0
            clean = True
        except (OSError, http.client.HTTPException, ValueError) as e:
            out.total_s = clock() - t0
            out.error = f"{type(e).__name__}: {e}"
        finally:
            if not clean:  # mid-stream: closing the connection is how an HTTP client cancels (the server stops the work)
                self.conn.close()
        return out


# --- correctness ------------------------------------------------------------------------------
def check_shape(chunks: list[np.ndarray], n_mels: int) -> str | None:
    """Why the chunks are malformed, or None: each a non-empty ``[n, n_mels]`` float32 array of finite values."""
    if not chunks:
        return "no chunks"
    for i, c in enumerate(chunks):
        if c.dtype != np.float32 or c.ndim != 2 or c.shape[1] != n_mels or len(c) == 0:
            return f"chunk {i} is {c.dtype} {list(c.shape)}, expected float32 [n>0, {n_mels}]"
        if not np.isfinite(c).all():
            return f"chunk {i} has NaN or infinite values"
    return None


def check_equal(chunks: list[np.ndarray], reference: np.ndarray, atol: float) -> tuple[str | None, float]:
    """(why the concatenated chunks differ from the reference, or None; max |difference|)."""
    mel = np.concatenate(chunks)
    if mel.shape != reference.shape:
        return f"{len(mel)} frames, the reference has {len(reference)}", float("inf")
    diff = float(np.abs(mel - reference).max()) if mel.size else 0.0
    if not diff <= atol:
        return f"max |diff| {diff:.3g} > {atol:g} over {len(mel)} frames", diff
    return None, diff


class ReferenceWorker:
    """The client side of ``loadtests/reference.py``: a child process that synthesizes references.

    Plain ``subprocess``: under locust it is gevent's, whose pipes yield to the loop while the child works."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def synthesize(self, addon_dir: Path, text: str) -> np.ndarray:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("reference.py"))],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps({"addon": str(addon_dir), "text": text}).encode() + b"\n")
            proc.stdin.flush()
            header = json.loads(proc.stdout.readline() or b'{"error": "the reference process exited"}')
            if "error" in header:
                raise StreamError(f"local reference: {header['error']}")
            shape = tuple(int(d) for d in header["shape"])
            data = proc.stdout.read(4 * int(np.prod(shape)))
        except OSError as e:
            raise StreamError(f"local reference process: {e}") from None
        return np.frombuffer(data, dtype="<f4").reshape(shape)

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()  # the worker exits at the end of its input
            self._proc.wait(timeout=10)
            self._proc = None


class References:
    """Reference mels per (voice, text), computed once when first needed and kept.

    ``local``: the voice's addon from ``addons_dir``, synthesized in a child process
    (:class:`ReferenceWorker`): an answer independent of the server, used when the local addon's JSON
    equals the server's (a server built from this checkout loads these very ONNX files).  Otherwise
    ``server``: the server under test asked for the whole utterance in one response (``CHUNK_FRAMES=0``),
    which checks that streaming under load gives what one whole request gives.
    """

    def __init__(self, addons_dir: Path | None) -> None:
        self.addons_dir = addons_dir
        self.worker = ReferenceWorker()
        self._mels: dict[tuple[str, str, str], np.ndarray] = {}
        self._sources: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()  # one reference at a time: the same (voice, text) is computed once

    def source(self, info: VoiceInfo) -> str:
        """``"local"`` or ``"server"`` for this voice."""
        key = (info.name, info.addon_json)
        if key not in self._sources:
            self._sources[key] = "server"
            if self.addons_dir is not None and (self.addons_dir / info.name / "addon.json").is_file():
                from melstream_client.spec import read_addon_spec

                try:
                    if read_addon_spec(self.addons_dir / info.name).to_json() == info.addon_json:
                        self._sources[key] = "local"
                except Exception:  # noqa: BLE001 - an unreadable local addon is simply not a reference
                    pass
        return self._sources[key]

    def get(self, info: VoiceInfo, text: str, *, server: Callable[[], np.ndarray]) -> tuple[np.ndarray, str]:
        """(reference mel, source).  ``server`` fetches the whole utterance from the server under test."""
        with self._lock:
            source = self.source(info)
            key = (source, info.addon_json, text)
            if key not in self._mels:
                if source == "local":
                    assert self.addons_dir is not None
                    self._mels[key] = self.worker.synthesize(self.addons_dir / info.name, text)
                else:
                    self._mels[key] = server()
            return self._mels[key], source

    def close(self) -> None:
        self.worker.close()
