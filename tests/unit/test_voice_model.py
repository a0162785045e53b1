"""The voice model's stream loop, input checks, error codes and metrics, with a fake ``pb_utils``: no server.

:class:`FakePb` stands in for the stub's ``triton_python_backend_utils`` (the names VoiceModel and
NetworkModel use); :class:`ScriptedPipeline` yields given chunks and records how it was pulled and closed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format

import melstream
from melstream.errors import InputError, ServerBusyError, ServerUnavailableError, SynthesisError
from melstream.serving.repo import get_profile, pipeline_config
from melstream.serving.voice_model import MAX_STREAMS_PARAMETER, StreamMetrics, VoiceModel, parse_inputs
from melstream.text import get_frontend
from melstream_client import wire
from melstream_client._errors import client_error

WAIT_S = 10.0  # how long a test waits for a worker thread's stream to end (it takes milliseconds)


# --- a fake pb_utils ------------------------------------------------------------------------------------

class FakeTensor:
    def __init__(self, name: str, array: Any) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeTritonError:
    # distinct values, like the stub's enum; NAMES reads them back
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(100, 108)
    NAMES = {100: "UNKNOWN", 101: "INTERNAL", 102: "NOT_FOUND", 103: "INVALID_ARG", 104: "UNAVAILABLE",
             105: "UNSUPPORTED", 106: "ALREADY_EXISTS", 107: "CANCELLED"}

    def __init__(self, message: str, code: int = 101) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class FakeResponse:
    def __init__(self, output_tensors: list[FakeTensor] | None = None, error: FakeTritonError | None = None) -> None:
        self.tensors = {t.name(): t.as_numpy() for t in output_tensors or []}
        self.error = error


class FakeMetric:
    def __init__(self, family: FakeMetricFamily, labels: dict[str, str], buckets: list[float] | None) -> None:
        self.family, self.labels, self.buckets = family, labels, buckets
        self.value = 0.0
        self.observations: list[float] = []

    def increment(self, by: float) -> None:
        self.value += by

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, value: float) -> None:
        self.observations.append(value)


class FakeMetricFamily:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    registry: list[FakeMetric]  # set per FakePb

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind = name, kind

    def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> FakeMetric:  # noqa: N802 - pb_utils' name
        # one series per name and labels, shared by every family object of that name (as Triton's registry does)
        for metric in self.registry:
            if metric.family.name == self.name and metric.labels == labels:
                return metric
        metric = FakeMetric(self, labels, buckets)
        self.registry.append(metric)
        return metric


class FakeLogger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def log_error(self, message: str) -> None:
        self.lines.append(("error", message))

    def log_warn(self, message: str) -> None:
        self.lines.append(("warn", message))

    def log_info(self, message: str) -> None:
        self.lines.append(("info", message))


class FakePb:
    """The names of ``triton_python_backend_utils`` that the serving models use."""

    TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
    Tensor = FakeTensor
    InferenceResponse = FakeResponse
    TritonError = FakeTritonError

    def __init__(self) -> None:
        self.metrics: list[FakeMetric] = []
        self.MetricFamily = type("MetricFamily", (FakeMetricFamily,), {"registry": self.metrics})
        self.Logger = FakeLogger()

    @staticmethod
    def get_input_tensor_by_name(request: FakeRequest, name: str) -> FakeTensor | None:
        return request.inputs.get(name)

    def metric(self, name: str, **labels: str) -> FakeMetric:
        found = [m for m in self.metrics if m.family.name == name and all(m.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, (name, labels, found)
        return found[0]


class FakeSender:
    """Records each send: ("chunk", tensors, flags), ("error", (code name, message), flags) or ("final", None, flags)."""

    def __init__(self, *, fail_chunks: bool = False, fail_errors: bool = False) -> None:
        self.sent: list[tuple[str, Any, int]] = []
        self.done = threading.Event()
        self.fail_chunks, self.fail_errors = fail_chunks, fail_errors

    def send(self, response: FakeResponse | None = None, flags: int = 0) -> None:
        if response is not None and response.error is not None:
            if self.fail_errors:
                raise RuntimeError("Unable to send response: the client is gone")
            err = response.error
            self.sent.append(("error", (FakeTritonError.NAMES[err.code()], err.message()), flags))
        elif response is not None:
            if self.fail_chunks:
                raise RuntimeError("Unable to send response: the client is gone")
            self.sent.append(("chunk", response.tensors, flags))
        else:
            self.sent.append(("final", None, flags))
        if flags:
            self.done.set()

    def kinds(self) -> list[str]:
        """One entry per send: "chunk", "error+final" (an error carrying the final flag), "final"..."""
        return [kind + ("+final" if flags and kind != "final" else "") for kind, _, flags in self.sent]

    def chunks(self) -> list[dict[str, np.ndarray]]:
        return [value for kind, value, _ in self.sent if kind == "chunk"]

    def errors(self) -> list[tuple[str, str]]:
        return [value for kind, value, _ in self.sent if kind == "error"]


class FakeRequest:
    """A request with inputs; cancelled (as Triton reports it) once ``cancel_after`` chunks have been sent."""

    def __init__(self, inputs: dict[str, FakeTensor], *, cancel_after: int | None = None, sender: FakeSender | None = None) -> None:
        self.inputs = inputs
        self.sender = sender or FakeSender()
        self.cancel_after = cancel_after

    def get_response_sender(self) -> FakeSender:
        return self.sender

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.sender.chunks()) >= self.cancel_after


def request(text: Any = b"Hello there.", *, pace: Any = None, chunk_frames: Any = None, **options: Any) -> FakeRequest:
    """A request as Triton hands it over: TEXT BYTES [1] (an object array of bytes), PACE FP32, CHUNK_FRAMES INT32.
    Pass an ndarray to send any shape; None leaves an input out."""
    inputs = {}
    for inp, value in ((wire.TEXT, text), (wire.PACE, pace), (wire.CHUNK_FRAMES, chunk_frames)):
        if value is not None:
            array = value if isinstance(value, np.ndarray) else np.array([value], dtype=inp.numpy_dtype)
            inputs[inp.name] = FakeTensor(inp.name, array)
    return FakeRequest(inputs, **options)


# --- a pipeline that yields what it is told ---------------------------------------------------------------

def mel(frames: int, value: float) -> dict[str, np.ndarray]:
    return {"mel": np.full((frames, 4), value, np.float32)}


class ScriptedPipeline:
    """Yields ``chunks`` (then raises ``fail``, if given; ``chunks=None`` yields forever).  The text goes through
    the real ``english-chars`` front end at the first pull, as a StreamablePipeline's does."""

    def __init__(self, chunks: list[dict[str, np.ndarray]] | None, *, fail: Exception | None = None,
                 gate: tuple[int, threading.Event] | None = None) -> None:
        self.script, self.fail, self.gate = chunks, fail, gate
        self.frontend = get_frontend("english-chars", max_chars=100)
        self.pulled = 0
        self.closed = False
        self.calls: list[tuple[Any, Any, Any]] = []

    def inputs_for(self, text: str | bytes, *, pace: float | None = None, chunk_frames: int | None = None) -> dict[str, np.ndarray]:
        return {"tokens": self.frontend.encode(text)}

    def stream_outputs(self, text: str | bytes, *, pace: float | None = None,
                       chunk_frames: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        self.calls.append((text, pace, chunk_frames))
        return self._generate(text)

    def _generate(self, text: str | bytes) -> Iterator[dict[str, np.ndarray]]:
        try:
            self.frontend.encode(text)
            i = 0
            while self.script is None or i < len(self.script):
                if self.gate is not None and i == self.gate[0]:
                    assert self.gate[1].wait(WAIT_S)
                self.pulled += 1
                yield self.script[i] if self.script is not None else mel(1, float(i))
                i += 1
            if self.fail is not None:
                raise self.fail
        finally:
            self.closed = True


def voice(pipeline: Any, *, max_streams: int = 4) -> tuple[VoiceModel, FakePb]:
    pb = FakePb()
    model = VoiceModel(pb)
    model.serve("tiny", pipeline, max_streams=max_streams)
    return model, pb


def run(model: VoiceModel, req: FakeRequest) -> FakeSender:
    """``execute`` one request, as Triton does, and wait for its stream to end."""
    assert model.execute([req]) is None
    assert req.sender.done.wait(WAIT_S), req.sender.sent
    return req.sender


def outcomes(pb: FakePb) -> dict[str, float]:
    return {o: pb.metric("melstream_streams_total", outcome=o).value for o in ("completed", "cancelled", "error")}


# --- streams ----------------------------------------------------------------------------------------------

def test_chunks_go_out_in_order_then_one_final_flag() -> None:
    pipeline = ScriptedPipeline([mel(2, 0.0), mel(3, 1.0), mel(1, 2.0)])
    model, pb = voice(pipeline)
    sender = run(model, request(b"Hello there.", pace=1.5, chunk_frames=3))
    assert sender.kinds() == ["chunk", "chunk", "chunk", "final"]
    assert sender.sent[-1] == ("final", None, 1)
    assert [(len(c["MEL"]), float(c["MEL"][0, 0])) for c in sender.chunks()] == [(2, 0.0), (3, 1.0), (1, 2.0)]
    assert all(set(c) == {"MEL"} and c["MEL"].dtype == np.float32 for c in sender.chunks())
    assert pipeline.calls == [(b"Hello there.", 1.5, 3)]  # TEXT's bytes, PACE and CHUNK_FRAMES as sent
    assert pipeline.closed
    assert outcomes(pb) == {"completed": 1, "cancelled": 0, "error": 0}
    assert pb.metric("melstream_frames_total").value == 6
    assert pb.metric("melstream_chunks_per_stream").observations == [3]
    assert len(pb.metric("melstream_first_chunk_seconds").observations) == 1
    assert pb.metric("melstream_active_streams").value == 0
    model.finalize()


def test_a_vocoder_voice_sends_audio_with_each_chunk() -> None:
    chunk = {"mel": np.zeros((2, 4), np.float32), "audio": np.arange(512, dtype=np.float64)}
    model, _ = voice(ScriptedPipeline([chunk]))
    sender = run(model, request())
    (sent,) = sender.chunks()
    assert set(sent) == {"MEL", "AUDIO"} and sent["AUDIO"].dtype == np.float32 and sent["AUDIO"][511] == 511.0
    model.finalize()


def test_an_empty_utterance_sends_only_the_final_flag() -> None:
    model, pb = voice(ScriptedPipeline([]))
    assert run(model, request()).kinds() == ["final"]
    assert outcomes(pb) == {"completed": 1, "cancelled": 0, "error": 0}
    assert pb.metric("melstream_chunks_per_stream").observations == [0]
    model.finalize()


def test_cancellation_between_chunks_stops_pulling_and_closes_the_pipeline() -> None:
    pipeline = ScriptedPipeline(None)  # endless: only the cancellation ends it
    model, pb = voice(pipeline)
    sender = run(model, request(cancel_after=2))
    assert sender.kinds() == ["chunk", "chunk", "final"]
    assert pipeline.pulled == 2 and pipeline.closed  # no chunk computed after the cancellation was seen
    assert outcomes(pb) == {"completed": 0, "cancelled": 1, "error": 0}
    assert pb.metric("melstream_chunks_per_stream").observations == []  # a cancelled stream's count says nothing
    assert pb.metric("melstream_frames_total").value == 2
    assert pb.metric("melstream_active_streams").value == 0
    model.finalize()


def test_a_request_cancelled_before_it_starts_computes_nothing() -> None:
    pipeline = ScriptedPipeline(None)
    model, pb = voice(pipeline)
    assert run(model, request(cancel_after=0)).kinds() == ["final"]
    assert pipeline.pulled == 0
    assert outcomes(pb) == {"completed": 0, "cancelled": 1, "error": 0}
    model.finalize()


def test_a_fault_in_the_middle_is_internal_and_the_stream_still_ends() -> None:
    pipeline = ScriptedPipeline([mel(2, 0.0), mel(2, 1.0)], fail=ZeroDivisionError("division by zero"))
    model, pb = voice(pipeline)
    sender = run(model, request())
    assert sender.kinds() == ["chunk", "chunk", "error+final"]
    assert sender.errors() == [("INTERNAL", "[INTERNAL] internal error: ZeroDivisionError: division by zero")]
    assert pipeline.closed
    assert outcomes(pb) == {"completed": 0, "cancelled": 0, "error": 1}
    assert pb.metric("melstream_active_streams").value == 0
    (level, logged), = pb.Logger.lines
    assert level == "error" and "Traceback" in logged and "ZeroDivisionError: division by zero" in logged
    # and the model keeps serving
    model.pipeline = ScriptedPipeline([mel(1, 0.0)])
    assert run(model, request()).kinds() == ["chunk", "final"]
    model.finalize()


def test_a_client_that_is_gone_still_gets_its_final_flag_and_the_stream_counts_as_an_error() -> None:
    model, pb = voice(ScriptedPipeline([mel(1, 0.0)]))
    sender = run(model, request(sender=FakeSender(fail_chunks=True)))
    assert sender.kinds() == ["error+final"]
    assert sender.errors()[0][0] == "INTERNAL" and "the client is gone" in sender.errors()[0][1]
    assert outcomes(pb) == {"completed": 0, "cancelled": 0, "error": 1}
    model.finalize()


def test_if_the_error_cannot_be_sent_the_final_flag_still_is() -> None:
    model, pb = voice(ScriptedPipeline([]))
    sender = run(model, request(b"", sender=FakeSender(fail_errors=True)))
    assert sender.kinds() == ["final"]
    assert [level for level, _ in pb.Logger.lines] == ["warn"]
    assert outcomes(pb) == {"completed": 0, "cancelled": 0, "error": 1}
    model.finalize()


def test_many_streams_at_once_each_get_their_own_chunks() -> None:
    model, pb = voice(ScriptedPipeline([mel(1, 0.0), mel(1, 1.0)]), max_streams=6)
    requests = [request() for _ in range(6)]
    assert model.execute(requests) is None
    for req in requests:
        assert req.sender.done.wait(WAIT_S)
        assert req.sender.kinds() == ["chunk", "chunk", "final"]
    assert outcomes(pb) == {"completed": 6, "cancelled": 0, "error": 0}
    assert pb.metric("melstream_active_streams").value == 0
    model.finalize()


def test_unloading_ends_running_streams_with_unavailable_and_refuses_new_ones() -> None:
    go = threading.Event()
    pipeline = ScriptedPipeline([mel(1, 0.0), mel(1, 1.0), mel(1, 2.0)], gate=(1, go))  # the second pull waits for go
    model, pb = voice(pipeline)
    running = request()
    model.execute([running])
    unloading = threading.Thread(target=model.finalize)
    unloading.start()
    assert model._closing.wait(WAIT_S)
    go.set()
    unloading.join(WAIT_S)
    assert not unloading.is_alive()
    assert running.sender.kinds() == ["chunk", "chunk", "error+final"]
    assert running.sender.errors() == [("UNAVAILABLE", "[UNAVAILABLE] voice 'tiny' is shutting down")]
    # unloaded, the model has freed its metrics (their destructors must run while the stub reaches the server);
    # a late request is still refused, and no longer counted
    assert model.metrics is None
    late = request()
    model.execute([late])
    assert late.sender.kinds() == ["error+final"] and late.sender.errors()[0][0] == "UNAVAILABLE"
    assert pipeline.closed and outcomes(pb) == {"completed": 0, "cancelled": 0, "error": 1}
    assert pb.metric("melstream_streams_total", outcome="refused").value == 0


# --- admission --------------------------------------------------------------------------------------------

BUSY = "[UNAVAILABLE] voice 'tiny' is busy: it serves 2 streams at once; try again later"


def refused(pb: FakePb) -> float:
    return pb.metric("melstream_streams_total", outcome="refused").value


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def test_the_stream_beyond_the_limit_is_refused_at_once_and_computes_nothing() -> None:
    go = threading.Event()
    pipeline = ScriptedPipeline(None, gate=(1, go))  # every admitted stream sends one chunk, then waits for go
    model, pb = voice(pipeline, max_streams=2)
    admitted = [request(cancel_after=3) for _ in range(2)]
    model.execute(admitted)
    wait_until(lambda: all(len(r.sender.chunks()) == 1 for r in admitted))
    pulls = pipeline.pulled
    extra = request()
    started = time.perf_counter()
    assert model.execute([extra]) is None
    took = time.perf_counter() - started
    assert extra.sender.kinds() == ["error+final"]  # answered inside execute: nothing was left to a thread
    assert extra.sender.errors() == [("UNAVAILABLE", BUSY)]
    assert took < 0.5, took  # generous on a busy machine: it is one lock and one send
    assert len(pipeline.calls) == 2 and pipeline.pulled == pulls  # the refused request computed nothing
    assert wire.error_code(BUSY) == "UNAVAILABLE" and wire.is_busy(BUSY)
    assert model.active_streams == 2 and pb.metric("melstream_active_streams").value == 2
    assert refused(pb) == 1 and outcomes(pb) == {"completed": 0, "cancelled": 0, "error": 0}
    assert pb.Logger.lines == []  # a busy voice is not a fault
    go.set()
    for req in admitted:
        assert req.sender.done.wait(WAIT_S)
    model.finalize()
    assert model.active_streams == 0


def test_a_batch_of_requests_admits_up_to_the_limit_and_refuses_the_rest() -> None:
    go = threading.Event()
    model, pb = voice(ScriptedPipeline([mel(1, 0.0), mel(1, 1.0)], gate=(0, go)), max_streams=2)
    requests = [request() for _ in range(5)]
    model.execute(requests)
    assert [r.sender.kinds() for r in requests[2:]] == [["error+final"]] * 3
    assert all(r.sender.errors() == [("UNAVAILABLE", BUSY)] for r in requests[2:])
    go.set()
    for req in requests[:2]:
        assert req.sender.done.wait(WAIT_S)
        assert req.sender.kinds() == ["chunk", "chunk", "final"]
    assert refused(pb) == 3 and outcomes(pb) == {"completed": 2, "cancelled": 0, "error": 0}
    model.finalize()


def endings() -> list[tuple[str, Any, dict[str, Any]]]:
    """How a stream can end, each freeing its slot: (outcome, pipeline, request options)."""
    return [("completed", ScriptedPipeline([mel(1, 0.0)]), {}),
            ("error", ScriptedPipeline([mel(1, 0.0)], fail=RuntimeError("boom")), {}),
            ("error", ScriptedPipeline([mel(1, 0.0)]), {"text": b""}),  # an input error
            ("cancelled", ScriptedPipeline(None), {"cancel_after": 2})]


@pytest.mark.parametrize("outcome, pipeline, options", endings(), ids=["completed", "fault", "input error", "cancelled"])
def test_a_slot_frees_when_its_stream_ends(outcome: str, pipeline: ScriptedPipeline, options: dict[str, Any]) -> None:
    model, pb = voice(pipeline, max_streams=1)
    for _ in range(3):  # each stream ends before the next comes: the one slot serves them all in turn
        sender = run(model, request(**options))
        assert sender.kinds()[-1].endswith("final") and "UNAVAILABLE" not in [code for code, _ in sender.errors()]
        wait_until(lambda: model.active_streams == 0)  # the slot is freed right after the final flag
    assert pb.metric("melstream_streams_total", outcome=outcome).value == 3 and refused(pb) == 0
    assert pb.metric("melstream_active_streams").value == 0
    model.finalize()


def test_a_slot_is_free_before_the_final_flag_is_sent() -> None:
    """A client that starts its next utterance the moment its last one ends is not refused for the slot its own
    finished stream holds: the slot is freed before the final flag goes out, while a stream still computing holds
    its slot (the next request is refused)."""
    flagging, release = threading.Event(), threading.Event()

    class SlowFlag(FakeSender):
        def send(self, response: FakeResponse | None = None, flags: int = 0) -> None:
            if flags:
                flagging.set()
                assert release.wait(WAIT_S)
            super().send(response, flags)

    go = threading.Event()
    model, pb = voice(ScriptedPipeline([mel(1, 0.0), mel(1, 1.0)], gate=(1, go)), max_streams=1)
    first = request(sender=SlowFlag())
    model.execute([first])
    wait_until(lambda: len(first.sender.chunks()) == 1)  # computing (held at its second pull): the slot is taken
    early = request()
    model.execute([early])
    assert early.sender.kinds() == ["error+final"] and early.sender.errors()[0][0] == "UNAVAILABLE"
    go.set()
    assert flagging.wait(WAIT_S)  # its final flag is on its way (and held there)
    second = request()
    model.execute([second])  # the client's next utterance, before its last one's final flag has gone
    release.set()
    assert first.sender.done.wait(WAIT_S) and second.sender.done.wait(WAIT_S)
    assert second.sender.kinds() == ["chunk", "chunk", "final"], second.sender.sent
    assert refused(pb) == 1
    model.finalize()


def test_concurrent_executes_never_admit_more_than_the_limit() -> None:
    go = threading.Event()
    model, pb = voice(ScriptedPipeline([mel(1, 0.0)], gate=(0, go)), max_streams=5)
    requests = [request() for _ in range(40)]
    callers = [threading.Thread(target=model.execute, args=([r],)) for r in requests]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(WAIT_S)
    busy = [r for r in requests if r.sender.kinds() == ["error+final"]]
    assert len(busy) == 35 and model.active_streams == 5
    go.set()
    for req in requests:
        assert req.sender.done.wait(WAIT_S)
    assert refused(pb) == 35 and outcomes(pb)["completed"] == 5
    model.finalize()


def test_a_full_network_queue_ends_the_stream_as_busy_not_as_a_fault() -> None:
    failing = ScriptedPipeline([mel(1, 0.0)], fail=SynthesisError("network model 'tiny__decoder': Exceeds maximum queue size"))
    model, pb = voice(failing)
    sender = run(model, request())
    assert sender.kinds() == ["chunk", "error+final"]
    [(code, message)] = sender.errors()
    assert code == "UNAVAILABLE" and wire.is_busy(message)
    assert message == ("[UNAVAILABLE] voice 'tiny' is busy: network model 'tiny__decoder': Exceeds maximum queue size; "
                       "try again later")
    assert [level for level, _ in pb.Logger.lines] == ["warn"]
    model.finalize()


@pytest.mark.parametrize("answer", ["Stub process 'tiny__decoder_0_0' is not healthy.",
                                    "Failed for execute the inference request. Model 'tiny__decoder' is not ready."])
def test_a_network_being_restarted_ends_the_stream_as_unavailable_not_as_a_fault(answer: str) -> None:
    failing = ScriptedPipeline([mel(1, 0.0)], fail=SynthesisError(f"network model 'tiny__decoder': {answer}"))
    model, pb = voice(failing)
    sender = run(model, request())
    assert sender.kinds() == ["chunk", "error+final"]
    [(code, message)] = sender.errors()
    assert code == "UNAVAILABLE" and message.startswith("[UNAVAILABLE] voice 'tiny' is restarting a network (")
    assert message.endswith("); try again") and answer in message
    assert wire.error_code(message) == "UNAVAILABLE" and not wire.is_busy(message)
    assert [level for level, _ in pb.Logger.lines] == ["warn"]
    model.finalize()


@pytest.mark.parametrize("refusal", ["Server not ready", "Server is stopping"])
def test_a_server_that_stops_ends_the_stream_as_shutting_down_not_as_a_fault(refusal: str) -> None:
    # at SIGTERM Triton refuses the voice's network calls before it unloads the voice (finalize comes later)
    failing = ScriptedPipeline([mel(1, 0.0)], fail=SynthesisError(f"network model 'tiny__decoder': {refusal}"))
    model, pb = voice(failing)
    sender = run(model, request())
    assert sender.kinds() == ["chunk", "error+final"]
    assert sender.errors() == [("UNAVAILABLE", "[UNAVAILABLE] voice 'tiny' is shutting down")]
    assert outcomes(pb) == {"completed": 0, "cancelled": 0, "error": 1} and pb.Logger.lines == []
    model.finalize()


def test_max_streams_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_streams must be >= 1, got 0"):
        VoiceModel(FakePb()).serve("tiny", ScriptedPipeline([]), max_streams=0)


@pytest.mark.parametrize("message, busy", [
    (BUSY, True),
    ("[UNAVAILABLE] voice 'tacovoice' is busy: it serves 16 streams at once; try again later", True),
    ("Exceeds maximum queue size", True),
    ("[request id: 7] Exceeds maximum queue size", True),
    ("Request timeout expired", True),
    ("[UNAVAILABLE] voice 'tiny' is shutting down", False),
    ("[INVALID_ARG] voice 'tiny' is busy: it serves 2 streams at once; try again later", False),
    ("Server is stopping", False),
    ("failed to connect to all addresses", False),
])
def test_is_busy_tells_capacity_from_other_unavailability(message: str, busy: bool) -> None:
    assert wire.is_busy(message) is busy
    error = client_error(message, where="tiny")
    assert isinstance(error, ServerBusyError) is busy  # what a client raises for it
    if busy:
        assert isinstance(error, ServerUnavailableError) and wire.error_code(message) == "UNAVAILABLE"
        assert str(error) == f"tiny: {message}"  # the server's message kept whole


# --- input errors -----------------------------------------------------------------------------------------

PACE_MESSAGE = "[INVALID_ARG] input PACE must be a finite number from 0.25 to 4.0 (1 is the voice's own rate, 2 twice as fast), got "
CHUNK_MESSAGE = "[INVALID_ARG] input CHUNK_FRAMES must be from 0 to 100000 frames (0 = the whole utterance in one response), got "


@pytest.mark.parametrize("req, message", [
    (request(None, pace=1.0), "[INVALID_ARG] input TEXT is missing: a voice needs TEXT (BYTES [1])"),
    (request(np.array([b"a", b"b"], dtype=object)), "[INVALID_ARG] input TEXT must hold exactly one element (BYTES [1]), got 2"),
    (request(np.array([], dtype=object)), "[INVALID_ARG] input TEXT must hold exactly one element (BYTES [1]), got 0"),
    (request(np.array([5], dtype=object)), "[INVALID_ARG] input TEXT must be BYTES (UTF-8 text), got int"),
    (request(b"\xff\xfe hello"),
     "[INVALID_ARG] input TEXT: TextError: text is not valid UTF-8: byte 0xff at byte offset 0 (invalid start byte)"),
    (request(b""), "[INVALID_ARG] input TEXT: TextError: text has nothing to speak: it is empty"),
    (request(b" ?! "), "[INVALID_ARG] input TEXT: TextError: text has nothing to speak: ' ?! ' has no letters after normalisation"),
    (request(b"a" * 101), "[INVALID_ARG] input TEXT: TextError: text is 101 characters; the limit is 100"),
    (request(pace=0.0), PACE_MESSAGE + "0.0"),
    (request(pace=-1.0), PACE_MESSAGE + "-1.0"),
    (request(pace=float("nan")), PACE_MESSAGE + "nan"),
    (request(pace=float("inf")), PACE_MESSAGE + "inf"),
    (request(pace=float("-inf")), PACE_MESSAGE + "-inf"),
    (request(pace=1e9), PACE_MESSAGE + "1000000000.0"),
    (request(pace=0.2), PACE_MESSAGE + str(float(np.float32(0.2)))),
    (request(pace=4.5), PACE_MESSAGE + "4.5"),
    (request(pace=np.array([1.0, 1.0], np.float32)), "[INVALID_ARG] input PACE must hold exactly one element (FP32 [1]), got 2"),
    (request(chunk_frames=-1), CHUNK_MESSAGE + "-1"),
    (request(chunk_frames=100_001), CHUNK_MESSAGE + "100001"),
    (request(chunk_frames=2**31 - 1), CHUNK_MESSAGE + "2147483647"),
    (request(chunk_frames=np.array([], np.int32)), "[INVALID_ARG] input CHUNK_FRAMES must hold exactly one element (INT32 [1]), got 0"),
], ids=["no TEXT", "two TEXTs", "no TEXT element", "TEXT not bytes", "TEXT not UTF-8", "empty TEXT", "unspeakable TEXT",
        "TEXT too long", "PACE 0", "PACE -1", "PACE nan", "PACE inf", "PACE -inf", "PACE 1e9", "PACE 0.2", "PACE 4.5",
        "two PACEs", "CHUNK_FRAMES -1", "CHUNK_FRAMES too big", "CHUNK_FRAMES int32 max", "no CHUNK_FRAMES element"])
def test_each_input_error_is_invalid_arg_naming_the_input(req: FakeRequest, message: str) -> None:
    pipeline = ScriptedPipeline([mel(1, 0.0)])
    model, pb = voice(pipeline)
    sender = run(model, req)
    assert sender.kinds() == ["error+final"]  # the error is the request's last response: it carries the final flag
    assert sender.errors() == [("INVALID_ARG", message)]
    assert wire.error_code(message) == "INVALID_ARG"  # what a client derives from the message alone
    assert pipeline.pulled == 0
    assert outcomes(pb) == {"completed": 0, "cancelled": 0, "error": 1}
    assert pb.metric("melstream_active_streams").value == 0
    assert pb.Logger.lines == []  # a client's mistake is not a server fault: no traceback in the log
    model.finalize()


@pytest.mark.parametrize("pace, chunk_frames", [(0.25, 0), (4.0, 100_000), (1.0, 1), (None, None)])
def test_the_edges_of_the_ranges_are_accepted(pace: float | None, chunk_frames: int | None) -> None:
    parsed = parse_inputs(FakePb(), request(b"hi", pace=pace, chunk_frames=chunk_frames))
    assert (parsed.text, parsed.pace, parsed.chunk_frames) == (b"hi", pace, chunk_frames)
    assert wire.PACE_RANGE == (0.25, 4.0) and wire.CHUNK_FRAMES_RANGE == (0, 100_000)


def test_parse_inputs_raises_input_error() -> None:
    with pytest.raises(InputError, match="^input PACE must be"):
        parse_inputs(FakePb(), request(pace=float("nan")))


# --- from a generated config ------------------------------------------------------------------------------

def test_initialize_reads_the_config_build_repo_writes(fast_addon: melstream.Addon) -> None:
    cfg = pipeline_config(fast_addon, get_profile("cpu-bls"))  # networks through Triton: no files to read here
    args = {"model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True))}
    pb = FakePb()
    model = VoiceModel(pb)
    model.initialize(args)
    assert model.name == fast_addon.name and model.metrics is not None
    assert model.max_streams == get_profile("cpu-bls").streams_for(fast_addon.name) == int(cfg.parameters[MAX_STREAMS_PARAMETER].string_value)
    assert model.pipeline is not None and model.pipeline.describe() == fast_addon.build().describe()  # type: ignore[attr-defined]
    assert pb.metric("melstream_active_streams", voice=fast_addon.name).value == 0
    model.finalize()


def test_a_real_pipeline_streams_through_the_model(fast_pipeline: melstream.StreamablePipeline) -> None:
    model, pb = voice(fast_pipeline)
    sender = run(model, request(b"Hello there, world.", chunk_frames=4))
    chunks = [c["MEL"] for c in sender.chunks()]
    assert sender.kinds()[-1] == "final" and len(chunks) >= 2 and not sender.errors()
    assert all(len(c) == 4 for c in chunks[:-1]) and 1 <= len(chunks[-1]) <= 4 and chunks[0].shape[1] == 80
    assert pb.metric("melstream_frames_total").value == sum(len(c) for c in chunks)
    model.finalize()


# --- reading the code back: melstream.wire.error_code ------------------------------------------------------

@pytest.mark.parametrize("code", wire.ERROR_CODES)
def test_the_tag_carries_every_code(code: str) -> None:
    message = wire.error_message(code, "something: went wrong")
    assert message == f"[{code}] something: went wrong"
    assert wire.error_code(message) == code
    assert wire.error_code(message, http_status=400, grpc_status="StatusCode.INTERNAL") == code  # the tag is surest


def test_error_message_refuses_an_unknown_code() -> None:
    with pytest.raises(wire.WireError, match="unknown Triton error code 'BAD_ARG'"):
        wire.error_message("BAD_ARG", "x")


@pytest.mark.parametrize("message, options, code", [
    # what a gRPC stream brings of Triton's own errors (seen from tritonserver 2.51): the message alone
    ("Request for unknown model: 'nosuch' is not found", {}, "NOT_FOUND"),
    ("Request for unknown model: 'fastvoice' has no available versions", {}, "NOT_FOUND"),
    ("[request id: <id_unknown>] inference input 'TEXT' data-type is 'FP32', but model 'fastvoice' expects 'BYTES'", {}, "INVALID_ARG"),
    ("[request id: <id_unknown>] unexpected shape for input 'TEXT' for model 'fastvoice'. Expected [1], got [2]. ", {}, "INVALID_ARG"),
    ("[request id: <id_unknown>] expected number of inputs between 1 and 3 but got 0 inputs for model 'fastvoice'. "
     "Got input(s) [], but missing required input(s) ['TEXT']. Please provide all required input(s).", {}, "INVALID_ARG"),
    ("[request id: 7] unexpected inference input 'X' for model 'fastvoice'", {}, "INVALID_ARG"),
    ("Exceeds maximum queue size", {}, "UNAVAILABLE"),
    ("Server is stopping, scheduler for model has stopped accepting new inference requests", {}, "UNAVAILABLE"),
    # a model being brought back by the supervisor: try again (HTTP's status for the stub's death is unreliable)
    ("Stub process 'fastvoice_0_0' is not healthy.", {"http_status": 400}, "UNAVAILABLE"),
    ("Failed for execute the inference request. Model 'fastvoice__text_encoder' is not ready.", {}, "UNAVAILABLE"),
    # HTTP statuses (Triton's HttpCodeFromError, and proxies)
    ("The schema can not convert input 'TEXT' to tensor with proper shape", {"http_status": 400}, "INVALID_ARG"),
    ("Unable to parse 'data': attempt to access JSON non-number as double", {"http_status": 500}, "INTERNAL"),
    ("anything", {"http_status": 404}, "NOT_FOUND"),
    ("anything", {"http_status": 503}, "UNAVAILABLE"),
    ("anything", {"http_status": 501}, "UNSUPPORTED"),
    ("<html>bad gateway</html>", {"http_status": 502}, "UNAVAILABLE"),
    ("anything", {"http_status": 418}, "UNKNOWN"),
    ("TextError: an old server's text", {"http_status": 200}, "UNKNOWN"),  # an error event after a 200: no status to go by
    # gRPC statuses (triton_grpc_error streams, other calls, the transport)
    ("bad", {"grpc_status": "StatusCode.INVALID_ARGUMENT"}, "INVALID_ARG"),
    ("bad", {"grpc_status": "INVALID_ARGUMENT"}, "INVALID_ARG"),
    ("bad", {"grpc_status": 3}, "INVALID_ARG"),
    ("failed to connect to all addresses", {"grpc_status": "StatusCode.UNAVAILABLE"}, "UNAVAILABLE"),
    ("ModelInfer RPC doesn't support models with decoupled transaction policy", {"grpc_status": "StatusCode.UNIMPLEMENTED"}, "UNSUPPORTED"),
    ("Request for unknown model: 'x' is not found", {"grpc_status": "StatusCode.UNKNOWN"}, "NOT_FOUND"),
    ("Deadline Exceeded", {"grpc_status": "StatusCode.DEADLINE_EXCEEDED"}, "UNKNOWN"),
    ("something else", {}, "UNKNOWN"),
    ("[NOT_A_CODE] text", {}, "UNKNOWN"),
])
def test_error_code_from_what_a_client_sees(message: str, options: dict[str, Any], code: str) -> None:
    assert wire.error_code(message, **options) == code


def test_unloading_does_not_wait_forever_for_a_stuck_stream() -> None:
    stuck_gate = threading.Event()
    pipeline = ScriptedPipeline([mel(1, 0.0), mel(1, 1.0)], gate=(0, stuck_gate))  # the first pull never returns
    model, pb = voice(pipeline)
    model.unload_wait_s = 0.2
    running = request()
    model.execute([running])
    started = time.monotonic()
    model.finalize()
    assert time.monotonic() - started < WAIT_S
    [(level, logged)] = pb.Logger.lines
    assert level == "warn" and "unloading with 1 stream(s) still running after 0.2 s: tiny-stream-1" in logged
    assert model.metrics is not None  # the stuck stream still holds them
    stuck_gate.set()  # the stream then ends as the model is closing
    for _ in range(int(WAIT_S / 0.01)):
        if model.active_streams == 0:
            break
        time.sleep(0.01)  # polling interval
    assert running.sender.kinds()[-1].endswith("final")


@pytest.mark.parametrize("outcome", ["completed", "cancelled", "error"])
def test_a_streams_outcome_is_counted_after_its_frames_and_chunks_and_before_it_is_no_longer_active(outcome: str) -> None:
    # a scrape can fall between two metric calls: one that sees the stream ended must see its frames counted,
    # and one that sees no stream active must see every outcome (tests and benchmarks wait for that)
    pb = FakePb()
    metrics = StreamMetrics(pb, "tiny")
    order: list[str] = []
    for m in pb.metrics:
        m.increment = lambda by, m=m: order.append(m.family.name + m.labels.get("outcome", ""))  # type: ignore[method-assign]
        m.observe = lambda value, m=m: order.append(m.family.name)  # type: ignore[method-assign]
    metrics.ended(outcome, chunks=3, frames=12)
    assert order[-1] == "melstream_active_streams"
    assert order.index("melstream_frames_total") < order.index(f"melstream_streams_total{outcome}") < len(order) - 1
    assert ("melstream_chunks_per_stream" in order) == (outcome == "completed")
    if outcome == "completed":
        assert order.index("melstream_chunks_per_stream") < order.index(f"melstream_streams_total{outcome}")


def test_a_new_copy_of_a_voice_shares_its_series_and_starts_with_no_active_stream() -> None:
    """The supervisor loads a new copy of a voice whose stub died; the dead copy's streams never end, so the
    shared active-streams gauge starts again from 0, and the counters go on."""
    from melstream.serving.voice_model import StreamMetrics

    pb = FakePb()
    old = StreamMetrics(pb, "v")
    old.started()
    old.started()
    old.ended("completed", chunks=3, frames=30)
    assert pb.metric("melstream_active_streams", voice="v").value == 1  # one stream stuck in the dead copy
    StreamMetrics(pb, "v")
    assert pb.metric("melstream_active_streams", voice="v").value == 0
    assert pb.metric("melstream_streams_total", voice="v", outcome="completed").value == 1
    assert pb.metric("melstream_frames_total", voice="v").value == 30


@pytest.mark.parametrize("wait_us", [0, 300])
def test_a_voice_placed_with_its_networks_runs_them_here_and_counts_its_batches(fast_addon: melstream.Addon, tmp_path: Any,
                                                                                wait_us: int) -> None:
    """placement "voice": the voice model runs its networks with ONNX Runtime in its own process, from the files its
    config names (relative to its directory), batched across its streams when a batch wait is set."""
    from melstream.serving.repo import build_repository, parse_config

    assert fast_addon.path is not None
    build_repository(fast_addon.path.parent, tmp_path / "repo", placement="voice", batch_wait_us=wait_us)
    model_dir = tmp_path / "repo" / fast_addon.name
    cfg = parse_config((model_dir / "config.pbtxt").read_text())
    files = json.loads(cfg.parameters["network_files"].string_value)
    assert sorted(files) == sorted(fast_addon.networks)
    pb = FakePb()
    model = VoiceModel(pb)
    model.initialize({"model_config": json.dumps(json_format.MessageToDict(cfg, preserving_proto_field_name=True)),
                      "model_repository": str(model_dir)})
    assert not hasattr(pb, "InferenceRequest")  # so no network call can go through Triton (BLS) here
    senders = [request(b"Hello there, world.", chunk_frames=4) for _ in range(3)]
    model.execute(senders)
    for r in senders:
        assert r.sender.done.wait(WAIT_S) and r.sender.kinds()[-1] == "final" and not r.sender.errors()
    wait_until(lambda: model.active_streams == 0)
    first = np.concatenate([c["MEL"] for c in senders[0].sender.chunks()])
    for r in senders[1:]:  # the same text: batched or not, the same frames
        np.testing.assert_allclose(np.concatenate([c["MEL"] for c in r.sender.chunks()]), first, atol=1e-5)
    np.testing.assert_allclose(first, fast_addon.build().synthesize("Hello there, world."), atol=1e-4)
    calls = pb.metric("melstream_network_calls_total", voice=fast_addon.name, network="decoder")
    runs = pb.metric("melstream_network_runs_total", voice=fast_addon.name, network="decoder")
    if wait_us:
        assert calls.value >= runs.value > 0  # every call counted, in fewer or as many runs
    else:
        assert calls.value == runs.value > 0  # every call counted, each a run of its own
    model.finalize()


# --- listener-first scheduling ------------------------------------------------------------------------------

def test_each_chunk_is_computed_in_a_turn_whose_deadline_follows_the_listener() -> None:
    """The first chunk's deadline is the request's arrival + the target; each later one, the delivery margin before
    the listener runs dry: the first chunk's time + the audio sent so far - the margin."""
    from melstream.runners.schedule import DELIVERY_MARGIN_S, Scheduler
    from melstream.serving.voice_model import FIRST_CHUNK_TARGET_S

    seen: list[float] = []

    class Recording(Scheduler):
        def acquire(self, deadline: float) -> None:
            seen.append(deadline)
            super().acquire(deadline)

    pb = FakePb()
    model = VoiceModel(pb)
    model.serve("tiny", ScriptedPipeline([mel(4, 0.0), mel(6, 1.0), mel(8, 2.0)]), frame_s=0.5, compute_slots=1)
    model.scheduler = Recording(1)
    before = time.perf_counter()
    sender = run(model, request())
    assert len(sender.sent) == 4  # three chunks, then the final flag
    assert len(seen) == 4  # a turn per pull: three chunks and the end
    assert seen[0] - FIRST_CHUNK_TARGET_S >= before
    assert DELIVERY_MARGIN_S > 0
    first = seen[1] - 4 * 0.5 + DELIVERY_MARGIN_S  # the first chunk's time (4 frames of 0.5 s sent)
    assert before <= first <= time.perf_counter()
    assert seen[2] == pytest.approx(first + 10 * 0.5 - DELIVERY_MARGIN_S)
    assert seen[3] == pytest.approx(first + 18 * 0.5 - DELIVERY_MARGIN_S)


def test_without_compute_slots_there_is_no_scheduler() -> None:
    model, _ = voice(ScriptedPipeline([mel(2, 0.0)]))
    assert model.scheduler is None
