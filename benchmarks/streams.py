"""The streaming performance contract: first chunk latency, gaps, RTF/RTFX and stalls as parallel streams grow.

    python benchmarks/streams.py [--url HOST:PORT] [--profiles cpu,cpu-static] [--streams 1,2,4,8,16,32]
                                 [--seconds-per-level 10] [--out out/bench]

Without --url it starts its own tritonserver on free ports, from a repository built from addons/ that admits
the largest level's streams per voice (the committed repository refuses streams past each voice's
admission limit; this measures capacity, so it goes past it).  With --profiles it does so for each
deployment profile in turn (melstream.serving.repo.PROFILES: a repository per profile under --out, a server
on it for every level, stopped before the next profile), so profiles compare side by side in one table;
with --url or --repo there is one profile, the server's, named by --profiles for the table.  For every voice
and every number of parallel streams N, N client threads each synthesise held-out sentences back to
back (a closed loop, no think time) for --seconds-per-level, every utterance streamed over gRPC with
the voice's own chunk size.  The same texts are then asked for whole (CHUNK_FRAMES=0, the naive
integration: the first audio is the whole utterance).  Terms (melstream/timing.py):

- first chunk: request sent -> first chunk received;  gap: between consecutive chunks;
- RTF: wall seconds per second of speech, per utterance;  RTFX: seconds of speech produced by all
  streams per wall second (the throughput);
- stall: a chunk that arrives after the audio received so far has finished playing;
- mean batch: per network model, the batch Triton's dynamic batcher formed on average during the level,
  from its Prometheus metrics (the metrics port) read before and after it: requests (batch items,
  ``nv_inference_count``) per execution (``nv_inference_exec_count``).  With --url the metrics are read
  from --metrics-url (default: port 8002 of --url's host); when they cannot be read the figures are left out.

Prints a table and writes streams.csv (every figure), streams.md and streams.png under --out.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from melstream.timing import PERCENTILES, StreamTiming, stream_timing, summary
from melstream.wire import NETWORK_SEPARATOR

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "data" / "heldout_sentences.txt"
MODES = ("stream", "naive")
#: Triton's counters of batch items (requests) and of batch executions, per model and version
INFERENCE_COUNT, EXEC_COUNT = "nv_inference_count", "nv_inference_exec_count"
BATCH_PREFIX = "batch "  # CSV column of a network model's mean batch: "batch fastvoice__decoder"


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


def model_counters(text: str, metric: str) -> dict[str, float]:
    """``metric``'s value per ``model`` label in Prometheus exposition ``text``, summed over versions (and any
    other label); comments, other metrics and samples with no ``model`` label are skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m is None or m.group(1) != metric:
            continue
        model = _labels(m.group(2) or "").get("model")
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


def one_utterance(client: Any, text: str, voice: str, *, chunk_frames: int | None, frame_s: float) -> StreamTiming:
    arrivals, frames = [], []
    t0 = time.perf_counter()
    for mel in client.stream(text, voice=voice, chunk_frames=chunk_frames, timeout_s=600):
        arrivals.append(time.perf_counter() - t0)
        frames.append(len(mel))
    return stream_timing(arrivals, frames, total_s=time.perf_counter() - t0, frame_s=frame_s)


def run_level(client: Any, voice: str, mode: str, streams: int, *, seconds: float, frame_s: float, pool: list[str]) -> Level:
    """``streams`` threads, each synthesising texts back to back until ``seconds`` have passed (at least one each)."""
    chunk_frames = 0 if mode == "naive" else None
    lock = threading.Lock()
    timings: list[StreamTiming] = []
    errors: list[str] = []
    start = threading.Barrier(streams)

    def worker(k: int) -> None:
        start.wait()  # every stream starts together, so the first utterances really overlap
        deadline = time.perf_counter() + seconds
        i = k
        while True:
            text = pool[i % len(pool)]
            i += streams  # streams walk the sentences in step, so each level covers the same texts
            try:
                t = one_utterance(client, text, voice, chunk_frames=chunk_frames, frame_s=frame_s)
                with lock:
                    timings.append(t)
            except Exception as e:  # counted and shown, never hidden: a benchmark with errors is not a figure
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
            if time.perf_counter() >= deadline:
                return

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=streams) as ex:
        list(ex.map(worker, range(streams)))
    return Level(voice, mode, streams, time.perf_counter() - t0, tuple(timings), tuple(errors))


def row(level: Level, profile: str = "cpu") -> dict[str, Any]:
    ts = level.timings
    r: dict[str, Any] = {"profile": profile, "voice": level.voice, "mode": level.mode, "streams": level.streams,
                         "utterances": len(ts), "errors": len(level.errors), "wall_s": level.wall_s}
    for name, values in (("first_chunk", [t.first_chunk_s for t in ts]), ("gap", [g for t in ts for g in t.gaps_s])):
        for k, v in summary(values).items():
            r[f"{name}_{k}_ms"] = 1e3 * v
    rtf = summary([t.rtf for t in ts])
    r["rtf_mean"], r["rtf_p95"] = rtf["mean"], rtf["p95"]
    audio_s = sum(t.audio_s for t in ts)
    r["audio_s"] = audio_s
    r["rtfx"] = audio_s / level.wall_s
    r["stalled_pct"] = 100.0 * sum(t.stalls > 0 for t in ts) / max(len(ts), 1)
    r["stalls_per_utt"] = sum(t.stalls for t in ts) / max(len(ts), 1)
    r["stall_s_per_utt"] = sum(t.stall_s for t in ts) / max(len(ts), 1)
    for model, batch in sorted(level.mean_batch.items()):
        r[BATCH_PREFIX + model] = batch
    return r


TABLE = [("profile", "profile", "{}"), ("voice", "voice", "{}"), ("mode", "mode", "{}"), ("streams", "N", "{}"),
         ("utterances", "utts", "{}"),
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
            for mode, style in zip(MODES, ("o-", "s--"), strict=True):
                rs = [r for r in rows if r["profile"] == profile and r["voice"] == voice and r["mode"] == mode]
                if not rs:
                    continue
                n = [r["streams"] for r in rs]
                line, = axes[0].plot(n, [r["first_chunk_p50_ms"] for r in rs], style, label=f"{voice}{tag} {mode} p50")
                axes[0].plot(n, [r["first_chunk_p95_ms"] for r in rs], style, alpha=0.4, color=line.get_color(),
                             label=f"{voice}{tag} {mode} p95")
                axes[1].plot(n, [r["rtfx"] for r in rs], style, label=f"{voice}{tag} {mode}")
                if mode == "stream":
                    axes[2].plot(n, [r["stalled_pct"] for r in rs], style, label=f"{voice}{tag}")
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


def levels(client: Any, voices: list[str], streams: list[int], *, seconds: float,
           metrics: Callable[[], str | None] | None = None) -> Iterator[Level]:
    pool = texts()
    for voice in voices:
        audio = client.spec(voice).audio
        frame_s = audio.hop_length / audio.sample_rate
        # warm-up: gRPC channels, every network instance, the front end; a second of two streams, not measured
        run_level(client, voice, "stream", 2, seconds=min(seconds, 1.0), frame_s=frame_s, pool=pool)
        for mode in MODES:
            for n in streams:
                before = metrics() if metrics else None
                level = run_level(client, voice, mode, n, seconds=seconds, frame_s=frame_s, pool=pool)
                after = metrics() if metrics and before is not None else None
                if before is not None and after is not None:
                    level = dataclasses.replace(level, mean_batch=mean_batches(before, after))
                batches = ", ".join(f"{k} {v:.2f}" for k, v in level.mean_batch.items())
                print(f"  {voice} {mode} N={n}: {len(level.timings)} utterances in {level.wall_s:.1f} s"
                      + (f", mean batch {batches}" if batches else "")
                      + (f", {len(level.errors)} errors, first: {level.errors[0]}" if level.errors else ""), flush=True)
                yield level


def default_metrics_url(grpc_url: str) -> str:
    """Triton's default metrics endpoint on the host of ``grpc_url`` (HOST:PORT)."""
    host = grpc_url.split("://", 1)[-1].rsplit(":", 1)[0] or "localhost"
    return f"http://{host}:8002/metrics"


def run_profile(args: argparse.Namespace, profile: str, streams: list[int], *, single: bool) -> list[dict[str, Any]]:
    """Every level of every voice on one profile: against --url, or on a server of its own (stopped on return)."""
    from melstream.client import Client
    from melstream.serving.server import TritonServer

    suffix = "" if single else f"-{profile}"
    with ExitStack() as stack:
        url, server = args.url, None
        if url is None:
            repo = Path(args.repo) if args.repo else args.out / f"repo-{profile}"
            if args.repo is None:
                from melstream.serving.repo import build_repository

                # twice the top level: a closed-loop client starts its next utterance the moment the last one's final
                # response arrives, a moment before the voice frees that stream's slot; this measures capacity, and
                # admission at the limit is measured by benchmarks/overload.py
                report = build_repository(ROOT / "addons", repo, profile=profile, max_streams={None: 2 * max(streams)})
                for addon, error in report.refused.items():
                    print(f"  {profile}: addon {addon} refused: {error}", flush=True)
            print(f"profile {profile}: serving {repo}", flush=True)
            server = stack.enter_context(TritonServer.on_free_ports(repo, log_file=args.out / f"tritonserver{suffix}.log"))
            url = server.grpc_url
            metrics_url = f"http://localhost:{server.metrics_port}/metrics"
        else:
            metrics_url = args.metrics_url or default_metrics_url(url)
        client = stack.enter_context(Client(url))
        voices = args.voices.split(",") if args.voices else client.voices()
        rows = [row(level, profile) for level in levels(client, voices, streams, seconds=args.seconds_per_level,
                                                          metrics=metrics_reader(metrics_url))]
        if server is not None:  # the server's own view (python_backends/pipeline/model.py metrics), kept for comparison
            with urllib.request.urlopen(metrics_url, timeout=10) as resp:
                text = resp.read().decode()
            (args.out / f"server_metrics{suffix}.txt").write_text(
                "".join(ln + "\n" for ln in text.splitlines() if "melstream_" in ln))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="gRPC HOST:PORT of a running server (default: start one per profile)")
    ap.add_argument("--metrics-url", default=None, help="with --url: Triton's Prometheus metrics, for the mean batches "
                    "(default: http://HOST:8002/metrics on --url's host)")
    ap.add_argument("--profiles", default="cpu", help="comma-separated deployment profiles, each served in turn "
                    "(default: cpu); with --url or --repo one, the server's, named for the table")
    ap.add_argument("--repo", default=None, help="model repository to serve (default: one built from addons/ that admits "
                    "the largest level's streams per voice: the benchmark measures capacity, past the committed limits)")
    ap.add_argument("--voices", default=None, help="comma-separated (default: every voice the server serves)")
    ap.add_argument("--streams", default="1,2,4,8,16,32", help="comma-separated numbers of parallel streams")
    ap.add_argument("--seconds-per-level", type=float, default=10.0, help="each stream loops until this has passed")
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    args = ap.parse_args(argv)
    try:
        streams = [int(s) for s in args.streams.split(",")]
    except ValueError:
        streams = []
    if not streams or min(streams) < 1:
        ap.error(f"--streams must be positive integers, got {args.streams!r}")
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

    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    for profile in profiles:
        try:
            rows += run_profile(args, profile, streams, single=len(profiles) == 1)
        except Exception as e:  # a profile that cannot be built or served: the others' figures are still written
            if len(profiles) == 1:
                raise
            failed[profile] = f"{type(e).__name__}: {e}"
            print(f"profile {profile} FAILED, its rows are missing: {failed[profile]}", flush=True)
    if not rows:
        print("no figures: every profile failed")
        return 1
    rows = side_by_side(rows, profiles)

    table = markdown(rows)
    print(f"\nper level: every stream loops over held-out sentences for {args.seconds_per_level:g} s; latencies in ms; "
          f"percentiles {', '.join(f'p{p}' for p in PERCENTILES)}; mean batch: requests per execution Triton formed, "
          f"per network\n{table}")
    write_csv(rows, args.out / "streams.csv")
    (args.out / "streams.md").write_text(table + "\n")
    wrote = ["streams.csv", "streams.md"] + (["streams.png"] if plot(rows, args.out / "streams.png") else [])
    print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    for profile, error in failed.items():
        print(f"profile {profile} failed: {error}")
    return 1 if failed or any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
