"""The wire contract of a melstream voice, written once: used by the server side, both clients and the load tests.

Standard library and numpy only, so a light client can import it.

A voice is one decoupled Triton model named after its addon:

* inputs: ``TEXT`` BYTES ``[1]`` (UTF-8), optional ``PACE`` FP32 ``[1]``, optional ``CHUNK_FRAMES`` INT32 ``[1]``,
  optional ``TIMESTAMPS`` BOOL ``[1]`` (word timestamps), optional ``FLUSH`` BOOL ``[1]`` (text streams, below);
* responses: ``MEL`` FP32 ``[frames, n_mels]`` per chunk (and ``AUDIO`` FP32 ``[frames * hop]`` from voices
  whose stack ends in a vocoder; and, with ``TIMESTAMPS``, ``WORDS`` BYTES ``[1]``: the words whose speech ends
  in this chunk, JSON ``[{"word", "start_s", "end_s"}]``, seconds from the stream's start, every word of the
  text once, in order), in order, then an empty final response;
* the model config's ``addon_json`` parameter carries the addon, so a client can rebuild its stack.

**Text in pieces** (gRPC only: one bidirectional ``ModelStreamInfer`` stream carries every request of it).  A
client that gets its text a few words at a time (from a language model) sends one request per piece, all with
the same correlation id (Triton's ``sequence_id``, :func:`new_sequence_id`): the first with the
``sequence_start`` flag (it may carry ``PACE`` and ``CHUNK_FRAMES``, which no later piece may), the last with
``sequence_end``; each with ``TEXT`` (the piece, possibly empty) and optionally ``FLUSH`` BOOL ``[1]`` true
(speak what has come so far now, even mid-sentence).  Every chunk of audio comes on the **first** request's
responses, sentence by sentence as each is complete, then its empty final response after the last piece's
text has been spoken; each later request gets one empty final response of its own (its text was taken) or an
error.  The pieces, joined, are spoken exactly as the whole text in one request (same frames), flushes
aside.  Why no sequence batcher in the voice's config: Triton's would give each sequence a slot of the
model's batch, so a voice (max_batch_size 0) would speak one text stream at a time; Triton passes the
correlation id and the flags to the model without one, and the voice model's one instance holds the state.
A voice ends a text stream whose next piece does not come within :data:`TEXT_IDLE_TIMEOUT_S`.

Besides the names: building a request (:func:`request_tensors`, :func:`request_json`, :func:`raw_contents`),
reading server-sent events (:func:`sse_events`, :func:`timed_sse_events`), decoding a chunk with the voice's
``n_mels`` (:func:`decode_chunk`), error texts (:func:`http_error_message`, :func:`event_error`), the addon JSON
from a model config (:func:`addon_json_from_config`) and which voices can serve (:func:`servable_voices`).
What breaks the contract raises :class:`WireError` (a ``ValueError``).
"""

from __future__ import annotations

import json
import numbers
import re
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import numpy as np


@dataclass(frozen=True)
class WireInput:
    """One input of a voice model: its Triton name and datatype, the request option it carries, whether it may be left out."""

    name: str
    datatype: str  # Triton's wire datatype (BYTES, FP32, INT32)
    config_type: str  # the same type as config.pbtxt spells it
    numpy_dtype: str  # numpy dtype a client builds the tensor with ("object" for BYTES)
    option: str  # the keyword of Client.stream / pipeline.stream that fills it
    optional: bool


TEXT = WireInput("TEXT", "BYTES", "TYPE_STRING", "object", "text", optional=False)
PACE = WireInput("PACE", "FP32", "TYPE_FP32", "float32", "pace", optional=True)
CHUNK_FRAMES = WireInput("CHUNK_FRAMES", "INT32", "TYPE_INT32", "int32", "chunk_frames", optional=True)
#: a piece of a text stream: speak the text sent so far now (see the module's docstring)
FLUSH = WireInput("FLUSH", "BOOL", "TYPE_BOOL", "bool", "flush", optional=True)
#: ask for word timestamps: every chunk then carries WORDS (see :func:`encode_words`)
TIMESTAMPS = WireInput("TIMESTAMPS", "BOOL", "TYPE_BOOL", "bool", "words", optional=True)

#: every input of a voice model, in config order
INPUTS: tuple[WireInput, ...] = (TEXT, PACE, CHUNK_FRAMES, FLUSH, TIMESTAMPS)
#: the inputs only a text stream's first request may carry
FIRST_PIECE_ONLY: tuple[WireInput, ...] = (PACE, CHUNK_FRAMES, TIMESTAMPS)
#: seconds a voice waits for a text stream's next piece before it ends the stream (INVALID_ARG)
TEXT_IDLE_TIMEOUT_S = 60.0

#: a chunk's tensors (as blocks name them) -> the voice model's output names
OUTPUTS: dict[str, str] = {"mel": "MEL", "audio": "AUDIO"}
MEL = OUTPUTS["mel"]
AUDIO = OUTPUTS["audio"]
#: the words whose speech ends in a chunk, with their times (asked for with TIMESTAMPS): BYTES [1], JSON
WORDS = "WORDS"

#: the voice model's config parameter that carries the addon JSON
ADDON_PARAMETER = "addon_json"
#: the voice model's config parameter that says whether its network models run only at their buckets' sizes
#: ("true": the integration layer pads, splits and crops every call; absent or "false": any size)
FIXED_SHAPES_PARAMETER = "fixed_shapes"
#: the response parameter Triton sets on a stream's last response
FINAL_RESPONSE_PARAMETER = "triton_final_response"
#: the request parameter that asks Triton for that empty last response, so the end of a stream is explicit
EMPTY_FINAL_RESPONSE_PARAMETER = "triton_enable_empty_final_response"
#: joins a voice's name and a network's name into the network model's name (addon names cannot hold it)
NETWORK_SEPARATOR = "__"
#: the key of the error text in an HTTP error body (``{"error": "..."}``) and in a server-sent event
ERROR_KEY = "error"
#: Triton's HTTP endpoint listing every model and its state; melstream's server opens it (and load/unload) only
#: to its own supervisor, so clients list the loaded models from their statistics instead (MODEL_STATS_PATH)
REPOSITORY_PATH_PREFIX = "/v2/repository"
REPOSITORY_INDEX_PATH = f"{REPOSITORY_PATH_PREFIX}/index"
#: Triton's HTTP readiness of the whole server (every model that should be loaded is)
SERVER_READY_PATH = "/v2/health/ready"
#: Triton's HTTP endpoint with the statistics of every loaded model: its names are what a client can list
MODEL_STATS_PATH = "/v2/models/stats"
#: the headers of a ``generate_stream`` request
GENERATE_STREAM_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


class WireError(ValueError):
    """What came over the wire (or would go over it) does not follow the contract; the message says how."""


@dataclass(frozen=True)
class Word:
    """A spoken word and when: seconds from the start of the stream's audio (frame ``j`` covers
    ``[j * hop, (j + 1) * hop)`` samples).  A word spoken in no frame has ``start_s == end_s``."""

    text: str
    start_s: float
    end_s: float


def encode_words(words: Iterable[tuple[str, float, float]]) -> np.ndarray:
    """``WORDS``' one element: ``[{"word": text, "start_s": s, "end_s": e}, ...]`` as UTF-8 JSON (times rounded
    to 0.1 ms)."""
    items = [{"word": str(t), "start_s": round(float(a), 4), "end_s": round(float(b), 4)} for t, a, b in words]
    return np.array([json.dumps(items, ensure_ascii=False).encode("utf-8")], dtype=np.object_)


def decode_words(value: Any) -> list[Word]:
    """The words of a ``WORDS`` output: from gRPC (an object array of one JSON bytes) or a server-sent event
    (the JSON text, or a list holding it)."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist()
    if isinstance(value, list):
        if len(value) != 1:
            raise WireError(f"{WORDS} must hold one element, got {len(value)}")
        value = value[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    try:
        items = json.loads(value) if isinstance(value, str) else value
        return [Word(str(i["word"]), float(i["start_s"]), float(i["end_s"])) for i in items]
    except (TypeError, ValueError, KeyError) as e:
        raise WireError(f"{WORDS} is not a JSON list of words with start_s and end_s: {e}") from None


# --- requests -------------------------------------------------------------------------------------------
def encode_text(text: str) -> bytes:
    """``TEXT``'s one element: the text as UTF-8.  A str that has no UTF-8 form (a lone surrogate) is refused."""
    if not isinstance(text, str):
        raise WireError(f"{TEXT.name} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise WireError(f"{TEXT.name} is not valid Unicode text: {e}") from None


def request_tensors(text: str, *, pace: float | None = None, chunk_frames: int | None = None,
                    words: bool = False) -> list[tuple[WireInput, np.ndarray]]:
    """The inputs of one request, in config order, each with its ``[1]`` value in the input's numpy dtype
    (``TEXT``: one UTF-8 ``bytes`` object).  An option left as None (or ``words`` False) is not sent (the
    voice's default)."""
    tensors: list[tuple[WireInput, np.ndarray]] = [(TEXT, np.array([encode_text(text)], dtype=np.object_))]
    if not isinstance(words, bool):
        raise WireError(f"{TIMESTAMPS.name} must be a bool, got {words!r}")
    if pace is not None:
        if isinstance(pace, bool) or not isinstance(pace, numbers.Real):
            raise WireError(f"{PACE.name} must be a number, got {pace!r}")
        tensors.append((PACE, np.array([pace], dtype=PACE.numpy_dtype)))
    if chunk_frames is not None:
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, numbers.Integral):
            raise WireError(f"{CHUNK_FRAMES.name} must be an integer, got {chunk_frames!r}")
        if not -2**31 <= int(chunk_frames) < 2**31:
            raise WireError(f"{CHUNK_FRAMES.name} does not fit INT32: {chunk_frames}")
        tensors.append((CHUNK_FRAMES, np.array([chunk_frames], dtype=CHUNK_FRAMES.numpy_dtype)))
    if words:
        tensors.append((TIMESTAMPS, np.array([True], dtype=TIMESTAMPS.numpy_dtype)))
    return tensors


def new_sequence_id() -> int:
    """A correlation id for a text stream: random, non-zero, within Triton's uint64 (63 bits: any client's
    integer type holds it)."""
    import secrets

    return secrets.randbits(63) | 1


def piece_tensors(text: str, *, flush: bool = False, pace: float | None = None, chunk_frames: int | None = None,
                  words: bool = False) -> list[tuple[WireInput, np.ndarray]]:
    """The inputs of one piece of a text stream: :func:`request_tensors`, plus ``FLUSH`` when asked."""
    tensors = request_tensors(text, pace=pace, chunk_frames=chunk_frames, words=words)
    if not isinstance(flush, bool):
        raise WireError(f"{FLUSH.name} must be a bool, got {flush!r}")
    if flush:
        tensors.append((FLUSH, np.array([True], dtype=FLUSH.numpy_dtype)))
    return tensors


def request_json(text: str, *, pace: float | None = None, chunk_frames: int | None = None, words: bool = False) -> bytes:
    """The body of ``POST /v2/models/<voice>/generate_stream``: the same inputs as :func:`request_tensors`
    as one JSON object of scalars (``{"TEXT": "...", "PACE": 1.25}``), UTF-8."""
    tensors = request_tensors(text, pace=pace, chunk_frames=chunk_frames, words=words)
    body = {inp.name: (text if inp is TEXT else value.item()) for inp, value in tensors}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


def raw_contents(inp: WireInput, value: np.ndarray) -> bytes:
    """An input's value in Triton's raw binary form (gRPC ``raw_input_contents``): each BYTES element as its
    length (little-endian uint32) then its bytes; numbers little-endian."""
    if inp.datatype == "BYTES":
        return b"".join(struct.pack("<I", len(e)) + e for e in (bytes(x) for x in value.reshape(-1)))
    return np.ascontiguousarray(value, dtype=np.dtype(inp.numpy_dtype).newbyteorder("<")).tobytes()


def generate_stream_path(voice: str) -> str:
    """The HTTP path that streams an utterance of ``voice`` as server-sent events."""
    return f"/v2/models/{quote(voice, safe='')}/generate_stream"


def model_config_path(model: str) -> str:
    """The HTTP path of a model's config (JSON)."""
    return f"/v2/models/{quote(model, safe='')}/config"


# --- responses ------------------------------------------------------------------------------------------
def decode_chunk(outputs: Mapping[str, Any], *, n_mels: int) -> dict[str, Any] | None:
    """One response's outputs as a chunk: ``{"mel": [frames, n_mels] float32}``, plus ``"audio"`` (``[samples]``
    float32) when the voice sent it and ``"words"`` (a list of :class:`Word`) when they were asked for; None for
    a response without ``MEL`` (the empty final response).

    ``outputs`` maps output names to arrays (gRPC) or nested lists (a server-sent event's JSON, where ``MEL``
    arrives flat): both are reshaped with the voice's ``n_mels``, which comes from its addon (``audio.n_mels``)."""
    if MEL not in outputs:
        return None
    if n_mels <= 0:
        raise WireError(f"n_mels must be > 0, got {n_mels}")
    chunk = {"mel": _float32(outputs[MEL], MEL)}
    mel = chunk["mel"]
    if mel.ndim not in (1, 2) or (mel.ndim == 2 and mel.shape[1] != n_mels) or mel.size % n_mels:
        raise WireError(f"{MEL} is {mel.dtype.name} {list(mel.shape)}: not frames of the voice's {n_mels} mel bins")
    chunk["mel"] = mel.reshape(-1, n_mels)
    if AUDIO in outputs:
        chunk["audio"] = _float32(outputs[AUDIO], AUDIO).reshape(-1)
    result: dict[str, Any] = dict(chunk)
    if WORDS in outputs:
        result["words"] = decode_words(outputs[WORDS])
    return result


def _float32(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise WireError(f"{name} is not an array of numbers: {e}") from None


def event_error(event: Mapping[str, Any]) -> str | None:
    """The error text a server-sent event carries (Triton sends ``{"error": "..."}``), or None."""
    return None if ERROR_KEY not in event else str(event[ERROR_KEY])


def http_error_message(status: int, body: bytes) -> str:
    """The text of an HTTP error response: Triton's ``{"error": "..."}`` body, or a server-sent error event
    (``generate_stream`` refuses a request that way), else the status and the start of the body."""
    text = body.decode("utf-8", "replace")
    for candidate in [text, *(payload for _, payload in _sse_data(text.splitlines(), lambda: 0.0))]:
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        message = event_error(parsed) if isinstance(parsed, dict) else None
        if message is not None:
            return message
    return f"HTTP {status}: {text[:200]}" if text.strip() else f"HTTP {status}"


# --- server-sent events ---------------------------------------------------------------------------------
def timed_sse_events(lines: Iterable[bytes | str], now: Callable[[], float]) -> Iterator[tuple[float, dict[str, Any]]]:
    """``(arrival, event)`` for each server-sent event in ``lines`` (e.g. an HTTP response, read line by line).

    An event is its ``data:`` lines (joined with newlines) up to a blank line, parsed as a JSON object; comments
    (``:``) and other fields (``event:``, ``id:``) are skipped; LF or CRLF line ends; a last event without its
    blank line still counts.  ``arrival`` is ``now()`` when the event's first ``data:`` line has been read,
    before any parsing.  Malformed JSON, or JSON that is not an object, raises :class:`WireError`."""
    for arrival, payload in _sse_data(lines, now):
        yield arrival, _event(payload)


def sse_events(lines: Iterable[bytes | str]) -> Iterator[dict[str, Any]]:
    """The server-sent events in ``lines`` as JSON objects (see :func:`timed_sse_events`)."""
    for _, event in timed_sse_events(lines, lambda: 0.0):
        yield event


def _sse_data(lines: Iterable[bytes | str], now: Callable[[], float]) -> Iterator[tuple[float, str]]:
    """``(arrival, data)`` per event: the event's ``data:`` lines joined, not parsed."""
    data: list[str] = []
    arrival = 0.0
    for raw in lines:
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as e:
            raise WireError(f"server-sent event line is not UTF-8: {e}") from None
        line = line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith(("\n", "\r")) else line
        if not line:
            if data:
                yield arrival, "\n".join(data)
            data = []
            continue
        name, _, value = line.partition(":")
        if name == "data":  # a line starting with ":" is a comment: name ""
            if not data:
                arrival = now()
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield arrival, "\n".join(data)


def _event(payload: str) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except json.JSONDecodeError as e:
        raise WireError(f"malformed server-sent event: not JSON ({e.msg} at line {e.lineno} column {e.colno}): {payload[:80]!r}") from None
    if not isinstance(event, dict):
        raise WireError(f"server-sent event is not a JSON object: {payload[:80]!r}")
    return event


# --- the voices a server serves -------------------------------------------------------------------------
def addon_json_from_config(config: Mapping[str, Any], *, model: str = "model") -> str:
    """The addon JSON a voice model's config carries: ``config["parameters"][ADDON_PARAMETER]["string_value"]``
    (gRPC's ``as_json`` config and HTTP's config JSON have that shape; gRPC's ``{"config": {...}}`` wrapper is
    accepted too).  A model without it is not a melstream voice: :class:`WireError` naming the parameter."""
    config = _unwrap(config)
    try:
        value = config["parameters"][ADDON_PARAMETER]["string_value"]
    except (KeyError, TypeError):
        raise WireError(f"{model} is not a melstream voice: its config has no {ADDON_PARAMETER!r} parameter") from None
    if not isinstance(value, str):
        raise WireError(f"{model}: config parameter {ADDON_PARAMETER!r} is not a string")
    return value


def fixed_shapes_from_config(config: Mapping[str, Any]) -> bool:
    """Whether a voice model's network models run only at their buckets' sizes (:data:`FIXED_SHAPES_PARAMETER`;
    absent, as in repositories built before it existed: no)."""
    parameters = _unwrap(config).get("parameters")
    value = parameters.get(FIXED_SHAPES_PARAMETER) if isinstance(parameters, Mapping) else None
    return isinstance(value, Mapping) and value.get("string_value") == "true"


def is_voice_config(config: Mapping[str, Any]) -> bool:
    """Whether a model config carries an addon (the model is a melstream voice)."""
    parameters = _unwrap(config).get("parameters")
    return isinstance(parameters, Mapping) and ADDON_PARAMETER in parameters


def _unwrap(config: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = config.get("config")
    return inner if "parameters" not in config and isinstance(inner, Mapping) else config


def network_model_name(addon_name: str, network: str) -> str:
    """The Triton model that serves ``network`` of addon ``addon_name`` (addon names cannot hold ``__``)."""
    return f"{addon_name}{NETWORK_SEPARATOR}{network}"


def voice_of(model: str) -> str:
    """The voice a model belongs to: itself for a voice model, ``fastvoice`` for ``fastvoice__decoder``."""
    return model.split(NETWORK_SEPARATOR, 1)[0]


def is_network_model(model: str) -> bool:
    """Whether ``model`` names a network model (``<voice>__<network>``) rather than a voice."""
    return NETWORK_SEPARATOR in model


def model_ready_path(model: str) -> str:
    """Model ``model``'s ready endpoint (200: ready; a dead voice is unloaded by the supervisor: not ready)."""
    return f"/v2/models/{quote(model, safe='')}/ready"


def loaded_models(stats: Mapping[str, Any]) -> set[str]:
    """The names of the loaded models in Triton's statistics of every model (HTTP ``GET /v2/models/stats``, or
    gRPC's ``as_json`` statistics: ``{"model_stats": [{"name", "version", ...}]}``).  Loaded is not ready:
    ask each model's ready endpoint."""
    return {str(m["name"]) for m in stats.get("model_stats", [])}


def servable_voices(ready: Collection[str], addon_networks: Mapping[str, Iterable[str]]) -> list[str]:
    """The voices that can serve, sorted: of the voice models ``addon_networks`` (voice -> its network
    names), those that are ``ready`` and whose network models are all ready too."""
    return sorted(v for v, networks in addon_networks.items()
                  if v in ready and all(network_model_name(v, n) in ready for n in networks))


# --- input limits ---------------------------------------------------------------------------------------
#: the ``PACE`` a voice accepts, inclusive (1 is the voice's own rate, 2 twice as fast); anything else,
#: NaN and infinities included, is refused with INVALID_ARG
PACE_RANGE: tuple[float, float] = (0.25, 4.0)
#: the ``CHUNK_FRAMES`` a voice accepts, inclusive (0 = the whole utterance in one response); 100 000 frames
#: are about 19 minutes of speech at 22050 Hz / hop 256, far beyond any utterance, so more is a mistake
CHUNK_FRAMES_RANGE: tuple[int, int] = (0, 100_000)


# --- errors ---------------------------------------------------------------------------------------------
# Where an error's Triton code reaches a client in Triton 2.51 (tritonserver of nvidia-pytriton 0.7.0):
#
# * gRPC bidirectional stream (tritonclient ``start_stream``): an error response carries ``error_message``
#   only; tritonclient's callback gets an InferenceServerException whose ``status()`` is None.  An error is
#   its request's last response: a voice sends it with the final flag, and Triton's own refusals (unknown
#   model, wrong datatype or shape, missing inputs) have no final response at all.  With the stream header
#   ``triton_grpc_error: true`` a *model's* error ends the whole stream with a real gRPC status (INVALID_ARG ->
#   INVALID_ARGUMENT) and the stream takes no more requests (a new one must be started); Triton's own refusals
#   stay message-only.  Clients should not send that header to 2.51: its gRPC frontend frees the request's
#   state at the error (a flag sent after the error segfaulted the server every time, which is why the voice
#   sends them together) and still crashes now and then (about 1 in 1400 such errors here); fixed in
#   Triton 2.68 (triton-inference-server/server#8708).
# * HTTP ``generate_stream`` (SSE): an error Triton raises before the model is a JSON body with a faithful
#   status (400 INVALID_ARG, 404 NOT_FOUND, 500 INTERNAL, 503 UNAVAILABLE, 501 UNSUPPORTED).  An error the
#   model sends as its first response is a ``data: {"error": ...}`` event whose HTTP status Triton reads from
#   the error after freeing it (http_server.cc, GenerateRequestClass::InferResponseComplete): not to be
#   trusted (an INTERNAL error was seen answered with 400).  A later error is an event after a 200.
# * other gRPC calls (model metadata, config, unary infer) carry a real gRPC status.
#
# So a voice model states the code in the message itself, as a tag in front: ``[INVALID_ARG] input PACE: ...``
# (:func:`error_message`), and :func:`error_code` reads the tag first, then a status that is sure, then
# Triton's own messages, then the HTTP status.

#: Triton's error codes (TRITONSERVER_Error_Code), named as the Python backend names them (``pb_utils.TritonError.INVALID_ARG``)
ERROR_CODES: tuple[str, ...] = ("UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG", "UNAVAILABLE", "UNSUPPORTED",
                                "ALREADY_EXISTS", "CANCELLED")
#: the code of a request the voice refuses for its input; the message names the input
INPUT_ERROR = "INVALID_ARG"
#: the code of a fault inside the server; the message starts with :data:`INTERNAL_ERROR_PREFIX` after the tag
INTERNAL_ERROR = "INTERNAL"
INTERNAL_ERROR_PREFIX = "internal error: "
#: the code of a request refused because the server is at capacity (:func:`busy_detail`) or unloading
BUSY_ERROR = "UNAVAILABLE"
#: Triton's own refusals by a network model's bounded queue (``dynamic_batching { default_queue_policy }``):
#: the queue is full, or the request waited in it past the queue's timeout (core r24.10, dynamic_batch_scheduler.cc)
QUEUE_REFUSALS = ("Exceeds maximum queue size", "Request timeout")  # the latter: "Request timeout expired"
# Triton's refusals while it stops: at SIGTERM it refuses new inference (a voice's calls to its networks
# included: "Server not ready") before it unloads any model
SERVER_STOPPING = ("Server is stopping", "Server not ready")
# Triton's answers for a model whose stub died (python_backend: "Stub process '<instance>' is not healthy.") or
# that is unloaded while melstream's supervisor loads it again (core: "Model '<name>' is not ready" / "... is
# not found" while unloaded): a moment later it serves again, so they are UNAVAILABLE (try again), not faults
RESTARTING = ("Stub process", "' is not ready")
# Triton's refusal of a request with too few or too many inputs for a model without optional inputs (a network
# model): "expected 1 inputs but got 0 inputs for model ..." (core r24.10, infer_request.cc)
_INPUT_COUNT = re.compile(r"expected \d+ inputs but got \d+ inputs")
# the detail of a busy refusal, after the tag: "voice 'tacovoice' is busy: <why>; try again later"
_BUSY = re.compile(r"voice '[^']+' is busy: .*; try again later", re.S)

# gRPC status -> Triton code: the inverse of Triton's GrpcStatusUtil::CodeToStatus (grpc_utils.cc), with
# RESOURCE_EXHAUSTED (a gRPC server or proxy refusing load) read as UNAVAILABLE; others (DEADLINE_EXCEEDED...) are no Triton code
_GRPC_STATUS_CODES = {"INTERNAL": "INTERNAL", "NOT_FOUND": "NOT_FOUND", "INVALID_ARGUMENT": "INVALID_ARG",
                      "UNAVAILABLE": "UNAVAILABLE", "UNIMPLEMENTED": "UNSUPPORTED", "ALREADY_EXISTS": "ALREADY_EXISTS",
                      "CANCELLED": "CANCELLED", "RESOURCE_EXHAUSTED": "UNAVAILABLE"}
_GRPC_STATUS_NUMBERS = {1: "CANCELLED", 3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 6: "ALREADY_EXISTS", 8: "RESOURCE_EXHAUSTED",
                        12: "UNIMPLEMENTED", 13: "INTERNAL", 14: "UNAVAILABLE"}
# HTTP status -> Triton code: Triton's HttpCodeFromError (http_server.cc) sends 400 for INVALID_ARG (and for the
# rare UNKNOWN, ALREADY_EXISTS, CANCELLED); 409/429/502/504 come from proxies in front of it
_HTTP_STATUS_CODES = {400: "INVALID_ARG", 404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "UNAVAILABLE", 500: "INTERNAL",
                      501: "UNSUPPORTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}
# Triton's own messages (core r24.10, python_backend r24.10) and their codes: what a gRPC stream gets without one
_TRITON_MESSAGES = (("Request for unknown model", "NOT_FOUND"),  # "...: 'x' is not found" / "has no available versions"
                    ("unexpected shape for input", "INVALID_ARG"),
                    ("inference input '", "INVALID_ARG"),  # "... data-type is 'FP32', but model 'x' expects 'BYTES'"
                    ("unexpected inference input", "INVALID_ARG"),
                    ("expected number of inputs between", "INVALID_ARG"),
                    ("The schema can not convert input", "INVALID_ARG"),  # HTTP generate: a JSON value of the wrong shape
                    ("input byte size mismatch for input", "INVALID_ARG"),  # raw contents of the wrong size
                    ("incomplete string data for inference input", "INVALID_ARG"),  # a BYTES element overruns its raw contents
                    ("input '", "INVALID_ARG"),  # "input 'TEXT' already exists in request" (an input sent twice)
                    *((refusal, BUSY_ERROR) for refusal in QUEUE_REFUSALS),
                    *((stopping, "UNAVAILABLE") for stopping in SERVER_STOPPING))
# gRPC's own message when the peer reset the stream (HTTP/2 RST_STREAM), with status UNKNOWN or CANCELLED: e.g. a
# load balancer whose replica died mid-stream.  The stream's server is gone (the client did not cancel: its own
# cancellation raises nothing), so it is UNAVAILABLE, not the request's fault
STREAM_RESET = "Stream removed"


def error_message(code: str, detail: str) -> str:
    """The message a voice model sends with an error: ``"[<code>] <detail>"``, e.g.
    ``"[INVALID_ARG] input PACE: must be a finite number from 0.25 to 4.0 ..., got nan"``.  ``code`` is one of
    :data:`ERROR_CODES` (the same code goes into the ``TritonError``); :func:`error_code` reads it back."""
    if code not in ERROR_CODES:
        raise WireError(f"unknown Triton error code {code!r}; known: {', '.join(ERROR_CODES)}")
    return f"[{code}] {detail}"


def busy_detail(voice: str, why: str) -> str:
    """The detail of a request a voice refuses because it is at capacity, with :data:`BUSY_ERROR` as its code:
    ``"voice 'tacovoice' is busy: it serves 16 streams at once; try again later"``; :func:`is_busy` recognises it."""
    return f"voice {voice!r} is busy: {why}; try again later"


def is_server_stopping(message: str) -> bool:
    """Whether ``message`` holds one of Triton's :data:`SERVER_STOPPING` refusals (the server is shutting down)."""
    return any(stopping in message for stopping in SERVER_STOPPING)


def is_restarting(message: str) -> bool:
    """Whether ``message`` holds one of Triton's :data:`RESTARTING` answers (a model being brought back)."""
    return any(restarting in message for restarting in RESTARTING)


def is_queue_refusal(message: str) -> bool:
    """Whether ``message`` holds one of Triton's :data:`QUEUE_REFUSALS` (a network model's queue refused a call)."""
    return any(refusal in message for refusal in QUEUE_REFUSALS)


def is_busy(message: str) -> bool:
    """Whether an error a client saw says the server is at capacity (try again later), not down: a voice's
    refusal (``[UNAVAILABLE] voice '...' is busy: ...; try again later``, :func:`busy_detail`) or a network
    model's bounded queue refusing a call made to it directly (:data:`QUEUE_REFUSALS`)."""
    text = _without_request_id(message)
    if _tagged_code(message) == BUSY_ERROR:
        return _BUSY.match(text.partition("] ")[2]) is not None
    return text.startswith(QUEUE_REFUSALS)


def _without_request_id(message: str) -> str:
    text = message.lstrip()
    if text.startswith("[request id: "):  # Triton puts this in front of its own request errors
        text = text.partition("] ")[2]
    return text


def _tagged_code(message: str) -> str | None:
    text = _without_request_id(message)
    if not text.startswith("["):
        return None
    tag, closed, _ = text[1:].partition("] ")
    return tag if closed and tag in ERROR_CODES else None


def _grpc_status_name(grpc_status: str | int) -> str:
    if isinstance(grpc_status, int):
        return _GRPC_STATUS_NUMBERS.get(grpc_status, str(grpc_status))
    return str(grpc_status).removeprefix("StatusCode.").upper()


def error_code(message: str, *, http_status: int | None = None, grpc_status: str | int | None = None) -> str:
    """The Triton error code name (one of :data:`ERROR_CODES`: ``"INVALID_ARG"``, ``"NOT_FOUND"``,
    ``"UNAVAILABLE"``, ``"INTERNAL"``, ...) of an error a client saw, from its message and, when the channel
    has one, its HTTP status or gRPC status (``"INVALID_ARGUMENT"``, tritonclient's ``"StatusCode.INVALID_ARGUMENT"``,
    or the number 3).  In order, the first that knows:

    1. the ``[<CODE>]`` tag a voice model puts in front of its messages (:func:`error_message`);
    2. a stream reset by its peer (:data:`STREAM_RESET`, status UNKNOWN or CANCELLED): UNAVAILABLE;
       then a gRPC status other than OK/UNKNOWN that Triton has a code for (DEADLINE_EXCEEDED, a client's own
       timeout, is none: the caller decides what that means);
    3. Triton's own messages (unknown model, wrong shape or datatype, missing inputs, queue full, a stub that
       died or a model being reloaded: :data:`RESTARTING`),
       which reach a gRPC stream without their code;
    4. an HTTP error status (>= 400);
    5. ``"UNKNOWN"``.
    """
    tagged = _tagged_code(message)
    if tagged is not None:
        return tagged
    text = _without_request_id(message)
    if text.startswith(STREAM_RESET) and (grpc_status is None or _grpc_status_name(grpc_status) in ("UNKNOWN", "CANCELLED")):
        return "UNAVAILABLE"
    if grpc_status is not None:
        code = _GRPC_STATUS_CODES.get(_grpc_status_name(grpc_status))
        if code is not None:
            return code
    for start, code in _TRITON_MESSAGES:
        if text.startswith(start):
            return code
    if _INPUT_COUNT.match(text):
        return "INVALID_ARG"
    if is_restarting(text):  # a model being brought back: try again
        return "UNAVAILABLE"
    if http_status is not None and http_status >= 400:
        return _HTTP_STATUS_CODES.get(http_status, "UNKNOWN")
    return "UNKNOWN"
