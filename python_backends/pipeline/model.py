"""Triton Python-backend decoupled model: one voice (addon) streaming MEL (and AUDIO) chunks as they exist.

Generated into model_repository/<addon>/1/model.py by `melstream build-repo`.  The addon JSON
comes from this model's config (parameter addon_json); networks run as Triton models through BLS.
Each request (stream) runs in its own worker thread, so execute() returns at once.
"""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils

from melstream.addon import addon_from_json
from melstream.errors import MelstreamError, TextError
from melstream.runners.triton_bls import TritonBLSRunner

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL

# Triton's own metrics count requests and time whole executions; a stream's listener cares about
# what they cannot see: how soon the first chunk went out and how many chunks a stream took.
FIRST_CHUNK_BUCKETS_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
CHUNKS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]


class StreamMetrics:
    """Per-voice Prometheus metrics, exported on Triton's metrics port (:8002/metrics)."""

    def __init__(self, voice):
        labels = {"voice": voice}
        first = pb_utils.MetricFamily(name="melstream_first_chunk_seconds", kind=pb_utils.MetricFamily.HISTOGRAM,
                                      description="Seconds from a stream's request reaching the voice model to its first chunk being sent")
        chunks = pb_utils.MetricFamily(name="melstream_chunks_per_stream", kind=pb_utils.MetricFamily.HISTOGRAM,
                                       description="Chunks sent per finished stream")
        frames = pb_utils.MetricFamily(name="melstream_frames_total", kind=pb_utils.MetricFamily.COUNTER,
                                       description="Mel frames sent")
        streams = pb_utils.MetricFamily(name="melstream_streams_total", kind=pb_utils.MetricFamily.COUNTER,
                                        description="Streams ended, by outcome (completed, cancelled, error)")
        active = pb_utils.MetricFamily(name="melstream_active_streams", kind=pb_utils.MetricFamily.GAUGE,
                                       description="Streams being synthesised now")
        self.first_chunk_s = first.Metric(labels=labels, buckets=FIRST_CHUNK_BUCKETS_S)
        self.chunks = chunks.Metric(labels=labels, buckets=CHUNKS_BUCKETS)
        self.frames = frames.Metric(labels=labels)
        self.outcomes = {o: streams.Metric(labels={**labels, "outcome": o}) for o in ("completed", "cancelled", "error")}
        self.active = active.Metric(labels=labels)
        self._families = (first, chunks, frames, streams, active)  # the families must outlive their metrics
        # The stub's metric calls are not thread-safe (Triton 2.51 segfaults with streams updating
        # metrics from several threads at once), so one lock serialises them; each is one short IPC.
        self._lock = threading.Lock()

    def started(self):
        with self._lock:
            self.active.increment(1)

    def first_chunk(self, seconds):
        with self._lock:
            self.first_chunk_s.observe(seconds)

    def ended(self, outcome, *, chunks, frames):
        with self._lock:
            self.active.increment(-1)
            self.outcomes[outcome].increment(1)
            self.frames.increment(frames)
            if outcome == "completed":  # a cancelled or failed stream's count says nothing about the voice
                self.chunks.observe(chunks)


def _optional(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy().reshape(-1)[0].item()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        addon = addon_from_json(params["addon_json"], source=f"model {config['name']!r} parameter addon_json")
        self.pipeline = addon.build(TritonBLSRunner(pb_utils))
        # The text front end's first call loads espeak-ng's voice data; pay it at load, not on a listener's first chunk.
        self.pipeline.inputs_for("Warm up.")
        self.pool = ThreadPoolExecutor(max_workers=int(params.get("max_streams", "64")), thread_name_prefix=addon.name)
        self.metrics = StreamMetrics(config["name"])

    def execute(self, requests):
        for request in requests:
            self.pool.submit(self._stream, request, time.perf_counter())
        return None

    def _stream(self, request, received):
        sender = request.get_response_sender()
        chunks = None
        sent = frames = 0
        outcome = "error"
        self.metrics.started()
        try:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            if text.size != 1:
                raise TextError(f"TEXT must hold exactly one string, got {text.size}")
            chunks = self.pipeline.stream_outputs(text[0], pace=_optional(request, "PACE"),
                                                  chunk_frames=_optional(request, "CHUNK_FRAMES"))
            outcome = "cancelled"
            while not request.is_cancelled():  # a cancelled or disconnected client stops the work here
                chunk = next(chunks, None)
                if chunk is None:
                    outcome = "completed"
                    break
                sender.send(pb_utils.InferenceResponse(
                    [pb_utils.Tensor(name.upper(), np.ascontiguousarray(value, np.float32)) for name, value in chunk.items()]))
                if sent == 0:
                    self.metrics.first_chunk(time.perf_counter() - received)
                sent += 1
                frames += len(chunk["mel"])
        except MelstreamError as e:
            outcome = "error"
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}")))
        except Exception as e:  # an unexpected failure still reaches the client, and the model keeps serving
            outcome = "error"
            pb_utils.Logger.log_error(f"pipeline failed: {type(e).__name__}: {e}")
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"internal error: {type(e).__name__}: {e}")))
        finally:
            if chunks is not None:
                chunks.close()
            sender.send(flags=FINAL)
            self.metrics.ended(outcome, chunks=sent, frames=frames)

    def finalize(self):
        self.pool.shutdown(wait=True, cancel_futures=True)
