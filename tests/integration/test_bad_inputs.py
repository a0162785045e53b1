"""The bad-input corpus (tests/bad_inputs.py) against the shared server: every case over each protocol it
applies to, on both shipped voices.  After each case the server and the voice must still be ready, and a
gRPC stream that carried a bad request must serve a good one next; the outcome must match the case's
(the Triton code as melstream.wire.error_code reads it, and message fragments naming the input; or frames).

Requests are written with tritonclient and http.client directly, as any Triton user would, each with a
timeout.  With MELSTREAM_FULL (``make reliability``) the whole corpus also runs concurrently, several rounds.
"""

from __future__ import annotations

import http.client
import json
import queue
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from melstream.serving.server import TritonServer
from melstream_client import wire
from tests.bad_inputs import CORPUS, GOOD_TEXT, Case, GrpcRequest, HttpRequest, Outcome, Tensor, text, voice_spec
from tests.conftest import FULL

pytestmark = pytest.mark.reliability

#: seconds any one response may take (the longest case is a few seconds of speech)
TIMEOUT_S = 30.0
N_MELS = {voice: voice_spec(voice).audio.n_mels for voice in CORPUS}
NUMPY = {"BYTES": np.object_, "FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


@dataclass
class Seen:
    """What came back for a request: the error (message, HTTP status, gRPC status), or the responses' outputs."""

    error: str | None = None
    http_status: int | None = None
    grpc_status: str | None = None
    responses: list[dict[str, Any]] = field(default_factory=list)  # output name -> array, per response with outputs

    def describe(self) -> str:
        if self.error is not None:
            return f"error (HTTP {self.http_status}, gRPC {self.grpc_status}): {self.error}"
        return f"{len(self.responses)} responses: {[{k: np.shape(v) for k, v in r.items()} for r in self.responses][:5]}"


# --- gRPC ----------------------------------------------------------------------------------------------
def infer_input(t: Tensor) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(t.name, list(t.shape), t.datatype)
    inp.set_data_from_numpy(np.array(t.values, dtype=NUMPY[t.datatype]).reshape(t.shape))
    if t.raw is not None:
        inp._raw_content = t.raw  # a request no well-behaved client builds: tritonclient has no public way to it
    return inp


class Stream:
    """A tritonclient gRPC bidirectional stream; responses and errors land in a queue."""

    def __init__(self, server: TritonServer) -> None:
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put((result, error)))

    def send(self, model: str, inputs: tuple[Tensor, ...], request_id: str) -> None:
        self.client.async_stream_infer(model, [infer_input(t) for t in inputs], request_id=request_id,
                                       enable_empty_final_response=True)

    def until_end(self, request_id: str) -> Seen:
        """What came back for ``request_id``, up to its final response or its error (an error is a request's
        last response: the voice sends it with the final flag, Triton's own refusals have no final response)."""
        seen = Seen()
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                result, error = self.responses.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no final response for {request_id!r} within {TIMEOUT_S} s; seen: {seen.describe()}") from None
            if error is not None:
                seen.error, seen.grpc_status = error.message(), error.status()
                return seen
            response = result.get_response()
            assert response.id == request_id, f"a response of {response.id!r} while waiting for {request_id!r}"
            if response.outputs:
                seen.responses.append({o.name: result.as_numpy(o.name) for o in response.outputs})
            if response.parameters[wire.FINAL_RESPONSE_PARAMETER].bool_param:
                return seen

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def send_grpc(server: TritonServer, voice: str, request: GrpcRequest) -> Seen:
    """The case's request; on a stream, then a good request on the same stream, which must be served."""
    if request.unary:
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            try:
                result = client.infer(request.model, [infer_input(t) for t in request.inputs], client_timeout=TIMEOUT_S)
            except InferenceServerException as e:
                return Seen(error=e.message(), grpc_status=e.status())
            return Seen(responses=[{o.name: result.as_numpy(o.name) for o in result.get_response().outputs}])
    stream = Stream(server)
    try:
        stream.send(request.model, request.inputs, "bad")
        seen = stream.until_end("bad")
        stream.send(voice, (text(GOOD_TEXT),), "good")
        after = stream.until_end("good")
        assert after.error is None and after.responses, f"the stream did not serve a good request after the case: {after.describe()}"
        assert stream.responses.empty(), f"more came back than the two requests' responses: {stream.responses.get()}"
    finally:
        stream.close()
    return seen


# --- HTTP ----------------------------------------------------------------------------------------------
def send_http(server: TritonServer, voice: str, request: HttpRequest) -> Seen:
    conn = http.client.HTTPConnection("localhost", server.http_port, timeout=TIMEOUT_S)
    try:
        headers = dict(request.headers)
        if request.body is not None and "Content-Length" in headers:  # sent as given, whatever the body's length
            conn.putrequest(request.method, request.path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(request.body)
        else:
            conn.request(request.method, request.path, body=request.body, headers=headers)
        resp = conn.getresponse()
        status, content_type, body = resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()
    n_mels = N_MELS[voice]
    if status >= 400:
        return Seen(error=wire.http_error_message(status, body), http_status=status)
    seen = Seen(http_status=status)
    if content_type.startswith("text/event-stream"):
        for event in wire.sse_events(body.splitlines(keepends=True)):
            message = wire.event_error(event)
            if message is not None:  # an error after responses (a 200 already sent)
                seen.error = message
                break
            chunk = wire.decode_chunk(event, n_mels=n_mels)
            if chunk is not None:
                seen.responses.append({wire.OUTPUTS[k]: v for k, v in chunk.items()})
        return seen
    answer = json.loads(body)
    if wire.ERROR_KEY in answer:  # Triton's generate refuses a voice's second response this way, after a 200
        seen.error = wire.event_error(answer)
    elif "outputs" in answer:  # KServe v2 infer
        seen.responses.append({o["name"]: np.asarray(o["data"]) for o in answer["outputs"]})
    else:  # generate: one response as a JSON object of outputs
        chunk = wire.decode_chunk(answer, n_mels=n_mels)
        assert chunk is not None, f"generate answered without {wire.MEL}: {body[:200]!r}"
        seen.responses.append({wire.OUTPUTS[k]: v for k, v in chunk.items()})
    return seen


# --- checks --------------------------------------------------------------------------------------------
def get_status(server: TritonServer, path: str) -> int:
    conn = http.client.HTTPConnection("localhost", server.http_port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def assert_ready(server: TritonServer, voice: str) -> None:
    assert get_status(server, "/v2/health/ready") == 200, "the server is not ready after the case"
    assert get_status(server, f"/v2/models/{voice}/ready") == 200, f"voice {voice} is not ready after the case"


def mel_of(seen: Seen) -> np.ndarray:
    return np.concatenate([r[wire.MEL] for r in seen.responses if wire.MEL in r])


def check(server: TritonServer, voice: str, seen: Seen, expect: Outcome) -> None:
    if expect.honoured:
        assert seen.error is None, f"expected it honoured, got {seen.describe()}"
        for output in expect.outputs:
            assert any(output in r for r in seen.responses), f"no {output} in {seen.describe()}"
        if expect.responses is not None:
            assert len(seen.responses) == expect.responses, seen.describe()
        mels = [r[wire.MEL] for r in seen.responses if wire.MEL in r]
        assert all(len(m) > 0 for m in mels), seen.describe()
        if expect.chunk_frames is not None:
            assert all(len(m) == expect.chunk_frames for m in mels[:-1]) and len(mels[-1]) <= expect.chunk_frames, seen.describe()
        if expect.same_as is not None:  # a plain request of that text, on a stream of its own
            reference = mel_of(send_grpc(server, voice, GrpcRequest(voice, (text(expect.same_as),), Outcome())))
            mel = mel_of(seen)
            assert mel.shape == reference.shape, f"{mel.shape} frames, but {expect.same_as!r} makes {reference.shape}"
            # network calls batch with other streams' calls differently from run to run: equal up to float rounding
            np.testing.assert_allclose(mel, reference, atol=1e-3)
        return
    assert seen.error is not None, f"expected {expect.code}, got {seen.describe()}"
    code = wire.error_code(seen.error, http_status=seen.http_status, grpc_status=seen.grpc_status)
    assert code == expect.code, f"expected {expect.code}, got {code}: {seen.describe()}"
    for fragment in expect.fragments:
        assert fragment in seen.error, f"{fragment!r} not in the message: {seen.error}"
    if expect.http_status is not None:
        assert seen.http_status == expect.http_status, seen.describe()
    if code == wire.INTERNAL_ERROR:  # only Triton's own front end may say INTERNAL to bad input (its parse failures)
        assert expect.front_end and not seen.error.lstrip().startswith(f"[{wire.INTERNAL_ERROR}]"), seen.describe()


def run_case(server: TritonServer, case: Case, protocol: str) -> None:
    request = case.request(protocol)
    if isinstance(request, GrpcRequest):
        seen = send_grpc(server, case.voice, request)
    else:
        seen = send_http(server, case.voice, request)
    assert_ready(server, case.voice)  # first: a case that fails its outcome must still leave the server serving
    check(server, case.voice, seen, request.expect)


def params() -> Iterator[Any]:
    for voice, cases in CORPUS.items():
        for case in cases:
            for protocol in case.protocols:
                yield pytest.param(case, protocol, id=f"{voice}-{protocol}-{case.id}")


def test_the_corpus_is_large_and_the_same_for_every_voice() -> None:
    ids = {voice: [c.id for c in cases] for voice, cases in CORPUS.items()}
    first = next(iter(ids.values()))
    assert len(first) >= 60 and all(v == first for v in ids.values())
    assert all(case.protocols for cases in CORPUS.values() for case in cases)


@pytest.mark.parametrize("case, protocol", list(params()))
def test_bad_input(server: TritonServer, case: Case, protocol: str) -> None:
    run_case(server, case, protocol)


@pytest.mark.skipif(not FULL, reason="full size only (MELSTREAM_FULL=1, make reliability)")
def test_the_corpus_concurrently(server: TritonServer) -> None:
    """Every case of both voices over both protocols at once, on 8 threads, three rounds: the same outcomes,
    and the server ready after each round."""
    runs = [(case, protocol) for cases in CORPUS.values() for case in cases for protocol in case.protocols]
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda run: run_case(server, *run), runs))
        for voice in CORPUS:
            assert_ready(server, voice)
