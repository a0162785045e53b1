"""melstream/wire.py, the wire contract written once, and the clients' error typing: no server, no voice."""

from __future__ import annotations

import importlib.metadata
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from melstream.errors import (
    ClientError,
    ClientTimeoutError,
    InvalidInputError,
    ServerUnavailableError,
    UnknownVoiceError,
)
from melstream_client import wire
from melstream_client._errors import client_error

ROOT = Path(__file__).resolve().parents[2]


# --- server-sent events ---------------------------------------------------------------------------------
def test_sse_multi_line_data_is_joined_with_newlines() -> None:
    lines = [b'data: {"MEL":\n', b"data: [1, 2,\n", b"data: 3]}\n", b"\n", b'data: {"x": "a"}\n', b"\n"]
    assert list(wire.sse_events(lines)) == [{"MEL": [1, 2, 3]}, {"x": "a"}]
    # a string value spanning data lines keeps the newline between them (JSON refuses it raw inside a string)
    with pytest.raises(wire.WireError, match="not JSON"):
        list(wire.sse_events([b'data: {"x": "a\n', b'data: b"}\n', b"\n"]))


def test_sse_crlf_and_lf_and_str_lines() -> None:
    body = b'data: {"a": 1}\r\n\r\ndata:{"b": 2}\n\ndata:  {"c": 3}\r\n\r\n'
    assert list(wire.sse_events(io.BytesIO(body))) == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert list(wire.sse_events(['data: {"a": 1}\r\n', "\r\n"])) == [{"a": 1}]


def test_sse_last_event_without_its_blank_line_counts() -> None:
    assert list(wire.sse_events(io.BytesIO(b'data: {"a": 1}\n\ndata: {"b": 2}'))) == [{"a": 1}, {"b": 2}]
    assert list(wire.sse_events(io.BytesIO(b'data: {"b": 2}\n'))) == [{"b": 2}]
    assert list(wire.sse_events(io.BytesIO(b""))) == []


def test_sse_comments_and_other_fields_are_skipped() -> None:
    body = (b": keep-alive\n\n: comment\nevent: chunk\nid: 7\nretry: 100\ndata: {\"a\": 1}\nfoo: bar\n\n"
            b"event: only-a-type\n\n\n\n")
    assert list(wire.sse_events(io.BytesIO(body))) == [{"a": 1}]


def test_sse_malformed_events_are_clear_errors() -> None:
    with pytest.raises(wire.WireError, match=r"malformed server-sent event: not JSON .*'\{\"MEL\": \[1, 2'"):
        list(wire.sse_events(io.BytesIO(b'data: {"MEL": [1, 2\n\n')))
    with pytest.raises(wire.WireError, match="not a JSON object"):
        list(wire.sse_events(io.BytesIO(b"data: [1, 2]\n\n")))
    with pytest.raises(wire.WireError, match="not UTF-8"):
        list(wire.sse_events(io.BytesIO(b"data: \xff\n\n")))
    assert issubclass(wire.WireError, ValueError)  # what the load test reports as an utterance's error


def test_sse_events_are_parsed_as_they_come() -> None:
    """An event is yielded when its blank line has been read, before the next line is asked for."""
    read: list[bytes] = []

    def lines() -> object:
        for line in (b'data: {"a": 1}\n', b"\n", b'data: {"b": 2}\n', b"\n"):
            read.append(line)
            yield line

    events = wire.sse_events(lines())  # type: ignore[arg-type]
    assert next(events) == {"a": 1} and len(read) == 2


def test_sse_arrival_is_the_first_data_line() -> None:
    clock = iter(range(100))
    body = io.BytesIO(b": c\ndata: {\"a\":\ndata: 1}\n\nevent: x\ndata: {\"b\": 2}\n\n")
    assert list(wire.timed_sse_events(body, lambda: float(next(clock)))) == [(0.0, {"a": 1}), (1.0, {"b": 2})]


# --- chunks ---------------------------------------------------------------------------------------------
def test_chunk_decoding_uses_the_voices_n_mels() -> None:
    values = list(range(12))
    chunk = wire.decode_chunk({"MEL": values}, n_mels=3)  # an SSE event's MEL arrives flat
    assert chunk is not None and set(chunk) == {"mel"}
    assert chunk["mel"].dtype == np.float32 and chunk["mel"].shape == (4, 3)
    assert chunk["mel"].tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    four = wire.decode_chunk({"MEL": values}, n_mels=4)
    assert four is not None and four["mel"].shape == (3, 4)
    grpc = wire.decode_chunk({"MEL": np.ones((5, 7), np.float64)}, n_mels=7)  # gRPC: already [frames, n_mels]
    assert grpc is not None and grpc["mel"].shape == (5, 7) and grpc["mel"].dtype == np.float32
    empty = wire.decode_chunk({"MEL": []}, n_mels=5)
    assert empty is not None and empty["mel"].shape == (0, 5)


def test_chunk_audio_and_final_response() -> None:
    chunk = wire.decode_chunk({"MEL": [[0.5] * 3], "AUDIO": [[0.1, 0.2], [0.3, 0.4]]}, n_mels=3)
    assert chunk is not None and chunk["audio"].shape == (4,) and chunk["audio"].dtype == np.float32
    assert wire.decode_chunk({}, n_mels=80) is None  # the empty final response
    assert wire.decode_chunk({"other": [1]}, n_mels=80) is None


@pytest.mark.parametrize("mel, n_mels, message", [
    (list(range(10)), 3, r"MEL is float32 \[10\]: not frames of the voice's 3 mel bins"),
    (np.zeros((2, 80)), 40, r"\[2, 80\]: not frames of the voice's 40"),
    (np.zeros((2, 2, 2)), 2, r"\[2, 2, 2\]"),
    ([[1, 2], [3]], 2, "MEL is not an array of numbers"),
    (["a", "b"], 2, "MEL is not an array of numbers"),
    ([1.0], 0, "n_mels must be > 0"),
])
def test_chunk_decoding_refuses_what_does_not_fit(mel: object, n_mels: int, message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.decode_chunk({"MEL": mel}, n_mels=n_mels)


# --- errors a client reads ------------------------------------------------------------------------------
def test_error_texts() -> None:
    assert wire.event_error({"error": "TextError: empty"}) == "TextError: empty"
    assert wire.event_error({"MEL": []}) is None
    assert wire.http_error_message(404, b'{"error":"Request for unknown model: \'x\' is not found"}') == \
        "Request for unknown model: 'x' is not found"
    sse = b'data: {"error":"TextError: text has nothing to speak: it is empty"}\n\n'
    assert wire.http_error_message(400, sse) == "TextError: text has nothing to speak: it is empty"
    assert wire.http_error_message(502, b"<html>bad gateway</html>") == "HTTP 502: <html>bad gateway</html>"
    assert wire.http_error_message(503, b"") == "HTTP 503"
    assert wire.http_error_message(500, b'["error"]') == 'HTTP 500: ["error"]'


@pytest.mark.parametrize("message, options, kind", [
    ("Request for unknown model: 'x' is not found", {"grpc_status": "StatusCode.NOT_FOUND"}, UnknownVoiceError),
    ("Request for unknown model: 'x' is not found", {"http_status": 404}, UnknownVoiceError),
    ("Request for unknown model: 'x' is not found", {}, UnknownVoiceError),  # a gRPC stream's error: the message alone
    ("Request for unknown model: 'x' has no available versions", {"http_status": 400}, UnknownVoiceError),
    ("[INVALID_ARG] input TEXT: TextError: text has nothing to speak: it is empty", {"http_status": 400}, InvalidInputError),
    ("[INVALID_ARG] input PACE: must be a finite number", {}, InvalidInputError),  # a gRPC stream's: the tag alone
    ("[INTERNAL] internal error: SynthesisError: boom", {"http_status": 400}, ClientError),  # the tag over a status
    ("bad input", {"grpc_status": "INVALID_ARGUMENT"}, InvalidInputError),
    ("failed to connect to all addresses", {"grpc_status": "StatusCode.UNAVAILABLE"}, ServerUnavailableError),
    ("busy", {"http_status": 503}, ServerUnavailableError),
    ("Deadline Exceeded", {"grpc_status": "StatusCode.DEADLINE_EXCEEDED"}, ClientTimeoutError),
    ("SynthesisError: network failed", {"http_status": 500}, ClientError),
])
def test_client_errors_are_typed_and_keep_the_message(message: str, options: dict[str, object], kind: type) -> None:
    error = client_error(message, where="voice 'x' at host:1", **options)  # type: ignore[arg-type]
    assert type(error) is kind and str(error) == f"voice 'x' at host:1: {message}"


# --- the voices a server serves -------------------------------------------------------------------------
def test_addon_json_from_a_config() -> None:
    http_config = {"name": "v", "parameters": {wire.ADDON_PARAMETER: {"string_value": '{"name": "v"}'}}}
    assert wire.addon_json_from_config(http_config) == '{"name": "v"}'
    assert wire.addon_json_from_config({"config": http_config}) == '{"name": "v"}'  # gRPC's as_json wrapper
    assert wire.is_voice_config(http_config) and wire.is_voice_config({"config": http_config})
    for config in ({"name": "v"}, {"parameters": {}}, {"parameters": {"other": {"string_value": "x"}}},
                   {"parameters": {wire.ADDON_PARAMETER: {}}}):
        with pytest.raises(wire.WireError, match=f"model 'v' is not a melstream voice: its config has no '{wire.ADDON_PARAMETER}' parameter"):
            wire.addon_json_from_config(config, model="model 'v'")
    assert not wire.is_voice_config({"parameters": {}}) and not wire.is_voice_config({})


def test_voice_listing() -> None:
    assert wire.network_model_name("fastvoice", "decoder") == "fastvoice__decoder"
    assert wire.is_network_model("fastvoice__decoder") and not wire.is_network_model("fastvoice")
    stats = {"model_stats": [{"name": n, "version": "1", "inference_stats": {}}
                             for n in ("b", "b__net", "a", "a__enc", "a__dec", "c", "c__net", "d")]}
    assert wire.loaded_models(stats) == {"b", "b__net", "a", "a__enc", "a__dec", "c", "c__net", "d"}
    assert wire.loaded_models({}) == set()  # nothing loaded
    ready = {"b", "b__net", "a", "a__enc", "d", "c__net"}  # a__dec and c not ready
    networks = {"b": ["net"], "a": ["enc", "dec"], "c": ["net"], "d": []}
    assert wire.servable_voices(ready, networks) == ["b", "d"]
    assert wire.servable_voices(ready | {"a__dec"}, networks) == ["a", "b", "d"]  # sorted


def test_model_ready_path_quotes_the_name() -> None:
    assert wire.model_ready_path("fastvoice") == "/v2/models/fastvoice/ready"
    assert wire.model_ready_path("a b/c") == "/v2/models/a%20b%2Fc/ready"


def test_runners_base_keeps_the_names() -> None:
    from melstream.runners import base

    assert base.servable_voices is wire.servable_voices and base.network_model_name is wire.network_model_name


# --- requests -------------------------------------------------------------------------------------------
def test_request_tensors_leave_out_absent_options() -> None:
    tensors = wire.request_tensors("Hello.")
    assert [(inp.name, v.dtype, v.shape) for inp, v in tensors] == [("TEXT", np.dtype(object), (1,))]
    assert tensors[0][1][0] == b"Hello."
    both = dict((inp.name, v) for inp, v in wire.request_tensors("x", pace=1.25, chunk_frames=0))  # 0 is sent
    assert list(both) == ["TEXT", "PACE", "CHUNK_FRAMES"]  # config order
    assert both["PACE"].dtype == np.float32 and both["PACE"].tolist() == [1.25]
    assert both["CHUNK_FRAMES"].dtype == np.int32 and both["CHUNK_FRAMES"].tolist() == [0]
    assert [inp.name for inp, _ in wire.request_tensors("x", chunk_frames=7)] == ["TEXT", "CHUNK_FRAMES"]


def test_request_text_is_utf8() -> None:
    text = "Grüße, 東京 — ½ 🎉"
    assert wire.request_tensors(text)[0][1][0] == text.encode("utf-8")
    body = wire.request_json(text, pace=0.5)
    assert json.loads(body.decode("utf-8")) == {"TEXT": text, "PACE": 0.5}
    assert json.loads(wire.request_json("x")) == {"TEXT": "x"}
    assert json.loads(wire.request_json("x", chunk_frames=0)) == {"TEXT": "x", "CHUNK_FRAMES": 0}
    with pytest.raises(wire.WireError, match="TEXT is not valid Unicode"):
        wire.request_json("lone \ud800 surrogate")


@pytest.mark.parametrize("options, message", [
    ({"pace": True}, "PACE must be a number"), ({"pace": "fast"}, "PACE must be a number"),
    ({"chunk_frames": 2.5}, "CHUNK_FRAMES must be an integer"), ({"chunk_frames": 2**31}, "does not fit INT32"),
])
def test_request_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(wire.WireError, match=message):
        wire.request_tensors("x", **options)  # type: ignore[arg-type]


def test_raw_contents_are_tritons_binary_form() -> None:
    (text, t), (frames, f) = wire.request_tensors("héllo", chunk_frames=7)
    data = "héllo".encode()
    assert wire.raw_contents(text, t) == struct.pack("<I", len(data)) + data
    assert wire.raw_contents(frames, f) == struct.pack("<i", 7)


def test_http_paths() -> None:
    assert wire.generate_stream_path("fastvoice") == "/v2/models/fastvoice/generate_stream"
    assert wire.model_config_path("a b/c") == "/v2/models/a%20b%2Fc/config"


# --- the client is light --------------------------------------------------------------------------------
ADDON = {
    "name": "tiny", "version": "0.0.1",
    "audio": {"sample_rate": 16000, "hop_length": 200, "win_length": 800, "n_fft": 800, "n_mels": 5},
    "text": {"frontend": "english-chars"},
    "networks": {"net": {"file": "net.onnx", "role": "decoder", "inputs": {"x": {"dtype": "float32", "shape": [-1, 4]}},
                         "outputs": {"mel": {"dtype": "float32", "shape": [-1, 5]}}}},
    "stack": [{"type": "StreamablePipeline", "sequence_block": {"type": "Encoders"},
               "streamable_block": {"type": "Decoder"}}],
}

CHILD = r"""
import importlib.metadata, json, sys, threading
calls = []
real_entry_points = importlib.metadata.entry_points
def spy(*args, **kwargs):
    calls.append(repr((args, kwargs)))
    return real_entry_points(*args, **kwargs)
importlib.metadata.entry_points = spy

import melstream.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ADDON_JSON = sys.argv[1]
class Triton(BaseHTTPRequestHandler):  # what a server answers: a voice's config, model statistics, readiness
    def answer(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/v2/models/stats":
            self.answer({"model_stats": [{"name": "tiny", "version": "1"}, {"name": "tiny__net", "version": "1"},
                                         {"name": "gone", "version": "1"}]})
        elif self.path.endswith("/ready"):
            self.send_response(200 if self.path != "/v2/models/gone/ready" else 400)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.answer({"name": "tiny", "parameters": {"addon_json": {"string_value": ADDON_JSON}}})
    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Triton)
threading.Thread(target=server.serve_forever, daemon=True).start()
client = melstream.client.HttpClient(f"127.0.0.1:{server.server_port}")
spec = client.spec("tiny")
voices = client.voices()
server.shutdown()
print(json.dumps({"modules": sorted(sys.modules), "entry_point_calls": calls, "n_mels": spec.audio.n_mels,
                  "networks": list(spec.networks), "voices": voices}))
"""


def test_client_reads_specs_without_components_or_plugins() -> None:
    """``import melstream.client`` and reading a voice's spec (and listing voices) import no component module,
    not the stack builder, and load no entry-point plugin."""
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(ADDON)], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["n_mels"] == 5 and seen["networks"] == ["net"] and seen["voices"] == ["tiny"]
    modules = set(seen["modules"])
    assert "melstream_client.spec" in modules and "melstream.client" in modules  # the check sees melstream's modules
    heavy = sorted(m for m in modules if m.startswith("melstream.components") or m in ("melstream.stack", "melstream.addon",
                                                                                       "melstream.registry", "melstream.blocks"))
    assert heavy == [], heavy
    assert seen["entry_point_calls"] == []
    plugins = {ep.module for ep in importlib.metadata.entry_points(group="melstream.components")}
    assert not plugins & modules, plugins & modules
    assert not {"onnxruntime", "torch"} & modules


def test_http_client_refuses_a_stream_cut_off_before_its_end() -> None:
    """A server that dies mid-utterance cuts the chunked body of generate_stream: the events end without an error,
    and the client must say so instead of returning a truncated utterance as a whole one."""
    import http.server
    import socketserver
    import threading

    from melstream.errors import ServerUnavailableError
    from melstream_client import HttpClient

    addon = json.dumps(ADDON)
    event = json.dumps({"model_name": "tiny", "outputs": [], "MEL": [[0.0] * 5] * 2})

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = json.dumps({"name": "tiny", "parameters": {"addon_json": {"string_value": addon}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            data = f"data: {event}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if self.path.endswith("/whole/generate_stream"):
                self.wfile.write(b"0\r\n\r\n")  # the body's end
            self.wfile.flush()
            self.close_connection = True  # and the connection goes: cut off, or ended properly

        def log_message(self, *args: object) -> None:
            pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = HttpClient(f"127.0.0.1:{server.server_address[1]}", timeout_s=10)
        assert client.synthesize("x", voice="whole").shape == (2, 5)
        with pytest.raises(ServerUnavailableError, match="cut off before its end"):
            client.synthesize("x", voice="cut")
    finally:
        server.shutdown()
        server.server_close()


def test_a_stream_reset_by_its_peer_is_unavailable() -> None:
    """What a gRPC client gets when a load balancer resets a stream whose replica died (status UNKNOWN): the
    server is gone, so the typed error is ServerUnavailableError, not a bare ClientError."""
    from melstream.errors import ServerUnavailableError
    from melstream_client._errors import client_error

    message = ("Stream removed (Data frame with END_STREAM flag received) (RST_STREAM (Received RST_STREAM with "
               "error code 8))")
    assert wire.error_code(message, grpc_status="StatusCode.UNKNOWN") == "UNAVAILABLE"
    assert wire.error_code(message, grpc_status="StatusCode.CANCELLED") == "UNAVAILABLE"  # RST_STREAM CANCEL
    assert wire.error_code("cancelled by the caller", grpc_status="StatusCode.CANCELLED") == "CANCELLED"
    assert isinstance(client_error(message, where="voice 'v' at lb:8001", grpc_status="StatusCode.UNKNOWN"),
                      ServerUnavailableError)
    assert wire.error_code("Stream removed", grpc_status="StatusCode.INVALID_ARGUMENT") == "INVALID_ARG"  # a status wins
