"""The peer melstream is measured against: what many TTS projects ship, a FastAPI app in one uvicorn process.

    python benchmarks/peer_fastapi.py --port 8100 [--host 127.0.0.1] [--addons addons]

It loads every addon under --addons and builds each one in-process, with the same blocks melstream serves
(``Addon.build(OnnxRuntimeRunner(threads=1))``: ONNX Runtime, one intra-op thread per network call, as a
melstream network model runs them).  Each request runs the voice's ``stream_outputs`` generator in FastAPI's
threadpool (a sync generator in a StreamingResponse) and sends each chunk as a server-sent event the moment
it exists; there is no batching across requests and no admission limit: honest and simple.

It speaks the HTTP wire melstream's own :class:`melstream.client.HttpClient` speaks to Triton, so the same
client measures both (benchmarks/streams.py --peer):

- ``GET /v2/health/ready``: 200 once every voice is built (what :func:`start_peer` polls);
- ``GET /v2/models/stats``: ``{"model_stats": [{"name", "version"}]}``, each voice and its networks
  (``<voice>__<network>``, listed because a client counts a voice servable only when its network models are
  ready; here they run inside the voice);
- ``GET /v2/models/<model>/ready``: 200 for those models, 400 for any other (as Triton answers);
- ``GET /v2/models/<voice>/config``: ``{"name", "parameters": {"addon_json": {"string_value": ...}}}``;
- ``POST /v2/models/<voice>/generate_stream`` with ``{"TEXT": ..., "PACE": ..., "CHUNK_FRAMES": ...}``:
  ``data: {"model_name", "model_version", "MEL": [frames * n_mels floats]}`` per chunk (``MEL`` flat, as
  Triton sends it).  Errors as Triton's: an unknown model is HTTP 404 ``{"error": "Request for unknown model:
  ..."}``; a request whose inputs are wrong is HTTP 400 ``{"error": "[INVALID_ARG] input ...: ..."}``; an
  error once the stream runs (text that cannot be spoken, a fault) is an event ``data: {"error": "[CODE] ..."}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from melstream.errors import InputError
from melstream.serving.voice_model import input_error_detail, parse_inputs
from melstream_client import wire

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADDONS = ROOT / "addons"
#: what the peer's model listing says each model's version is (Triton's repositories here hold version 1)
MODEL_VERSION = "1"
HEALTH_READY_PATH = wire.SERVER_READY_PATH  # what start_peer polls, as Triton answers it


# --- the request's inputs, read by melstream's own parser -------------------------------------------------
class _JsonTensor:
    def __init__(self, value: np.ndarray) -> None:
        self._value = value

    def as_numpy(self) -> np.ndarray:
        return self._value


class _JsonInputs:
    """Just enough of Triton's ``pb_utils`` for :func:`melstream.serving.voice_model.parse_inputs` to read a
    generate_stream JSON body, so the peer refuses exactly what a melstream voice refuses, in its words.
    ``get_input_tensor_by_name(body, name)``: the ``[1]`` array of the input in its wire dtype, or None."""

    @staticmethod
    def get_input_tensor_by_name(body: Mapping[str, Any], name: str) -> _JsonTensor | None:
        if name not in body:
            return None
        inp = next(i for i in wire.INPUTS if i.name == name)
        value = body[name]
        if inp is wire.TEXT:
            if not isinstance(value, str):
                raise InputError(f"input {inp.name} must be {inp.datatype} (a JSON string), got {type(value).__name__}")
            return _JsonTensor(np.array([value.encode("utf-8", "surrogatepass")], dtype=np.object_))
        # a JSON bool is an int to Python: refuse it as Triton's schema does, rather than read true as 1
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"input {inp.name} must be {inp.datatype} (a JSON number), got {json.dumps(value)[:40]}")
        if inp.datatype == "INT32" and (not float(value).is_integer() or not -2**31 <= value < 2**31):
            raise InputError(f"input {inp.name} must be {inp.datatype}, got {value}")
        return _JsonTensor(np.array([value], dtype=inp.numpy_dtype))


def read_inputs(body: Any) -> tuple[bytes | str, float | None, int | None]:
    """``(text, pace, chunk_frames)`` of a generate_stream body, or :class:`InputError` naming the input (unknown
    inputs included, as Triton refuses them)."""
    if not isinstance(body, dict):
        raise InputError(f"the request body must be a JSON object of inputs ({', '.join(i.name for i in wire.INPUTS)}), "
                         f"got {type(body).__name__}")
    unknown = sorted(set(body) - {i.name for i in wire.INPUTS})
    if unknown:
        raise InputError(f"unexpected inference input {', '.join(unknown)}; a voice takes {', '.join(i.name for i in wire.INPUTS)}")
    inputs = parse_inputs(_JsonInputs, body)
    return inputs.text, inputs.pace, inputs.chunk_frames


# --- the app ---------------------------------------------------------------------------------------------
def load_pipelines(addons: Path) -> dict[str, tuple[Any, Any]]:
    """Voice name -> (addon, pipeline built in-process on ONNX Runtime with one thread per call), for every
    addon under ``addons``; each front end warmed up so its first request does not pay loading it."""
    from melstream.addon import discover_addons, load_addon
    from melstream.runners.onnx import OnnxRuntimeRunner

    voices: dict[str, tuple[Any, Any]] = {}
    for path in discover_addons(addons):
        addon = load_addon(path)
        pipeline = addon.build(OnnxRuntimeRunner(threads=1))
        pipeline.inputs_for("Warm up.")
        voices[addon.name] = (addon, pipeline)
    if not voices:
        raise SystemExit(f"--addons {addons}: no addon found (a directory with addon.json per voice)")
    return voices


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({wire.ERROR_KEY: message}, status_code=status)


def _unknown(model: str) -> JSONResponse:
    # Triton's own words: melstream's clients read "Request for unknown model" as NOT_FOUND (UnknownVoiceError)
    return _error(404, f"Request for unknown model: '{model}' is not found")


def _event(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def sse_chunks(voice: str, pipeline: Any, text: bytes | str, *, pace: float | None, chunk_frames: int | None) -> Iterator[bytes]:
    """The server-sent events of one utterance: one per chunk (``MEL`` ``[frames * n_mels]`` flat, ``AUDIO`` from
    a vocoder), or an error event that ends it.  A sync generator: Starlette runs each ``next`` in its threadpool."""
    chunks = pipeline.stream_outputs(text, pace=pace, chunk_frames=chunk_frames)
    try:
        for chunk in chunks:
            event: dict[str, Any] = {"model_name": voice, "model_version": MODEL_VERSION}
            for key, value in chunk.items():
                event[wire.OUTPUTS[key]] = np.asarray(value, np.float32).reshape(-1).tolist()
            yield _event(event)
    except InputError as e:
        yield _event({wire.ERROR_KEY: wire.error_message(wire.INPUT_ERROR, input_error_detail(e))})
    except Exception as e:  # a fault still reaches the client, as an event after the 200 (as Triton's)
        yield _event({wire.ERROR_KEY: wire.error_message(wire.INTERNAL_ERROR, f"{wire.INTERNAL_ERROR_PREFIX}{type(e).__name__}: {e}")})
    finally:
        chunks.close()  # a client gone mid-utterance stops the work here


def make_app(voices: Mapping[str, tuple[Any, Any]]) -> FastAPI:
    """The FastAPI app serving ``voices`` (voice -> (addon, pipeline), as :func:`load_pipelines` gives)."""
    app = FastAPI(title="peer-fastapi", docs_url=None, redoc_url=None, openapi_url=None)
    models = {**{v: v for v in voices},
              **{wire.network_model_name(v, n): v for v, (addon, _) in voices.items() for n in addon.networks}}

    @app.get("/v2/health/live")
    @app.get(HEALTH_READY_PATH)
    def health() -> Response:
        return Response(status_code=200)

    @app.get(wire.MODEL_STATS_PATH)
    def stats() -> JSONResponse:
        return JSONResponse({"model_stats": [{"name": m, "version": MODEL_VERSION} for m in sorted(models)]})

    @app.get("/v2/models/{model}/ready")
    def ready(model: str) -> Response:
        return Response(status_code=200 if model in models else 400)  # Triton: 400 for a model that is not ready

    @app.get("/v2/models/{model}/config")
    def config(model: str) -> JSONResponse:
        if model not in models:
            return _unknown(model)
        if model not in voices:  # a network: it has no config of its own here
            return JSONResponse({"name": model, "parameters": {}})
        addon = voices[model][0]
        return JSONResponse({"name": model, "backend": "python",
                             "parameters": {wire.ADDON_PARAMETER: {"string_value": addon.to_json()}}})

    @app.post("/v2/models/{model}/generate_stream")
    async def generate_stream(model: str, request: Request) -> Response:
        if model not in voices:
            return _unknown(model)
        try:
            body = json.loads(await request.body())
        except ValueError as e:
            return _error(400, wire.error_message(wire.INPUT_ERROR, f"the request body is not JSON: {e}"))
        try:
            text, pace, chunk_frames = read_inputs(body)
        except InputError as e:
            return _error(400, wire.error_message(wire.INPUT_ERROR, input_error_detail(e)))
        return StreamingResponse(sse_chunks(model, voices[model][1], text, pace=pace, chunk_frames=chunk_frames),
                                 media_type="text/event-stream")

    return app


# --- a peer in a subprocess -------------------------------------------------------------------------------
@dataclass
class Peer:
    """A peer running in a subprocess: ``url`` is HOST:PORT for :class:`melstream.client.HttpClient`."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_file: Path | None

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, *, timeout_s: float = 10.0) -> int:
        """Stop it (SIGTERM: uvicorn ends its connections and exits; SIGKILL after ``timeout_s``); its exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        return int(self.process.returncode)


def _log_tail(log_file: Path | None, lines: int = 20) -> str:
    if log_file is None or not log_file.exists():
        return ""
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


def wait_ready(peer: Peer, *, timeout_s: float, interval_s: float = 0.1) -> None:
    """Poll the peer's ready endpoint until it answers 200; RuntimeError if the process exits first or
    ``timeout_s`` passes (with the end of its log)."""
    from melstream.serving.server import wait_answering

    url = f"http://{peer.url}{HEALTH_READY_PATH}"

    def ready() -> bool:
        with urllib.request.urlopen(url, timeout=2) as resp:  # not listening yet: the voices are still being built
            return resp.status == 200

    wait_answering(peer.process, ready, what=f"peer-fastapi at {url}", timeout_s=timeout_s, interval_s=interval_s,
                   log_tail=lambda: _log_tail(peer.log_file), error=RuntimeError)


@contextmanager
def start_peer(addons: Path = DEFAULT_ADDONS, *, log_file: Path | None = None, timeout_s: float = 120.0,
               host: str = "127.0.0.1") -> Iterator[Peer]:
    """Run the peer in a subprocess on a free loopback port, yield it once its ready endpoint answers 200 (polled,
    at most ``timeout_s``), stop it on exit.  Its output goes to ``log_file`` (default: discarded)."""
    from melstream.serving.server import free_port

    port = free_port()
    out: IO[bytes] | int = open(log_file, "wb") if log_file is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--host", host, "--port", str(port),
                                    "--addons", str(addons)], stdout=out, stderr=subprocess.STDOUT)
        peer = Peer(process, host, port, log_file)
        try:
            wait_ready(peer, timeout_s=timeout_s)
            yield peer
        finally:
            peer.stop()
    finally:
        if not isinstance(out, int):
            out.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True, help="HTTP port to listen on")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    ap.add_argument("--addons", type=Path, default=DEFAULT_ADDONS, help="directory of addons, one voice each (default: addons/)")
    args = ap.parse_args(argv)
    import uvicorn

    app = make_app(load_pipelines(args.addons))
    # one process, one event loop, the default threadpool: how such a server is usually run
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
