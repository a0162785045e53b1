"""Cancellation churn: storms of streams cancelled after their first chunk, round after round; memory and survival.

    python benchmarks/churn.py --out out/churn [--rounds 10] [--grpc 500] [--http 200] [--warmup 2] [--long]
                               [--url HOST:GRPC_PORT --http-url HOST:PORT --metrics-url HOST:PORT [--pid PID] [--log FILE]]

Without --url it starts its own tritonserver on free ports from the committed model_repository/ (log:
DIR/tritonserver.log).  Each round opens --grpc gRPC streams (tritonclient.grpc ``start_stream``, one request,
``stop_stream(cancel_requests=True)`` once its first chunk is in) and --http HTTP streams (``POST
/v2/models/<voice>/generate_stream``, the connection closed once the first server-sent event is in), spread
evenly over the voices. They run concurrently, in waves sized to each voice's admission limit (what it admits at the
start: its ``melstream_admitted_streams`` gauge, or its ``max_streams`` config parameter) plus a quarter: a voice
refuses the streams past its limit at once with UNAVAILABLE (busy), and a refused stream is tried again a moment
later, so that every stream of the round is really served and cancelled; the refusals are counted apart.
Every stream speaks :data:`TEXT` (one long sentence);
with --long, :func:`long_text` (whole held-out sentences of tests/data/heldout_sentences.txt, about 600 words, some
3,800 characters: minutes of speech), so a stream is cancelled with most of a long text still to speak (and its
first chunk waits on the front end's reading of it).

After each round it waits until ``melstream_active_streams`` is 0 for every voice, then measures the
proportional set size (PSS: the sum of ``Pss`` in ``/proc/<pid>/smaps_rollup``) and RSS of tritonserver and
every process of its group (its Python backend stubs), checks that every stub that ran at the start still
runs (same pids) and that the server is ready, and counts alarming lines in the server log (segfaults, stub
restarts, lock exceptions, core dumps).

Prints the host it ran on (benchmarks.streams.host_line: figures from different hosts compare as ratios only) and a
table per round, and writes churn.md (host, text, table), churn.csv and churn.png (PSS per round) under --out.  Verdict:
the growth of PSS per round after the warm-up (slope of a least-squares line over rounds --warmup+1..N) must
be below --max-growth-mib (16 MiB).  Exit status 1 when it is not, or when a stub or the server died.

What it found (2 shared cores, Triton 2.51 from nvidia-pytriton 0.7.0; figures in the report of the reliability
issue):

* Memory: PSS of server + stubs grows ~75 MiB in round 1 (the stubs' shared-memory pools grow to the load's
  peak and Python's allocator keeps its arenas), then about 1 MiB per round (HTTP only, 15 rounds of 700:
  +0.96 MiB/round; gRPC + HTTP: +1.4 MiB/round over rounds 3..7).  No leak of ours shows.
* Crashes: tritonserver itself dies under gRPC cancellation churn, every few thousand cancelled gRPC streams
  (between round 1 and round 8 of 500 gRPC + 200 HTTP): its gRPC frontend logs ``API misuse of type
  GRPC_CALL_ERROR_TOO_MANY_OPERATIONS`` / ``ASSERTION FAILED: false`` (call_op_set.h) or ``ASSERTION FAILED:
  ops_`` (interceptor_common.h), or the heap is corrupted (``malloc(): unsorted double linked list corrupted``,
  ``double free or corruption (out)``, ``Signal (11) received``).  HTTP-only churn (10 500 cancelled streams)
  never crashed.  This is Triton's: in 2.51 ``ModelStreamInferHandler`` races a stream's cancellation against
  its responses and releases (and reuses) a stream's state while another thread still uses it; upstream fixed
  it after 2.51 (triton-inference-server/server#7840, in 2.53; #8078, in 2.57; #8220, in 2.59).  Once its heap is
  corrupted, whatever runs next may fail: a stub reading a corrupted message (its segfault), or the server's
  lock on a stub's shared memory (``boost::interprocess::lock_exception``).  A crashed tritonserver can also
  hang half alive in its signal handler (still listening, every call timing out), so a supervisor must not
  rely on its exit alone.  The storm ends early when the log shows a crash.  It takes a response of the stream
  on its way as the client cancels: 10 of 10 runs crashed within 8 rounds, and none in 10 rounds (5 000 cancelled
  gRPC streams) with a diagnostic copy of the voices that pauses 0.3 s after each stream's first chunk, so that
  nothing of a stream is being written when its client cancels; nor in 5 600 gRPC streams that ran to their
  end or were refused, none cancelled in flight.  melstream's own code runs in the stubs, not in tritonserver.
* A gRPC stream cancelled after its request has already ended (a refusal, an error) leaks that stream's state
  in Triton 2.51 and keeps its voice loaded, so the server no longer stops cleanly (its exit timeout runs out
  with "2 live models"); the clients here cancel only a request still in flight (``--cancel-ended`` does what
  many clients do, to show it).
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import queue
import re
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: benchmarks.streams is imported from the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.streams import host_line  # noqa: E402
from melstream.serving.server import metric_samples  # noqa: E402
from melstream_client import wire  # noqa: E402

REPO = ROOT / "model_repository"
VOICES = ("fastvoice", "tacovoice")
#: long enough that no voice finishes it before its first chunk has reached the client and been cancelled
TEXT = ("The quick brown fox jumps over the lazy dog while the patient listener waits for the rest of a long "
        "sentence that is never going to be finished, because every stream is cancelled after its first chunk.")
SENTENCES = ROOT / "tests" / "data" / "heldout_sentences.txt"
#: words of the --long text (whole held-out sentences, at least this many): minutes of speech
LONG_WORDS = 600


def long_text(words: int = LONG_WORDS, sentences: Path = SENTENCES) -> str:
    """The held-out sentences from the first on (round again if need be) until they hold at least ``words`` words."""
    pool = [line.strip() for line in sentences.read_text().splitlines() if line.strip()]
    if not pool:
        raise ValueError(f"no sentences in {sentences}")
    picked: list[str] = []
    count = 0
    while count < words:
        sentence = pool[len(picked) % len(pool)]
        picked.append(sentence)
        count += len(sentence.split())
    return " ".join(picked)
#: what a line of the server's log that says a process crashed looks like
LOG_ALARMS = re.compile(r"Segmentation fault|Signal \((?!2\)|15\))\d+\) received|Stub process .*(unhealthy|not healthy|restart)|"
                        r"lock_exception|core dumped|terminate called|^Aborted|Failed to (re)?start the stub|"
                        r"ASSERTION FAILED|API misuse|Non-graceful termination", re.I)
MIB = 1024 * 1024


# --- one stream ---------------------------------------------------------------------------------------------
#: how one attempt at a stream ended, from the client's side
SERVED = "served"  # its first chunk came, then the client cancelled it
REFUSED = "refused"  # the voice was busy (UNAVAILABLE ... is busy): tried again
COMPLETED = "completed"  # the final response came before any chunk (should not happen with TEXT)
ERROR = "error"


class GrpcStreamer:
    """One gRPC channel, one stream at a time (tritonclient's client holds at most one stream)."""

    def __init__(self, url: str, *, cancel_ended: bool = False) -> None:
        import tritonclient.grpc as grpcclient

        #: cancel the stream even when its request has already ended (refused): what melstream's Client and
        #: tritonclient users commonly do, and what leaks in Triton 2.51 (see the module docstring)
        self.cancel_ended = cancel_ended

        self._g = grpcclient
        self.client = grpcclient.InferenceServerClient(url)

    def once(self, voice: str, text: str, *, timeout_s: float) -> tuple[str, str]:
        """Open a stream, send one request, wait for its first response; cancel the stream.  (outcome, detail)."""
        g = self._g
        inputs = []
        for inp, value in wire.request_tensors(text):
            t = g.InferInput(inp.name, list(value.shape), inp.datatype)
            t.set_data_from_numpy(value)
            inputs.append(t)
        responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
        self.client.start_stream(callback=lambda result, error: responses.put((result, error)))
        in_flight = True  # whether the request still runs on the server: only then is there anything to cancel
        try:
            self.client.async_stream_infer(voice, inputs, request_id=uuid.uuid4().hex, enable_empty_final_response=True)
            try:
                result, error = responses.get(timeout=timeout_s)
            except queue.Empty:
                return ERROR, f"no response within {timeout_s} s"
            if error is not None:  # an error is the request's final response (the voice sends it with the flag)
                in_flight = False
                message = str(error)
                return (REFUSED if wire.is_busy(message) else ERROR), message
            response = result.get_response()
            if response.parameters[wire.FINAL_RESPONSE_PARAMETER].bool_param:
                in_flight = False
            if any(o.name == wire.MEL for o in response.outputs):
                return SERVED, ""
            return COMPLETED, "final response before any chunk"
        finally:
            # Cancel only a request still in flight: cancelling a gRPC stream whose request has already ended
            # races Triton 2.51's completion of it (the stream's state can leak, keeping the voice loaded at stop;
            # see the module docstring), and there is nothing left to cancel anyway.
            self.client.stop_stream(cancel_requests=in_flight or self.cancel_ended)

    def close(self) -> None:
        self.client.close()


def http_once(http_url: str, voice: str, text: str, *, timeout_s: float) -> tuple[str, str]:
    """POST generate_stream, read the first server-sent event, close the connection.  (outcome, detail)."""
    host, _, port = http_url.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", wire.generate_stream_path(voice), body=wire.request_json(text), headers=wire.GENERATE_STREAM_HEADERS)
        resp = conn.getresponse()
        if resp.status != 200:
            message = wire.http_error_message(resp.status, resp.read())
            return (REFUSED if wire.is_busy(message) else ERROR), message
        event = next(wire.sse_events(resp), None)
        if event is None:
            return COMPLETED, "no event"
        failure = wire.event_error(event)
        if failure is not None:
            return (REFUSED if wire.is_busy(failure) else ERROR), failure
        return (SERVED, "") if wire.MEL in event else (COMPLETED, "final event before any chunk")
    except (OSError, http.client.HTTPException, wire.WireError) as e:
        return ERROR, f"{type(e).__name__}: {e}"
    finally:
        conn.close()  # the client is gone: Triton cancels the request


# --- a storm ------------------------------------------------------------------------------------------------
@dataclass
class StormResult:
    """What the clients saw in one storm: streams served then cancelled, refusals (attempts), and the rest."""

    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (voice, transport) -> streams
    refused: int = 0  # attempts refused as busy (each was tried again)
    completed: int = 0  # streams that ended before their first chunk
    errors: list[str] = field(default_factory=list)  # streams that failed (or were refused too often)
    seconds: float = 0.0

    @property
    def total_served(self) -> int:
        return sum(self.served.values())


def admission_limit(http_url: str, voice: str, default: int = 16, *, metrics_url: str | None = None) -> int:
    """The streams ``voice`` admits at once: what it admits now (its ``melstream_admitted_streams`` gauge, from
    ``metrics_url``: it measures what this host keeps in real time), else its config's ``max_streams`` parameter
    (the upper bound)."""
    if metrics_url is not None:
        from melstream.serving.server import metric_samples

        try:
            admitted = metric_samples(metrics_url, timeout_s=10).get(f'melstream_admitted_streams{{voice="{voice}"}}')
        except OSError:
            admitted = None
        if admitted is not None and admitted >= 1:
            return int(admitted)
    try:
        with urllib.request.urlopen(f"http://{http_url}{wire.model_config_path(voice)}", timeout=10) as resp:
            config = json.loads(resp.read())
        return int(config.get("parameters", {}).get("max_streams", {}).get("string_value", default))
    except (OSError, ValueError):
        return default


def plan(grpc: int, http: int, voices: Sequence[str]) -> dict[str, list[str]]:
    """The transports of each voice's streams: gRPC and HTTP spread evenly over the voices, interleaved in order."""
    per_voice: dict[str, list[str]] = {}
    for k, voice in enumerate(voices):
        n_grpc, n_http = len(range(k, grpc, len(voices))), len(range(k, http, len(voices)))
        spots = [((i + 0.5) / n_grpc, "grpc") for i in range(n_grpc)] + [((i + 0.5) / n_http, "http") for i in range(n_http)]
        per_voice[voice] = [kind for _, kind in sorted(spots)]
    return per_voice


def storm(grpc_url: str, http_url: str, *, grpc: int, http: int, voices: Sequence[str] = VOICES,
          limits: dict[str, int] | None = None, text: str = TEXT, timeout_s: float = 30.0,
          max_attempts: int = 200, retry_s: float = 0.02, cancel_ended: bool = False, deadline_s: float = 300.0,
          log_file: Path | None = None) -> StormResult:
    """``grpc`` + ``http`` streams spread over ``voices``, each cancelled after its first chunk.  Each voice's streams
    run ``limit + limit // 4`` at once (its admission limit from ``limits`` or its config); one refused as busy is
    tried again after ``retry_s`` (at most ``max_attempts`` times).  The storm ends early, counting the streams not yet
    started as errors, when a stream fails and the server no longer answers its readiness probe, when a crash shows
    in ``log_file`` (a crashed tritonserver can hang half alive in its signal handler), or after ``deadline_s``."""
    from melstream.serving.server import not_ready

    limits = limits or {v: admission_limit(http_url, v) for v in voices}
    result = StormResult()
    lock = threading.Lock()
    gone = threading.Event()  # the server is down (or time is up): start no more streams
    done = threading.Event()
    alarms_before = len(log_alarms(log_file))
    t_end = time.monotonic() + deadline_s

    def watch() -> None:
        while not done.wait(1.0):
            if time.monotonic() > t_end or len(log_alarms(log_file)) > alarms_before:
                gone.set()
                return
    work: dict[str, queue.SimpleQueue[str]] = {}
    for voice, kinds in plan(grpc, http, voices).items():
        q: queue.SimpleQueue[str] = queue.SimpleQueue()
        for k in kinds:
            q.put(k)
        work[voice] = q

    def worker(voice: str) -> None:
        streamer: GrpcStreamer | None = None
        try:
            while True:
                try:
                    kind = work[voice].get_nowait()
                except queue.Empty:
                    return
                if gone.is_set():
                    with lock:
                        result.errors.append(f"{voice} {kind}: not started: the server is down, or the storm's time is up")
                    continue
                for _ in range(max_attempts):
                    if gone.is_set():
                        outcome, detail = ERROR, "given up: the server is down, or the storm's time is up"
                        break
                    if kind == "grpc":
                        streamer = streamer or GrpcStreamer(grpc_url, cancel_ended=cancel_ended)
                        try:
                            outcome, detail = streamer.once(voice, text, timeout_s=timeout_s)
                        except Exception as e:  # a broken channel: a fresh one for the next stream
                            outcome, detail = ERROR, f"{type(e).__name__}: {e}"
                            streamer.close()
                            streamer = None
                    else:
                        outcome, detail = http_once(http_url, voice, text, timeout_s=timeout_s)
                    if outcome != REFUSED:
                        break
                    with lock:
                        result.refused += 1
                    time.sleep(retry_s)  # the voice frees a slot when a cancelled stream notices its cancellation
                with lock:
                    if outcome == SERVED:
                        result.served[(voice, kind)] += 1
                    elif outcome == COMPLETED:
                        result.completed += 1
                    else:
                        result.errors.append(f"{voice} {kind}: {outcome}: {detail}")
                if outcome == ERROR and not gone.is_set() and not_ready(http_url, timeout_s=5) is not None:
                    gone.set()
        finally:
            if streamer is not None:
                streamer.close()

    threads = [threading.Thread(target=worker, args=(v,), name=f"churn-{v}-{i}", daemon=True)
               for v in voices for i in range(limits[v] + limits[v] // 4)]
    watcher = threading.Thread(target=watch, name="churn-watch", daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    result.seconds = time.perf_counter() - t0
    return result


# --- the server's side --------------------------------------------------------------------------------------
def scrape(metrics_url: str) -> dict[str, float]:
    """Every sample on the metrics endpoint, keyed by name and labels as exported."""
    return metric_samples(metrics_url)


def active_key(voice: str) -> str:
    return f'melstream_active_streams{{voice="{voice}"}}'


def outcome_key(voice: str, outcome: str) -> str:
    return f'melstream_streams_total{{outcome="{outcome}",voice="{voice}"}}'


def wait_quiet(metrics_url: str, voices: Sequence[str], *, timeout_s: float = 60.0) -> tuple[float, dict[str, float]]:
    """Seconds until no stream of ``voices`` is active, and the samples then; raises TimeoutError if they stay active."""
    t0 = time.monotonic()
    while True:
        samples = scrape(metrics_url)
        if all(samples.get(active_key(v), 0.0) == 0 for v in voices):
            return time.monotonic() - t0, samples
        if time.monotonic() - t0 > timeout_s:
            busy = {v: samples.get(active_key(v)) for v in voices}
            raise TimeoutError(f"streams still active after {timeout_s:g} s: {busy}")
        time.sleep(0.05)  # polling interval


def outcomes(samples: dict[str, float], voices: Sequence[str]) -> Counter[str]:
    """The server's count of ended streams by outcome, over ``voices``."""
    return Counter({o: int(sum(samples.get(outcome_key(v, o), 0.0) for v in voices)) for o in ("completed", "cancelled", "error", "refused")})


def memory(pgid: int) -> tuple[float, float, int]:
    """(PSS MiB, RSS MiB, processes) summed over the live processes of process group ``pgid`` (the server and its
    stubs), from /proc/<pid>/smaps_rollup."""
    from melstream.serving.server import Memory, group_members, process_memory

    found = [m for m in map(process_memory, group_members(pgid)) if m is not None]  # None: gone meanwhile
    total = sum(found, Memory())
    return total.pss / MIB, total.rss / MIB, len(found)


def pss_by_role(pgid: int) -> dict[str, float]:
    """PSS MiB of tritonserver (``server``), of its voice models' stubs (``voices``) and of its network models' stubs
    (``networks``): where memory grows."""
    from melstream.serving.server import process_memory, stub_processes

    roles = {s.pid: "networks" if wire.is_network_model(s.model) else "voices" for s in stub_processes(pgid)}
    roles[pgid] = "server"
    out = dict.fromkeys(("server", "voices", "networks"), 0.0)
    for pid, role in roles.items():
        got = process_memory(pid)
        if got is not None:  # None: gone meanwhile
            out[role] += got.pss / MIB
    return out


def log_alarms(log_file: Path | None) -> list[str]:
    """The lines of the server's log that say a process crashed or a stub was restarted."""
    if log_file is None or not log_file.exists():
        return []
    return [line for line in log_file.read_text(errors="replace").splitlines() if LOG_ALARMS.search(line)]


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (NaN with fewer than two points)."""
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else float("nan")


# --- rounds -------------------------------------------------------------------------------------------------
@dataclass
class Target:
    """The server a churn runs against: its URLs and (for memory and stubs) the tritonserver pid."""

    grpc_url: str
    http_url: str
    metrics_url: str
    pid: int | None = None
    log_file: Path | None = None


def run_round(target: Target, index: int, *, grpc: int, http: int, voices: Sequence[str], limits: dict[str, int],
              stubs_before: set[int], baseline_pss: float | None, quiet_timeout_s: float = 60.0,
              cancel_ended: bool = False, text: str = TEXT) -> dict[str, Any]:
    """One storm, then the server's state once it is quiet: a row of the table."""
    from melstream.serving.server import not_ready, stub_processes

    try:
        before: Counter[str] | None = outcomes(scrape(target.metrics_url), voices)
    except OSError:  # the server is down already
        before = None
    t0 = time.perf_counter()
    res = storm(target.grpc_url, target.http_url, grpc=grpc, http=http, voices=voices, limits=limits, cancel_ended=cancel_ended,
                log_file=target.log_file, text=text)
    try:
        quiet_s, samples = wait_quiet(target.metrics_url, voices, timeout_s=quiet_timeout_s)
        after = outcomes(samples, voices)
    except (TimeoutError, OSError) as e:
        quiet_s, after = float("nan"), None
        res.errors.append(f"not quiet: {e}")
    seconds = time.perf_counter() - t0
    row: dict[str, Any] = {"round": index, "streams": grpc + http, "served": res.total_served,
                           "served_grpc": sum(n for (_, k), n in res.served.items() if k == "grpc"),
                           "served_http": sum(n for (_, k), n in res.served.items() if k == "http"),
                           "refused": res.refused, "completed": res.completed, "errors": len(res.errors),
                           **{f"server_{o}": float("nan") if after is None or before is None else after[o] - before[o]
                              for o in ("cancelled", "completed", "error", "refused")},
                           "quiet_s": quiet_s, "storm_s": res.seconds, "seconds": seconds, "text_chars": len(text)}
    if target.pid is not None:
        pss, rss, procs = memory(target.pid)
        alive = {s.pid for s in stub_processes(target.pid)}
        row.update(pss_mib=pss, delta_mib=float("nan") if baseline_pss is None else pss - baseline_pss, rss_mib=rss,
                   processes=procs, stubs_alive=len(stubs_before & alive), stubs=len(stubs_before),
                   **{f"pss_{role}_mib": v for role, v in pss_by_role(target.pid).items()})
    else:
        row.update(pss_mib=float("nan"), delta_mib=float("nan"), rss_mib=float("nan"), processes=0, stubs_alive=0, stubs=0,
                   **{f"pss_{role}_mib": float("nan") for role in ("server", "voices", "networks")})
    row["ready"] = not_ready(target.http_url, timeout_s=5) is None
    row["log_alarms"] = len(log_alarms(target.log_file))
    row["first_error"] = res.errors[0] if res.errors else ""
    return row


TABLE = [("round", "round", "{}"), ("served", "served+cancelled", "{}"), ("refused", "refused (retried)", "{}"),
         ("server_cancelled", "server: cancelled", "{}"), ("server_completed", "completed", "{}"), ("server_error", "error", "{}"),
         ("errors", "client errors", "{}"), ("pss_mib", "PSS MiB", "{:.1f}"), ("delta_mib", "Δ MiB", "{:+.1f}"),
         ("pss_server_mib", "of it: server", "{:.1f}"), ("pss_voices_mib", "voice stubs", "{:.1f}"),
         ("pss_networks_mib", "network stubs", "{:.1f}"), ("rss_mib", "RSS MiB", "{:.1f}"), ("stubs_alive", "stubs alive", "{}"),
         ("ready", "ready", "{}"), ("log_alarms", "log alarms", "{}"), ("seconds", "seconds", "{:.1f}")]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in TABLE) + " |", "|" + "---|" * len(TABLE)]
    for r in rows:
        cells = []
        for k, _, fmt in TABLE:
            v = r[k]
            if k == "stubs_alive":
                cells.append(f"{v}/{r['stubs']}")
            else:
                cells.append("–" if isinstance(v, float) and v != v else fmt.format(v))  # NaN -> dash
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, *, warmup: int, fit: tuple[float, float] | None) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4.2))
    xs = [r["round"] for r in rows]
    ax.plot(xs, [r["pss_mib"] for r in rows], "o-", label="PSS (server + stubs)")
    ax.plot(xs, [r["rss_mib"] for r in rows], "s--", alpha=0.5, label="RSS (server + stubs)")
    for role, label in (("voices", "PSS of the voice stubs"), ("networks", "PSS of the network stubs"), ("server", "PSS of tritonserver")):
        ax.plot(xs, [r[f"pss_{role}_mib"] for r in rows], ".-", linewidth=0.8, alpha=0.7, label=label)
    if fit is not None:
        k, b = fit
        fx = [x for x in xs if x > warmup]
        ax.plot(fx, [k * x + b for x in fx], "k:", label=f"fit after warm-up: {k:+.2f} MiB/round")
    ax.axvspan(0.5, warmup + 0.5, color="grey", alpha=0.1, label="warm-up")
    ax.set_xlabel("round (each: streams cancelled after their first chunk)")
    ax.set_ylabel("MiB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def alive(row: dict[str, Any]) -> bool:
    """The server was ready, every stub it started with still ran after this round, and its log shows no crash (a
    tritonserver that crashed can hang half alive in its signal handler, still answering its readiness probe)."""
    return bool(row["ready"]) and row["stubs_alive"] >= row["stubs"] and not row["log_alarms"]


def growth(rows: list[dict[str, Any]], warmup: int) -> tuple[float, float] | None:
    """(slope MiB/round, intercept) of PSS over the rounds after the warm-up; None with fewer than two such rounds."""
    pts = [(r["round"], r["pss_mib"]) for r in rows if r["round"] > warmup and r["pss_mib"] == r["pss_mib"] and alive(r)]
    if len(pts) < 2:
        return None
    k = slope([p[0] for p in pts], [p[1] for p in pts])
    b = sum(p[1] for p in pts) / len(pts) - k * sum(p[0] for p in pts) / len(pts)
    return k, b


def churn(target: Target, *, rounds: int, grpc: int, http: int, voices: Sequence[str] = VOICES,
          on_row: Callable[[dict[str, Any]], None] | None = None, stop_on_death: bool = True,
          cancel_ended: bool = False, text: str = TEXT) -> list[dict[str, Any]]:
    """``rounds`` storms against ``target``, every stream speaking ``text``; a row per round (see :func:`run_round`)."""
    from melstream.serving.server import stub_processes

    limits = {v: admission_limit(target.http_url, v, metrics_url=target.metrics_url) for v in voices}
    stubs_before = {s.pid for s in stub_processes(target.pid)} if target.pid is not None else set()
    baseline = memory(target.pid)[0] if target.pid is not None else None
    alarms = len(log_alarms(target.log_file))
    rows: list[dict[str, Any]] = []
    for i in range(1, rounds + 1):
        row = run_round(target, i, grpc=grpc, http=http, voices=voices, limits=limits, stubs_before=stubs_before,
                        baseline_pss=rows[-1]["pss_mib"] if rows else baseline, cancel_ended=cancel_ended, text=text)
        row["baseline_pss_mib"] = baseline
        row["log_alarms"] -= alarms  # the crashes in its log since the churn began
        rows.append(row)
        if on_row is not None:
            on_row(row)
        if stop_on_death and not alive(row):
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--grpc", type=int, default=500, help="gRPC streams per round")
    ap.add_argument("--http", type=int, default=200, help="HTTP streams per round")
    ap.add_argument("--warmup", type=int, default=2, help="rounds left out of the growth fit")
    ap.add_argument("--max-growth-mib", type=float, default=16.0, help="PSS growth per round after the warm-up that fails")
    ap.add_argument("--url", default=None, help="gRPC HOST:PORT of a running server (default: start one)")
    ap.add_argument("--http-url", default=None, help="its HTTP HOST:PORT (default: the gRPC host, port 8000)")
    ap.add_argument("--metrics-url", default=None, help="its metrics HOST:PORT (default: the gRPC host, port 8002)")
    ap.add_argument("--pid", type=int, default=None, help="its tritonserver pid (process group), for memory and stubs")
    ap.add_argument("--log", type=Path, default=None, help="its log file, watched for crashes")
    ap.add_argument("--cancel-ended", action="store_true", help="cancel a gRPC stream also when its request has already "
                    "ended (refused as busy), as many clients do: shows Triton 2.51's leak of such streams")
    ap.add_argument("--repo", type=Path, default=REPO, help="repository of the server it starts")
    ap.add_argument("--long", action="store_true", help=f"every stream speaks a long text (held-out sentences, at least "
                    f"{LONG_WORDS} words, minutes of speech) instead of one long sentence: cancellation with most of a "
                    "long text still to speak")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.grpc < 0 or args.http < 0:
        ap.error("--rounds must be >= 1 and --grpc/--http >= 0")
    text = long_text() if args.long else TEXT
    described = (f"a long text ({len(text.split())} words, {len(text)} characters)" if args.long
                 else f"one sentence ({len(text)} characters)")

    from melstream.serving.server import TritonServer

    args.out.mkdir(parents=True, exist_ok=True)
    host = host_line()
    print(f"{host}\nchurn: {args.rounds} rounds of {args.grpc} gRPC + {args.http} HTTP streams of {described}, each cancelled "
          "after its first chunk", flush=True)
    with ExitStack() as stack:
        if args.url is None:
            server = TritonServer.on_free_ports(args.repo, log_file=args.out / "tritonserver.log")
            stack.callback(lambda: print(f"server stop: {server.stop().describe()}", flush=True))
            server.start(timeout_s=180)
            target = Target(server.grpc_url, server.http_url, f"localhost:{server.metrics_port}", server.pid, server.log_file)
        else:
            host = args.url.rpartition(":")[0]
            target = Target(args.url, args.http_url or f"{host}:8000", args.metrics_url or f"{host}:8002", args.pid, args.log)

        def show(r: dict[str, Any]) -> None:
            print(f"  round {r['round']}: {r['served']} served+cancelled ({r['served_grpc']} gRPC, {r['served_http']} HTTP), "
                  f"{r['refused']} refusals, server cancelled {r['server_cancelled']} completed {r['server_completed']} "
                  f"error {r['server_error']}; PSS {r['pss_mib']:.1f} MiB ({r['delta_mib']:+.1f}), RSS {r['rss_mib']:.1f} MiB, "
                  f"stubs {r['stubs_alive']}/{r['stubs']}, ready {r['ready']}, log alarms {r['log_alarms']}, {r['seconds']:.1f} s"
                  + (f"; first error: {r['first_error']}" if r["first_error"] else ""), flush=True)

        rows = churn(target, rounds=args.rounds, grpc=args.grpc, http=args.http, on_row=show, cancel_ended=args.cancel_ended,
                     text=text)
        alarms = log_alarms(target.log_file)

    fit = growth(rows, args.warmup)
    table = markdown(rows)
    baseline = rows[0].get("baseline_pss_mib")
    head = (f"churn: rounds of {args.grpc} gRPC + {args.http} HTTP streams of {described} cancelled after their first chunk; "
            f"PSS/RSS of tritonserver + its stubs once quiet" + (f" (before round 1: {baseline:.1f} MiB PSS)" if baseline else ""))
    dead = [r["round"] for r in rows if not alive(r)]
    if fit is None:
        verdict = f"VERDICT: no growth figure (need at least 2 rounds after the {args.warmup} warm-up rounds)"
        failed = False
    else:
        failed = not fit[0] < args.max_growth_mib
        fitted = [r["round"] for r in rows if r["round"] > args.warmup and alive(r)]
        verdict = (f"VERDICT: {'FAIL' if failed else 'PASS'}: PSS grows {fit[0]:+.2f} MiB per round over rounds "
                   f"{fitted[0]}..{fitted[-1]} (limit {args.max_growth_mib:g} MiB)")
    if dead:
        verdict += f"; FAIL: server or stub dead after round(s) {', '.join(map(str, dead))}"
    if alarms:
        verdict += f"; {len(alarms)} alarming line(s) in the server log ({target.log_file}):\n    " + "\n    ".join(alarms[:10])
    print(f"\n{host}\n{head}\n{table}\n{verdict}")
    with open(args.out / "churn.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (args.out / "churn.md").write_text(f"{host}\n\n{head}\n\n{table}\n\n{verdict}\n")
    wrote = ["churn.csv", "churn.md"] + (["churn.png"] if plot(rows, args.out / "churn.png", warmup=args.warmup, fit=fit) else [])
    print(f"wrote {', '.join(str(args.out / w) for w in wrote)}" + ("" if "churn.png" in wrote else " (no matplotlib: no plot)"))
    return 1 if failed or dead else 0


if __name__ == "__main__":
    raise SystemExit(main())
