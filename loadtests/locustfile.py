"""Locust load test of a melstream server: many listeners streaming utterances at once.

    .venv/bin/locust -f loadtests/locustfile.py                   # web UI on http://localhost:8089
    .venv/bin/locust -f loadtests/locustfile.py --headless -u 8 -r 4 -t 60s --csv out/loadtest/locust \
        --html out/loadtest/report.html                           # bounded run, reports
    make loadtest                                                 # the same against a server it starts

Two users: ``GrpcStreamUser`` (Triton gRPC bidirectional stream) and ``HttpStreamUser`` (HTTP
``generate_stream``, server-sent events); name one on the command line to run only it.  Each
utterance is reported as locust request events (request type ``grpc`` or ``sse``), all times in ms:

- ``first_chunk [voice]``  request → first mel chunk (response length: its frames)
- ``gap [voice]``          one per later chunk: time since the previous chunk (length: its frames)
- ``utterance [voice]``    request → final response (length: frames); a failure carries the server's message
- ``stall [voice]``        one per utterance that stalled (a chunk came after the audio received so far had
                           finished playing, see melstream.timing): time = seconds of silence, length = stalls.
                           Its count over utterance's count is the share of utterances a listener heard stall.
- ``check [voice]``        every ``--check-every``-th utterance of each user: the mel equals a reference
                           synthesis of the same text (failure: max |diff|); time = time spent checking

Every utterance is also checked for shape (non-empty float32 ``[n, n_mels]`` chunks, finite) and fails if not.
Options (``--help``, each also an environment variable, all editable in the web UI) are below.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import grpc.experimental.gevent
import numpy as np
from locust import User, events, task
from locust.exception import StopUser

# `loadtests.*` imports whatever the working directory (locust puts only this file's folder on sys.path)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.scenario import TextMix, Weighted, parse_range, parse_text_mix, parse_weights  # noqa: E402
from loadtests.streams import (  # noqa: E402
    GrpcVoices,
    HttpVoices,
    References,
    StreamError,
    Utterance,
    VoiceInfo,
    check_equal,
    check_shape,
    voice_info,
)
from melstream.timing import stream_timing  # noqa: E402

# gRPC's C core must yield to gevent's loop, or one blocked read freezes every user; before any channel exists.
grpc.experimental.gevent.init_gevent()

log = logging.getLogger("melstream.loadtest")
DEFAULT_ADDONS = Path(__file__).resolve().parent.parent / "addons"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    # parser.add_argument (not a group): only the parser itself puts options in the web UI form
    parser.add_argument("--grpc-url", default="localhost:8001", env_var="MELSTREAM_GRPC_URL",
                       help="gRPC endpoint of the server (GrpcStreamUser)")
    parser.add_argument("--http-url", default="localhost:8000", env_var="MELSTREAM_HTTP_URL",
                       help="HTTP endpoint of the server (HttpStreamUser)")
    parser.add_argument("--voices", default="", env_var="MELSTREAM_VOICES",
                       help="voices and weights, e.g. 'fastvoice:3,tacovoice:1' (default: every voice the server serves, equally)")
    parser.add_argument("--texts", default="mix", env_var="MELSTREAM_TEXTS",
                       help="text mix: 'mix' (short 50%%, sentence 40%%, paragraph 10%%), 'short', 'sentence', 'paragraph', "
                            "weights like 'short:6,sentence:3,paragraph:1', or '@file' with one text per line")
    parser.add_argument("--think-s", default="0.5,2", env_var="MELSTREAM_THINK_S",
                       help="think time between a user's utterances, seconds: MIN,MAX (uniform) or one number")
    parser.add_argument("--check-every", type=int, default=10, env_var="MELSTREAM_CHECK_EVERY",
                       help="compare every Nth utterance of each user with a reference synthesis (0: never)")
    parser.add_argument("--check-atol", type=float, default=1e-4, env_var="MELSTREAM_CHECK_ATOL",
                       help="largest allowed |difference| from the reference (the integration tests' bound)")
    parser.add_argument("--reference-addons", default=str(DEFAULT_ADDONS), env_var="MELSTREAM_REFERENCE_ADDONS",

                       help="addons folder for local references (used for a voice whose addon JSON equals the server's); "
                            "empty: ask the server for the whole utterance (CHUNK_FRAMES=0)")
    parser.add_argument("--chunk-frames", default="", env_var="MELSTREAM_CHUNK_FRAMES",
                       help="CHUNK_FRAMES to request (default: the voice's own)")
    parser.add_argument("--timeout-s", type=float, default=60.0, env_var="MELSTREAM_TIMEOUT_S",
                       help="an utterance (gRPC) or a wait for the next byte (HTTP) longer than this fails")


class Settings:
    """The melstream options, parsed and checked (ValueError names the bad one)."""

    def __init__(self, options: Any) -> None:
        self.voices: Weighted[str] | None = parse_weights(options.voices, what="voice") if options.voices.strip() else None
        self.texts: TextMix = parse_text_mix(options.texts)
        self.think_s = parse_range(options.think_s, what="--think-s")
        self.check_every = int(options.check_every)
        if self.check_every < 0:
            raise ValueError(f"--check-every must be >= 0, got {self.check_every}")
        self.check_atol = float(options.check_atol)
        chunk = str(options.chunk_frames or "").strip()
        self.chunk_frames = int(chunk) if chunk else None
        self.timeout_s = float(options.timeout_s)
        addons = str(options.reference_addons or "").strip()
        self.reference_addons = Path(addons) if addons else None


@events.init.add_listener
def _check_options(environment: Any, **_: Any) -> None:
    if environment.parsed_options is not None:
        try:
            Settings(environment.parsed_options)
        except ValueError as e:
            sys.exit(f"melstream load test: {e}")


# Shared by all users of this process: the same (url, voice) is looked up once, a reference computed once.
_voice_lists: dict[tuple[str, str], list[str]] = {}
_voice_infos: dict[tuple[str, str, str], VoiceInfo] = {}
_references: dict[Path | None, References] = {}


@events.quit.add_listener
def _close_references(**_: Any) -> None:
    for refs in _references.values():
        refs.close()


class StreamUser(User):
    """One listener: picks a voice and a text, streams the utterance, reports it, thinks, again."""

    abstract = True
    request_type = ""

    def on_start(self) -> None:
        self.rng = random.Random()
        self.count = 0
        try:
            self.settings = Settings(self.environment.parsed_options)
        except ValueError as e:
            self._fire("options", 0, 0, StreamError(str(e)))
            raise StopUser() from None
        self.connect()
        voices = self.settings.voices
        if voices is None:
            key = (self.request_type, self.url)
            try:
                if key not in _voice_lists:
                    _voice_lists[key] = self.list_voices()
            except StreamError as e:
                self._fire("voices", 0, 0, e)
                raise StopUser() from None
            if not _voice_lists[key]:
                self._fire("voices", 0, 0, StreamError(f"the server at {self.url} serves no voices"))
                raise StopUser()
            voices = Weighted(tuple(_voice_lists[key]), (1.0,) * len(_voice_lists[key]))
        self.voices = voices
        if self.settings.reference_addons not in _references:
            _references[self.settings.reference_addons] = References(self.settings.reference_addons)
        self.references = _references[self.settings.reference_addons]

    def wait_time(self) -> float:
        return self.rng.uniform(*self.settings.think_s)

    # --- per protocol ---------------------------------------------------------------------
    url = ""

    def connect(self) -> None:
        raise NotImplementedError

    def list_voices(self) -> list[str]:
        raise NotImplementedError

    def addon_json(self, voice: str) -> str:
        raise NotImplementedError

    def stream(self, info: VoiceInfo, text: str, chunk_frames: int | None) -> Utterance:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------
    def info(self, voice: str) -> VoiceInfo:
        key = (self.request_type, self.url, voice)
        if key not in _voice_infos:
            _voice_infos[key] = voice_info(voice, self.addon_json(voice))
        return _voice_infos[key]

    def _fire(self, name: str, time_ms: float, length: int, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(request_type=self.request_type, name=name, response_time=time_ms,
                                             response_length=length, exception=exception, context={})

    @task
    def utterance(self) -> None:
        voice = self.voices.pick(self.rng)
        text = self.settings.texts.pick(self.rng)
        try:
            info = self.info(voice)
        except StreamError as e:
            self._fire(f"utterance [{voice}]", 0, 0, e)
            return
        u = self.stream(info, text, self.settings.chunk_frames)
        self.report(info, text, u)

    def report(self, info: VoiceInfo, text: str, u: Utterance) -> None:
        v = info.name
        # chunks that arrived are real latencies even if the stream failed later
        if u.arrivals_s:
            self._fire(f"first_chunk [{v}]", u.arrivals_s[0] * 1000, len(u.chunks[0]))
        for gap_s, chunk in zip((b - a for a, b in zip(u.arrivals_s, u.arrivals_s[1:], strict=False)), u.chunks[1:], strict=False):
            self._fire(f"gap [{v}]", gap_s * 1000, len(chunk))
        error = u.error or check_shape(u.chunks, info.n_mels)
        if error is not None:
            self._fire(f"utterance [{v}]", u.total_s * 1000, sum(u.frames), StreamError(error))
            return
        timing = stream_timing(u.arrivals_s, u.frames, total_s=u.total_s, frame_s=info.frame_s)
        self._fire(f"utterance [{v}]", timing.total_s * 1000, timing.frames)
        if timing.stalls:
            self._fire(f"stall [{v}]", timing.stall_s * 1000, timing.stalls)
        every = self.settings.check_every
        self.count += 1
        if every and (self.count - 1) % every == 0:  # the first utterance too: short runs check something
            self.check(info, text, u)

    def check(self, info: VoiceInfo, text: str, u: Utterance) -> None:
        start = time.perf_counter()

        def from_server() -> Any:
            whole = self.stream(info, text, 0)
            if whole.error is not None:
                raise StreamError(f"reference from the server: {whole.error}")
            return np.concatenate(whole.chunks) if whole.chunks else np.zeros((0, info.n_mels), np.float32)

        try:
            reference, source = self.references.get(info, text, server=from_server)
            why, _ = check_equal(u.chunks, reference, self.settings.check_atol)
            error = None if why is None else StreamError(f"{why} (reference: {source}) text={text[:40]!r}")
        except StreamError as e:
            error = e
        self._fire(f"check [{info.name}]", (time.perf_counter() - start) * 1000, sum(u.frames), error)


class GrpcStreamUser(StreamUser):
    """Triton's gRPC streaming API: one channel per user, one ModelStreamInfer call per utterance."""

    request_type = "grpc"

    def connect(self) -> None:
        self.url = self.environment.parsed_options.grpc_url
        self.client = GrpcVoices(self.url)

    def on_stop(self) -> None:
        if hasattr(self, "client"):
            self.client.close()

    def list_voices(self) -> list[str]:
        return self.client.voices(timeout_s=self.settings.timeout_s)

    def addon_json(self, voice: str) -> str:
        return self.client.addon_json(voice, timeout_s=self.settings.timeout_s)

    def stream(self, info: VoiceInfo, text: str, chunk_frames: int | None) -> Utterance:
        return self.client.utterance(info.name, text, n_mels=info.n_mels, chunk_frames=chunk_frames, timeout_s=self.settings.timeout_s)


class HttpStreamUser(StreamUser):
    """Triton's HTTP ``generate_stream`` (SSE): one kept-alive connection per user."""

    request_type = "sse"

    def connect(self) -> None:
        self.url = self.environment.parsed_options.http_url
        self.client = HttpVoices(self.url, timeout_s=self.settings.timeout_s)

    def on_stop(self) -> None:
        if hasattr(self, "client"):
            self.client.close()

    def list_voices(self) -> list[str]:
        return self.client.voices()

    def addon_json(self, voice: str) -> str:
        return self.client.addon_json(voice)

    def stream(self, info: VoiceInfo, text: str, chunk_frames: int | None) -> Utterance:
        return self.client.utterance(info.name, text, n_mels=info.n_mels, chunk_frames=chunk_frames, timeout_s=self.settings.timeout_s)
