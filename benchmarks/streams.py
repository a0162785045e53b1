"""The streaming performance contract: first chunk latency, gaps, RTF/RTFX and stalls as parallel streams grow.

    python benchmarks/streams.py [--url HOST:PORT] [--profiles cpu,cpu-static] [--streams 1,2,4,8,16,32,48,64]
                                 [--texts short,long] [--long-streams 4] [--long-sentences 12]
                                 [--transport grpc|http] [--peer] [--no-limit] [--seconds-per-level 10] [--out out/bench]

Without --url it starts its own tritonserver on free ports, from a repository built from addons/ that admits
the largest level's streams per voice (the committed repository refuses streams past each voice's
admission limit; this measures capacity, so it goes past it: the number is an upper bound, and a voice whose own
measured capacity is full still refuses a new stream as busy).  With --profiles it does so for each
deployment profile in turn (melstream.serving.repo.PROFILES: a repository per profile under --out, a server
on it for every level, stopped before the next profile), so profiles compare side by side in one table;
with --url or --repo there is one profile, the server's, named by --profiles for the table.  For every voice
and every number of parallel streams N, N client threads each synthesise held-out sentences back to
back (a closed loop, no think time) for --seconds-per-level, every utterance streamed over gRPC
(melstream.client.Client), or over Triton's HTTP generate_stream with --transport http (HttpClient), with
the voice's own chunk size.  The same texts are then asked for whole (CHUNK_FRAMES=0, the naive
integration: the first audio is the whole utterance).  With ``--texts short,long`` (or ``long``) the levels of
--long-streams (default: --streams) are also run with long texts, mode ``stream-long``: each text is
--long-sentences (12) consecutive held-out sentences, about a minute of speech (streamed only: the naive call of
a minute of speech says nothing new).

A stream refused as busy (``ServerBusyError``: the voice is at its capacity) is not an error: its client counts it
(column ``refused``: attempts refused), waits :data:`REFUSED_PAUSE_S` (with jitter) and sends the same text again,
as a real client's backoff does.  Column ``admits``: the streams the voice admitted at once at the level's end (its
``melstream_admitted_streams`` gauge, read with the mean batches; a dash where the server has none).  Every other
figure is over the admitted utterances only (a level whose every attempt was refused has none: its figures are
dashes).  Terms (melstream/timing.py):

- first chunk: request sent -> first chunk received;  gap: between consecutive chunks;
- RTF: wall seconds per second of speech, per utterance;  RTFX: seconds of speech produced by all
  streams per wall second (the throughput);
- stall: a chunk that arrives after the audio received so far has finished playing;
- mean batch: per network model, the batch Triton's dynamic batcher formed on average during the level,
  from its Prometheus metrics (the metrics port) read before and after it: requests (batch items,
  ``nv_inference_count``) per execution (``nv_inference_exec_count``).  With --url the metrics are read
  from --metrics-url (default: port 8002 of --url's host); when they cannot be read the figures are left out.

With --peer the same run also measures benchmarks/peer_fastapi.py (the same addons and blocks in a FastAPI app,
one uvicorn process, each request's generator in its threadpool, no batching across requests: what many TTS
projects ship), started on a free port and measured by the same HTTP client; its rows are profile
``peer-fastapi``, next to the profiles' rows.  With --peer the profiles are measured over HTTP too (the same
client for both) unless --transport says otherwise.

The limit (left out with --no-limit): before anything is served, each voice of addons/ is built in-process
(OnnxRuntimeRunner, one thread) and timed: the compute of one first chunk alone (``stream_outputs(text)`` to
its first chunk, median over the first LIMIT_SENTENCES held-out sentences), and, for each network, one call at
batch 1 and at batch 32 with the inputs of a typical call (recorded while the held-out sentence of median token
count is synthesised: the call of median size on the network's variable axis; tacovoice's decoder_step: one
step with that sentence's memory).  From the calls that sentence made, the compute of one utterance per
stream at batch 32 gives a compute RTFX bound (one thread).  They are printed next to the served first chunk
p50 at one stream and RTFX at 32 streams, so the table shows how far serving is from the compute.

Prints the host it ran on (:func:`host_facts`: CPU model, CPUs, memory, date; figures from different hosts compare
as ratios only), the tables, and writes streams.csv (every figure), limit.csv (the limit's figures), streams.md
(the host, both tables) and streams.png under --out.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import math
import os
import platform
import random
import re
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: benchmarks.peer_fastapi is imported from the repository root
    sys.path.insert(0, str(ROOT))

from melstream.runners.onnx import OnnxRuntimeRunner  # noqa: E402
from melstream.timing import PERCENTILES, StreamTiming, stream_timing, summary  # noqa: E402
from melstream_client.errors import ServerBusyError  # noqa: E402
from melstream_client.wire import NETWORK_SEPARATOR  # noqa: E402

SENTENCES = ROOT / "tests" / "data" / "heldout_sentences.txt"
#: the modes of a level: streamed short texts, the same asked for whole, streamed long texts
STREAM, NAIVE, STREAM_LONG = "stream", "naive", "stream-long"
MODES = (STREAM, NAIVE, STREAM_LONG)
#: the text kinds --texts names, and the modes each is measured in
TEXT_MODES = {"short": (STREAM, NAIVE), "long": (STREAM_LONG,)}
#: held-out sentences per long text (consecutive): about a minute of speech
LONG_SENTENCES = 12
#: a client refused as busy sends the same text again after this pause times a factor from 1 - REFUSED_JITTER to
#: 1 + REFUSED_JITTER (a real client's backoff: short, and spread so refused clients do not come back together)
REFUSED_PAUSE_S, REFUSED_JITTER = 0.2, 0.5
#: Triton's counters of batch items (requests) and of batch executions, per model and version
INFERENCE_COUNT, EXEC_COUNT = "nv_inference_count", "nv_inference_exec_count"
#: the voice's gauge of the streams it admits at once now (what the host keeps in real time, at most its max_streams);
#: a server without it gives no figure
ADMITTED = "melstream_admitted_streams"
BATCH_PREFIX = "batch "  # CSV column of a network model's mean batch: "batch fastvoice__decoder"
TRANSPORTS = ("grpc", "http")
DEFAULT_STREAMS = "1,2,4,8,16,32,48,64"
#: the profile name of benchmarks/peer_fastapi.py's rows
PEER_PROFILE = "peer-fastapi"
#: held-out sentences whose first chunk the limit times (and among which it takes the median sentence)
LIMIT_SENTENCES = 10
#: the batch of the limit's batched step, and the stream levels its served counterparts are read at
LIMIT_BATCH = 32
LIMIT_FIRST_STREAMS = 1


@dataclass(frozen=True)
class Level:
    voice: str
    mode: str
    streams: int
    wall_s: float
    timings: tuple[StreamTiming, ...]
    errors: tuple[str, ...]
    #: network model -> mean batch Triton formed during the level (models that ran no batch are absent)
    mean_batch: Mapping[str, float] = field(default_factory=dict)
    #: attempts refused as busy (each tried again after a pause): not errors
    refused: int = 0
    #: the streams the voice admitted at once at the level's end (its :data:`ADMITTED` gauge; NaN: not read)
    admits: float = float("nan")


def host_facts() -> dict[str, str]:
    """The machine a table was taken on: ``cpu`` (model name from /proc/cpuinfo), ``cpus`` (``os.cpu_count()``),
    ``usable_cpus`` (this process's affinity; with ``cpu_quota`` when a cgroup limits it), ``memory`` (MemTotal),
    ``system`` (kernel) and ``date`` (UTC).  What cannot be read is ``"?"``."""
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    cpu = next((line.split(":", 1)[1].strip() for line in read("/proc/cpuinfo").splitlines()
                if line.split(":", 1)[0].strip() in ("model name", "Hardware", "cpu model") and ":" in line), "")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # a cgroup's CPU limit: v2 "quota period" (or "max"), v1 quota and period in two files (-1: none)
    quota = read("/sys/fs/cgroup/cpu.max").split() or [read(f"/sys/fs/cgroup/cpu/cpu.cfs_{k}_us").strip() for k in ("quota", "period")]
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", read("/proc/meminfo"), re.M)
    facts = {"cpu": cpu or platform.processor() or "?", "cpus": str(os.cpu_count() or "?"), "usable_cpus": str(usable or "?"),
             "memory": f"{int(m.group(1)) / 1024 ** 2:.1f} GiB" if m else "?",
             "system": f"{platform.system()} {platform.release()}".strip() or "?",
             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with suppress(ValueError, ZeroDivisionError):  # no limit ("max", -1) or nothing to read: no quota
        if len(quota) == 2 and int(quota[0]) > 0:
            facts["cpu_quota"] = f"{int(quota[0]) / int(quota[1]):g} CPUs"
    return facts


def host_line(facts: Mapping[str, str] | None = None) -> str:
    """One line naming the machine (:func:`host_facts`), for the head of a printed or saved table."""
    f = facts if facts is not None else host_facts()
    quota = f" (cgroup quota {f['cpu_quota']})" if "cpu_quota" in f else ""
    return (f"host: {f['cpu']}, {f['cpus']} CPUs, {f['usable_cpus']} usable{quota}, {f['memory']} memory, "
            f"{f['system']}; {f['date']}")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_ESCAPE = re.compile(r"\\(.)")


def _labels(text: str) -> dict[str, str]:
    labels, pos = {}, 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if m is None:
            break  # not exposition format past here: keep what was read
        labels[m.group(1)] = _ESCAPE.sub(lambda e: "\n" if e.group(1) == "n" else e.group(1), m.group(2))
        pos = m.end()
    return labels


def model_counters(text: str, metric: str, *, label: str = "model") -> dict[str, float]:
    """``metric``'s value per ``label`` (``model``) in Prometheus exposition ``text``, summed over versions (and any
    other label); comments, other metrics and samples with no such label are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1) != metric:
            continue
        model = _labels(m.group(2) or "").get(label)
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if model is not None and not math.isnan(value):
            out[model] = out.get(model, 0.0) + value
    return out


def mean_batches(before: str, after: str) -> dict[str, float]:
    """Per network model (``voice__network``), the mean batch Triton formed between two metrics texts:
    Δ``nv_inference_count`` (batch items) / Δ``nv_inference_exec_count`` (executions).  A model that ran no
    execution in between has no figure; voice models (no ``__``) are left out."""
    i0, i1 = model_counters(before, INFERENCE_COUNT), model_counters(after, INFERENCE_COUNT)
    e0, e1 = model_counters(before, EXEC_COUNT), model_counters(after, EXEC_COUNT)
    out = {}
    for model in sorted(e1):
        executions = e1[model] - e0.get(model, 0.0)
        if NETWORK_SEPARATOR in model and executions > 0:
            out[model] = (i1.get(model, 0.0) - i0.get(model, 0.0)) / executions
    return out


def batch_cell(row: Mapping[str, Any]) -> str:
    """The markdown cell of a row's mean batches: ``decoder 2.3, encoder 1.0`` (network names without the voice, in
    alphabetical order)."""
    parts = [f"{k[len(BATCH_PREFIX):].split(NETWORK_SEPARATOR, 1)[1]} {v:.1f}" for k, v in sorted(row.items())
             if k.startswith(BATCH_PREFIX) and isinstance(v, float) and v == v]
    return ", ".join(parts) or "–"


def texts() -> list[str]:
    lines = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"no sentences in {SENTENCES}")
    return lines


def long_texts(pool: list[str], sentences: int = LONG_SENTENCES) -> list[str]:
    """One long text per sentence of ``pool``: ``sentences`` consecutive sentences from it on (wrapping round), so
    the streams of a long level walk different texts as the short levels do."""
    if sentences < 1 or not pool:
        raise ValueError(f"a long text needs sentences >= 1 from a pool of sentences, got {sentences} from {len(pool)}")
    return [" ".join(pool[(i + j) % len(pool)] for j in range(sentences)) for i in range(len(pool))]


def one_utterance(client: Any, text: str, voice: str, *, chunk_frames: int | None, frame_s: float) -> StreamTiming:
    arrivals, frames = [], []
    t0 = time.perf_counter()
    for mel in client.stream(text, voice=voice, chunk_frames=chunk_frames, timeout_s=600):
        arrivals.append(time.perf_counter() - t0)
        frames.append(len(mel))
    return stream_timing(arrivals, frames, total_s=time.perf_counter() - t0, frame_s=frame_s)


@dataclass
class Tally:
    """What a level's streams saw, shared by their threads (under ``lock``)."""

    timings: list[StreamTiming] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def stream_loop(client: Any, voice: str, pool: list[str], k: int, streams: int, *, chunk_frames: int | None,
                frame_s: float, seconds: float, tally: Tally, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.perf_counter) -> None:
    """Stream ``k`` of ``streams``: texts ``k``, ``k + streams``, ... of ``pool`` back to back until ``seconds`` have
    passed (at least one attempt).  An utterance goes to ``tally.timings``; a refusal as busy (``ServerBusyError``)
    to ``tally.refused``, and the same text is sent again after :data:`REFUSED_PAUSE_S` (with jitter) unless the
    pause would end past the deadline; anything else to ``tally.errors``.  ``sleep`` and ``clock`` (the deadline's)
    are the real ones but for tests."""
    rng = random.Random(k)  # the same pauses run after run
    deadline = clock() + seconds
    i = k
    while True:
        text = pool[i % len(pool)]
        try:
            t = one_utterance(client, text, voice, chunk_frames=chunk_frames, frame_s=frame_s)
        except ServerBusyError:  # the voice is at its capacity: a client's backoff, not an error
            with tally.lock:
                tally.refused += 1
            pause = REFUSED_PAUSE_S * rng.uniform(1 - REFUSED_JITTER, 1 + REFUSED_JITTER)
            if clock() + pause >= deadline:
                return
            sleep(pause)
            continue  # the same text again
        except Exception as e:  # counted and shown, never hidden: a benchmark with errors is not a figure
            with tally.lock:
                tally.errors.append(f"{type(e).__name__}: {e}")
        else:
            with tally.lock:
                tally.timings.append(t)
        i += streams  # streams walk the sentences in step, so each level covers the same texts
        if clock() >= deadline:
            return


def run_level(client: Any, voice: str, mode: str, streams: int, *, seconds: float, frame_s: float, pool: list[str]) -> Level:
    """``streams`` threads (:func:`stream_loop`), each synthesising texts of ``pool`` back to back until ``seconds``
    have passed (at least one attempt each)."""
    chunk_frames = 0 if mode == NAIVE else None
    tally = Tally()
    start = threading.Barrier(streams)

    def worker(k: int) -> None:
        start.wait()  # every stream starts together, so the first utterances really overlap
        stream_loop(client, voice, pool, k, streams, chunk_frames=chunk_frames, frame_s=frame_s, seconds=seconds, tally=tally)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=streams) as ex:
        list(ex.map(worker, range(streams)))
    return Level(voice, mode, streams, time.perf_counter() - t0, tuple(tally.timings), tuple(tally.errors),
                 refused=tally.refused)


def row(level: Level, profile: str = "cpu", transport: str = "grpc") -> dict[str, Any]:
    ts = level.timings
    r: dict[str, Any] = {"profile": profile, "transport": transport, "voice": level.voice, "mode": level.mode, "streams": level.streams,
                         "utterances": len(ts), "refused": level.refused, "admits": level.admits, "errors": len(level.errors),
                         "wall_s": level.wall_s}
    for name, values in (("first_chunk", [t.first_chunk_s for t in ts]), ("gap", [g for t in ts for g in t.gaps_s])):
        for k, v in summary(values).items():
            r[f"{name}_{k}_ms"] = 1e3 * v
    rtf = summary([t.rtf for t in ts])
    r["rtf_mean"], r["rtf_p95"] = rtf["mean"], rtf["p95"]
    audio_s = sum(t.audio_s for t in ts)
    r["audio_s"] = audio_s
    r["rtfx"] = audio_s / level.wall_s
    # over the admitted (completed) utterances only; none admitted: no figure (NaN), not 0 %
    n = len(ts) or float("nan")
    r["stalled_pct"] = 100.0 * sum(t.stalls > 0 for t in ts) / n
    r["stalls_per_utt"] = sum(t.stalls for t in ts) / n
    r["stall_s_per_utt"] = sum(t.stall_s for t in ts) / n
    for model, batch in sorted(level.mean_batch.items()):
        r[BATCH_PREFIX + model] = batch
    return r


TABLE = [("profile", "profile", "{}"), ("voice", "voice", "{}"), ("mode", "mode", "{}"), ("streams", "N", "{}"),
         ("utterances", "utts", "{}"), ("refused", "refused", "{}"), ("admits", "admits", "{:.0f}"),
         ("first_chunk_mean_ms", "first mean", "{:.0f}"), ("first_chunk_p50_ms", "first p50", "{:.0f}"),
         ("first_chunk_p90_ms", "p90", "{:.0f}"), ("first_chunk_p95_ms", "p95", "{:.0f}"), ("first_chunk_p99_ms", "p99", "{:.0f}"),
         ("gap_mean_ms", "gap mean", "{:.1f}"), ("gap_p50_ms", "gap p50", "{:.1f}"), ("gap_p90_ms", "p90", "{:.1f}"),
         ("gap_p95_ms", "p95", "{:.1f}"), ("gap_p99_ms", "p99", "{:.1f}"), ("rtf_mean", "RTF", "{:.3f}"), ("rtfx", "RTFX", "{:.1f}"),
         ("stalled_pct", "stalled %", "{:.0f}"), ("stall_s_per_utt", "silence s/utt", "{:.2f}"), ("errors", "errors", "{}")]
MEAN_BATCH_HEADER = "mean batch"


def side_by_side(rows: list[dict[str, Any]], profiles: list[str]) -> list[dict[str, Any]]:
    """The rows ordered by voice (as first met), mode, streams and then profile (as given): each level's
    profiles next to each other."""
    voices = list(dict.fromkeys(r["voice"] for r in rows))
    order = {p: i for i, p in enumerate(profiles)}
    return sorted(rows, key=lambda r: (voices.index(r["voice"]), MODES.index(r["mode"]) if r["mode"] in MODES else len(MODES),
                                       r["streams"], order.get(r["profile"], len(order))))


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join([h for _, h, _ in TABLE] + [MEAN_BATCH_HEADER]) + " |", "|" + "---|" * (len(TABLE) + 1)]
    for r in rows:
        cells = ["–" if r[k] != r[k] else fmt.format(r[k]) for k, _, fmt in TABLE]  # NaN -> dash
        lines.append("| " + " | ".join([*cells, batch_cell(r)]) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Every figure; a network model's mean batch is blank on the rows of levels where it ran no batch."""
    fields = list(dict.fromkeys(k for r in rows for k in r if not k.startswith(BATCH_PREFIX)))
    fields += sorted({k for r in rows for k in r if k.startswith(BATCH_PREFIX)})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    for profile in profiles:
        tag = f" {profile}" if len(profiles) > 1 else ""  # one line per profile when there are several
        for voice in sorted({r["voice"] for r in rows}):
            for mode, style in zip(MODES, ("o-", "s--", "^:"), strict=True):
                rs = [r for r in rows if r["profile"] == profile and r["voice"] == voice and r["mode"] == mode]
                if not rs:
                    continue
                n = [r["streams"] for r in rs]
                line, = axes[0].plot(n, [r["first_chunk_p50_ms"] for r in rs], style, label=f"{voice}{tag} {mode} p50")
                axes[0].plot(n, [r["first_chunk_p95_ms"] for r in rs], style, alpha=0.4, color=line.get_color(),
                             label=f"{voice}{tag} {mode} p95")
                axes[1].plot(n, [r["rtfx"] for r in rs], style, label=f"{voice}{tag} {mode}")
                if mode != NAIVE:
                    axes[2].plot(n, [r["stalled_pct"] for r in rs], style, label=f"{voice}{tag} {mode}")
    from matplotlib.ticker import ScalarFormatter

    levels = sorted({r["streams"] for r in rows})
    for ax, ylabel, log in ((axes[0], "first chunk latency (ms)", True), (axes[1], "RTFX (s of speech per wall s)", True),
                            (axes[2], "utterances with a stall (%)", False)):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(-2, 102)
        ax.set_xlabel("parallel streams")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# --- the limit: what the compute alone allows --------------------------------------------------------------

class RecordingRunner(OnnxRuntimeRunner):
    """ONNX Runtime in this process, one thread per call (as the benchmark's served voices run), that notes, while
    ``recording``, every call each network gets: its size on the variable axis (0 for a network with none) and
    the inputs of the first call of each size (each ``[1, ...]``, the length input included).  ``calls`` keeps
    each network's bare call, for timing it alone."""

    def __init__(self) -> None:
        super().__init__(threads=1)
        self.recording = False
        self.sizes: dict[str, list[int]] = {}
        self.samples: dict[str, dict[int, dict[str, np.ndarray]]] = {}
        self.calls: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {}

    def call_for(self, addon: Any, spec: Any) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
        from melstream.runners.fixed import size_of, variable_axis

        call = super().call_for(addon, spec)
        self.calls[spec.name] = call
        variable = any(variable_axis(t) is not None for t in spec.inputs)
        length = spec.length.name if spec.length is not None else None

        def recorded(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if self.recording:
                n = size_of(spec, {k: v for k, v in inputs.items() if k != length}) if variable else 0
                self.sizes.setdefault(spec.name, []).append(n)
                self.samples.setdefault(spec.name, {}).setdefault(n, {k: np.array(v, copy=True) for k, v in inputs.items()})
            return call(inputs)

        return recorded


@dataclass(frozen=True)
class NetworkLimit:
    """One network's calls while the median sentence is synthesised, and one typical call (the one of median size)
    timed alone at batch 1 and at batch :data:`LIMIT_BATCH` (its ``[1, ...]`` inputs repeated on the batch axis)."""

    network: str
    calls: int  # calls the median sentence made to it
    size: int  # the typical call's size on the variable axis (0: the network has none)
    batch1_ms: float  # median of one call at batch 1
    batched_ms: float  # median of one call at batch LIMIT_BATCH


@dataclass(frozen=True)
class VoiceLimit:
    """A voice's compute in this process, one thread: the first chunk alone (median over ``sentences`` held-out
    sentences) and its networks' batched step (:class:`NetworkLimit`); ``tokens`` and ``audio_s`` are the median
    sentence's (by token count)."""

    voice: str
    first_chunk_ms: float
    sentences: int
    tokens: int
    audio_s: float
    networks: tuple[NetworkLimit, ...]
    batch: int = LIMIT_BATCH

    @property
    def batched_rtfx(self) -> float:
        """Seconds of speech per second of compute when every call of the median sentence runs in a batch of
        ``batch`` streams (each call timed at its network's typical size): audio / Σ calls × batched time / batch."""
        compute_s = sum(n.calls * n.batched_ms / 1e3 / self.batch for n in self.networks)
        return self.audio_s / compute_s if compute_s > 0 else float("nan")


def _median_ms(fn: Callable[[], object], *, runs: int, budget_s: float = 2.0) -> float:
    """Median milliseconds of ``fn()`` over ``runs`` calls (fewer if ``budget_s`` runs out, at least one), after
    one call not counted (ONNX Runtime allocates for a new shape on its first run)."""
    fn()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(times) < runs and (not times or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def voice_limit(addon_path: Path, pool: list[str], *, sentences: int = LIMIT_SENTENCES, batch: int = LIMIT_BATCH,
                runs: int = 20) -> VoiceLimit:
    """The limit of the addon at ``addon_path`` (see :class:`VoiceLimit`), from the first ``sentences`` of ``pool``."""
    from melstream.addon import load_addon

    addon = load_addon(addon_path)
    runner = RecordingRunner()
    pipeline = addon.build(runner)
    held_out = pool[:sentences]
    pipeline.synthesize(held_out[0])  # warm-up, not measured: every session's first run, the front end's data
    first = []
    for text in held_out:
        t0 = time.perf_counter()
        chunks = pipeline.stream_outputs(text)
        next(chunks)
        first.append(time.perf_counter() - t0)
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stop the utterance's work: only its first chunk is timed
    tokens = {text: int(np.asarray(pipeline.inputs_for(text)["tokens"]).size) for text in held_out}
    median_text = sorted(held_out, key=lambda t: tokens[t])[len(held_out) // 2]
    runner.recording = True
    try:
        mel = pipeline.synthesize(median_text)
    finally:
        runner.recording = False
    networks = []
    for name, sizes in runner.sizes.items():
        size = sorted(sizes)[len(sizes) // 2]
        one = runner.samples[name][size]
        many = {k: np.ascontiguousarray(np.repeat(v, batch, axis=0)) for k, v in one.items()}
        call = runner.calls[name]
        networks.append(NetworkLimit(name, len(sizes), size, _median_ms(functools.partial(call, one), runs=runs),
                                     _median_ms(functools.partial(call, many), runs=max(runs // 2, 1))))
    return VoiceLimit(addon.name, 1e3 * statistics.median(first), len(held_out), tokens[median_text],
                      len(mel) * addon.audio.hop_length / addon.audio.sample_rate, tuple(networks), batch)


def limits(voices: list[str] | None, *, addons: Path = ROOT / "addons", sentences: int = LIMIT_SENTENCES) -> list[VoiceLimit]:
    """:func:`voice_limit` of each addon under ``addons`` (those named in ``voices``, or all), in order."""
    from melstream_client.spec import discover_addons, read_addon_spec

    pool = texts()
    out = []
    for path in discover_addons(addons):
        if voices is not None and read_addon_spec(path, check_files=False).name not in voices:
            continue
        limit = voice_limit(path, pool, sentences=sentences)
        print(f"  limit {limit.voice}: first chunk {limit.first_chunk_ms:.1f} ms, " + ", ".join(
            f"{n.network} {n.batch1_ms:.2f} / {n.batched_ms:.2f} ms at batch 1 / {limit.batch}" for n in limit.networks), flush=True)
        out.append(limit)
    return out


def limit_rows(voice_limits: list[VoiceLimit]) -> list[dict[str, Any]]:
    """limit.csv: one row per network, its voice's figures repeated on each."""
    return [{"voice": v.voice, "first_chunk_p50_ms": v.first_chunk_ms, "sentences": v.sentences, "median_tokens": v.tokens,
             "median_audio_s": v.audio_s, "batch": v.batch, "batched_rtfx": v.batched_rtfx, "network": n.network,
             "calls_per_utt": n.calls, "size": n.size, "batch1_ms": n.batch1_ms, "batched_ms": n.batched_ms,
             "per_row_ms": n.batched_ms / v.batch} for v in voice_limits for n in v.networks]


def _served(rows: list[dict[str, Any]], voice: str, profile: str, streams: int, key: str) -> float:
    for r in rows:
        if (r["voice"], r["profile"], r["mode"], r["streams"]) == (voice, profile, STREAM, streams):
            return float(r[key])
    return float("nan")


def limit_markdown(voice_limits: list[VoiceLimit], rows: list[dict[str, Any]], profiles: list[str], streams: list[int]) -> str:
    """The limit next to the served figures: per voice, the compute's first chunk and batched RTFX bound, then each
    profile's first chunk p50 at one stream and RTFX at :data:`LIMIT_BATCH` streams (the nearest levels measured
    when those are not); then each network's batched step."""
    n_first = LIMIT_FIRST_STREAMS if LIMIT_FIRST_STREAMS in streams else min(streams)
    n_rtfx = LIMIT_BATCH if LIMIT_BATCH in streams else max(streams)
    lines = [f"| voice | source | first chunk p50 ms (N={n_first}) | RTFX (N={n_rtfx}) |", "|---|---|---|---|"]
    cell = lambda x, fmt: "–" if x != x else fmt.format(x)  # noqa: E731 - NaN -> dash
    for v in voice_limits:
        lines.append(f"| {v.voice} | compute: first chunk alone; batch-{v.batch} step bound, 1 thread | "
                     f"{v.first_chunk_ms:.1f} | {cell(v.batched_rtfx, '{:.0f}')} |")
        for p in profiles:
            first, rtfx = _served(rows, v.voice, p, n_first, "first_chunk_p50_ms"), _served(rows, v.voice, p, n_rtfx, "rtfx")
            if first == first or rtfx == rtfx:
                lines.append(f"| {v.voice} | served: {p} | {cell(first, '{:.1f}')} | {cell(rtfx, '{:.1f}')} |")
    lines += ["", f"| voice | network | calls/utt | size | batch 1 ms | batch {LIMIT_BATCH} ms | per row at {LIMIT_BATCH} ms |",
              "|---|---|---|---|---|---|---|"]
    for v in voice_limits:
        for n in v.networks:
            lines.append(f"| {v.voice} | {n.network} | {n.calls} | {n.size or 'fixed'} | {n.batch1_ms:.3f} | "
                         f"{n.batched_ms:.3f} | {n.batched_ms / v.batch:.4f} |")
    return "\n".join(lines)


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        w.writeheader()
        w.writerows(rows)


def metrics_reader(url: str) -> Callable[[], str | None]:
    """A function that reads Triton's Prometheus metrics at ``url``: the text, or None (with a note, once) when
    they cannot be read, so a benchmark against a server with no reachable metrics still runs."""
    failed: list[str] = []

    def read() -> str | None:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.read().decode()
        except OSError as e:
            if not failed:
                print(f"  cannot read Triton's metrics at {url} ({e}): no mean batch figures", flush=True)
            failed.append(str(e))
            return None

    return read


def level_plan(kinds: list[str], streams: list[int], long_streams: list[int] | None = None) -> list[tuple[str, list[int]]]:
    """The modes measured for the text ``kinds`` (``short``: stream and naive; ``long``: stream-long), in
    :data:`MODES` order, each with its levels: ``long_streams`` for long texts when given, else ``streams``."""
    unknown = [k for k in kinds if k not in TEXT_MODES]
    if unknown or not kinds:
        raise ValueError(f"text kinds must be some of {', '.join(TEXT_MODES)}, got {kinds}")
    modes = {m for k in kinds for m in TEXT_MODES[k]}
    return [(m, list(long_streams or streams) if m == STREAM_LONG else list(streams)) for m in MODES if m in modes]


def levels(client: Any, voices: list[str], plan: list[tuple[str, list[int]]], *, seconds: float,
           metrics: Callable[[], str | None] | None = None, long_sentences: int = LONG_SENTENCES) -> Iterator[Level]:
    """Every level of ``plan`` (:func:`level_plan`) for each voice in turn, after a warm-up not measured."""
    pool = texts()
    pools = {STREAM: pool, NAIVE: pool, STREAM_LONG: long_texts(pool, long_sentences)}
    for voice in voices:
        audio = client.spec(voice).audio
        frame_s = audio.hop_length / audio.sample_rate
        # warm-up: gRPC channels, every network instance, the front end; a second of two streams, not measured
        run_level(client, voice, STREAM, 2, seconds=min(seconds, 1.0), frame_s=frame_s, pool=pool)
        for mode, streams in plan:
            for n in streams:
                before = metrics() if metrics else None
                level = run_level(client, voice, mode, n, seconds=seconds, frame_s=frame_s, pool=pools[mode])
                after = metrics() if metrics and before is not None else None
                if before is not None and after is not None:
                    level = dataclasses.replace(level, mean_batch=mean_batches(before, after),
                                                admits=model_counters(after, ADMITTED, label="voice").get(voice, float("nan")))
                batches = ", ".join(f"{k} {v:.2f}" for k, v in level.mean_batch.items())
                print(f"  {voice} {mode} N={n}: {len(level.timings)} utterances in {level.wall_s:.1f} s"
                      + (f", {level.refused} refused as busy (retried)" if level.refused else "")
                      + (f", admits {level.admits:.0f}" if level.admits == level.admits else "")
                      + (f", mean batch {batches}" if batches else "")
                      + (f", {len(level.errors)} errors, first: {level.errors[0]}" if level.errors else ""), flush=True)
                yield level


def default_metrics_url(grpc_url: str) -> str:
    """Triton's default metrics endpoint on the host of ``grpc_url`` (HOST:PORT)."""
    host = grpc_url.split("://", 1)[-1].rsplit(":", 1)[0] or "localhost"
    return f"http://{host}:8002/metrics"


def make_client(transport: str, url: str) -> Any:
    """melstream's client of ``transport`` for the server at ``url`` (HOST:PORT: gRPC's port, or HTTP's)."""
    from melstream_client import Client, HttpClient

    return HttpClient(url) if transport == "http" else Client(url)


def run_peer(args: argparse.Namespace, plan: list[tuple[str, list[int]]]) -> list[dict[str, Any]]:
    """Every level of every voice on benchmarks/peer_fastapi.py, started on a free port and stopped on return,
    measured by melstream's HTTP client; its rows are profile :data:`PEER_PROFILE`."""
    from benchmarks.peer_fastapi import start_peer

    with start_peer(ROOT / "addons", log_file=args.out / "peer_fastapi.log") as peer:
        print(f"{PEER_PROFILE}: serving addons/ at {peer.url}", flush=True)
        client = make_client("http", peer.url)
        voices = args.voices.split(",") if args.voices else client.voices()
        return [row(level, PEER_PROFILE, "http")
                for level in levels(client, voices, plan, seconds=args.seconds_per_level, long_sentences=args.long_sentences)]


def run_profile(args: argparse.Namespace, profile: str, plan: list[tuple[str, list[int]]], *, single: bool) -> list[dict[str, Any]]:
    """Every level of every voice on one profile: against --url, or on a server of its own (stopped on return),
    over ``args.transport``."""
    from melstream.serving.server import TritonServer

    suffix = "" if single else f"-{profile}"
    with ExitStack() as stack:
        url, server = args.url, None
        if url is None:
            repo = Path(args.repo) if args.repo else args.out / f"repo-{profile}"
            if args.repo is None:
                from melstream.serving.repo import build_repository

                # twice the top level (of every mode): a closed-loop client starts its next utterance the moment the
                # last one's final response arrives, a moment before the voice frees that stream's slot; this
                # measures capacity, and admission at the limit is measured by benchmarks/overload.py.  It is an
                # upper bound: a voice whose own measured capacity is full refuses a new stream as busy, and the
                # clients count that as "refused" and try again
                top = max(n for _, streams in plan for n in streams)
                report = build_repository(ROOT / "addons", repo, profile=profile, max_streams={None: 2 * top})
                for addon, error in report.refused.items():
                    print(f"  {profile}: addon {addon} refused: {error}", flush=True)
            print(f"profile {profile}: serving {repo}", flush=True)
            server = stack.enter_context(TritonServer.on_free_ports(repo, log_file=args.out / f"tritonserver{suffix}.log"))
            url = server.http_url if args.transport == "http" else server.grpc_url
            metrics_url = f"http://localhost:{server.metrics_port}/metrics"
        else:
            metrics_url = args.metrics_url or default_metrics_url(url)
        client = make_client(args.transport, url)
        if hasattr(client, "__exit__"):  # the gRPC client holds a channel; the HTTP one opens a connection per request
            stack.enter_context(client)
        voices = args.voices.split(",") if args.voices else client.voices()
        rows = [row(level, profile, args.transport) for level in levels(client, voices, plan, seconds=args.seconds_per_level,
                                                                          metrics=metrics_reader(metrics_url),
                                                                          long_sentences=args.long_sentences)]
        if server is not None:  # the server's own view (python_backends/pipeline/model.py metrics), kept for comparison
            with urllib.request.urlopen(metrics_url, timeout=10) as resp:
                text = resp.read().decode()
            (args.out / f"server_metrics{suffix}.txt").write_text(
                "".join(ln + "\n" for ln in text.splitlines() if "melstream_" in ln))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="HOST:PORT of a running server, its gRPC port (its HTTP port with "
                    "--transport http) (default: start one per profile)")
    ap.add_argument("--transport", choices=TRANSPORTS, default=None, help="how melstream's profiles are measured: gRPC "
                    "(melstream.client.Client) or Triton's HTTP generate_stream (HttpClient) (default: grpc; http with --peer)")
    ap.add_argument("--peer", action="store_true", help="also measure benchmarks/peer_fastapi.py (the same addons in a FastAPI "
                    f"app, one uvicorn process) in the same run, by the same HTTP client, as profile {PEER_PROFILE!r}; the "
                    "profiles are then measured over HTTP too unless --transport is given")
    ap.add_argument("--no-limit", action="store_true", help="leave out the limit section (the in-process compute of a "
                    "first chunk and of a batched step, timed before serving starts)")
    ap.add_argument("--metrics-url", default=None, help="with --url: Triton's Prometheus metrics, for the mean batches "
                    "(default: http://HOST:8002/metrics on --url's host)")
    ap.add_argument("--profiles", default="cpu", help="comma-separated deployment profiles, each served in turn "
                    "(default: cpu); with --url or --repo one, the server's, named for the table")
    ap.add_argument("--repo", default=None, help="model repository to serve (default: one built from addons/ that admits "
                    "the largest level's streams per voice: the benchmark measures capacity, past the committed limits)")
    ap.add_argument("--voices", default=None, help="comma-separated (default: every voice the server serves)")
    ap.add_argument("--streams", default=DEFAULT_STREAMS, help=f"comma-separated numbers of parallel streams (default: {DEFAULT_STREAMS})")
    ap.add_argument("--texts", default="short", help="comma-separated text kinds: 'short' (one held-out sentence per "
                    "utterance: modes stream and naive) and/or 'long' (--long-sentences consecutive held-out sentences, "
                    f"about a minute of speech: mode {STREAM_LONG}, streamed only) (default: short)")
    ap.add_argument("--long-streams", default=None, help="comma-separated numbers of parallel streams for the long texts "
                    "(default: --streams)")
    ap.add_argument("--long-sentences", type=int, default=LONG_SENTENCES, help="held-out sentences per long text "
                    f"(default: {LONG_SENTENCES})")
    ap.add_argument("--seconds-per-level", type=float, default=10.0, help="each stream loops until this has passed")
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    args = ap.parse_args(argv)

    def numbers(value: str, option: str) -> list[int]:
        try:
            out = [int(s) for s in value.split(",")]
        except ValueError:
            out = []
        if not out or min(out) < 1:
            ap.error(f"{option} must be positive integers, got {value!r}")
        return out

    streams = numbers(args.streams, "--streams")
    long_streams = numbers(args.long_streams, "--long-streams") if args.long_streams is not None else None
    if args.long_sentences < 1:
        ap.error(f"--long-sentences must be positive, got {args.long_sentences}")
    try:
        plan = level_plan([k.strip() for k in args.texts.split(",") if k.strip()], streams, long_streams)
    except ValueError as e:
        ap.error(f"--texts: {e}")
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if not profiles or len(set(profiles)) != len(profiles):
        ap.error(f"--profiles must name profiles, each once, got {args.profiles!r}")
    if len(profiles) > 1 and (args.url or args.repo):
        ap.error("--url and --repo serve one profile: give --profiles one name (the server's)")
    if args.url is None and args.repo is None:
        from melstream.serving.repo import PROFILES

        unknown = [p for p in profiles if p not in PROFILES]
        if unknown:
            ap.error(f"unknown profiles {', '.join(unknown)}; known: {', '.join(sorted(PROFILES))}")

    if args.transport is None:
        args.transport = "http" if args.peer else "grpc"  # with the peer, one client measures both

    args.out.mkdir(parents=True, exist_ok=True)
    voice_limits: list[VoiceLimit] = []
    if not args.no_limit:  # before anything is served, so nothing else runs on the cores meanwhile
        print("limit: the compute in this process (ONNX Runtime, one thread)", flush=True)
        voice_limits = limits(args.voices.split(",") if args.voices else None)
    runs: list[tuple[str, Callable[[], list[dict[str, Any]]]]] = [
        (p, functools.partial(run_profile, args, p, plan, single=len(profiles) == 1)) for p in profiles]
    if args.peer:
        runs.append((PEER_PROFILE, functools.partial(run_peer, args, plan)))
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for profile, run in runs:
        try:
            rows += run()
        except Exception as e:  # a profile that cannot be built or served: the others' figures are still written
            if len(runs) == 1:
                raise
            failed[profile] = f"{type(e).__name__}: {e}"
            print(f"profile {profile} FAILED, its rows are missing: {failed[profile]}", flush=True)
    if not rows:
        print("no figures: every profile failed")
        return 1
    names = [p for p, _ in runs]
    rows = side_by_side(rows, names)

    table = markdown(rows)
    host = host_line()
    head = (f"per level: every stream loops over held-out sentences for {args.seconds_per_level:g} s"
            + (f" ({STREAM_LONG}: texts of {args.long_sentences} sentences)" if any(m == STREAM_LONG for m, _ in plan) else "")
            + f"; melstream's profiles over {args.transport}" + (f", {PEER_PROFILE} over http" if args.peer else "")
            + "; latencies in ms; percentiles " + ", ".join(f"p{p}" for p in PERCENTILES)
            + "; refused: attempts refused as busy (each tried again; not errors; every other figure is over the admitted "
            f"utterances); admits: the streams the voice admitted at once at the level's end (its gauge {ADMITTED}); "
            "mean batch: requests per execution Triton formed, per network")
    print(f"\n{host}\n{head}\n{table}")
    write_csv(rows, args.out / "streams.csv")
    md = f"{host}\n\n{head}\n\n{table}\n"
    wrote = ["streams.csv", "streams.md"]
    if voice_limits:
        limit_table = limit_markdown(voice_limits, rows, names, streams)
        print(f"\nlimit: how far serving is from the compute (in-process, ONNX Runtime, one thread; first chunk: median "
              f"over {LIMIT_SENTENCES} held-out sentences; RTFX bound: the median sentence's calls, each in a batch of "
              f"{LIMIT_BATCH} streams)\n{limit_table}")
        md += "\n## limit\n\n" + limit_table + "\n"
        write_rows(limit_rows(voice_limits), args.out / "limit.csv")
        wrote.append("limit.csv")
    (args.out / "streams.md").write_text(md)
    wrote += ["streams.png"] if plot(rows, args.out / "streams.png") else []
    print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    for profile, error in failed.items():
        print(f"profile {profile} failed: {error}")
    return 1 if failed or any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
