"""One utterance over the wire, timed by the code that reads it, and the correctness check.

gRPC: the plain Triton stub (``ModelStreamInfer``) with one request and the request side closed, so
the response iterator ends when Triton has sent the last response.  Every response is timestamped in
the loop that iterates it: no callback thread and no queue between the wire and the clock (under
locust a thread is a greenlet, and a queue hop would add scheduling delay to every chunk).

HTTP: ``POST /v2/models/<voice>/generate_stream`` on a kept-alive ``http.client`` connection,
server-sent events read line by line; an event's time is when its ``data:`` line has arrived.

Nothing here imports locust or gevent: under locust the sockets are gevent's, outside it they are
plain, and the unit tests use the pure parts without a server.
"""

from __future__ import annotations

import http.client
import json
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from melstream.runners.base import servable_voices


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
    from melstream.addon import addon_from_json

    audio = addon_from_json(addon_json, source=f"voice {name!r}").audio
    return VoiceInfo(name, addon_json, audio.hop_length / audio.sample_rate, audio.n_mels)


# --- gRPC -------------------------------------------------------------------------------------
def grpc_request(voice: str, text: str, *, chunk_frames: int | None = None) -> Any:
    """The ModelInferRequest that melstream.client sends: TEXT BYTES[1], optional CHUNK_FRAMES, and the
    empty final response switched on so the end of an utterance is explicit."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=voice, id=uuid.uuid4().hex)
    data = text.encode("utf-8")
    request.inputs.add(name="TEXT", datatype="BYTES", shape=[1])  # data in raw_input_contents, in input order
    request.raw_input_contents.append(struct.pack("<I", len(data)) + data)  # Triton's BYTES element: length, then bytes
    if chunk_frames is not None:
        request.inputs.add(name="CHUNK_FRAMES", datatype="INT32", shape=[1])
        request.raw_input_contents.append(np.array([chunk_frames], "<i4").tobytes())
    request.parameters["triton_enable_empty_final_response"].bool_param = True
    return request


def _grpc_mel(response: Any) -> np.ndarray | None:
    for i, out in enumerate(response.outputs):
        if out.name == "MEL":
            if out.datatype != "FP32":
                raise StreamError(f"MEL datatype is {out.datatype}, expected FP32")
            return np.frombuffer(response.raw_output_contents[i], dtype="<f4").reshape(tuple(out.shape))
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
        from tritonclient.grpc import service_pb2

        try:
            config = self.stub.ModelConfig(service_pb2.ModelConfigRequest(name=voice), timeout=timeout_s).config
        except grpc.RpcError as e:
            raise StreamError(_rpc_message(e)) from None
        if "addon_json" not in config.parameters:
            raise StreamError(f"model {voice!r} at {self.url} is not a melstream voice (no addon_json parameter)")
        return str(config.parameters["addon_json"].string_value)

    def voices(self, *, timeout_s: float = 30.0) -> list[str]:
        import grpc
        from tritonclient.grpc import service_pb2

        from melstream.addon import addon_from_json

        try:
            index = self.stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=timeout_s).models
        except grpc.RpcError as e:
            raise StreamError(f"cannot list voices at {self.url}: {_rpc_message(e)}") from None
        networks = {}
        for m in index:
            if m.state == "READY" and "__" not in m.name:
                try:
                    networks[m.name] = list(addon_from_json(self.addon_json(m.name, timeout_s=timeout_s)).networks)
                except StreamError:
                    continue  # a model that is not a melstream voice
        return servable_voices({m.name for m in index if m.state == "READY"}, networks)

    def utterance(self, voice: str, text: str, *, chunk_frames: int | None = None, timeout_s: float = 60.0,
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
                mel = _grpc_mel(response.infer_response)
                if mel is not None:
                    out.chunks.append(mel)
                    out.arrivals_s.append(now)
                if response.infer_response.parameters["triton_final_response"].bool_param:
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
        except StreamError as e:
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
            raise StreamError(_http_error(resp.status, data))
        return json.loads(data)

    def addon_json(self, voice: str) -> str:
        config = self._json("GET", f"/v2/models/{voice}/config")
        try:
            return str(config["parameters"]["addon_json"]["string_value"])
        except KeyError:
            raise StreamError(f"model {voice!r} at http://{self.url} is not a melstream voice (no addon_json parameter)") from None

    def voices(self) -> list[str]:
        from melstream.addon import addon_from_json

        index = self._json("POST", "/v2/repository/index", "{}")
        networks = {}
        for m in index:
            if m.get("state") == "READY" and "__" not in m["name"]:
                try:
                    networks[m["name"]] = list(addon_from_json(self.addon_json(m["name"])).networks)
                except StreamError:
                    continue
        return servable_voices({m["name"] for m in index if m.get("state") == "READY"}, networks)

    def utterance(self, voice: str, text: str, *, n_mels: int, chunk_frames: int | None = None, timeout_s: float = 60.0,
                  clock: Callable[[], float] = time.perf_counter) -> Utterance:
        body: dict[str, object] = {"TEXT": text}
        if chunk_frames is not None:
            body["CHUNK_FRAMES"] = chunk_frames
        out = Utterance()
        self.conn.timeout = timeout_s  # per socket operation: a stalled stream fails after timeout_s without a byte
        t0 = clock()
        clean = False
        try:
            self.conn.request("POST", f"/v2/models/{voice}/generate_stream", body=json.dumps(body),
                              headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
            resp = self.conn.getresponse()
            if resp.status != 200:
                out.error = _http_error(resp.status, resp.read())
            else:
                for arrival, event in sse_events(resp.readline, lambda: clock() - t0):
                    if "error" in event:
                        out.error = str(event["error"])
                    elif "MEL" in event:
                        out.chunks.append(np.asarray(event["MEL"], dtype=np.float32).reshape(-1, n_mels))
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


def _http_error(status: int, body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}"


def sse_events(readline: Callable[[], bytes], now: Callable[[], float]) -> Iterator[tuple[float, dict[str, Any]]]:
    """``(arrival, event)`` per server-sent event: ``data:`` lines (joined) parsed as a JSON object; the
    arrival is taken when the event's first ``data:`` line has been read, before any parsing."""
    data: list[str] = []
    arrival = 0.0
    while True:
        line = readline()
        if not line:
            break
        text = line.decode("utf-8").rstrip("\r\n")
        if text.startswith("data:"):
            if not data:
                arrival = now()
            data.append(text[5:].lstrip())
        elif text == "" and data:
            yield arrival, _event(data)
            data = []
    if data:
        yield arrival, _event(data)


def _event(data: list[str]) -> dict[str, Any]:
    event = json.loads("\n".join(data))
    if not isinstance(event, dict):
        raise ValueError(f"server-sent event is not a JSON object: {data[0][:80]!r}")
    return event


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
                from melstream.addon import load_addon

                try:
                    if load_addon(self.addons_dir / info.name).to_json() == info.addon_json:
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
