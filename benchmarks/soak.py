"""Soak: mixed traffic against `melstream serve` for a bounded time, Python backend stubs killed on a schedule,
requests cancelled on purpose, and every utterance checked against a reference synthesis.

    python benchmarks/soak.py [--minutes 30] [--workers 6] [--kill-every-s 60] [--cancel-fraction 0.1] [--out out/soak]

It starts `melstream serve` on free ports (its output in --out/serve.log) and polls until the server and every
voice say ready.  Meanwhile it synthesises, in-process (``melstream.load_addon(addons/<voice>)``, ONNX Runtime),
the reference frames of every request it can send: each (voice, sentence, PACE, CHUNK_FRAMES) combination, the
sentences a fixed sample of tests/data/heldout_sentences.txt.  Then, for --minutes:

- **traffic**: --workers client threads, each in a loop: a random voice, protocol (gRPC ``Client`` or HTTP SSE
  ``HttpClient``), sentence and variant (the voice's own schedule, fixed CHUNK_FRAMES, CHUNK_FRAMES=0, PACE);
  --cancel-fraction of the requests are cancelled on purpose after their first chunk; a random think time
  (mean --think-s) between requests.
- **kills**: every --kill-every-s seconds (0: never) one Python backend stub of a random voice (the models
  ``<voice>`` and ``<voice>__*``, from ``stub_processes(tritonserver's pid)``; --kill-only narrows that) gets
  SIGKILL, once that voice is ready (not while its server restarts or the voice reloads).  After each kill the
  voice is probed (its ``/ready``, then a verified gRPC request) until it has recovered: a new process serves the
  killed instance (or tritonserver itself was restarted), the voice is ready, and it answers correctly.  Kills
  never overlap: the next one waits until the last has recovered or --recovery-timeout-s has passed.
- **the server**: tritonserver's death and restart (its pid, serve's child), and tritonserver alive but not
  answering ``/v2/health/live`` for 5 s (wedged), are logged with their times.
- **memory**: every --sample-every-s seconds the RSS and PSS (``/proc/<pid>/smaps_rollup``) of tritonserver's
  process group (tritonserver and its stubs), summed.

Every request ends as one outcome:

- ``ok``: final response received and the frames equal the reference (same shape, max |diff| <= --atol, the
  tolerance of tests/integration/test_serving.py);
- ``corrupted``: frames that differ from the reference: a completed utterance of another shape or other values, or
  a cancelled or cut stream whose frames are not the reference's first frames;
- ``cancelled``: cancelled on purpose after its first chunk (its frames checked as a prefix);
- ``cut``: an error after audio had started (expected at a kill; its frames checked as a prefix);
- ``error``: an error before any audio, counted by kind (client exception class, Triton code, what it says);
- ``lost``: neither completed nor failed within --lost-after-s (a hang: the client's timeout ran out, or the
  request was still in flight when the drain after the run gave up);
- ``stranded``: lost, but on a voice whose own stub (the model ``<voice>``) was killed while it was in flight
  (its last chunk, or the request, at most --strand-grace-s before the kill), or sent to it after the kill before
  a new stub replaced it (if none ever did, they are lost).  Triton 2.51 never ends such a request (no final
  response, no error: melstream/serving/supervisor.py says why), so the client's timeout does.  Reported apart
  and not a failure unless --strict.

At the end it stops traffic, waits for the requests in flight (bounded), sends serve SIGTERM, waits for it
(bounded) and reports how it exited.  Writes under --out: soak.md (the tables printed), soak.json (everything),
requests.csv (one row per request), memory.csv, windows.csv, soak.png (RSS/PSS over time with the kills marked,
first-chunk latency per request and per window) and serve.log.  Exit status 1 if anything was lost or corrupted
(stranded too with --strict) or nothing was verified at all, 2 if the server never became ready.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "data" / "heldout_sentences.txt"
VOICES = ("fastvoice", "tacovoice")
PROTOCOLS = ("grpc", "http")
#: (PACE, CHUNK_FRAMES) of a request and its weight in the mix: the voice's own schedule most of the time
VARIANTS: tuple[tuple[float | None, int | None, float], ...] = (
    (None, None, 0.5), (None, 7, 0.15), (None, 0, 0.1), (1.5, None, 0.15), (0.8, 16, 0.1))
#: the tolerance of tests/integration/test_serving.py: served frames against an in-process synthesis
ATOL = 1e-4
MIB = 1024 * 1024


# --- what is sent, and what it must give -----------------------------------------------------------------------
def sentences(n: int) -> list[str]:
    """``n`` held-out sentences spread over their range of lengths (a fixed choice: the same every run)."""
    lines = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"no sentences in {SENTENCES}")
    by_length = sorted(lines, key=len)
    n = max(1, min(n, len(by_length)))
    return [by_length[round(i * (len(by_length) - 1) / max(n - 1, 1))] for i in range(n)]


@dataclass(frozen=True)
class Job:
    voice: str
    protocol: str
    text_i: int
    variant_i: int
    cancel: bool


def references(voices: list[str], texts: list[str]) -> dict[tuple[str, int, int], np.ndarray]:
    """The frames of every (voice, sentence, variant), synthesised in-process from addons/<voice>."""
    import melstream

    refs = {}
    for voice in voices:
        pipeline = melstream.load_addon(ROOT / "addons" / voice).build()
        for i, text in enumerate(texts):
            for j, (pace, chunk_frames, _) in enumerate(VARIANTS):
                refs[(voice, i, j)] = pipeline.synthesize(text, pace=pace, chunk_frames=chunk_frames)
    return refs


def check(frames: np.ndarray, ref: np.ndarray, *, whole: bool, atol: float) -> tuple[str | None, float]:
    """(what is wrong or None, max |diff|) of ``frames`` against ``ref``: equal to it (``whole``) or its first frames."""
    if frames.ndim != 2 or frames.shape[1] != ref.shape[1]:
        return f"shape {frames.shape}, expected [*, {ref.shape[1]}]", math.nan
    if whole and len(frames) > len(ref):
        return f"{len(frames)} frames, expected {len(ref)}", math.nan
    if whole and len(frames) < len(ref):  # is it the reference's beginning?  (a stream that ended early)
        wrong, diff = check(frames, ref, whole=False, atol=atol)
        return (f"truncated: {len(frames)} of {len(ref)} frames"
                + (f", and those differ: {wrong}" if wrong else " (those equal the reference)")), diff
    if len(frames) > len(ref):
        return f"{len(frames)} frames received, more than the {len(ref)} of the whole utterance", math.nan
    diff = float(np.abs(frames - ref[:len(frames)]).max()) if len(frames) else 0.0
    if not diff <= atol:  # NaN too
        return f"max |diff| {diff:.3g} > {atol:g}", diff
    return None, diff


# --- errors by kind ---------------------------------------------------------------------------------------------
_WHERE = re.compile(r"^(voice '[^']+' at \S+|cannot (connect to|list voices at) \S+): ")
_LABELS = (("is busy", "busy"), ("is shutting down", "shutting down"), ("Server is stopping", "server stopping"),
           ("Server not ready", "server not ready"), ("Stub process", "stub not healthy"), ("is not ready", "not ready"),
           ("unknown model", "unknown model"), ("Connection refused", "connection refused"),
           ("RemoteDisconnected", "connection closed"), ("Socket closed", "socket closed"),
           ("no response within", "no response (client timeout)"))


def error_kind(e: BaseException) -> str:
    """``<exception class> <Triton code>: <what it says>`` with ids and numbers left out, e.g.
    ``ServerUnavailableError UNAVAILABLE: shutting down``."""
    from melstream_client import wire

    message = _WHERE.sub("", str(e), count=1)
    code = wire.error_code(message)
    label = next((name for needle, name in _LABELS if needle in message), None)
    if label is not None and "SynthesisError: network model" in message:
        label = f"network call: {label}"
    if label is None:
        detail = re.sub(r"^(\[request id: [^]]*\] )?(\[[A-Z_]+\] )?", "", message).strip()
        detail = re.sub(r"[0-9a-f]{8,}|\d+(\.\d+)?", "N", detail.splitlines()[0] if detail else "")
        label = detail[:70] or "(no message)"
    return f"{type(e).__name__} {code}: {label}"


# --- the server under test ---------------------------------------------------------------------------------------
def read_stat(pid: int) -> tuple[str, int] | None:
    """(comm, parent pid) of a live process, None if it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return None if fields[0] == "Z" else (comm, int(fields[1]))


class Serve:
    """`melstream serve` in a subprocess, its output to a log file."""

    def __init__(self, repo: Path, log: Path) -> None:
        from melstream.serving.server import free_port

        self.http_port, self.grpc_port, self.metrics_port = free_port(), free_port(), free_port()
        self.log = log
        self._log_file = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "melstream.cli", "serve", "--repo", str(repo), "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--metrics-port", str(self.metrics_port),
             "--health-port", str(free_port()), "--health-host", "127.0.0.1"],
            stdout=self._log_file, stderr=subprocess.STDOUT, cwd=ROOT)
        self._tritonserver: int | None = None

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    def tritonserver_pid(self) -> int | None:
        """The tritonserver serve runs now (its child; also its process group), None if there is none."""
        known = self._tritonserver
        if known is not None and (stat := read_stat(known)) is not None and stat[1] == self.proc.pid:
            return known
        self._tritonserver = None
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None \
                    and stat[1] == self.proc.pid and stat[0] == "tritonserver":
                self._tritonserver = int(entry.name)
        return self._tritonserver

    def voice_ready(self, voice: str, timeout_s: float = 5.0) -> bool:
        from melstream.serving.server import model_ready

        return model_ready(self.http_url, voice, timeout_s=timeout_s)

    def live(self, timeout_s: float) -> bool:
        """Whether tritonserver answers ``/v2/health/live`` at all."""
        from melstream.serving.server import live

        return live(self.http_url, timeout_s=timeout_s)

    def not_ready(self, voices: list[str]) -> str | None:
        """None if the server and every voice are ready, else why not."""
        from melstream.serving.server import not_ready

        why = not_ready(self.http_url, timeout_s=5)
        if why is not None:
            return why
        waiting = [v for v in voices if not self.voice_ready(v)]
        return f"voices not ready: {', '.join(waiting)}" if waiting else None

    def wait_ready(self, voices: list[str], timeout_s: float) -> float:
        """Poll until ready; the seconds it took.  SystemExit(2) if serve exits or time runs out."""
        t0 = time.monotonic()
        while True:
            why = self.not_ready(voices)
            if why is None:
                return time.monotonic() - t0
            if self.proc.poll() is not None:
                print(f"melstream serve exited ({self.proc.returncode}) before it was ready; see {self.log}", flush=True)
                raise SystemExit(2)
            if time.monotonic() - t0 > timeout_s:
                print(f"melstream serve not ready after {timeout_s:.0f} s ({why}); see {self.log}", flush=True)
                raise SystemExit(2)
            time.sleep(0.2)  # polling interval

    def stop(self, timeout_s: float) -> dict[str, Any]:
        """SIGTERM, then wait at most ``timeout_s``; past that tritonserver's group and serve are killed."""
        from melstream.serving.server import describe_exit

        t0 = time.monotonic()
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                killed = True
                tpid = self.tritonserver_pid()
                if tpid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(tpid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        seconds = time.monotonic() - t0
        self._log_file.close()
        said = [line.strip() for line in self.log.read_text(errors="replace").splitlines()
                if line.startswith("melstream serve")]
        return {"returncode": self.proc.returncode, "exit": describe_exit(self.proc.returncode),
                "killed_by_soak": killed, "stop_s": round(seconds, 2), "said": said[-1] if said else ""}


# --- the record ----------------------------------------------------------------------------------------------------
@dataclass
class Request:
    id: int
    worker: int
    t_start: float  # seconds from the start of traffic
    voice: str
    protocol: str
    text_i: int
    pace: float | None
    chunk_frames: int | None
    cancel: bool
    outcome: str = ""
    completed: bool = False  # the final response came, no error
    first_chunk_s: float | None = None
    last_chunk_s: float | None = None  # from the request: its last sign of life, if any chunk came
    total_s: float | None = None
    frames: int = 0
    ref_frames: int = 0
    max_diff: float | None = None
    kind: str = ""
    detail: str = ""


@dataclass
class Kill:
    t: float  # seconds from the start of traffic
    voice: str
    model: str
    instance: str
    pid: int
    tritonserver_pid: int
    not_ready_s: float | None = None  # the voice first said not ready (the supervisor took it down to reload it)
    stub_replaced_s: float | None = None  # a new process serves the instance (or a new tritonserver runs)
    ready_s: float | None = None  # the voice said ready again, after the replacement
    recovered_s: float | None = None  # ... and answered a probe with the reference frames
    probes: int = 0
    note: str = ""


@dataclass
class Soak:
    """Shared state of one run: every request, kill and memory sample."""

    t0: float
    requests: list[Request] = field(default_factory=list)
    in_flight: dict[int, Request] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)
    #: tritonserver gone / serving under a new pid (serve's supervision restarts it), as the watcher saw it
    server_events: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    _ids: int = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    def begin(self, worker: int, job: Job) -> Request:
        pace, chunk_frames, _ = VARIANTS[job.variant_i]
        with self.lock:
            self._ids += 1
            r = Request(self._ids, worker, round(self.now(), 3), job.voice, job.protocol, job.text_i, pace, chunk_frames,
                        job.cancel)
            self.in_flight[r.id] = r
        return r

    def end(self, r: Request) -> None:
        with self.lock:
            if self.in_flight.pop(r.id, None) is not None:  # else the drain already gave it up as lost
                self.requests.append(r)

    def give_up_in_flight(self) -> list[Request]:
        with self.lock:
            lost, self.in_flight = list(self.in_flight.values()), {}
            for r in lost:
                r.outcome, r.kind, r.detail = "lost", "in flight at the end", "no final response nor error by the end of the drain"
            self.requests.extend(lost)
        return lost


# --- traffic -------------------------------------------------------------------------------------------------------
def one_request(client: Any, r: Request, text: str, ref: np.ndarray, *, atol: float, wait_s: float) -> None:
    """Send ``r``, fill in its outcome."""
    from melstream.errors import ClientError, ClientTimeoutError

    chunks: list[np.ndarray] = []
    t0 = time.perf_counter()
    completed = False
    try:
        stream = client.stream(text, voice=r.voice, pace=r.pace, chunk_frames=r.chunk_frames, timeout_s=wait_s)
        try:
            for mel in stream:
                r.last_chunk_s = round(time.perf_counter() - t0, 5)
                if not chunks:
                    r.first_chunk_s = r.last_chunk_s
                chunks.append(mel)
                if r.cancel:
                    break
            else:
                completed = r.completed = True
        finally:
            stream.close()  # a cancel on purpose: closing the stream cancels the request on the server
    except ClientTimeoutError as e:
        r.outcome, r.kind, r.detail = "lost", error_kind(e), str(e)[:300]
    except ClientError as e:
        r.outcome, r.kind, r.detail = ("cut" if chunks else "error"), error_kind(e), str(e)[:300]
    except Exception as e:  # not a typed client error: a bug on this side or in tritonclient, shown as its own kind
        r.outcome, r.kind, r.detail = ("cut" if chunks else "error"), f"unexpected {type(e).__name__}", str(e)[:300]
    r.total_s = round(time.perf_counter() - t0, 5)
    frames = np.concatenate(chunks) if chunks else np.zeros((0, ref.shape[1]), np.float32)
    r.frames, r.ref_frames = len(frames), len(ref)
    if completed or chunks:
        wrong, diff = check(frames, ref, whole=completed, atol=atol)
        r.max_diff = None if math.isnan(diff) else diff
        if wrong is not None:
            r.outcome = "corrupted"
            r.detail = (wrong + (f" (the stream ended as: {r.kind})" if r.kind else ""))[:300]
        elif completed:
            r.outcome = "ok"
        elif not r.outcome:
            r.outcome = "cancelled"


def worker(k: int, soak: Soak, serve: Serve, args: argparse.Namespace, texts: list[str],
           refs: dict[tuple[str, int, int], np.ndarray]) -> None:
    from melstream_client import Client, HttpClient

    rng = random.Random(args.seed * 1000 + k)
    weights = [w for _, _, w in VARIANTS]
    grpc = Client(serve.grpc_url, timeout_s=args.lost_after_s)
    clients: dict[str, Client | HttpClient] = {"grpc": grpc, "http": HttpClient(serve.http_url, timeout_s=args.lost_after_s)}
    try:
        while not soak.stop.is_set():
            job = Job(voice=rng.choice(args.voices), protocol=rng.choice(PROTOCOLS), text_i=rng.randrange(len(texts)),
                      variant_i=rng.choices(range(len(VARIANTS)), weights)[0], cancel=rng.random() < args.cancel_fraction)
            r = soak.begin(k, job)
            one_request(clients[job.protocol], r, texts[job.text_i], refs[(job.voice, job.text_i, job.variant_i)],
                        atol=args.atol, wait_s=args.lost_after_s)
            soak.end(r)
            pause = rng.uniform(0, 2 * args.think_s) + (0.5 if r.outcome == "error" else 0.0)  # back off after an error
            soak.stop.wait(pause)
    finally:
        grpc.close()  # its idle streams: an open gRPC stream would keep its voice loaded at the stop


# --- kills and recovery ----------------------------------------------------------------------------------------------
def probe(serve: Serve, voice: str, text: str, ref: np.ndarray, atol: float) -> bool:
    """One gRPC request of ``text``: did it complete with the reference frames?"""
    from melstream.errors import ClientError
    from melstream_client import Client

    try:
        with Client(serve.grpc_url, timeout_s=10) as client:
            frames = client.synthesize(text, voice=voice)
    except ClientError:
        return False
    return check(frames, ref, whole=True, atol=atol)[0] is None


def killer(soak: Soak, serve: Serve, args: argparse.Namespace, texts: list[str],
           refs: dict[tuple[str, int, int], np.ndarray], duration_s: float) -> None:
    from melstream.serving.server import stub_processes

    rng = random.Random(args.seed + 7)
    probe_i = min(range(len(texts)), key=lambda i: len(texts[i]))  # the shortest sentence
    next_kill = args.kill_every_s
    waiting = False
    while not soak.stop.wait(max(0.0, next_kill - soak.now())):
        if duration_s - soak.now() < args.kill_margin_s:
            return  # too close to the end to see a recovery
        tpid = serve.tritonserver_pid()
        voice = rng.choice(args.voices)
        stubs = [s for s in (stub_processes(tpid) if tpid else [])
                 if (s.model == voice and args.kill_only != "networks") or (s.model.startswith(voice + "__") and args.kill_only != "voice")]
        if tpid is None or not stubs or not serve.voice_ready(voice):  # (re)starting or reloading: try again soon
            if not waiting:
                print(f"  [{soak.now():7.1f} s] kill: {voice} is not serving (tritonserver pid {tpid}, {len(stubs)} stubs); "
                      "waiting until it is", flush=True)
            waiting = True
            next_kill = soak.now() + 1.0
            continue
        waiting = False
        stub = rng.choice(stubs)
        try:
            os.kill(stub.pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # gone meanwhile: pick again
        kill = Kill(t=round(soak.now(), 3), voice=voice, model=stub.model, instance=stub.instance, pid=stub.pid,
                    tritonserver_pid=tpid)
        with soak.lock:
            soak.kills.append(kill)
        print(f"  [{kill.t:7.1f} s] SIGKILL stub {stub.instance} (pid {stub.pid}, model {stub.model})", flush=True)
        track_recovery(soak, serve, kill, texts[probe_i], refs[(voice, probe_i, 0)], args)
        what = (f"recovered in {kill.recovered_s:.1f} s (stub replaced at {kill.stub_replaced_s:.1f} s, "
                f"{kill.probes} probes)" if kill.recovered_s is not None else f"NOT recovered: {kill.note}")
        print(f"  [{soak.now():7.1f} s] {voice} after the kill of {stub.instance}: {what}", flush=True)
        next_kill = max(kill.t + args.kill_every_s, soak.now() + 1.0)  # kills never overlap


def track_recovery(soak: Soak, serve: Serve, kill: Kill, text: str, ref: np.ndarray, args: argparse.Namespace) -> None:
    """Poll until the killed stub's instance runs in a new process, its voice is ready and answers correctly;
    bounded by --recovery-timeout-s (it goes on after traffic has stopped: the run waits for it)."""
    from melstream.serving.server import stub_processes

    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if elapsed > args.recovery_timeout_s:
            kill.note = (f"after {args.recovery_timeout_s:g} s: " + ("the instance was not restarted" if kill.stub_replaced_s is None
                         else "the voice did not say ready" if kill.ready_s is None else "no probe answered correctly"))
            return
        tpid = serve.tritonserver_pid()
        if kill.stub_replaced_s is None and tpid is not None and (
                tpid != kill.tritonserver_pid
                or any(s.instance == kill.instance and s.pid != kill.pid for s in stub_processes(tpid))):
            kill.stub_replaced_s = round(elapsed, 3)
        ready = serve.voice_ready(kill.voice)
        if not ready and kill.not_ready_s is None:
            kill.not_ready_s = round(elapsed, 3)
        if kill.stub_replaced_s is not None and ready:
            if kill.ready_s is None:
                kill.ready_s = round(time.monotonic() - start, 3)
            kill.probes += 1
            if probe(serve, kill.voice, text, ref, args.atol):
                kill.recovered_s = round(time.monotonic() - start, 3)
                return
        if serve.proc.poll() is not None:
            kill.note = f"serve exited ({serve.proc.returncode})"
            return
        time.sleep(0.25)  # polling interval


# --- memory ---------------------------------------------------------------------------------------------------------
def sample_memory(soak: Soak, serve: Serve) -> None:
    from melstream.serving.server import Memory, group_members, process_memory, stub_processes

    tpid = serve.tritonserver_pid()
    if tpid is None:
        return
    members = group_members(tpid)
    total = sum((m for m in map(process_memory, members) if m is not None), Memory())  # None: gone meanwhile
    own = process_memory(tpid)
    with soak.lock:
        soak.memory.append({"t": round(soak.now(), 2), "tritonserver_pid": tpid, "processes": len(members),
                            "stubs": len(stub_processes(tpid)), "rss_mib": round(total.rss / MIB, 2),
                            "pss_mib": round(total.pss / MIB, 2),
                            "tritonserver_rss_mib": round(own.rss / MIB, 2) if own else math.nan})


def watcher(soak: Soak, serve: Serve, *, unresponsive_s: float = 5.0) -> None:
    """Record each time tritonserver goes away or another one runs (a crash, and serve's restart), and each time
    it stops answering ``/v2/health/live`` for ``unresponsive_s`` though its process is there (wedged)."""

    def event(what: str, pid: int | None) -> None:
        e = {"t": round(soak.now(), 2), "event": what, "pid": pid}
        with soak.lock:
            soak.server_events.append(e)
        print(f"  [{e['t']:7.1f} s] {what} (pid {pid})", flush=True)

    last = serve.tritonserver_pid()
    answered_at: float | None = time.monotonic()  # None: this tritonserver has not answered yet (it is starting)
    wedged, tick = False, 0
    while not soak.stop.wait(0.25):
        pid = serve.tritonserver_pid()
        if pid != last:
            event("tritonserver gone" if pid is None else "tritonserver running", last if pid is None else pid)
            last, answered_at, wedged = pid, None, False
        tick += 1
        if pid is None or tick % 4:
            continue
        if serve.live(timeout_s=2.0):
            if wedged:
                event("tritonserver answering again", pid)
            answered_at, wedged = time.monotonic(), False
        elif not wedged and answered_at is not None and time.monotonic() - answered_at > unresponsive_s:
            wedged = True
            event(f"tritonserver not answering /v2/health/live for {unresponsive_s:g} s, its process alive", pid)


def sampler(soak: Soak, serve: Serve, every_s: float) -> None:
    sample_memory(soak, serve)
    while not soak.stop.wait(every_s):
        sample_memory(soak, serve)


# --- the report --------------------------------------------------------------------------------------------------
def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    return {f"p{p}": (float(np.percentile(arr, p)) if len(arr) else math.nan) for p in (50, 95, 99)}


def windows(soak: Soak, duration_s: float, window_s: float) -> list[dict[str, Any]]:
    rows = []
    for i in range(max(1, math.ceil(duration_s / window_s - 1e-9))):
        lo, hi = i * window_s, min((i + 1) * window_s, duration_s)
        rs = [r for r in soak.requests if lo <= r.t_start < hi or (i == 0 and r.t_start < lo)]
        if hi >= duration_s:
            rs += [r for r in soak.requests if r.t_start >= hi]  # the last window keeps the stragglers
        outcomes = Counter(r.outcome for r in rs)
        firsts = [1e3 * r.first_chunk_s for r in rs if r.first_chunk_s is not None]
        label = f"{lo:.0f}-{hi:.0f} s" if window_s < 120 else f"{lo / 60:.1f}-{hi / 60:.1f} min"
        rows.append({"window": label, "start_s": round(lo, 1), "end_s": round(hi, 1),
                     "requests": len(rs), **{o: outcomes.get(o, 0) for o in OUTCOMES},
                     "kills": sum(lo <= k.t < hi for k in soak.kills),
                     **{f"first_chunk_{k}_ms": v for k, v in percentiles(firsts).items()}})
    return rows


OUTCOMES = ("ok", "corrupted", "cancelled", "cut", "error", "stranded", "lost")


def strand(soak: Soak, args: argparse.Namespace) -> int:
    """Lost requests that a kill of their voice model's own stub explains become ``stranded``: in Triton 2.51 a
    decoupled model's requests in flight when its stub dies never get a final response, nor an error (see
    melstream/serving/supervisor.py), so they end only at the client's timeout; so do the requests sent to it
    after the kill, until the dead stub is replaced.  A request whose silence began more than --strand-grace-s
    before the kill hung for another reason, and one on a stub that was never replaced hung because supervision
    failed: those stay lost.  The number re-classified."""
    n = 0
    for r in soak.requests:
        if r.outcome != "lost" or r.total_s is None:
            continue
        silent_from = r.t_start + (r.last_chunk_s or 0.0)  # its last sign of life: the request, or its last chunk
        for k in soak.kills:
            if k.stub_replaced_s is None:
                continue  # never replaced: what hung on it is lost (supervision did not bring the voice back)
            if k.model == r.voice and k.t - args.strand_grace_s <= silent_from <= k.t + k.stub_replaced_s:
                r.outcome = "stranded"
                r.detail = (f"in flight on {k.instance} when it was killed at {k.t:.1f} s (or sent to it before it was "
                            f"replaced): {r.detail}")[:300]
                n += 1
                break
    return n


def totals(soak: Soak, serve_exit: dict[str, Any], *, duration_s: float, wall_s: float) -> dict[str, Any]:
    rs = soak.requests
    outcomes = Counter(r.outcome for r in rs)
    completed = sum(r.completed for r in rs)
    recoveries = [k.recovered_s for k in soak.kills if k.recovered_s is not None]
    diffs = [r.max_diff for r in rs if r.max_diff is not None]
    mem = soak.memory
    t: dict[str, Any] = {
        "minutes": round(duration_s / 60, 3), "wall_s": round(wall_s, 1), "requests": len(rs), "completed": completed,
        "verified_ok": outcomes.get("ok", 0), "corrupted": outcomes.get("corrupted", 0), "lost": outcomes.get("lost", 0),
        "cancelled_on_purpose": outcomes.get("cancelled", 0), "cut_by_an_error": outcomes.get("cut", 0),
        "errors_before_audio": outcomes.get("error", 0), "stranded_by_a_voice_stub_kill": outcomes.get("stranded", 0),
        "kills": len(soak.kills),
        "tritonserver_restarts": sum(e["event"] == "tritonserver running" for e in soak.server_events), "kills_recovered": len(recoveries),
        "recovery_p50_s": float(np.median(recoveries)) if recoveries else math.nan,
        "recovery_max_s": max(recoveries) if recoveries else math.nan,
        "max_abs_diff": max(diffs) if diffs else math.nan,
        **{f"first_chunk_{k}_ms": v for k, v in
           percentiles([1e3 * r.first_chunk_s for r in rs if r.first_chunk_s is not None]).items()},
        "rss_start_mib": mem[0]["rss_mib"] if mem else math.nan, "rss_end_mib": mem[-1]["rss_mib"] if mem else math.nan,
        "rss_max_mib": max(m["rss_mib"] for m in mem) if mem else math.nan,
        "pss_start_mib": mem[0]["pss_mib"] if mem else math.nan, "pss_end_mib": mem[-1]["pss_mib"] if mem else math.nan,
        "pss_max_mib": max(m["pss_mib"] for m in mem) if mem else math.nan,
        "serve_exit": serve_exit.get("exit", "?"), "serve_said": serve_exit.get("said", ""),
    }
    return t


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if v != v else f"{v:.4g}" if abs(v) < 1e-2 and v else f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def md_table(rows: list[dict[str, Any]], keys: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    keys = keys or list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_fmt(r.get(k, "")).replace("|", "\\|") for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def report(soak: Soak, tot: dict[str, Any], wins: list[dict[str, Any]], config: dict[str, Any]) -> str:
    errors = Counter(r.kind for r in soak.requests if r.kind)
    by_outcome: dict[str, Counter[str]] = {}
    for r in soak.requests:
        if r.kind:
            by_outcome.setdefault(r.kind, Counter())[r.outcome] += 1
    error_rows = [{"kind": k, "count": n, "as": ", ".join(f"{o} {c}" for o, c in sorted(by_outcome[k].items()))}
                  for k, n in errors.most_common()]
    bad = [r for r in soak.requests if r.outcome in ("lost", "corrupted", "stranded")]
    kill_rows = [{"t_s": k.t, "voice": k.voice, "instance": k.instance, "pid": k.pid, "not_ready_s": k.not_ready_s,
                  "stub_replaced_s": k.stub_replaced_s, "ready_s": k.ready_s, "recovered_s": k.recovered_s,
                  "probes": k.probes, "note": k.note} for k in soak.kills]
    parts = [
        f"# soak: {config['minutes']:g} min, {config['workers']} workers, voices {', '.join(config['voices'])}, "
        f"kill every {config['kill_every_s']:g} s, cancel {config['cancel_fraction']:g}",
        "", "## totals", "", md_table([{"what": k, "value": v} for k, v in tot.items()]),
        "", "lost and corrupted must be 0.  Stranded: requests on a voice whose own stub was killed while they were in "
        "flight (or sent to it before it was replaced): Triton 2.51 never ends them (no final response, no error), so "
        "they end at the client's timeout; not counted as lost unless --strict.",
        "", f"## per window ({config['window_s']:g} s; first chunk = request sent -> first chunk, ms)", "",
        md_table(wins, ["window", "requests", *OUTCOMES, "kills", "first_chunk_p50_ms", "first_chunk_p95_ms",
                        "first_chunk_p99_ms"]),
        "", "## errors by kind", "", md_table(error_rows),
        "", "## kills (seconds from the kill)", "", md_table(kill_rows),
        "", "## tritonserver gone or restarted (seconds from the start of traffic)", "", md_table(soak.server_events),
    ]
    if bad:
        parts += ["", "## lost, corrupted or stranded", "", md_table([
            {"id": r.id, "t_s": r.t_start, "voice": r.voice, "protocol": r.protocol, "text": r.text_i, "pace": r.pace,
             "chunk_frames": r.chunk_frames, "outcome": r.outcome, "frames": r.frames, "ref_frames": r.ref_frames,
             "detail": r.detail} for r in bad[:50]])]
    return "\n".join(parts) + "\n"


def plot(soak: Soak, wins: list[dict[str, Any]], path: Path, duration_s: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_mem, ax_lat) = plt.subplots(2, 1, figsize=(12, 7.5), sharex=True)
    unit, per = ("minutes", 60.0) if duration_s >= 300 else ("seconds", 1.0)
    mem = soak.memory
    if mem:
        ts = [m["t"] / per for m in mem]
        ax_mem.plot(ts, [m["rss_mib"] for m in mem], "-", label="RSS, tritonserver's process group")
        ax_mem.plot(ts, [m["pss_mib"] for m in mem], "-", label="PSS, tritonserver's process group")
        ax_mem.plot(ts, [m["tritonserver_rss_mib"] for m in mem], ":", label="RSS, tritonserver alone")
    for i, k in enumerate(soak.kills):
        for ax in (ax_mem, ax_lat):
            ax.axvline(k.t / per, color="red", alpha=0.35, ls="--", label="stub killed" if i == 0 and ax is ax_mem else None)
        ax_mem.annotate(k.instance, (k.t / per, 0.02), xycoords=("data", "axes fraction"), rotation=90, fontsize=6,
                        color="red", va="bottom")
    labelled = set()
    for e in soak.server_events:
        kind = "tritonserver gone" if e["event"] == "tritonserver gone" else \
            "tritonserver not answering" if "not answering" in e["event"] else None
        if kind is None:
            continue
        for ax in (ax_mem, ax_lat):
            ax.axvline(e["t"] / per, color="black", lw=1.5, alpha=0.6, ls="-" if kind.endswith("gone") else ":",
                       label=kind if kind not in labelled and ax is ax_mem else None)
        labelled.add(kind)
    ax_mem.set_ylabel("MiB")
    ax_mem.set_ylim(bottom=0)
    ax_mem.legend(fontsize=7, loc="upper left")
    ax_mem.grid(alpha=0.3)
    for voice in sorted({r.voice for r in soak.requests}):
        rs = [r for r in soak.requests if r.voice == voice and r.first_chunk_s is not None]
        ax_lat.plot([r.t_start / per for r in rs], [1e3 * r.first_chunk_s for r in rs if r.first_chunk_s is not None],
                    ".", ms=2, alpha=0.4, label=f"{voice}, per request")
    for key, style in (("first_chunk_p50_ms", "-"), ("first_chunk_p95_ms", "--"), ("first_chunk_p99_ms", ":")):
        xs, ys = [], []
        for w in wins:
            xs += [w["start_s"] / per, w["end_s"] / per]
            ys += [w[key], w[key]]
        ax_lat.plot(xs, ys, style, color="black", lw=1.2, label=f"{key.split('_')[2]} per window")
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("first chunk (ms)")
    ax_lat.set_xlabel(f"{unit} from the start of traffic")
    ax_lat.legend(fontsize=7, loc="upper left")
    ax_lat.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


# --- the run -------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long traffic runs (any positive number; 0.5 for a smoke run)")
    ap.add_argument("--out", type=Path, default=Path("out/soak"))
    ap.add_argument("--repo", type=Path, default=ROOT / "model_repository", help="model repository to serve")
    ap.add_argument("--voices", default=",".join(VOICES), help="comma-separated")
    ap.add_argument("--workers", type=int, default=6, help="concurrent client threads")
    ap.add_argument("--kill-every-s", type=float, default=60.0, help="SIGKILL a random stub this often (0: never)")
    ap.add_argument("--kill-only", choices=("any", "voice", "networks"), default="any",
                    help="which stubs of a voice may be killed: any, the voice model's, or its network models'")
    ap.add_argument("--cancel-fraction", type=float, default=0.1, help="requests cancelled on purpose after their first chunk")
    ap.add_argument("--think-s", type=float, default=0.3, help="mean pause of a worker between requests (uniform 0..2x)")
    ap.add_argument("--texts", type=int, default=12, help="held-out sentences in the mix")
    ap.add_argument("--window-min", type=float, default=None,
                    help="first-chunk percentiles per window of this many minutes (default 5, or a third of a shorter run)")
    ap.add_argument("--sample-every-s", type=float, default=5.0, help="memory sampling interval")
    ap.add_argument("--lost-after-s", type=float, default=60.0,
                    help="a request with no response for this long is lost (the clients' timeout)")
    ap.add_argument("--recovery-timeout-s", type=float, default=60.0, help="how long a killed voice may take to answer again")
    ap.add_argument("--kill-margin-s", type=float, default=5.0, help="no kill closer than this to the end of traffic")
    ap.add_argument("--ready-timeout-s", type=float, default=300.0)
    ap.add_argument("--atol", type=float, default=ATOL, help="max |diff| of served frames against the reference")
    ap.add_argument("--strict", action="store_true", help="stranded requests (see below) count as lost")
    ap.add_argument("--strand-grace-s", type=float, default=4.0,
                    help="a lost request is stranded by a kill of its voice's stub only if its silence began at most "
                         "this long before the kill")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.voices = [v for v in args.voices.split(",") if v]
    if not args.minutes > 0 or args.workers < 1 or not 0 <= args.cancel_fraction <= 1 or args.kill_every_s < 0 \
            or not args.voices:
        ap.error("--minutes must be > 0, --workers >= 1, --cancel-fraction in [0, 1], --kill-every-s >= 0, --voices not empty")
    duration_s = 60 * args.minutes
    window_s = 60 * args.window_min if args.window_min else min(300.0, duration_s / 3)
    args.out.mkdir(parents=True, exist_ok=True)
    config = {"minutes": args.minutes, "workers": args.workers, "voices": args.voices, "kill_every_s": args.kill_every_s,
              "kill_only": args.kill_only,
              "cancel_fraction": args.cancel_fraction, "think_s": args.think_s, "window_s": window_s, "atol": args.atol,
              "lost_after_s": args.lost_after_s, "seed": args.seed, "repo": str(args.repo)}

    wall0 = time.monotonic()
    serve = Serve(args.repo, args.out / "serve.log")
    print(f"melstream serve started (pid {serve.proc.pid}; HTTP :{serve.http_port}, gRPC :{serve.grpc_port}); "
          f"its log: {serve.log}", flush=True)
    serve_exit: dict[str, Any] = {}
    soak: Soak | None = None
    threads: list[threading.Thread] = []
    try:
        texts = sentences(args.texts)
        t = time.monotonic()
        refs = references(args.voices, texts)  # while the server starts
        print(f"references: {len(refs)} (voice, sentence, variant) combinations in {time.monotonic() - t:.1f} s", flush=True)
        took = serve.wait_ready(args.voices, args.ready_timeout_s)
        print(f"server ready ({time.monotonic() - wall0:.1f} s after its start; {took:.1f} s of polling); "
              f"tritonserver pid {serve.tritonserver_pid()}; traffic for {args.minutes:g} min", flush=True)

        soak = Soak(t0=time.monotonic())
        threads = [threading.Thread(target=worker, args=(k, soak, serve, args, texts, refs), name=f"soak-worker-{k}", daemon=True)
                   for k in range(args.workers)]
        threads.append(threading.Thread(target=sampler, args=(soak, serve, args.sample_every_s), name="soak-memory", daemon=True))
        threads.append(threading.Thread(target=watcher, args=(soak, serve), name="soak-watcher", daemon=True))
        killer_thread = None
        if args.kill_every_s > 0:
            killer_thread = threading.Thread(target=killer, args=(soak, serve, args, texts, refs, duration_s),
                                             name="soak-killer", daemon=True)
            threads.append(killer_thread)
        for th in threads:
            th.start()
        try:
            next_line = 60.0
            while soak.now() < duration_s:
                time.sleep(min(1.0, duration_s - soak.now()))  # the run's clock: traffic goes on meanwhile
                if soak.now() >= next_line:
                    next_line += 60.0
                    with soak.lock:
                        c = Counter(r.outcome for r in soak.requests)
                    c["hung"] = c.pop("lost", 0)  # lost or stranded: sorted out at the end, with the kills' recoveries
                    print(f"  [{soak.now():7.1f} s] {sum(c.values())} requests: "
                          + ", ".join(f"{o} {c.get(o, 0)}" for o in (*OUTCOMES[:-2], "hung")), flush=True)
        finally:
            soak.stop.set()
        # drain: each request in flight ends within the clients' timeout (no response for --lost-after-s)
        drain_until = time.monotonic() + args.lost_after_s + 10
        for th in threads:
            if th is not killer_thread:
                th.join(max(0.0, drain_until - time.monotonic()))
        sample_memory(soak, serve)  # the last sample: after the drain, before the stop
        lost = soak.give_up_in_flight()
        if lost:
            print(f"  {len(lost)} request(s) still in flight after the drain: lost", flush=True)
        if killer_thread is not None:
            killer_thread.join(args.recovery_timeout_s + 30)
    finally:
        if soak is not None:
            soak.stop.set()
        serve_exit = serve.stop(timeout_s=60)
        print(f"melstream serve stopped: {serve_exit['exit']} in {serve_exit['stop_s']:.1f} s"
              + (" (killed by the soak: it did not stop in time)" if serve_exit["killed_by_soak"] else "")
              + (f"; it said: {serve_exit['said']}" if serve_exit["said"] else ""), flush=True)
    assert soak is not None
    wall_s = time.monotonic() - wall0

    soak.requests.sort(key=lambda r: r.id)
    strand(soak, args)
    for r in soak.requests:  # a stream that ended as its server died: say so
        if r.outcome in ("corrupted", "cut") and r.total_s is not None:
            end = r.t_start + r.total_s
            died = [e["t"] for e in soak.server_events if e["event"] == "tritonserver gone" and end - 1 <= e["t"] <= end + 2]
            if died:
                r.detail = f"{r.detail} [tritonserver was gone at {died[0]:.1f} s]"[:400]
    tot = totals(soak, serve_exit, duration_s=duration_s, wall_s=wall_s)
    wins = windows(soak, duration_s, window_s)
    text = report(soak, tot, wins, config)
    print("\n" + text)
    (args.out / "soak.md").write_text(text)
    write_csv(args.out / "requests.csv", [asdict(r) for r in soak.requests])
    write_csv(args.out / "memory.csv", soak.memory)
    write_csv(args.out / "windows.csv", wins)
    errors = Counter(r.kind for r in soak.requests if r.kind)
    (args.out / "soak.json").write_text(json.dumps(_json_safe({
        "config": config, "totals": tot, "windows": wins, "errors_by_kind": dict(errors.most_common()),
        "kills": [asdict(k) for k in soak.kills], "serve": serve_exit, "memory": soak.memory,
        "lost_corrupted_stranded": [asdict(r) for r in soak.requests if r.outcome in ("lost", "corrupted", "stranded")]}),
        indent=1) + "\n")
    wrote = ["soak.md", "soak.json", "requests.csv", "memory.csv", "windows.csv"]
    if plot(soak, wins, args.out / "soak.png", duration_s):
        wrote.append("soak.png")
    print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    stranded = tot["stranded_by_a_voice_stub_kill"]
    failed = tot["lost"] or tot["corrupted"] or not tot["verified_ok"] or (args.strict and stranded)
    if failed:
        print(f"FAILED: {tot['lost']} lost, {tot['corrupted']} corrupted, {tot['verified_ok']} verified"
              + (f", {stranded} stranded (--strict)" if args.strict and stranded else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
