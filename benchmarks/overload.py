"""Overload: many concurrent long streams on one voice; every request is served fast or refused at once, and the
other voice stays fast throughout.

    python benchmarks/overload.py --out DIR [--url HOST:PORT] [--voice both|tacovoice|fastvoice] [--streams 200]
                                  [--seconds 30] [--other fastvoice] [--retry-s 1.0] [--jitter 0.5] [--timeout-s 60]
                                  [--sentences 4 | --chars 9000]

The target (the reliability issue): 200 concurrent long streams on one voice: every request gets a first chunk
within 1 s or a refusal within 100 ms; the other voice's first chunk stays under 100 ms throughout.

Without --url it starts its own tritonserver on free ports from the committed model_repository/ (whose limits are
the measured ones: each voice admits its ``max_streams`` config parameter; log: DIR/tritonserver.log).  For each
direction (``--voice both``, the default: tacovoice loaded while fastvoice is probed, then the other way round):

- --streams client threads (gRPC, one :class:`melstream.client.Client` each) wait at a barrier, then all send a
  long stream (--sentences held-out sentences of tests/data/heldout_sentences.txt, four by default, a different
  window per client: seconds of speech; or, with --chars N, as many whole sentences of its window as fit in N
  characters: ``--chars 9000`` is about 130 sentences, ten minutes of speech, under the front end's 10,000) to the
  loaded voice at the same moment.  Each request is recorded as *served* (its first chunk came: first-chunk
  latency, whether it completed, total time), *refused* (``ServerBusyError`` before any chunk: time to the
  refusal), *error* (anything else, e.g. a timeout or a stream that broke after its first chunk) or *hang* (still
  in flight once every other request has ended and no request has had a response for 3 x --timeout-s: a long
  stream still speaking is not a hang).  *Unanswered* (a column of its own) are the requests that got neither a
  chunk nor a refusal: a hang before its first chunk, or the client's --timeout-s running out before any response.
- for --seconds after the barrier each client keeps the load up: once its request was refused or finished it
  waits --retry-s (times a random factor from 1 - --jitter to 1 + --jitter: clients refused together do not all come
  back together) and sends the next one, so "every request" includes the ones that arrive while the voice is full.
  --seconds 0 is the single burst.
- meanwhile a probe sends short utterances (one held-out sentence) to the other voice back to back and records
  each one's first-chunk latency (or its failure), from the barrier until every client has stopped.  It runs in a
  process of its own, so the 200 client threads do not hold its GIL: what it sees is the server's doing (and the
  machine's: all of it shares the cores with the server).

Prints the host it ran on (benchmarks.streams.host_line: figures from different hosts compare as ratios only) and a
table, and writes overload.md (host, table and verdicts), overload.csv (the table), overload_requests.csv (every
request and probe: direction, start time after the barrier, outcome, latencies) and overload.png (latencies over
time: served first chunks, refusals, probes) under --out.  The table gives, per direction, the admitted (served)
requests' first chunk p50/p95/p99/max, the refusals' latency p50/p95/p99/max, the errors, hangs and unanswered
requests, the texts' length in characters, and the probes of the other voice.  Verdicts (PASS/FAIL each): served
first chunk <= 1 s, refusal <= 100 ms, nothing else (no other error, no hang, nothing unanswered), other voice's
first chunk < 100 ms (no probe failed).  Exit status 1 on any FAIL.

Latencies are measured from the client: they include the client's own work (Python threads sharing the GIL with
every other client) and opening a stream's gRPC channel (melstream's Client keeps a channel for the next stream
only after a stream that completed; a refused stream's channel is closed).  So the table also says how late a
heartbeat thread of the clients' process woke from a 10 ms sleep ("client lag"; the plot draws it over time):
a lag of seconds means the clients themselves were starved, and their figures say as much about this machine as
about the server.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: tests/ is importable from the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.churn import wait_quiet  # noqa: E402
from benchmarks.streams import host_line  # noqa: E402
from melstream.errors import ClientTimeoutError, ServerBusyError  # noqa: E402
from melstream_client import Client  # noqa: E402
from tests.integration.test_admission import SENTENCES, SHORT, Outcome, run_stream  # noqa: E402

REPO = ROOT / "model_repository"
VOICES = ("tacovoice", "fastvoice")
#: the targets of the issue
SERVED_FIRST_S, REFUSAL_S, OTHER_FIRST_S = 1.0, 0.1, 0.1
#: sentences per long stream: seconds of speech on either voice
LONG_SENTENCES = 4
#: the longest text the voices' front end takes (melstream.text.MAX_CHARS_DEFAULT): --chars may not pass it
MAX_CHARS = 10_000
#: the load process's heartbeat: a thread sleeping this long, again and again, records how late it wakes
HEARTBEAT_S = 0.01
SERVED, REFUSED, ERROR, HANG, PROBE_OK, PROBE_FAILED = "served", "refused", "error", "hang", "probe", "probe_failed"


def long_text(k: int, sentences: int = LONG_SENTENCES, *, chars: int | None = None, pool: list[str] = SENTENCES) -> str:
    """Client ``k``'s long text: ``sentences`` held-out sentences from the k-th on (each client a different window,
    wrapping round); with ``chars``, as many whole sentences from the k-th on as fit in ``chars`` characters (at
    least one), ``sentences`` then unused."""
    if chars is None:
        return " ".join(pool[(k + i) % len(pool)] for i in range(sentences))
    picked: list[str] = []
    length = -1  # no separator before the first sentence
    while True:
        sentence = pool[(k + len(picked)) % len(pool)]
        if picked and length + 1 + len(sentence) > chars:
            return " ".join(picked)
        picked.append(sentence)
        length += 1 + len(sentence)


def max_streams(url: str, voice: str) -> int:
    """The streams ``voice`` admits at once: its model config's ``max_streams`` parameter (the repository's source
    of truth, written by melstream/serving/repo.py).  A voice without one is an error, not a guess."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        config = client.get_model_config(voice, as_json=True, client_timeout=30)["config"]
    finally:
        client.close()
    try:
        return int(config["parameters"]["max_streams"]["string_value"])
    except (KeyError, ValueError) as e:
        raise RuntimeError(f"voice {voice!r} at {url}: its config has no integer max_streams parameter: {e!r}") from None


@dataclass(frozen=True)
class Request:
    """One request as its client saw it; times in seconds, ``start_s`` after the barrier."""

    voice: str
    kind: str  # "load" (the loaded voice) or "probe" (the other voice)
    start_s: float
    outcome: str  # SERVED, REFUSED, ERROR, HANG (load); PROBE_OK, PROBE_FAILED (probe)
    first_s: float | None  # first chunk (served, probe) or the refusal/error (refused, error)
    total_s: float | None
    chunks: int
    completed: bool
    error: str = ""
    exc: BaseException | None = field(default=None, compare=False, repr=False)  # what the client raised

    @property
    def unanswered(self) -> bool:
        """Neither a chunk nor a refusal came: a hang before any chunk, or the client's timeout ran out first."""
        return self.chunks == 0 and (self.outcome == HANG or isinstance(self.exc, ClientTimeoutError))


@dataclass
class Run:
    """One direction: ``voice`` loaded by ``streams`` clients for ``seconds``, ``other`` probed."""

    voice: str
    other: str
    streams: int
    seconds: float
    limit: int
    requests: list[Request] = field(default_factory=list)
    probes: list[Request] = field(default_factory=list)
    #: (seconds after the barrier, lag): how late a thread of the load clients' process woke from a 10 ms sleep;
    #: seconds of lag mean the clients' own process was starved (GIL, CPU), not that the server was slow
    lags: list[tuple[float, float]] = field(default_factory=list)
    wall_s: float = 0.0
    #: the clients' texts' length in characters (median)
    text_chars: int = 0

    def of(self, outcome: str) -> list[Request]:
        return [r for r in self.requests if r.outcome == outcome]


def record(voice: str, kind: str, start_s: float, out: Outcome) -> Request:
    """Classify a finished :class:`Outcome` of ``tests.integration.test_admission.run_stream``."""
    error = "" if out.error is None else f"{type(out.error).__name__}: {out.error}"[:300]
    if kind == "probe":
        outcome = PROBE_OK if out.error is None and out.chunks > 0 else PROBE_FAILED
    elif out.chunks > 0:
        outcome = SERVED  # a stream that broke after its first chunk is also counted as an error (not completed)
    elif isinstance(out.error, ServerBusyError):
        outcome = REFUSED
    else:
        outcome = ERROR
    return Request(voice, kind, start_s, outcome, out.first_s, out.total_s, out.chunks,
                   completed=out.error is None and out.chunks > 0, error=error, exc=out.error)


def probe_process(url: str, other: str, timeout_s: float, ready: Any, go: Any, t0: Any, stop: Any, results: Any) -> None:
    """The probe, in a process of its own (so the load clients' threads do not hold its GIL): short utterances of
    ``other`` back to back from ``go`` until ``stop``; each as ``(start_s, first_s, total_s, chunks, error)`` on
    ``results``, times after the barrier's ``t0`` (``time.monotonic``, the same clock in every process); ``None``
    last.  A probe that cannot start puts its error on ``results`` and exits."""
    try:
        with Client(url, timeout_s=timeout_s) as client:
            for _ in client.stream(SHORT, voice=other):  # its channel and the voice's spec, not measured
                pass
            ready.set()
            if not go.wait(timeout=600):
                return
            while not stop.is_set():
                start = time.monotonic()
                out = Outcome()
                run_stream(client, other, SHORT, out)
                error = "" if out.error is None else f"{type(out.error).__name__}: {out.error}"[:300]
                results.put((start - t0.value, out.first_s, out.total_s, out.chunks, error))
                if out.error is not None:
                    time.sleep(0.1)  # a failing probe does not spin
    except Exception as e:
        ready.set()
        results.put((0.0, None, None, 0, f"probe: {type(e).__name__}: {e}"[:300]))
    finally:
        results.put(None)


def overload(url: str, voice: str, other: str, *, streams: int, seconds: float, retry_s: float = 1.0, jitter: float = 0.5,
             timeout_s: float = 60.0, sentences: int = LONG_SENTENCES, chars: int | None = None, log: Any = print) -> Run:
    """``streams`` clients send long streams (:func:`long_text` of ``sentences``, or of ``chars`` characters) to
    ``voice`` at once (a barrier), and keep doing so for ``seconds`` (each waits ``retry_s`` after a refusal or a
    finished stream, times a random factor from ``1 - jitter`` to ``1 + jitter``, so the clients refused together do
    not all come back together); a probe (:func:`probe_process`) sends short utterances to ``other`` back to back
    meanwhile.  Once the load should have ended, the clients are waited for as long as some request still gets
    responses; a request still in flight when none has had a response for ``3 * timeout_s`` is a hang."""
    import multiprocessing

    run = Run(voice, other, streams, seconds, limit=max_streams(url, voice),
              text_chars=sorted(len(long_text(k, sentences, chars=chars)) for k in range(streams))[streams // 2])
    lock = threading.Lock()
    mp = multiprocessing.get_context("spawn")
    ready, go, stop_probe, results = mp.Event(), mp.Event(), mp.Event(), mp.Queue()
    t0_shared = mp.Value("d", 0.0)
    clock = {"t0": 0.0}  # the barrier's moment (time.monotonic), set by its action before any thread is released

    def release() -> None:
        clock["t0"] = t0_shared.value = time.monotonic()
        go.set()

    barrier = threading.Barrier(streams + 1, action=release)  # the clients and this thread
    in_flight: dict[int, tuple[float, Outcome]] = {}  # client -> its request in flight: start (after the barrier), outcome
    failures: list[str] = []  # a client that could not even start

    def client_loop(k: int) -> None:
        text = long_text(k, sentences, chars=chars)
        rng = random.Random(k)  # the same pauses run after run
        try:
            with Client(url, timeout_s=timeout_s) as client:
                client.spec(voice)  # the addon JSON before anything is timed
                barrier.wait(timeout=300 + streams)
                t0 = clock["t0"]
                while True:
                    start = time.monotonic()
                    out = Outcome()
                    with lock:
                        in_flight[k] = (start - t0, out)
                    run_stream(client, voice, text, out)
                    with lock:
                        del in_flight[k]
                        run.requests.append(record(voice, "load", start - t0, out))
                    pause = retry_s * rng.uniform(1 - jitter, 1 + jitter)
                    if time.monotonic() - t0 + pause >= seconds:
                        return
                    time.sleep(pause)  # a refused or finished client tries again after a short pause
        except Exception as e:  # could not start (or the barrier broke): said, and the run fails
            barrier.abort()
            with lock:
                in_flight.pop(k, None)
                failures.append(f"client {k}: {type(e).__name__}: {e}"[:300])

    with Client(url, timeout_s=timeout_s) as warm:  # first-call costs on the server, not measured
        for v in (voice, other):
            for _ in warm.stream(SHORT, voice=v):
                pass
    probe = mp.Process(target=probe_process, args=(url, other, timeout_s, ready, go, t0_shared, stop_probe, results),
                       daemon=True, name="overload-probe")
    probe.start()
    threads = [threading.Thread(target=client_loop, args=(k,), daemon=True, name=f"overload-{k}") for k in range(streams)]
    for thread in threads:
        thread.start()
    try:
        if not ready.wait(timeout=300):
            raise threading.BrokenBarrierError
        barrier.wait(timeout=300 + streams)  # every client has its channel and the voice's spec
    except threading.BrokenBarrierError:
        barrier.abort()
        stop_probe.set()
        go.set()
        for thread in threads:
            thread.join(10)
        probe.join(10)
        if probe.is_alive():
            probe.kill()
        raise RuntimeError(f"the clients could not start: {failures[:3]}") from None
    t0 = clock["t0"]
    heartbeat_done = threading.Event()

    def heartbeat() -> None:  # the load process's own responsiveness, next to the clients' latencies
        while not heartbeat_done.is_set():
            before = time.monotonic()
            time.sleep(HEARTBEAT_S)
            run.lags.append((before - t0, max(0.0, time.monotonic() - before - HEARTBEAT_S)))

    beat = threading.Thread(target=heartbeat, daemon=True, name="overload-heartbeat")
    beat.start()
    load_end = t0 + seconds
    seen: list[tuple[int, float, int]] = []  # what the requests in flight have received, to see it move
    last_progress = time.monotonic()
    while alive := [thread for thread in threads if thread.is_alive()]:
        alive[0].join(0.5)
        with lock:
            now_in_flight = sorted((k, start_s, out.chunks) for k, (start_s, out) in in_flight.items())
        now = time.monotonic()
        if now_in_flight != seen:  # a chunk came, or a request started or ended: nothing hangs yet
            seen, last_progress = now_in_flight, now
        elif now > load_end and now - last_progress > 3 * timeout_s:
            break  # no response to any request for 3 timeouts: what is still in flight hangs
    heartbeat_done.set()
    beat.join(5)
    stop_probe.set()
    probe_end = time.monotonic() + 3 * timeout_s
    while True:  # drain the probe's results until its last (None) or its deadline
        try:
            item = results.get(timeout=max(0.1, probe_end - time.monotonic()))
        except Exception:  # queue.Empty: the probe hangs
            run.probes.append(Request(other, "probe", time.monotonic() - t0, PROBE_FAILED, None, None, 0, False, "probe hung"))
            break
        if item is None:
            break
        start_s, first_s, total_s, chunks, error = item
        ok = not error and chunks > 0
        run.probes.append(Request(other, "probe", start_s, PROBE_OK if ok else PROBE_FAILED, first_s, total_s, chunks, ok, error))
    probe.join(10)
    if probe.is_alive():
        probe.kill()
    run.wall_s = time.monotonic() - t0
    with lock:
        for start_s, out in sorted(in_flight.values(), key=lambda v: v[0]):  # still waiting: a hang
            run.requests.append(Request(voice, "load", start_s, HANG, out.first_s if out.chunks else None, None, out.chunks,
                                        False, "no answer" if not out.chunks else f"no end after {out.chunks} chunks"))
        for failure in failures:  # a client that failed after the barrier (not in run_stream: a bug) is an error
            run.requests.append(Request(voice, "load", run.wall_s, ERROR, None, None, 0, False, failure))
    log(f"  {voice} loaded by {streams} clients ({run.limit} admitted) for {seconds:g} s, {other} probed: "
        f"{len(run.requests)} requests, {len(run.of(SERVED))} served, {len(run.of(REFUSED))} refused, "
        f"{len(run.of(ERROR))} errors, {len(run.of(HANG))} hangs, {sum(q.unanswered for q in run.requests)} unanswered; "
        f"{len(run.probes)} probes; {run.wall_s:.1f} s")
    return run


# --- the table, the verdicts, the files ----------------------------------------------------------------------
def stats(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max in ms (NaN for no values)."""
    if not values:
        return {k: float("nan") for k in ("p50", "p95", "p99", "max")}
    arr = 1e3 * np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}


def row(run: Run) -> dict[str, Any]:
    served = [r.first_s for r in run.of(SERVED) if r.first_s is not None]
    refused = [r.first_s for r in run.of(REFUSED) if r.first_s is not None]
    probes = [r.first_s for r in run.probes if r.outcome == PROBE_OK and r.first_s is not None]
    r: dict[str, Any] = {"voice": run.voice, "limit": run.limit, "streams": run.streams, "seconds": run.seconds,
                         "requests": len(run.requests), "served": len(run.of(SERVED)),
                         "completed": sum(q.completed for q in run.of(SERVED)), "refused": len(run.of(REFUSED)),
                         "errors": len(run.of(ERROR)) + sum(not q.completed for q in run.of(SERVED)),
                         "hangs": len(run.of(HANG)), "unanswered": sum(q.unanswered for q in run.requests),
                         "text_chars": run.text_chars}
    for name, values in (("first", served), ("refusal", refused)):
        for k, v in stats(values).items():
            r[f"{name}_{k}_ms"] = v
    r["first_over_1s"] = sum(v > SERVED_FIRST_S for v in served)
    r["refusal_over_100ms"] = sum(v > REFUSAL_S for v in refused)
    r["other"] = run.other
    r["probes"] = len(run.probes)
    for k, v in stats(probes).items():
        r[f"other_first_{k}_ms"] = v
    r["other_over_100ms"] = sum(v >= OTHER_FIRST_S for v in probes)
    r["other_failures"] = sum(q.outcome == PROBE_FAILED for q in run.probes)
    lag = stats([v for _, v in run.lags])
    r["client_lag_p99_ms"], r["client_lag_max_ms"] = lag["p99"], lag["max"]
    r["wall_s"] = run.wall_s
    return r


def ms(value: float) -> str:
    return "–" if value != value else f"{value:.0f} ms"  # NaN: nothing of the kind happened


def verdicts(r: dict[str, Any]) -> list[tuple[bool, str]]:
    """(passed, line) for each target, for one direction's row."""
    v, o = r["voice"], r["other"]
    return [
        (r["first_over_1s"] == 0,
         f"{v}: every served request's first chunk within 1 s: {r['first_over_1s']} of {r['served']} over "
         f"(max {ms(r['first_max_ms'])})"),
        (r["refusal_over_100ms"] == 0,
         f"{v}: every refusal within 100 ms: {r['refusal_over_100ms']} of {r['refused']} over (max {ms(r['refusal_max_ms'])})"),
        (r["errors"] == 0 and r["hangs"] == 0 and r["unanswered"] == 0,
         f"{v}: every request served (and completed) or refused, nothing else: {r['errors']} errors, {r['hangs']} hangs, "
         f"{r['unanswered']} unanswered"),
        (r["probes"] > 0 and r["other_over_100ms"] == 0 and r["other_failures"] == 0,
         f"{o} (other voice): first chunk under 100 ms throughout: {r['other_over_100ms']} of {r['probes']} probes over "
         f"(max {ms(r['other_first_max_ms'])}), {r['other_failures']} failed"),
    ]


TABLE = [("voice", "loaded", "{}"), ("limit", "limit", "{}"), ("streams", "N", "{}"), ("requests", "requests", "{}"),
         ("served", "served", "{}"), ("completed", "completed", "{}"), ("refused", "refused", "{}"),
         ("errors", "errors", "{}"), ("hangs", "hangs", "{}"), ("unanswered", "unanswered", "{}"), ("text_chars", "chars", "{}"),
         ("first_p50_ms", "first p50", "{:.0f}"), ("first_p95_ms", "p95", "{:.0f}"), ("first_p99_ms", "p99", "{:.0f}"),
         ("first_max_ms", "max", "{:.0f}"), ("first_over_1s", "> 1 s", "{}"),
         ("refusal_p50_ms", "refusal p50", "{:.0f}"), ("refusal_p95_ms", "p95", "{:.0f}"), ("refusal_p99_ms", "p99", "{:.0f}"),
         ("refusal_max_ms", "max", "{:.0f}"), ("refusal_over_100ms", "> 100 ms", "{}"),
         ("other", "other", "{}"), ("probes", "probes", "{}"), ("other_first_p50_ms", "other first p50", "{:.0f}"),
         ("other_first_p95_ms", "p95", "{:.0f}"), ("other_first_p99_ms", "p99", "{:.0f}"), ("other_first_max_ms", "max", "{:.0f}"),
         ("other_over_100ms", "≥ 100 ms", "{}"), ("other_failures", "failed", "{}"),
         ("client_lag_p99_ms", "client lag p99", "{:.0f}"), ("client_lag_max_ms", "max", "{:.0f}")]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in TABLE) + " |", "|" + "---|" * len(TABLE)]
    for r in rows:
        lines.append("| " + " | ".join("–" if r[k] != r[k] else fmt.format(r[k]) for k, _, fmt in TABLE) + " |")  # NaN -> dash
    return "\n".join(lines)


def write_requests(runs: list[Run], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["loaded", "voice", "kind", "start_s", "outcome", "first_ms", "total_ms", "chunks", "completed", "error"])
        for run in runs:
            for q in sorted(run.requests + run.probes, key=lambda q: q.start_s):
                w.writerow([run.voice, q.voice, q.kind, f"{q.start_s:.4f}", q.outcome,
                            "" if q.first_s is None else f"{1e3 * q.first_s:.2f}",
                            "" if q.total_s is None else f"{1e3 * q.total_s:.2f}", q.chunks, int(q.completed), q.error])


def plot(runs: list[Run], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(runs), 1, figsize=(12, 4.2 * len(runs)), squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        series = [(run.of(SERVED), "o", f"{run.voice}: served, first chunk", "tab:blue"),
                  (run.of(REFUSED), "x", f"{run.voice}: refused, time to refusal", "tab:orange"),
                  (run.of(ERROR), "s", f"{run.voice}: other error", "tab:red"),
                  ([q for q in run.probes if q.outcome == PROBE_OK], ".", f"{run.other} (other voice): probe first chunk", "tab:green"),
                  ([q for q in run.probes if q.outcome == PROBE_FAILED], "D", f"{run.other}: probe failed", "black")]
        for qs, marker, label, color in series:
            points = [(q.start_s, max(1e3 * q.first_s, 0.1)) for q in qs if q.first_s is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker, ms=3, alpha=0.6, color=color, linestyle="none",
                        label=f"{label} ({len(points)})")
        if run.lags:
            ax.plot([t for t, _ in run.lags], [max(1e3 * v, 0.1) for _, v in run.lags], ".", color="grey", ms=1.5,
                    alpha=0.5, linestyle="none", label=f"load clients' process: heartbeat lag (a {1e3 * HEARTBEAT_S:.0f} ms sleep's overrun)")
        ax.axhline(1e3 * SERVED_FIRST_S, color="tab:blue", linestyle="--", linewidth=0.8, label="target: first chunk 1 s")
        ax.axhline(1e3 * REFUSAL_S, color="tab:orange", linestyle="--", linewidth=0.8, label="target: refusal / other voice 100 ms")
        ax.set_yscale("log")
        span = max(run.wall_s, 1.0)
        ax.set_xlim(-0.02 * span, 1.02 * span)
        ax.set_xlabel("request sent, seconds after the barrier")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{run.streams} concurrent long streams on {run.voice} (admits {run.limit}) for {run.seconds:g} s; "
                     f"{run.other} probed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--url", default=None, help="gRPC HOST:PORT of a running server (default: start one on the committed "
                    "model_repository/)")
    ap.add_argument("--metrics-url", default=None, help="with --url: its metrics HOST:PORT (default: --url's host, port 8002)")
    ap.add_argument("--voice", default="both", help="the loaded voice, or 'both': tacovoice then fastvoice, each probing the other")
    ap.add_argument("--other", default=None, help="the probed voice (default: the other shipped voice; ignored with --voice both)")
    ap.add_argument("--streams", type=int, default=200, help="concurrent clients on the loaded voice")
    ap.add_argument("--seconds", type=float, default=30.0, help="keep the load up this long after the barrier (0: one burst)")
    ap.add_argument("--retry-s", type=float, default=1.0, help="a client's pause after a refusal or a finished stream")
    ap.add_argument("--jitter", type=float, default=0.5, help="each pause is --retry-s times a random factor in "
                    "[1 - jitter, 1 + jitter] (0: every refused client comes back at the same moment, in waves)")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="a client's wait for any one response")
    ap.add_argument("--sentences", type=int, default=LONG_SENTENCES, help="held-out sentences per long stream (default: "
                    f"{LONG_SENTENCES}, seconds of speech; each about 65 characters: --sentences 60 is about 4,000 characters)")
    ap.add_argument("--chars", type=int, default=None, help="instead of --sentences: as many whole held-out sentences per "
                    f"long stream as fit in this many characters (at most {MAX_CHARS:,}, the voices' limit); --chars 9000 "
                    "is the long-text run: about 130 sentences, ten minutes of speech per stream")
    args = ap.parse_args(argv)
    if args.streams < 1 or args.seconds < 0 or args.retry_s < 0 or not 0 <= args.jitter <= 1 or args.timeout_s <= 0 or args.sentences < 1:
        ap.error("--streams and --sentences must be positive, --seconds and --retry-s not negative, --jitter from 0 to 1, "
                 "--timeout-s positive")
    if args.chars is not None and not 0 < args.chars <= MAX_CHARS:
        ap.error(f"--chars must be from 1 to {MAX_CHARS}, got {args.chars}")
    if args.voice == "both":
        directions = [(v, next(o for o in VOICES if o != v)) for v in VOICES]
    else:
        directions = [(args.voice, args.other or next((o for o in VOICES if o != args.voice), VOICES[0]))]
    if any(v == o for v, o in directions):
        ap.error("--other must differ from --voice")

    from melstream.serving.server import TritonServer

    args.out.mkdir(parents=True, exist_ok=True)
    runs: list[Run] = []
    with ExitStack() as stack:
        url, metrics_url = args.url, args.metrics_url
        if url is None:
            server = stack.enter_context(TritonServer.on_free_ports(REPO, log_file=args.out / "tritonserver.log"))
            url, metrics_url = server.grpc_url, f"localhost:{server.metrics_port}"
            print(f"tritonserver on {url} ({REPO}), log {args.out / 'tritonserver.log'}", flush=True)
        metrics_url = metrics_url or f"{url.rsplit(':', 1)[0]}:8002"
        for k, (voice, other) in enumerate(directions):
            if k:  # the last direction's streams have ended (their slots are free) before the next one starts
                wait_quiet(metrics_url, VOICES, timeout_s=3 * args.timeout_s)
            runs.append(overload(url, voice, other, streams=args.streams, seconds=args.seconds, retry_s=args.retry_s,
                                 jitter=args.jitter, timeout_s=args.timeout_s, sentences=args.sentences, chars=args.chars,
                                 log=lambda line: print(line, flush=True)))

    rows = [row(run) for run in runs]
    table = markdown(rows)
    lines = [f"{'PASS' if ok else 'FAIL'}  {line}" for r in rows for ok, line in verdicts(r)]
    errors = sorted({q.error for run in runs for q in run.requests + run.probes if q.error and q.outcome != REFUSED})
    texts = (f"up to {args.chars:,} characters of held-out sentences" if args.chars is not None
             else f"{args.sentences} held-out sentences")
    head = (f"{args.streams} clients per loaded voice, long streams of {texts} (chars: the median text's length), load kept "
            f"up for {args.seconds:g} s (retry after {args.retry_s:g} s ± {100 * args.jitter:.0f} %); latencies in ms, from "
            f"the client; unanswered: neither a chunk nor a refusal")
    host = host_line()
    print(f"\n{host}\n{head}\n{table}\n")
    print("\n".join(lines))
    if errors:
        print(f"errors ({len(errors)} kinds), first: " + "; ".join(errors[:3]))
    with open(args.out / "overload.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_requests(runs, args.out / "overload_requests.csv")
    (args.out / "overload.md").write_text(f"{host}\n\n{head}\n\n{table}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")
    wrote = ["overload.md", "overload.csv", "overload_requests.csv"] + (["overload.png"] if plot(runs, args.out / "overload.png") else [])
    print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    return 0 if all(ok for r in rows for ok, _ in verdicts(r)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
