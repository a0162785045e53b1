"""Bad input against a real server: every input error comes back as INVALID_ARG (as melstream.wire.error_code
derives it from what the client sees) with a message naming the input, over a plain gRPC stream and over
HTTP generate_stream, and the server keeps serving.  Requests are written with tritonclient and http.client
directly, as any Triton user would."""

from __future__ import annotations

import http.client
import json
import queue
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from melstream.serving.server import TritonServer
from melstream_client import wire
from tests.servers import start_server, streams_key, wait_for

VOICE = "fastvoice"
TIMEOUT_S = 60


def tensor(inp: wire.WireInput, values: list[Any], *, datatype: str | None = None) -> grpcclient.InferInput:
    """One input with ``values`` as its elements (any count), in ``inp``'s datatype unless ``datatype`` says otherwise."""
    dtype = {"BYTES": np.object_, "FP32": np.float32, "INT32": np.int32}[datatype or inp.datatype]
    t = grpcclient.InferInput(inp.name, [len(values)], datatype or inp.datatype)
    t.set_data_from_numpy(np.array(values, dtype=dtype))
    return t


GOOD = [tensor(wire.TEXT, [b"Still serving."])]

# name -> (inputs, the input the message must name)
GRPC_CASES: dict[str, tuple[list[grpcclient.InferInput], str]] = {
    "no TEXT": ([tensor(wire.PACE, [1.0])], "TEXT"),
    "no inputs at all": ([], "TEXT"),  # refused by Triton before the model
    "two TEXTs": ([tensor(wire.TEXT, [b"a", b"b"])], "TEXT"),  # refused by Triton before the model (shape)
    "TEXT as FP32": ([tensor(wire.TEXT, [1.0], datatype="FP32")], "TEXT"),  # refused by Triton before the model
    "TEXT not UTF-8": ([tensor(wire.TEXT, [b"\xff\xfe hello"])], "TEXT"),
    "empty TEXT": ([tensor(wire.TEXT, [b""])], "TEXT"),
    "unspeakable TEXT": ([tensor(wire.TEXT, [b" ?! "])], "TEXT"),
    **{f"PACE {p}": ([*GOOD, tensor(wire.PACE, [p])], "PACE") for p in (0.0, -1.0, float("nan"), float("inf"), 1e9)},
    "two PACEs": ([*GOOD, tensor(wire.PACE, [1.0, 1.0])], "PACE"),
    "CHUNK_FRAMES -1": ([*GOOD, tensor(wire.CHUNK_FRAMES, [-1])], "CHUNK_FRAMES"),
    "CHUNK_FRAMES too big": ([*GOOD, tensor(wire.CHUNK_FRAMES, [wire.CHUNK_FRAMES_RANGE[1] + 1])], "CHUNK_FRAMES"),
}


class Stream:
    """A plain tritonclient gRPC stream; responses and errors land in a queue."""

    def __init__(self, server: TritonServer, headers: dict[str, str] | None = None) -> None:
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.responses.put((result, error)), headers=headers)

    def send(self, inputs: list[grpcclient.InferInput], request_id: str) -> None:
        self.client.async_stream_infer(VOICE, inputs, request_id=request_id, enable_empty_final_response=True)

    def first_error(self) -> Any:
        result, error = self.responses.get(timeout=TIMEOUT_S)
        assert error is not None, f"expected an error, got a response: {result.get_response()}"
        return error

    def until_final(self, request_id: str) -> tuple[int, list[Any], list[str]]:
        """(chunks, errors, ids of other requests' final responses) seen until the final response of ``request_id``."""
        chunks, errors, other_finals = 0, [], []
        while True:
            result, error = self.responses.get(timeout=TIMEOUT_S)
            if error is not None:
                errors.append(error)
                continue
            response = result.get_response()
            if response.parameters[wire.FINAL_RESPONSE_PARAMETER].bool_param:
                if response.id == request_id:
                    return chunks, errors, other_finals
                other_finals.append(response.id)
            chunks += wire.MEL in {o.name for o in response.outputs}

    def close(self) -> None:
        self.client.stop_stream()
        self.client.close()


def assert_ready(server: TritonServer) -> None:
    with urllib.request.urlopen(f"http://localhost:{server.http_port}/v2/health/ready", timeout=10) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_grpc_stream_input_errors_are_invalid_arg_and_the_stream_keeps_serving(server: TritonServer, case: str) -> None:
    inputs, named = GRPC_CASES[case]
    stream = Stream(server)
    try:
        stream.send(inputs, "bad")
        error = stream.first_error()
        message = error.message()
        assert error.status() is None  # a plain stream carries the message only: the code must come from it
        assert wire.error_code(message, grpc_status=error.status()) == "INVALID_ARG", message
        assert named in message, message
        # the error was the bad request's last response (no empty final follows it), and the same stream
        # serves the next request
        stream.send(GOOD, "good")
        chunks, errors, other_finals = stream.until_final("good")
        assert chunks > 0 and errors == [] and other_finals == []
    finally:
        stream.close()
    assert_ready(server)


def test_with_triton_grpc_error_the_code_is_a_grpc_status_and_the_stream_ends(root: Path, tmp_path: Path) -> None:
    """Triton 2.51's ``triton_grpc_error`` stream header: a model's error ends the stream with a real gRPC status,
    and the stream takes no more requests.  2.51 frees the request's state at that error: a final flag sent
    after the error (rather than on it) then segfaulted the server on every such request (fixed upstream in
    Triton 2.68, server#8708); the voice sends its final flag on the error.  A rarer crash of 2.51's gRPC
    frontend in this mode remains (about 1 in 1400 such requests here), so this runs on a server of its own."""
    log = tmp_path / "tritonserver.log"
    own = start_server(root / "model_repository", log)
    try:
        stream = Stream(own, headers={"triton_grpc_error": "true"})
        try:
            stream.send([*GOOD, tensor(wire.PACE, [0.0])], "bad")
            error = stream.first_error()
            assert error.status() == "StatusCode.INVALID_ARGUMENT"
            assert wire.error_code(error.message(), grpc_status=error.status()) == "INVALID_ARG"
            with pytest.raises(Exception, match="A new stream should be started"):
                stream.send(GOOD, "good")
        finally:
            stream.close()
        # the voice counts a stream's outcome after its final flag has gone out; by then a use after free has happened
        wait_for(own, streams_key(VOICE, "error"), 1)
        assert "Signal (11)" not in log.read_text(errors="replace")
        assert_ready(own)
    finally:
        own.stop()


# name -> (JSON body as bytes, the input the message must name)
HTTP_CASES: dict[str, tuple[bytes, str]] = {
    "no TEXT": (b'{"PACE": 1.0}', "TEXT"),
    "no inputs at all": (b"{}", "TEXT"),  # refused by Triton before the model
    "two TEXTs": (b'{"TEXT": ["a", "b"]}', "TEXT"),  # refused by Triton before the model
    "TEXT not UTF-8": (b'{"TEXT": "\xff\xfe hello"}', "TEXT"),  # Triton's JSON parser passes the bytes on
    "empty TEXT": (b'{"TEXT": ""}', "TEXT"),
    **{f"PACE {p}": (b'{"TEXT": "hello", "PACE": %s}' % p.encode(), "PACE") for p in ("0", "-1", "NaN", "Infinity", "1e9")},
    "CHUNK_FRAMES -1": (b'{"TEXT": "hello", "CHUNK_FRAMES": -1}', "CHUNK_FRAMES"),
    "CHUNK_FRAMES too big": (b'{"TEXT": "hello", "CHUNK_FRAMES": %d}' % (wire.CHUNK_FRAMES_RANGE[1] + 1), "CHUNK_FRAMES"),
}


def post_generate_stream(server: TritonServer, body: bytes) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("localhost", server.http_port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", f"/v2/models/{VOICE}/generate_stream", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def error_text(body: bytes) -> str:
    """The error of an HTTP answer: a JSON body, or the first server-sent event (``data: {...}``)."""
    text = body.decode("utf-8", "replace")
    payload = text.removeprefix("data: ").split("\n\n")[0]
    return str(json.loads(payload)[wire.ERROR_KEY])


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_http_generate_stream_input_errors_are_invalid_arg(server: TritonServer, case: str) -> None:
    body, named = HTTP_CASES[case]
    status, content_type, answer = post_generate_stream(server, body)
    message = error_text(answer)
    # an error before the first response: an HTTP error status, with a JSON body (Triton refused it) or one SSE event
    # (the voice did; Triton 2.51 reads that status from the error after freeing it, so only "an error" is sure: 400 here)
    assert 400 <= status < 600 and content_type.startswith(("application/json", "text/event-stream")), (status, content_type, answer)
    assert wire.error_code(message, http_status=status) == "INVALID_ARG", message
    assert named in message, message
    assert_ready(server)
    status, content_type, answer = post_generate_stream(server, b'{"TEXT": "Still serving."}')
    assert status == 200 and answer.startswith(b"data: {") and wire.MEL.encode() in answer
