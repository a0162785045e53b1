"""The voice model's logic: one addon as a decoupled Triton Python-backend model streaming MEL (and AUDIO) chunks.

``python_backends/pipeline/model.py`` is a shim that subclasses :class:`VoiceModel` with the stub's
``triton_python_backend_utils`` module (``pb_utils``); everything else lives here, where it can be tested
with a fake ``pb_utils`` and no server.

Triton's Python backend creates the model class with no arguments, calls ``initialize(args)`` once,
``execute(requests)`` for each batch of requests and ``finalize()`` at unload (python_backend's
pb_stub.cc).  Each request (stream) runs in its own thread, so ``execute`` returns at once; the stream sends
one response per chunk, in order, then the final flag, always exactly once.

Admission: a voice serves at most as many streams at once as this host can keep in real time
(melstream.serving.capacity: measured while it serves, from its compute per second of audio, with the
:data:`ADMISSION_HEADROOM_PARAMETER` config parameter's headroom; 0 turns the measuring off) and never more
than ``max_streams`` (the :data:`MAX_STREAMS_PARAMETER` config parameter, sized per voice and profile by
``melstream build-repo``: an upper bound).  A stream counts from the moment ``execute`` admits it until just
before its final flag (a client that starts its next utterance the moment the last one ends finds the slot
free); the next request is refused at once, in ``execute``, before any work:
``[UNAVAILABLE] voice 'tacovoice' is busy: it serves 16 streams at once; try again later``
(:func:`melstream.wire.busy_detail`), and counted as outcome ``refused``.  Every admitted stream gets a thread
of its own at once, so it never waits for a worker.

Scheduling (issue 11): with ``compute_slots`` (:data:`COMPUTE_SLOTS_PARAMETER`) at most that many streams compute
a chunk at once, the one whose listener needs audio soonest first (melstream.runners.schedule): a stream's first
chunk is due :data:`FIRST_CHUNK_TARGET_S` after its request arrived, each later one when the audio sent so far
has played.  Where the networks run (:data:`PLACEMENT_PARAMETER`) and whether a recurrent block steps every
stream together (:data:`LOCKSTEP_PARAMETER`, melstream.runners.lockstep) are the runner's, built in
:meth:`VoiceModel.runner`.

Errors: a request whose input is wrong gets ``INVALID_ARG`` with a message naming the input; a fault inside
the server gets ``INTERNAL`` ("internal error: ...") and its traceback in Triton's log.  Either way the
message starts with the code as a tag (:func:`melstream.wire.error_message`), because a gRPC stream
carries only the message.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from melstream.addon import addon_from_json
from melstream.errors import InputError, SynthesisError, TextError
from melstream.runners.batching import BatchPolicy
from melstream.runners.onnx import OnnxRuntimeRunner
from melstream.runners.schedule import FIRST_CHUNK_TARGET_S as FIRST_CHUNK_TARGET_S  # the voice's, re-exported
from melstream.runners.schedule import Scheduler, listener_deadline, waited_s
from melstream.runners.triton_bls import TritonBLSRunner
from melstream.serving import network_model
from melstream.serving.capacity import ENGINE_LANE, STREAMS_LANE, Capacity, host_cores
from melstream.serving.text_in import TextFeed, utterances
from melstream_client import wire

# Triton's own metrics count requests and time whole executions; a stream's listener cares about
# what they cannot see: how soon the first chunk went out and how many chunks a stream took.
FIRST_CHUNK_BUCKETS_S = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
CHUNKS_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
#: how streams end: ``refused`` is a request turned away at admission (the voice was busy, or unloading)
OUTCOMES = ("completed", "cancelled", "error", "refused")

#: the config parameter (written by melstream.serving.repo.pipeline_config) with the streams a voice admits at once
MAX_STREAMS_PARAMETER = "max_streams"
# where the voice runs its networks: "triton" (its network models, through BLS) or "voice" (ONNX Runtime in this
# process, from NETWORK_FILES_PARAMETER: JSON {network: ONNX file relative to this model's directory})
PLACEMENT_PARAMETER = "network_placement"
NETWORK_FILES_PARAMETER = "network_files"
# cross-stream batching: microseconds a call waits for other streams' calls (0: none), and the rows of a batch
# when the networks run here (through Triton each network's max_batch_size bounds it)
BATCH_WAIT_PARAMETER = "batch_wait_us"
VOICE_MAX_BATCH_PARAMETER = "voice_max_batch"
# rows a recurrent block's lockstep step carries (melstream.runners.lockstep: every stream's attention steps in one
# call); 0: each stream steps alone
LOCKSTEP_PARAMETER = "lockstep_rows"
# listener-first scheduling (melstream.runners.schedule): at most this many streams compute a chunk at once, the one
# whose listener needs audio soonest first; 0: every stream computes whenever its thread runs
COMPUTE_SLOTS_PARAMETER = "compute_slots"
# A voice that runs its networks itself makes no BLS call that Triton could refuse when it is told to stop, so
# while it has streams it asks Triton this often (one tiny call to one of its network models) and ends its
# streams as shutting down once Triton refuses.
SHUTDOWN_PROBE_S = 0.2
#: streams admitted at once when the config has no such parameter
DEFAULT_MAX_STREAMS = 16
# the share of its measured capacity a voice admits (melstream.serving.capacity); absent or 0: it admits
# max_streams whatever the host can do
ADMISSION_HEADROOM_PARAMETER = "admission_headroom"
#: what a voice speaks at load to measure its cost before any listener comes (several times: the first warms it up,
#: and each lane's least is kept, since models loading beside it take the cores now and then)
CALIBRATION_RUNS = 3
CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog, and the patient listener hears every word of it."


#: seconds unloading waits for running streams before it lets Triton unload the voice anyway
UNLOAD_WAIT_S = 5.0


class Pipeline(Protocol):
    """What the voice model needs of a StreamablePipeline."""

    def stream_outputs(self, text: str | bytes | Iterable[Any], *, pace: float | None = None,
                       chunk_frames: int | None = None) -> Iterator[dict[str, np.ndarray]]: ...

    def inputs_for(self, text: str | bytes, *, pace: float | None = None,
                   chunk_frames: int | None = None) -> dict[str, np.ndarray]: ...


class StreamMetrics:
    """Per-voice Prometheus metrics, exported on Triton's metrics port (:8002/metrics)."""

    def __init__(self, pb: Any, voice: str) -> None:
        family = pb.MetricFamily
        labels = {"voice": voice}
        first = family(name="melstream_first_chunk_seconds", kind=family.HISTOGRAM,
                       description="Seconds from a stream's request reaching the voice model to its first chunk being sent")
        chunks = family(name="melstream_chunks_per_stream", kind=family.HISTOGRAM, description="Chunks sent per finished stream")
        frames = family(name="melstream_frames_total", kind=family.COUNTER, description="Mel frames sent")
        streams = family(name="melstream_streams_total", kind=family.COUNTER,
                         description="Streams ended, by outcome (completed, cancelled, error, refused)")
        active = family(name="melstream_active_streams", kind=family.GAUGE, description="Streams being synthesised now")
        admitted = family(name="melstream_admitted_streams", kind=family.GAUGE,
                          description="Streams the voice admits at once now: what this host keeps in real time, at most max_streams")
        calls = family(name="melstream_network_calls_total", kind=family.COUNTER,
                       description="Calls the voice's streams made to a network, wherever it runs")
        runs = family(name="melstream_network_runs_total", kind=family.COUNTER,
                      description="Runs of a network those calls made, batched across streams or alone (calls / runs: the mean batch)")
        self.first_chunk_s = first.Metric(labels=labels, buckets=FIRST_CHUNK_BUCKETS_S)
        self.chunks = chunks.Metric(labels=labels, buckets=CHUNKS_BUCKETS)
        self.frames = frames.Metric(labels=labels)
        self.outcomes = {o: streams.Metric(labels={**labels, "outcome": o}) for o in OUTCOMES}
        self.active = active.Metric(labels=labels)
        self.admitted = admitted.Metric(labels=labels)
        self._admitted_value: int | None = None
        self._families = (first, chunks, frames, streams, active, admitted, calls, runs)  # they must outlive their metrics
        self._calls_family, self._runs_family, self._labels = calls, runs, labels
        self._network_metrics: dict[str, tuple[Any, Any]] = {}
        # batches are counted here and exported when a stream ends: one IPC per batch (a step of every stream)
        # would cost more than the step
        self._batches: dict[str, list[int]] = {}
        # A new copy of this voice shares these Prometheus series with the copy before it (Triton keys them by
        # name and labels), so counters go on across a reload.  The supervisor loads a new copy only when the
        # old one's stub died, and a dead copy's streams never end: the streams active now are this copy's
        # (none yet).
        self.active.set(0)
        # The stub's metric calls are not thread-safe (Triton 2.51 segfaults with streams updating
        # metrics from several threads at once), so one lock serialises them; each is one short IPC.
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.active.increment(1)

    def first_chunk(self, seconds: float) -> None:
        with self._lock:
            self.first_chunk_s.observe(seconds)

    def admits(self, streams: int) -> None:
        """The streams the voice admits at once now (exported only when it changes: each export is an IPC)."""
        with self._lock:
            if streams != self._admitted_value:
                self._admitted_value = streams
                self.admitted.set(streams)

    def refused(self) -> None:
        """A request turned away at admission: never active, no chunks."""
        with self._lock:
            self.outcomes["refused"].increment(1)

    def batched(self, network: str, calls: int) -> None:
        """A run of ``network`` that served ``calls`` streams' calls at once (counted; exported at a stream's end)."""
        with self._lock:
            counts = self._batches.setdefault(network, [0, 0])
            counts[0] += calls
            counts[1] += 1

    def ended(self, outcome: str, *, chunks: int, frames: int) -> None:
        with self._lock:
            for network, (calls, runs) in self._batches.items():
                if network not in self._network_metrics:
                    labels = {**self._labels, "network": network}
                    self._network_metrics[network] = (self._calls_family.Metric(labels=labels),
                                                      self._runs_family.Metric(labels=labels))
                calls_metric, runs_metric = self._network_metrics[network]
                calls_metric.increment(calls)
                runs_metric.increment(runs)
            self._batches.clear()
            # in this order: a scrape that sees this stream's outcome sees its frames and chunks counted too,
            # and one that sees it no longer active sees all of that (each call is an IPC to the server; a
            # scrape can fall between two of them; for a moment the stream is both ended and active)
            self.frames.increment(frames)
            if outcome == "completed":  # a cancelled or failed stream's count says nothing about the voice
                self.chunks.observe(chunks)
            self.outcomes[outcome].increment(1)
            self.active.increment(-1)


# --- input parsing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inputs:
    """One request's inputs, checked: ``text`` (the one element of TEXT, bytes), ``pace`` and ``chunk_frames``
    (None when the request left them out: the voice's own)."""

    text: bytes | str
    pace: float | None
    chunk_frames: int | None
    flush: bool = False
    words: bool = False  # TIMESTAMPS: every chunk carries WORDS


def _one_element(pb: Any, request: Any, inp: wire.WireInput) -> Any:
    """The single element of input ``inp``; None if the request left an optional input out."""
    tensor = pb.get_input_tensor_by_name(request, inp.name)
    if tensor is None:
        if inp.optional:
            return None
        raise InputError(f"input {inp.name} is missing: a voice needs {inp.name} ({inp.datatype} [1])")
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise InputError(f"input {inp.name} must hold exactly one element ({inp.datatype} [1]), got {values.size}")
    return values[0]


def parse_inputs(pb: Any, request: Any) -> Inputs:
    """The request's inputs, or :class:`InputError` naming the one that is wrong (missing TEXT, an input with
    other than one element, TEXT that is not bytes, PACE outside :data:`wire.PACE_RANGE` or not finite,
    CHUNK_FRAMES outside :data:`wire.CHUNK_FRAMES_RANGE`).  Whether the text can be spoken (UTF-8, not empty,
    not too long) is the front end's to say, when the stream starts."""
    text = _one_element(pb, request, wire.TEXT)
    if not isinstance(text, (bytes, str)):
        raise InputError(f"input {wire.TEXT.name} must be {wire.TEXT.datatype} (UTF-8 text), got {type(text).__name__}")
    pace = _one_element(pb, request, wire.PACE)
    if pace is not None:
        pace = float(pace)
        low, high = wire.PACE_RANGE
        if not (math.isfinite(pace) and low <= pace <= high):
            raise InputError(f"input {wire.PACE.name} must be a finite number from {low} to {high} "
                             f"(1 is the voice's own rate, 2 twice as fast), got {pace}")
    chunk_frames = _one_element(pb, request, wire.CHUNK_FRAMES)
    if chunk_frames is not None:
        chunk_frames = int(chunk_frames)
        low_frames, high_frames = wire.CHUNK_FRAMES_RANGE
        if not low_frames <= chunk_frames <= high_frames:
            raise InputError(f"input {wire.CHUNK_FRAMES.name} must be from {low_frames} to {high_frames} frames "
                             f"(0 = the whole utterance in one response), got {chunk_frames}")
    flags = []
    for inp in (wire.FLUSH, wire.TIMESTAMPS):
        value = _one_element(pb, request, inp)
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise InputError(f"input {inp.name} must be {inp.datatype}, got {type(value).__name__}")
        flags.append(bool(value))
    return Inputs(text, pace, chunk_frames, *flags)


def correlation_id(request: Any) -> int | str:
    """The request's correlation id (Triton's sequence id): 0 or "" when it has none (a whole text)."""
    get = getattr(request, "correlation_id", None)
    return get() if get is not None else 0


def _text_of(text: bytes | str) -> str:
    """A piece's text as str (a piece must be UTF-8 on its own: a character never spans two pieces)."""
    if isinstance(text, str):
        return text
    try:
        return bytes(text).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"input {wire.TEXT.name} is not UTF-8 text: {e}") from None


def input_error_detail(error: InputError) -> str:
    """The text of an input error as the client reads it: it names the input.  The front end's TextErrors
    speak of "text"; they came from TEXT, so they are named so, keeping their own words."""
    if isinstance(error, TextError):
        return f"input {wire.TEXT.name}: {type(error).__name__}: {error}"
    return str(error)


# --- the model -----------------------------------------------------------------------------------------

class VoiceModel:
    """A voice as a decoupled Triton model.  ``pb_utils`` is the stub's ``triton_python_backend_utils``
    module (or a stand-in with the same names); attributes are looked up on it when used, since the stub
    sets some of them (TritonError, Tensor, InferenceResponse) only after importing the model."""

    def __init__(self, pb_utils: Any) -> None:
        self.pb = pb_utils
        self.name = ""
        self.pipeline: Pipeline | None = None
        self.metrics: StreamMetrics | None = None
        self.max_streams = DEFAULT_MAX_STREAMS
        #: how long unloading waits for running streams to end (each ends at its next chunk, normally at once)
        self.unload_wait_s = UNLOAD_WAIT_S
        self._closing = threading.Event()
        self._admission = threading.Lock()  # guards _threads, _holding, _started, and admission against _closing
        self._threads: set[threading.Thread] = set()  # the admitted streams' threads, each until it has ended
        self._holding: set[threading.Thread] = set()  # those holding an admission slot: until just before the final flag
        self._started = 0
        self.frame_s = 0.0
        self.scheduler: Scheduler | None = None
        self.capacity: Capacity | None = None
        self._feeds: dict[int | str, TextFeed] = {}  # open text streams by correlation id (guarded by _admission)
        #: how long a text stream may wait for its next piece
        self.text_idle_timeout_s = wire.TEXT_IDLE_TIMEOUT_S

    # Triton's entry points ---------------------------------------------------------------------------
    def initialize(self, args: Mapping[str, str]) -> None:
        """Build the voice from its config (``args["model_config"]``, JSON): the addon comes from the
        :data:`wire.ADDON_PARAMETER` parameter; its networks run as Triton models through BLS."""
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        name = config["name"]
        addon = addon_from_json(params[wire.ADDON_PARAMETER], source=f"model {name!r} parameter {wire.ADDON_PARAMETER}")
        pipeline = addon.build(self.runner(config, params, model_dir=args.get("model_repository", ".")))
        if params.get(PLACEMENT_PARAMETER) == "voice" and hasattr(self.pb, "InferenceRequest"):
            self._start_shutdown_probe(addon)
        # The text front end's first call loads its data (espeak-ng's voice, if it uses it); pay it at load,
        # not on a listener's first chunk.
        pipeline.inputs_for("Warm up.")
        self.serve(name, pipeline, max_streams=int(params.get(MAX_STREAMS_PARAMETER, DEFAULT_MAX_STREAMS)),
                   frame_s=addon.audio.hop_length / addon.audio.sample_rate,
                   compute_slots=int(params.get(COMPUTE_SLOTS_PARAMETER, "0")),
                   headroom=float(params.get(ADMISSION_HEADROOM_PARAMETER, "0")))
        if params.get(PLACEMENT_PARAMETER) == "voice":  # through Triton its network models may not be loaded yet
            self.calibrate()

    def runner(self, config: Mapping[str, Any], params: Mapping[str, str], *, model_dir: str) -> Any:
        """The runner of this voice's networks, as its config says: through Triton (BLS) or in this process, at
        fixed shapes or not, batched across streams or not (a batch waits for the voice's active streams)."""
        fixed = wire.fixed_shapes_from_config(config)
        wait_us = int(params.get(BATCH_WAIT_PARAMETER, "0"))
        placement = params.get(PLACEMENT_PARAMETER, "triton")
        lockstep = int(params.get(LOCKSTEP_PARAMETER, "0"))
        policy = None
        if wait_us > 0:
            max_batch = int(params.get(VOICE_MAX_BATCH_PARAMETER, "64")) if placement == "voice" else 1 << 30
            policy = BatchPolicy(max_wait_s=wait_us / 1e6, max_batch=max_batch, expected=lambda: self.active_streams,
                                 on_batch=self._batched)
        if placement == "voice":
            files = {k: os.path.normpath(os.path.join(model_dir, v)) for k, v in json.loads(params[NETWORK_FILES_PARAMETER]).items()}
            # the same parameter as a network model's: ONNX Runtime's threads per run
            runner: Any = OnnxRuntimeRunner(threads=int(params.get(network_model.THREADS_PARAMETER, "1")), fixed_shapes=fixed,
                                            batching=policy, files=files, lockstep_rows=lockstep)
        else:
            runner = TritonBLSRunner(self.pb, fixed_shapes=fixed, batching=policy, lockstep_rows=lockstep)
        runner.on_batch = self._batched
        runner.on_busy = self._engine_busy
        return runner

    def _start_shutdown_probe(self, addon: Any) -> None:
        """Watch for Triton stopping (see :data:`SHUTDOWN_PROBE_S`): a thread that, while streams run, sends one of
        this voice's network models a one-element request, and sets ``_closing`` once Triton refuses it as stopping."""
        network, spec = next(iter(addon.networks.items()))
        model = wire.network_model_name(addon.name, network)
        inputs = {t.name: np.zeros((1, *(1 if d == -1 else d for d in t.shape)), np.dtype(t.dtype)) for t in spec.inputs}
        if spec.length is not None:
            inputs[spec.length.name] = np.ones((1, 1), np.int64)
        outputs = list(spec.output_names())[:1]

        def probe() -> None:
            pb = self.pb
            while not self._closing.wait(SHUTDOWN_PROBE_S):
                if self.active_streams == 0:
                    continue
                try:
                    response = pb.InferenceRequest(model_name=model, requested_output_names=outputs,
                                                   inputs=[pb.Tensor(k, v) for k, v in inputs.items()]).exec()
                    message = response.error().message() if response.has_error() else ""
                except Exception as e:  # noqa: BLE001 - the refusal can come as an exception too
                    message = str(e)
                if wire.is_server_stopping(message):
                    pb.Logger.log_info(f"voice {self.name!r}: Triton is stopping; its streams end as shutting down")
                    self._closing.set()

        threading.Thread(target=probe, daemon=True, name=f"{addon.name}-shutdown-probe").start()

    def _engine_busy(self, seconds: float) -> None:
        capacity = self.capacity
        if capacity is not None:
            capacity.busy(ENGINE_LANE, seconds)

    def _batched(self, network: str, calls: int, rows: int) -> None:
        if self.metrics is not None:
            self.metrics.batched(network, calls)

    def execute(self, requests: list[Any]) -> None:
        """Admit each request and start its stream in a thread of its own, or refuse it at once with
        UNAVAILABLE when the voice already serves ``max_streams`` streams (or is unloading); return at once
        (decoupled: responses go through each request's sender)."""
        received = time.perf_counter()
        for request in requests:
            sequence = correlation_id(request)
            if sequence and not self._sequence_start(request):
                self._piece(request, sequence)
                continue
            refusal = self._admit(request, received, sequence=sequence)
            if refusal is not None:
                code, detail = refusal
                self._refuse(request, code, detail)  # outside the admission lock: a send may take a while
                metrics = self.metrics
                if metrics is not None and code == wire.BUSY_ERROR:  # None once unloaded (finalize frees them)
                    metrics.refused()
        return None

    def finalize(self) -> None:
        """Unload: streams still running end with UNAVAILABLE (and their final flag) at their next chunk; new
        requests are refused; returns once every stream has ended, or after :attr:`unload_wait_s` with a warning
        naming the streams still running (Triton's exit timeout must not be spent waiting on one stuck stream)."""
        with self._admission:
            self._closing.set()
            threads = list(self._threads)
        deadline = time.monotonic() + self.unload_wait_s
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.pb.Logger.log_warn(f"voice {self.name!r}: unloading with {len(stuck)} stream(s) still running after "
                                    f"{self.unload_wait_s:g} s: {', '.join(sorted(stuck))}")
            return  # they still hold the metrics
        # Free the metrics now, while the stub still reaches the server: left to the stub's own teardown, their
        # destructors write to a shared-memory pool that is already gone, and the voice stub segfaults at every
        # stop (dmesg: in Metric::SaveToSharedMemory; python_backend r24.10 pb_stub.cc frees the model last).
        self.metrics = None

    @property
    def active_streams(self) -> int:
        """Streams admitted and not yet ended (their final flag not yet sent)."""
        with self._admission:
            return len(self._threads)

    # text in pieces (melstream_client.wire: one request per piece, one correlation id) -------------------
    def _sequence_start(self, request: Any) -> bool:
        return bool(request.flags() & getattr(self.pb, "TRITONSERVER_REQUEST_FLAG_SEQUENCE_START", 1))

    def _sequence_end(self, request: Any) -> bool:
        return bool(request.flags() & getattr(self.pb, "TRITONSERVER_REQUEST_FLAG_SEQUENCE_END", 2))

    def _piece(self, request: Any, sequence: int | str) -> None:
        """A later piece of text stream ``sequence``: its text goes to the stream's feed, and the request ends at
        once with an empty final response (or an error naming what was wrong)."""
        with self._admission:
            feed = self._feeds.get(sequence)
        try:
            if feed is None:
                raise InputError(f"text stream {sequence} is not open on voice {self.name!r}: its first request must "
                                 "carry sequence_start (or the stream has ended)")
            inputs = parse_inputs(self.pb, request)
            late = [inp.name for inp in wire.FIRST_PIECE_ONLY if getattr(inputs, inp.option) not in (None, False)]
            if late:
                raise InputError(f"input {', '.join(late)} may only come with a text stream's first request")
            feed.put(_text_of(inputs.text), flush=inputs.flush)
            if self._sequence_end(request):
                feed.close()
        except InputError as e:
            self._end(request.get_response_sender(), (wire.INPUT_ERROR, input_error_detail(e)))
            return
        self._end(request.get_response_sender(), None)

    def _admit(self, request: Any, received: float, *, sequence: int | str = 0) -> tuple[str, str] | None:
        """Start ``request``'s stream if the voice has room: None; else the refusal's code and detail.  With a
        ``sequence`` (a text stream's first request), its feed is opened for the pieces to come."""
        busy = wire.BUSY_ERROR
        with self._admission:
            if self._closing.is_set():
                return busy, f"voice {self.name!r} is shutting down"
            admitted = self.admitted_streams
            if len(self._holding) >= admitted:
                reason = "" if admitted == self.max_streams else ", all this host keeps in real time now"
                return busy, wire.busy_detail(self.name, f"it serves {admitted} streams at once{reason}")
            feed = None
            if sequence:
                if sequence in self._feeds:
                    return wire.INPUT_ERROR, (f"text stream {sequence} is already open on voice {self.name!r}: each "
                                              "stream needs a correlation id of its own")
                feed = self._feeds[sequence] = TextFeed(idle_timeout_s=self.text_idle_timeout_s)
            self._started += 1
            thread = threading.Thread(target=self._run, args=(request, received, sequence, feed), daemon=True,
                                      name=f"{self.name}-stream-{self._started}")
            self._threads.add(thread)  # before start: the thread removes itself when its stream has ended
            self._holding.add(thread)
            try:
                thread.start()
            except RuntimeError as e:  # no thread to be had (a resource limit): refuse, as when busy
                self._threads.discard(thread)
                self._holding.discard(thread)
                self._feeds.pop(sequence, None)
                return busy, wire.busy_detail(self.name, f"no thread for a new stream ({e})")
        return None

    def _run(self, request: Any, received: float, sequence: int | str = 0, feed: TextFeed | None = None) -> None:
        try:
            self.stream(request, received, feed=feed)
        finally:  # the final flag has been sent (stream() always sends it)
            with self._admission:
                self._holding.discard(threading.current_thread())  # stream() freed it already, unless it failed early
                self._threads.discard(threading.current_thread())
                if sequence:
                    self._feeds.pop(sequence, None)  # later pieces of it are refused: it has ended

    @property
    def admitted_streams(self) -> int:
        """Streams the voice admits at once now: its measured capacity, at most ``max_streams``."""
        return self.max_streams if self.capacity is None else self.capacity.streams()

    def _free_slot(self) -> None:
        """This stream's admission slot is free (called just before its final flag: its client may come back at once)."""
        with self._admission:
            self._holding.discard(threading.current_thread())

    # the work ------------------------------------------------------------------------------------------
    def serve(self, name: str, pipeline: Pipeline, *, max_streams: int = DEFAULT_MAX_STREAMS, frame_s: float = 0.0,
              compute_slots: int = 0, headroom: float = 0.0) -> None:
        """Serve ``pipeline`` as voice ``name``, admitting up to ``max_streams`` streams at once (``initialize``
        calls this with the addon's pipeline; tests with any object that has ``stream_outputs``).  With
        ``compute_slots`` > 0 at most that many streams compute a chunk at once, earliest deadline first (a
        frame lasts ``frame_s`` seconds of audio: a stream's deadline is when its listener runs dry).  With
        ``headroom`` > 0 (and ``frame_s`` > 0) it admits only that share of the streams this host can keep in
        real time, as measured (:class:`melstream.serving.capacity.Capacity`; :meth:`calibrate` measures at once)."""
        if max_streams < 1:
            raise ValueError(f"voice {name!r}: {MAX_STREAMS_PARAMETER} must be >= 1, got {max_streams}")
        self.name = name
        self.pipeline = pipeline
        self.max_streams = max_streams
        self.frame_s = frame_s
        self.scheduler = Scheduler(compute_slots) if compute_slots > 0 else None
        self.capacity = None
        if headroom > 0 and frame_s > 0:
            cores = host_cores()
            self.capacity = Capacity({STREAMS_LANE: min(compute_slots, cores) if compute_slots > 0 else cores,
                                      ENGINE_LANE: 1}, max_streams=max_streams, headroom=headroom)
        self.metrics = StreamMetrics(self.pb, name)
        self.metrics.admits(self.admitted_streams)

    def calibrate(self, text: str = CALIBRATION_TEXT) -> None:
        """Measure the voice's cost on one utterance alone, before any listener comes (:data:`CALIBRATION_RUNS`
        times, keeping each lane's least: the first run warms its networks up, and the models loading beside it
        take the cores now and then), so that admission starts from this host's figure rather than the profile's."""
        capacity, pipeline = self.capacity, self.pipeline
        if capacity is None or pipeline is None:
            return
        frames = 0
        least: dict[str, float] = {}  # each lane's least seconds over the runs
        try:
            for _ in range(CALIBRATION_RUNS):
                capacity.take()  # what came before this run is not its
                frames, since, waited = 0, time.perf_counter(), waited_s()
                for chunk in pipeline.stream_outputs(text):
                    frames += len(chunk["mel"])
                capacity.busy(STREAMS_LANE, time.perf_counter() - since - (waited_s() - waited))
                for lane, seconds in capacity.take().items():
                    least[lane] = min(seconds, least.get(lane, seconds))
        except Exception:  # noqa: BLE001 - a voice that cannot speak it fails its listeners' streams, not its load
            self.pb.Logger.log_warn(f"voice {self.name!r}: could not measure its cost at load; it admits "
                                    f"{capacity.streams()} streams until it has measured some:\n{traceback.format_exc()}")
            return
        capacity.calibrate(least, frames * self.frame_s)
        if self.metrics is not None:
            self.metrics.admits(capacity.streams())

    def stream(self, request: Any, received: float, *, feed: TextFeed | None = None) -> None:
        """Run one request to its end in this thread: a response per chunk (``MEL`` ``[frames, n_mels]``
        float32, plus ``AUDIO`` ``[frames * hop]`` from a vocoder), then the final flag, sent exactly once:
        alone after the last chunk (or a cancellation), or on the error response that ends the request.
        ``received`` is ``time.perf_counter()`` when the request reached the model (for the first-chunk metric).

        The pipeline is pulled one chunk at a time and the request's cancellation is checked before each
        pull, so a cancelled or vanished client stops the work within a chunk; the generator is closed
        whatever happens.  Outcomes: ``completed``, ``cancelled``, ``error``."""
        pb, metrics, pipeline, scheduler, capacity = self.pb, self.metrics, self.pipeline, self.scheduler, self.capacity
        assert metrics is not None and pipeline is not None, "stream() before serve()"
        first_sent: float | None = None
        deadline = listener_deadline(received, first_sent, 0.0)  # listener first: when its listener needs audio
        sender = request.get_response_sender()
        chunks: Iterator[dict[str, np.ndarray]] | None = None
        sent = frames = 0
        outcome = "error"
        error: tuple[str, str] | None = None  # (Triton code, detail) of the error that ends the request
        metrics.started()
        try:
            inputs = parse_inputs(pb, request)
            if inputs.words and not getattr(pipeline, "gives_words", True):  # the client's request, not a fault here
                raise InputError(f"input {wire.TIMESTAMPS.name}: voice {self.name!r} cannot time its words (its chunks "
                                 "do not say which token each frame speaks: e.g. a stack ending in a vocoder)")
            extra = {"words": True} if inputs.words else {}  # the pipeline's word clock runs only when asked
            text: Any = inputs.text
            if feed is not None:  # a text stream: this request's text is its first piece, the rest come to the feed
                feed.put(_text_of(inputs.text), flush=inputs.flush)
                if self._sequence_end(request):
                    feed.close()
                pace, chunk_frames = inputs.pace, inputs.chunk_frames
                chunks = utterances(lambda text: pipeline.stream_outputs(text, pace=pace, chunk_frames=chunk_frames, **extra),
                                    feed, stop=lambda: request.is_cancelled() or self._closing.is_set())
            else:
                chunks = pipeline.stream_outputs(text, pace=inputs.pace, chunk_frames=inputs.chunk_frames, **extra)
            outcome = "cancelled"
            # this stream's work since `mark`, less its waits (for a turn, for a lockstep engine): the capacity's
            mark, waited = time.perf_counter(), waited_s()
            while not request.is_cancelled():  # a cancelled or disconnected client stops the work here
                if self._closing.is_set():
                    outcome, error = "error", ("UNAVAILABLE", f"voice {self.name!r} is shutting down")
                    break
                if scheduler is None:
                    chunk = next(chunks, None)
                else:
                    with scheduler.turn(deadline):
                        chunk = next(chunks, None)
                if chunk is None:
                    outcome = "completed"
                    break
                tensors = [pb.Tensor(wire.OUTPUTS[key], np.ascontiguousarray(value, np.float32))
                           for key, value in chunk.items() if key in wire.OUTPUTS]
                if inputs.words:
                    tensors.append(pb.Tensor(wire.WORDS, wire.encode_words(chunk.get("words", ()))))
                sender.send(pb.InferenceResponse(tensors))
                if sent == 0:
                    first_sent = time.perf_counter()
                    metrics.first_chunk(first_sent - received)
                sent += 1
                frames += len(chunk["mel"])
                deadline = listener_deadline(received, first_sent, frames * self.frame_s)
                if capacity is not None:
                    now, now_waited = time.perf_counter(), waited_s()
                    capacity.busy(STREAMS_LANE, (now - mark) - (now_waited - waited))
                    if capacity.produced(len(chunk["mel"]) * self.frame_s):  # a new estimate: export it from here,
                        metrics.admits(capacity.streams())  # not from execute, which answers requests
                    mark, waited = now, now_waited
        except InputError as e:
            outcome, error = "error", (wire.INPUT_ERROR, input_error_detail(e))
        except Exception as e:
            if wire.is_server_stopping(str(e)):  # Triton refuses a voice's network calls once it is told to stop
                outcome, error = "error", ("UNAVAILABLE", f"voice {self.name!r} is shutting down")
            elif isinstance(e, SynthesisError) and wire.is_restarting(str(e)):  # a network's stub died: it is reloaded
                outcome, error = "error", ("UNAVAILABLE", f"voice {self.name!r} is restarting a network ({e}); try again")
                pb.Logger.log_warn(f"voice {self.name!r}: stream cut by a network being restarted: {e}")
            elif wire.is_queue_refusal(str(e)):  # a network model's bounded queue refused the call: overload, not a fault
                outcome, error = "error", (wire.BUSY_ERROR, wire.busy_detail(self.name, str(e)))
                pb.Logger.log_warn(f"voice {self.name!r}: stream refused by a network model: {e}")
            else:  # a fault here still reaches the client, and the model keeps serving
                outcome, error = "error", (wire.INTERNAL_ERROR, f"{wire.INTERNAL_ERROR_PREFIX}{type(e).__name__}: {e}")
                pb.Logger.log_error(f"voice {self.name!r}: stream failed:\n{traceback.format_exc()}")
        finally:
            if chunks is not None:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # stop the pipeline's work (its generators' finally blocks run now)
            self._free_slot()
            self._end(sender, error)
            metrics.ended(outcome, chunks=sent, frames=frames)

    def _end(self, sender: Any, error: tuple[str, str] | None) -> None:
        """Send the final flag: on the error response when there is one.  Never an error and then a separate
        flag: with a client's ``triton_grpc_error`` stream header, Triton 2.51 frees the request's state at the
        error and a later flag uses it after the free (a segfault of the whole server; fixed upstream in
        triton-inference-server/server#8708, Triton 2.68)."""
        pb = self.pb
        final = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if error is not None:
            code, detail = error
            response = pb.InferenceResponse(error=pb.TritonError(wire.error_message(code, detail), getattr(pb.TritonError, code)))
            try:
                sender.send(response, flags=final)
                return
            except Exception:  # the client may be gone; the flag alone is still owed to Triton
                pb.Logger.log_warn(f"voice {self.name!r}: could not send the error response:\n{traceback.format_exc()}")
        try:
            sender.send(flags=final)
        except Exception:  # nothing more can be told to this client; the model keeps serving the others
            pb.Logger.log_error(f"voice {self.name!r}: could not send the final flag:\n{traceback.format_exc()}")

    def _refuse(self, request: Any, code: str, detail: str) -> None:
        self._end(request.get_response_sender(), (code, detail))
