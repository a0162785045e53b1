"""The bad-input corpus of the reliability suite: bad or odd requests to a voice (and to its network models),
each with the outcome expected over each protocol it applies to.  Plain data; the runner is
tests/integration/test_bad_inputs.py.

A case is built for one voice by :func:`corpus` from the voice's addon spec (``max_chars``, its networks),
and every wire name and limit comes from :mod:`melstream.wire`.  Each case says how to send it:

* ``grpc``: a request on a tritonclient gRPC bidirectional stream (``inputs`` as :class:`Tensor`, optionally
  with raw ``raw_input_contents`` bytes), or a unary ``ModelInfer`` (``unary=True``);
* ``http``: a raw HTTP request (method, path, body bytes, headers), usually ``generate_stream``;

and what must come back (:class:`Outcome`): honoured (responses with the listed outputs, e.g. ``MEL`` frames),
or refused with a Triton error code (as :func:`melstream.wire.error_code` reads it from what the client
sees) and message fragments, among them the name of the input that was wrong.

Two sources of refusals:

* the voice itself (melstream/serving/voice_model.py): ``[INVALID_ARG] input <NAME> ...``.  Over HTTP it is
  an SSE error event whose HTTP status Triton 2.51 reads after freeing the error, so only "an error status"
  is checked there (see the errors comment in melstream/wire.py);
* Triton's own front end (``front_end=True``), before our model sees the request: wrong datatype or shape,
  unknown inputs, unknown models, HTTP bodies that are not JSON, the HTTP and unary gRPC ``infer`` of a
  decoupled model.  These record what Triton 2.51 does, which melstream cannot change: e.g. a body that is
  not JSON is answered 500 (Triton calls its own parse failure INTERNAL), ``{"TEXT": [["Hi."]]}`` is
  flattened and honoured, unknown keys of a ``generate_stream`` body are taken as request parameters and
  ignored, and a ``CHUNK_FRAMES`` beyond INT32 in JSON silently wraps around.

Every gRPC case is followed by a good request on the same stream, which must be served.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from melstream.text import MAX_CHARS_DEFAULT
from melstream_client import wire
from melstream_client.spec import AddonSpec, read_addon_spec

GRPC = "grpc"
HTTP = "http"
PROTOCOLS = (GRPC, HTTP)

ADDONS = Path(__file__).resolve().parent.parent / "addons"
#: the shipped voices the corpus runs on
VOICES = ("fastvoice", "tacovoice")

#: a short text every voice speaks (the good request after each gRPC case, and the text of option cases)
GOOD_TEXT = "Hi there."
#: long enough to make frames at the fastest PACE
SENTENCE = "Hello there, how are you today?"
#: a model no server serves
UNKNOWN_VOICE = "novoice"


@dataclass(frozen=True)
class Tensor:
    """One input of a request: ``values`` are the elements, flattened (bytes or str for BYTES, numbers
    otherwise), ``shape`` the tensor's shape.  ``raw`` replaces the encoded values on the gRPC wire (Triton's
    ``raw_input_contents``), for requests no well-behaved client would build."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: tuple[Any, ...]
    raw: bytes | None = None

    def v2_json(self) -> dict[str, Any]:
        """The tensor as an input of Triton's HTTP ``infer`` (KServe v2) JSON body."""
        data = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for v in self.values]
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape), "data": data}


@dataclass(frozen=True)
class Outcome:
    """What a request must get.  ``code`` None: honoured, every output in ``outputs`` present in at least one
    response (``responses`` of them exactly, if given; every chunk but the last ``chunk_frames`` frames, if
    given; the same mel as the text ``same_as`` sent plainly, if given).  Otherwise refused with that Triton
    code (``wire.error_code`` of the message with the HTTP or gRPC status) and a message holding every
    fragment; ``http_status`` is the exact status when Triton's front end answered (faithful there);
    ``front_end`` says the refusal is Triton's own, not melstream's."""

    code: str | None = None
    fragments: tuple[str, ...] = ()
    http_status: int | None = None
    front_end: bool = False
    outputs: tuple[str, ...] = (wire.MEL,)
    responses: int | None = None
    chunk_frames: int | None = None
    same_as: str | None = None  # honoured: the same mel as this text sent plainly (what the voice made of the input)

    @property
    def honoured(self) -> bool:
        return self.code is None


@dataclass(frozen=True)
class GrpcRequest:
    model: str
    inputs: tuple[Tensor, ...]
    expect: Outcome
    unary: bool = False  # ModelInfer instead of a request on a bidirectional stream


@dataclass(frozen=True)
class HttpRequest:
    path: str
    body: bytes | None
    expect: Outcome
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = tuple(wire.GENERATE_STREAM_HEADERS.items())


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    voice: str
    grpc: GrpcRequest | None = None
    http: HttpRequest | None = None

    @property
    def protocols(self) -> tuple[str, ...]:
        return tuple(p for p, r in ((GRPC, self.grpc), (HTTP, self.http)) if r is not None)

    def request(self, protocol: str) -> GrpcRequest | HttpRequest:
        request = self.grpc if protocol == GRPC else self.http
        if request is None:
            raise ValueError(f"case {self.id} is not sent over {protocol}")
        return request


# --- outcomes ------------------------------------------------------------------------------------------
HONOURED = Outcome()


def refused(*fragments: str, code: str = wire.INPUT_ERROR) -> Outcome:
    """The voice refuses the input: ``[INVALID_ARG] input <NAME> ...``."""
    return Outcome(code=code, fragments=fragments)


def triton(code: str, *fragments: str, http_status: int | None = None) -> Outcome:
    """Triton's front end refuses the request before the model sees it (Triton's behaviour, not ours)."""
    return Outcome(code=code, fragments=fragments, http_status=http_status, front_end=True)


# --- building requests ---------------------------------------------------------------------------------
def text(value: str | bytes) -> Tensor:
    return Tensor(wire.TEXT.name, wire.TEXT.datatype, (1,), (value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value,))


def pace(value: float, *, datatype: str = wire.PACE.datatype) -> Tensor:
    return Tensor(wire.PACE.name, datatype, (1,), (value,))


def chunk_frames(value: int | float, *, datatype: str = wire.CHUNK_FRAMES.datatype) -> Tensor:
    return Tensor(wire.CHUNK_FRAMES.name, datatype, (1,), (value,))


def tensor(inp: wire.WireInput, values: tuple[Any, ...], shape: tuple[int, ...], *, datatype: str | None = None) -> Tensor:
    return Tensor(inp.name, datatype or inp.datatype, shape, values)


def generate_body(**inputs: Any) -> bytes:
    """A ``generate_stream`` body: one JSON object of the inputs (scalars or lists, any JSON value); bytes
    values go in raw (not escaped: bytes that are not UTF-8 reach Triton as they are)."""
    raw = {k: v for k, v in inputs.items() if isinstance(v, bytes)}
    body = json.dumps({k: (f"@@{k}@@" if k in raw else v) for k, v in inputs.items()}, ensure_ascii=False).encode("utf-8")
    for k, v in raw.items():
        body = body.replace(f"@@{k}@@".encode(), v)
    return body


def infer_body(*tensors: Tensor) -> bytes:
    """A KServe v2 ``infer`` body."""
    return json.dumps({"inputs": [t.v2_json() for t in tensors]}).encode("utf-8")


def model_path(model: str, endpoint: str) -> str:
    return f"/v2/models/{quote(model, safe='')}/{endpoint}"


def max_chars_of(spec: AddonSpec) -> int:
    value = spec.text.get("max_chars", MAX_CHARS_DEFAULT)
    return int(value)


# --- the corpus ----------------------------------------------------------------------------------------
def corpus(spec: AddonSpec) -> tuple[Case, ...]:  # noqa: PLR0915 - one list, read top to bottom
    """Every case for the voice ``spec`` describes, in order; ids are unique and the same for every voice."""
    voice = spec.name
    TEXT, PACE, CHUNK = wire.TEXT.name, wire.PACE.name, wire.CHUNK_FRAMES.name
    pace_low, pace_high = wire.PACE_RANGE
    frames_low, frames_high = wire.CHUNK_FRAMES_RANGE
    max_chars = max_chars_of(spec)
    good = text(GOOD_TEXT)
    pace_range = f"from {pace_low} to {pace_high}"
    frames_range = f"from {frames_low} to {frames_high}"
    cases: list[Case] = []

    def case(id: str, description: str, *, grpc: tuple[Tensor, ...] | None = None, grpc_expect: Outcome | None = None,
             http: Any = None, http_expect: Outcome | None = None, expect: Outcome | None = None,
             model: str = voice, endpoint: str = "generate_stream", unary: bool = False,
             method: str = "POST", headers: tuple[tuple[str, str], ...] | None = None) -> None:
        """``http`` is a dict (a generate_stream JSON body) or bytes (the raw body); ``expect`` is the outcome
        over both protocols unless ``grpc_expect``/``http_expect`` say otherwise."""
        grpc_request = http_request = None
        if grpc is not None:
            grpc_request = GrpcRequest(model, grpc, grpc_expect or expect or HONOURED, unary=unary)
        if http is not None or method != "POST":
            body = generate_body(**http) if isinstance(http, dict) else http  # None: no body (a GET)
            http_request = HttpRequest(model_path(model, endpoint), body, http_expect or expect or HONOURED, method=method,
                                       headers=tuple(wire.GENERATE_STREAM_HEADERS.items()) if headers is None else headers)
        cases.append(Case(id, description, voice, grpc_request, http_request))

    def text_case(id: str, description: str, value: str | bytes, expect: Outcome, *, http_value: Any = ...,
                  http_expect: Outcome | None = None) -> None:
        """TEXT alone, the same over both protocols unless the JSON form differs."""
        case(id, description, grpc=(text(value),), expect=expect,
             http={TEXT: value if http_value is ... else http_value}, http_expect=http_expect)

    def option_case(id: str, description: str, option: Tensor, expect: Outcome, *, words: str = GOOD_TEXT,
                    http_value: Any = ..., http_expect: Outcome | None = None) -> None:
        """A good TEXT and one option tensor; over HTTP the option's JSON value (its one element by default)."""
        json_value = option.values[0] if http_value is ... else http_value
        case(id, description, grpc=(text(words), option), expect=expect,
             http=None if json_value is None else {TEXT: words, option.name: json_value}, http_expect=http_expect)

    # --- TEXT: missing, empty, nothing to speak -------------------------------------------------------
    case("text-missing", "PACE without TEXT: the voice names the missing input",
         grpc=(pace(1.0),), http={PACE: 1.0}, expect=refused(TEXT, "is missing"))
    case("no-inputs", "no input at all: Triton's front end refuses (TEXT is required by the config)",
         grpc=(), http={}, expect=triton("INVALID_ARG", f"missing required input(s) ['{TEXT}']"),
         http_expect=triton("INVALID_ARG", f"missing required input(s) ['{TEXT}']", http_status=400))
    text_case("text-empty", "TEXT is the empty string", "", refused(TEXT, "it is empty"))
    text_case("text-whitespace", "TEXT holds only whitespace", " \t\n  \r ", refused(TEXT, "nothing to speak"))
    text_case("text-punctuation", "TEXT holds only punctuation", "?!... ,;:-", refused(TEXT, "nothing to speak"))
    text_case("text-emoji", "TEXT holds only emoji", "\U0001f600\U0001f389\U0001f44d", refused(TEXT, "nothing to speak"))
    text_case("text-nul-only", "TEXT holds only NUL characters", "\x00\x00", refused(TEXT, "nothing to speak"))
    text_case("text-nul-inside", "NUL characters inside speakable text are dropped: honoured", "Hi\x00 there.",
              Outcome(same_as=GOOD_TEXT))
    text_case("text-control-only", "TEXT holds only control characters", "\x07\x08\x1b\x7f\x0b", refused(TEXT, "nothing to speak"))
    text_case("text-control-inside", "control characters inside speakable text are dropped: honoured", "Hi\x07 \x1bthere.",
              Outcome(same_as=GOOD_TEXT))

    # --- TEXT: encodings and scripts -------------------------------------------------------------------
    text_case("text-invalid-utf8", "TEXT bytes are not UTF-8 (over HTTP inside the JSON string: Triton passes them on)",
              b"\xff\xfe hello", refused(TEXT, "not valid UTF-8", "0xff"))
    text_case("text-truncated-utf8", "TEXT ends inside a multi-byte UTF-8 sequence", b"caf\xc3", refused(TEXT, "not valid UTF-8", "0xc3"))
    case("text-lone-surrogate", "TEXT holds a lone surrogate: invalid UTF-8 bytes over gRPC; over HTTP a \\ud800 escape, "
         "which Triton's JSON parser refuses itself (500, its own parse failure)",
         grpc=(text(b"\xed\xa0\x80 hi"),), grpc_expect=refused(TEXT, "not valid UTF-8"),
         http=b'{"%s": "\\ud800 hi"}' % TEXT.encode(),
         http_expect=triton("INTERNAL", "failed to parse the request JSON", "surrogate", http_status=500))
    text_case("text-chinese", "TEXT in a script the voice does not speak (CJK)", "你好，世界", refused(TEXT, "does not speak (CJK)"))
    text_case("text-arabic", "TEXT in a script the voice does not speak (Arabic)", "مرحبا بالعالم", refused(TEXT, "does not speak (Arabic)"))
    text_case("text-cyrillic", "TEXT in a script the voice does not speak (Cyrillic)", "Привет, мир", refused(TEXT, "does not speak (Cyrillic)"))
    text_case("text-mixed-script", "Latin mixed with scripts the voice does not speak: the Latin part is spoken",
              "Hi 你好 мир there.", Outcome(same_as=GOOD_TEXT))

    # --- TEXT: length ----------------------------------------------------------------------------------
    text_case("text-over-max-chars", f"TEXT one character over the addon's max_chars ({max_chars})",
              "Hi." + " " * (max_chars - 2), refused(TEXT, f"is {max_chars + 1} characters; the limit is {max_chars}"))
    text_case("text-far-over-max-chars", "TEXT ten times the addon's max_chars, all letters",
              "a" * (10 * max_chars), refused(TEXT, f"is {10 * max_chars} characters; the limit is {max_chars}"))
    text_case("text-exactly-max-chars", "TEXT exactly max_chars characters (spaces after a word): honoured",
              "Hi." + " " * (max_chars - 3), Outcome(same_as="Hi."))
    text_case("text-exactly-max-chars-multibyte", "TEXT exactly max_chars characters, twice as many UTF-8 bytes "
              "(the limit counts characters): honoured", "Hi." + "\u00a0" * (max_chars - 3), Outcome(same_as="Hi."))
    text_case("text-one-char", "TEXT is one letter: honoured", "a", HONOURED)
    text_case("text-long-word", "one very long word: honoured", "Supercalifragilisticexpialidocious" * 3, HONOURED)
    text_case("text-digits", "TEXT is only digits: read as a number, honoured", "1234567890", HONOURED)
    text_case("text-url", "URL-like text: honoured", "https://example.com/path?q=1&r=two#frag", HONOURED)

    # --- TEXT: shape and datatype ----------------------------------------------------------------------
    case("text-two-elements", "TEXT with two elements: Triton's front end refuses the shape",
         grpc=(tensor(wire.TEXT, (b"Hi.", b"Ho."), (2,)),), grpc_expect=triton("INVALID_ARG", f"unexpected shape for input '{TEXT}'", "got [2]"),
         http={TEXT: ["Hi.", "Ho."]}, http_expect=triton("INVALID_ARG", f"can not convert input '{TEXT}'", http_status=400))
    case("text-shape-1x1", "TEXT of shape [1, 1]: refused over gRPC by Triton's front end; over HTTP Triton flattens "
         '[["..."]] into the one element and the voice speaks it',
         grpc=(tensor(wire.TEXT, (b"Hi.",), (1, 1)),), grpc_expect=triton("INVALID_ARG", f"unexpected shape for input '{TEXT}'", "got [1,1]"),
         http={TEXT: [[GOOD_TEXT]]}, http_expect=HONOURED)
    case("text-no-elements", "TEXT with no element: Triton's front end refuses the shape",
         grpc=(tensor(wire.TEXT, (), (0,)),), grpc_expect=triton("INVALID_ARG", f"unexpected shape for input '{TEXT}'", "got [0]"),
         http={TEXT: []}, http_expect=triton("INVALID_ARG", f"can not convert input '{TEXT}'", http_status=400))
    case("text-as-list", "TEXT as a JSON list of one string: Triton takes it as the [1] tensor, honoured",
         http={TEXT: [GOOD_TEXT]}, http_expect=HONOURED)
    case("text-int32", "TEXT as a number: INT32 over gRPC, a JSON number over HTTP; Triton's front end refuses both "
         "(HTTP: 500, Triton's own parse failure)",
         grpc=(tensor(wire.TEXT, (5,), (1,), datatype="INT32"),), grpc_expect=triton("INVALID_ARG", f"input '{TEXT}' data-type is 'INT32'"),
         http={TEXT: 5}, http_expect=triton("INTERNAL", "Unable to parse JSON bytes array", http_status=500))
    case("text-fp32", "TEXT as a float: FP32 over gRPC, a JSON float over HTTP; Triton's front end refuses both",
         grpc=(tensor(wire.TEXT, (1.5,), (1,), datatype="FP32"),), grpc_expect=triton("INVALID_ARG", f"input '{TEXT}' data-type is 'FP32'"),
         http={TEXT: 1.5}, http_expect=triton("INTERNAL", "Unable to parse JSON bytes array", http_status=500))
    case("text-bytes-number", "a number put in a BYTES TEXT tensor: tritonclient sends its str() ('5'), which is spoken",
         grpc=(tensor(wire.TEXT, (5,), (1,)),), grpc_expect=HONOURED)
    case("text-null", "TEXT is JSON null: Triton's front end refuses (500, its own parse failure)",
         http={TEXT: None}, http_expect=triton("INTERNAL", "Unable to parse JSON bytes array", http_status=500))
    case("text-bool", "TEXT is JSON true: Triton's front end refuses", http={TEXT: True},
         http_expect=triton("INTERNAL", "Unable to parse JSON bytes array", http_status=500))
    case("text-object", "TEXT is a JSON object: Triton's front end refuses", http={TEXT: {"text": GOOD_TEXT}},
         http_expect=triton("INTERNAL", "Unable to parse JSON bytes array", http_status=500))
    case("text-twice", "TEXT sent twice: Triton's front end refuses (gRPC: two tensors; HTTP: a duplicate JSON key)",
         grpc=(good, text("Ho.")), grpc_expect=triton("INVALID_ARG", f"input '{TEXT}' already exists"),
         http=b'{"%s": "Hi.", "%s": ""}' % (TEXT.encode(), TEXT.encode()),
         http_expect=triton("INVALID_ARG", f"input '{TEXT}' already exists", http_status=400))
    case("text-lowercase-name", "the text under the name 'text': an input the voice does not have (gRPC) / no TEXT (HTTP, "
         "where the unknown key is taken as a parameter); Triton's front end refuses both",
         grpc=(Tensor(TEXT.lower(), wire.TEXT.datatype, (1,), (b"Hi.",)),),
         grpc_expect=triton("INVALID_ARG", f"unexpected inference input '{TEXT.lower()}'"),
         http={TEXT.lower(): GOOD_TEXT}, http_expect=triton("INVALID_ARG", f"missing required input(s) ['{TEXT}']", http_status=400))

    # --- PACE ------------------------------------------------------------------------------------------
    for id, value in (("pace-zero", 0.0), ("pace-negative", -1.0), ("pace-nan", math.nan), ("pace-inf", math.inf),
                      ("pace-neg-inf", -math.inf), ("pace-below-min", pace_low * (1 - 4e-5)),
                      ("pace-above-max", pace_high * (1 + 2.5e-5)), ("pace-huge", 1e9), ("pace-tiny", 1e-30),
                      ("pace-float32-max", 3.4e38)):
        option_case(id, f"PACE {value!r}: outside {pace_range} or not finite", pace(value), refused(PACE, pace_range))
    option_case("pace-min", f"PACE exactly {pace_low} (the slowest): honoured", pace(pace_low), HONOURED)
    option_case("pace-max", f"PACE exactly {pace_high} (the fastest): honoured", pace(pace_high), HONOURED, words=SENTENCE)
    option_case("pace-fp64", "PACE as FP64: Triton's front end refuses the datatype (JSON has no FP64)",
                pace(1.0, datatype="FP64"), triton("INVALID_ARG", f"input '{PACE}' data-type is 'FP64'"), http_value=None)
    option_case("pace-int32", "PACE as INT32 over gRPC: Triton's front end refuses; a JSON integer over HTTP is taken as FP32: honoured",
                pace(2, datatype="INT32"), triton("INVALID_ARG", f"input '{PACE}' data-type is 'INT32'"), http_expect=HONOURED)
    option_case("pace-two-elements", "PACE with two elements: Triton's front end refuses the shape",
                tensor(wire.PACE, (1.0, 1.0), (2,)), triton("INVALID_ARG", f"unexpected shape for input '{PACE}'"), http_value=[1.0, 1.0],
                http_expect=triton("INVALID_ARG", f"can not convert input '{PACE}'", http_status=400))
    option_case("pace-empty", "PACE with no element: Triton's front end refuses the shape",
                tensor(wire.PACE, (), (0,)), triton("INVALID_ARG", f"unexpected shape for input '{PACE}'"), http_value=[],
                http_expect=triton("INVALID_ARG", f"can not convert input '{PACE}'", http_status=400))
    case("pace-string", 'PACE as a JSON string: Triton\'s front end refuses (500, its own parse failure)',
         http={TEXT: GOOD_TEXT, PACE: "fast"}, http_expect=triton("INTERNAL", "Unable to parse 'data'", "non-number", http_status=500))
    case("pace-null", "PACE as JSON null: Triton's front end refuses", http={TEXT: GOOD_TEXT, PACE: None},
         http_expect=triton("INTERNAL", "Unable to parse 'data'", "non-number", http_status=500))

    # --- CHUNK_FRAMES ----------------------------------------------------------------------------------
    for id, value in (("chunk-frames-negative", frames_low - 1), ("chunk-frames-int32-min", -2**31),
                      ("chunk-frames-above-max", frames_high + 1), ("chunk-frames-int32-max", 2**31 - 1)):
        option_case(id, f"CHUNK_FRAMES {value}: outside {frames_range}", chunk_frames(value), refused(CHUNK, frames_range))
    option_case("chunk-frames-zero", f"CHUNK_FRAMES {frames_low}: the whole utterance in one response",
                chunk_frames(frames_low), Outcome(responses=1))
    option_case("chunk-frames-one", "CHUNK_FRAMES 1: one frame per response", chunk_frames(1), Outcome(chunk_frames=1))
    option_case("chunk-frames-max", f"CHUNK_FRAMES {frames_high} (the largest): one response", chunk_frames(frames_high), Outcome(responses=1))
    option_case("chunk-frames-int64", "CHUNK_FRAMES as INT64: Triton's front end refuses the datatype (JSON: no INT64)",
                chunk_frames(8, datatype="INT64"), triton("INVALID_ARG", f"input '{CHUNK}' data-type is 'INT64'"), http_value=None)
    option_case("chunk-frames-fp32", "CHUNK_FRAMES as a float: FP32 over gRPC, 1.5 over HTTP; Triton's front end refuses both",
                chunk_frames(1.5, datatype="FP32"), triton("INVALID_ARG", f"input '{CHUNK}' data-type is 'FP32'"),
                http_expect=triton("INTERNAL", "Unable to parse 'data'", "non-signed-integer", http_status=500))
    option_case("chunk-frames-two-elements", "CHUNK_FRAMES with two elements: Triton's front end refuses the shape",
                tensor(wire.CHUNK_FRAMES, (8, 8), (2,)), triton("INVALID_ARG", f"unexpected shape for input '{CHUNK}'"),
                http_value=[8, 8], http_expect=triton("INVALID_ARG", f"can not convert input '{CHUNK}'", http_status=400))
    case("chunk-frames-string", "CHUNK_FRAMES as a JSON string: Triton's front end refuses", http={TEXT: GOOD_TEXT, CHUNK: "8"},
         http_expect=triton("INTERNAL", "Unable to parse 'data'", "non-signed-integer", http_status=500))
    case("chunk-frames-wraps", "CHUNK_FRAMES 2**32 in JSON: Triton's front end wraps it to INT32 without a word (0), so the "
         "voice sends the whole utterance in one response (Triton's behaviour, not ours)",
         http={TEXT: GOOD_TEXT, CHUNK: 2**32}, http_expect=Outcome(responses=1))
    case("chunk-frames-wraps-out-of-range", "CHUNK_FRAMES 99999999999 in JSON: wrapped by Triton to 1215752191, which the voice refuses",
         http={TEXT: GOOD_TEXT, CHUNK: 99_999_999_999}, http_expect=refused(CHUNK, frames_range, "got 1215752191"))

    # --- names: inputs and models --------------------------------------------------------------------------
    case("unknown-input", "an input the voice does not have (SPEED): refused by Triton's front end over gRPC; over HTTP "
         "generate_stream takes unknown keys as request parameters and ignores them: honoured",
         grpc=(good, Tensor("SPEED", "FP32", (1,), (2.0,))), grpc_expect=triton("INVALID_ARG", "unexpected inference input 'SPEED'"),
         http={TEXT: GOOD_TEXT, "SPEED": 2.0}, http_expect=HONOURED)
    case("unknown-voice", f"a voice no server serves ({UNKNOWN_VOICE!r})", model=UNKNOWN_VOICE,
         grpc=(good,), http={TEXT: GOOD_TEXT},
         grpc_expect=triton("NOT_FOUND", f"unknown model: '{UNKNOWN_VOICE}'"),
         http_expect=triton("NOT_FOUND", f"unknown model: '{UNKNOWN_VOICE}'", http_status=404))
    case("voice-name-case", "the voice's name in capitals: model names are case-sensitive", model=voice.upper(),
         grpc=(good,), http={TEXT: GOOD_TEXT},
         grpc_expect=triton("NOT_FOUND", f"unknown model: '{voice.upper()}'"),
         http_expect=triton("NOT_FOUND", f"unknown model: '{voice.upper()}'", http_status=404))

    # --- a network model called directly ---------------------------------------------------------------
    encoder = next(name for name, net in spec.networks.items() if "tokens" in net.input_names())
    net_model = wire.network_model_name(voice, encoder)
    net = spec.networks[encoder]
    outputs = tuple(t.name for t in net.outputs)
    infer = "infer"

    def tokens(values: tuple[Any, ...], shape: tuple[int, ...], datatype: str = "INT64") -> tuple[Tensor, ...]:
        """The tokens tensor, and the network's length input (the tokens' count) if it declares one."""
        length = (Tensor(net.length.name, "INT64", (shape[0], 1), (shape[-1],) * shape[0]),) if net.length is not None else ()
        return (Tensor("tokens", datatype, shape, values), *length)

    required = "[" + ",".join(f"'{t.name}'" for t in net.all_inputs()) + "]"  # as Triton lists them: config order
    net_ok = tokens((3, 4, 5), (1, 3))
    case("network-good", f"the network model {encoder} called directly with good tokens: honoured",
         model=net_model, endpoint=infer, grpc=net_ok, http=infer_body(*net_ok), expect=Outcome(outputs=outputs))
    if net.length is not None:
        alone = net_ok[:1]
        case("network-without-length", "the network model's tokens without its length input: Triton's front end refuses",
             model=net_model, endpoint=infer, grpc=alone, http=infer_body(*alone),
             grpc_expect=triton("INVALID_ARG", f"missing required input(s) ['{net.length.name}']"),
             http_expect=triton("INVALID_ARG", f"missing required input(s) ['{net.length.name}']", http_status=400))
    # with the length input, so that the count of inputs is right and Triton names the unexpected one
    voice_input = (good, *net_ok[1:])
    case("network-voice-input", "the network model given the voice's TEXT: Triton's front end refuses", model=net_model, endpoint=infer,
         grpc=voice_input, http=infer_body(*voice_input),
         grpc_expect=triton("INVALID_ARG", f"unexpected inference input '{TEXT}'"),
         http_expect=triton("INVALID_ARG", f"unexpected inference input '{TEXT}'", http_status=400))
    case("network-no-inputs", "the network model with no input: Triton's front end refuses", model=net_model, endpoint=infer,
         grpc=(), http=b'{"inputs": []}',
         grpc_expect=triton("INVALID_ARG", f"missing required input(s) {required}"),
         http_expect=triton("INVALID_ARG", f"missing required input(s) {required}", http_status=400))
    case("network-wrong-dtype", "the network model's tokens as FP32: Triton's front end refuses", model=net_model, endpoint=infer,
         grpc=tokens((3.0,), (1, 1), "FP32"), http=infer_body(*tokens((3.0,), (1, 1), "FP32")),
         grpc_expect=triton("INVALID_ARG", "input 'tokens' data-type is 'FP32'"),
         http_expect=triton("INVALID_ARG", "input 'tokens' data-type is 'FP32'", http_status=400))
    case("network-wrong-rank", "the network model's tokens with an extra axis: Triton's front end refuses", model=net_model,
         endpoint=infer, grpc=tokens((3,), (1, 1, 1)), http=infer_body(*tokens((3,), (1, 1, 1))),
         grpc_expect=triton("INVALID_ARG", "unexpected shape for input 'tokens'"),
         http_expect=triton("INVALID_ARG", "unexpected shape for input 'tokens'", http_status=400))
    empty = tokens((), (1, 0))
    case("network-empty-tokens", "the network model given no tokens ([1, 0])", model=net_model, endpoint=infer,
         grpc=empty, http=infer_body(*empty), expect=refused("tokens", "is empty"))
    bad_ids = tokens((10_000, 4, 5), (1, 3))
    case("network-token-out-of-range", "the network model given a token id beyond its symbols", model=net_model, endpoint=infer,
         grpc=bad_ids, http=infer_body(*bad_ids), expect=refused("tokens", "outside [0, "))
    case("network-infer-without-inputs", "HTTP infer on the network model with a JSON body without \"inputs\": "
         "Triton's front end refuses (500, its own parse failure)", model=net_model, endpoint=infer,
         http=b'{"id": "1"}', http_expect=triton("INTERNAL", "Unable to parse 'inputs'", http_status=500))

    # --- HTTP: the body, the headers, the endpoint -----------------------------------------------------
    http_only = (
        ("http-not-json", "a body that is not JSON", b"TEXT=hello", "failed to parse the request JSON"),
        ("http-empty-body", "an empty body", b"", "The document is empty"),
        ("http-json-array", "a JSON array instead of an object", b'["Hi."]', "non-object"),
        ("http-json-string", "a JSON string instead of an object", b'"Hi."', "non-object"),
        ("http-trailing-garbage", "a JSON object followed by more", b'{"%s": "Hi."} xyz' % TEXT.encode(), "must not be followed"),
    )
    for id, description, body, fragment in http_only:
        case(id, f"{description}: Triton's front end refuses it (500, its own parse failure)", http=body,
             http_expect=triton("INTERNAL", fragment, http_status=500))
    good_body = generate_body(**{TEXT: GOOD_TEXT})
    case("http-content-length-short", "Content-Length shorter than the body: Triton parses the truncated JSON and refuses it",
         http=good_body, headers=(*wire.GENERATE_STREAM_HEADERS.items(), ("Content-Length", "5")),
         http_expect=triton("INTERNAL", "failed to parse the request JSON", http_status=500))
    case("http-content-type-text", "Content-Type text/plain: Triton ignores it, honoured", http=good_body,
         headers=(("Content-Type", "text/plain"),))
    case("http-no-content-type", "no Content-Type and no Accept: honoured", http=good_body, headers=())
    case("http-get", "GET generate_stream: Triton refuses the method (405, which has no Triton code: UNKNOWN)", http=None,
         method="GET", http_expect=triton("UNKNOWN", "Method Not Allowed", http_status=405))
    case("http-generate-one-chunk", f"POST generate (not streaming) on the voice with CHUNK_FRAMES {frames_low}: "
         "one response, honoured", endpoint="generate", http={TEXT: GOOD_TEXT, CHUNK: frames_low}, http_expect=Outcome(responses=1))
    case("http-generate-chunks", "POST generate (not streaming) on the voice, which streams several chunks: Triton's front "
         "end gives up at the second response, with a 200 and an error body whose code it does not say (UNKNOWN)",
         endpoint="generate", http=good_body, http_expect=triton("UNKNOWN", "generate expects model to produce exactly 1 response",
                                                                 http_status=200))
    case("http-infer-voice", "POST infer (KServe v2) on the voice: Triton refuses a decoupled model there", endpoint=infer,
         http=infer_body(good), http_expect=triton("UNSUPPORTED", "doesn't support models with decoupled transaction policy", http_status=501))
    case("http-infer-voice-not-json", "POST infer on the voice with a body that is not JSON: the decoupled refusal comes first",
         endpoint=infer, http=b"nonsense",
         http_expect=triton("UNSUPPORTED", "doesn't support models with decoupled transaction policy", http_status=501))

    # --- gRPC: raw requests ----------------------------------------------------------------------------
    case("grpc-bytes-length-overrun", "TEXT's raw element says 5 bytes but 2 follow: Triton's front end refuses",
         grpc=(Tensor(TEXT, wire.TEXT.datatype, (1,), (b"ab",), raw=b"\x05\x00\x00\x00ab"),),
         grpc_expect=triton("INVALID_ARG", f"incomplete string data for inference input '{TEXT}'"))
    case("grpc-raw-size-mismatch", "CHUNK_FRAMES's raw contents are 3 bytes, not 4: Triton's front end refuses",
         grpc=(good, Tensor(CHUNK, wire.CHUNK_FRAMES.datatype, (1,), (8,), raw=b"\x08\x00\x00")),
         grpc_expect=triton("INVALID_ARG", f"input byte size mismatch for input '{CHUNK}'", "Expected 4, got 3"))
    case("grpc-unary-infer", "unary ModelInfer on the voice: Triton refuses a decoupled model there (UNIMPLEMENTED)",
         grpc=(good,), unary=True, grpc_expect=triton("UNSUPPORTED", "doesn't support models with decoupled transaction policy"))

    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), f"duplicate case ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    return tuple(cases)


def voice_spec(voice: str) -> AddonSpec:
    return read_addon_spec(ADDONS / voice, check_files=False)


#: the corpus of every shipped voice
CORPUS: dict[str, tuple[Case, ...]] = {voice: corpus(voice_spec(voice)) for voice in VOICES}
