"""The streaming performance contract: first chunk latency, gaps, RTF/RTFX and stalls as parallel streams grow.

    python benchmarks/streams.py [--url HOST:PORT] [--streams 1,2,4,8,16,32] [--seconds-per-level 10] [--out out/bench]

Without --url it starts its own tritonserver on free ports, from a repository built from addons/ that admits
the largest level's streams per voice (the committed repository refuses streams past each voice's
admission limit; this measures capacity, so it goes past it).  For every voice
and every number of parallel streams N, N client threads each synthesise held-out sentences back to
back (a closed loop, no think time) for --seconds-per-level, every utterance streamed over gRPC with
the voice's own chunk size.  The same texts are then asked for whole (CHUNK_FRAMES=0, the naive
integration: the first audio is the whole utterance).  Terms (melstream/timing.py):

- first chunk: request sent -> first chunk received;  gap: between consecutive chunks;
- RTF: wall seconds per second of speech, per utterance;  RTFX: seconds of speech produced by all
  streams per wall second (the throughput);
- stall: a chunk that arrives after the audio received so far has finished playing.

Prints a table and writes streams.csv (every figure), streams.md and streams.png under --out.
"""

from __future__ import annotations

import argparse
import csv
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from melstream.timing import PERCENTILES, StreamTiming, stream_timing, summary

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ROOT / "tests" / "data" / "heldout_sentences.txt"
MODES = ("stream", "naive")


@dataclass(frozen=True)
class Level:
    voice: str
    mode: str
    streams: int
    wall_s: float
    timings: tuple[StreamTiming, ...]
    errors: tuple[str, ...]


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


def row(level: Level) -> dict[str, Any]:
    ts = level.timings
    r: dict[str, Any] = {"voice": level.voice, "mode": level.mode, "streams": level.streams, "utterances": len(ts),
                         "errors": len(level.errors), "wall_s": level.wall_s}
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
    return r


TABLE = [("voice", "voice", "{}"), ("mode", "mode", "{}"), ("streams", "N", "{}"), ("utterances", "utts", "{}"),
         ("first_chunk_mean_ms", "first mean", "{:.0f}"), ("first_chunk_p50_ms", "first p50", "{:.0f}"),
         ("first_chunk_p90_ms", "p90", "{:.0f}"), ("first_chunk_p95_ms", "p95", "{:.0f}"), ("first_chunk_p99_ms", "p99", "{:.0f}"),
         ("gap_mean_ms", "gap mean", "{:.1f}"), ("gap_p50_ms", "gap p50", "{:.1f}"), ("gap_p90_ms", "p90", "{:.1f}"),
         ("gap_p95_ms", "p95", "{:.1f}"), ("gap_p99_ms", "p99", "{:.1f}"), ("rtf_mean", "RTF", "{:.3f}"), ("rtfx", "RTFX", "{:.1f}"),
         ("stalled_pct", "stalled %", "{:.0f}"), ("stall_s_per_utt", "silence s/utt", "{:.2f}"), ("errors", "errors", "{}")]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in TABLE) + " |", "|" + "---|" * len(TABLE)]
    for r in rows:
        lines.append("| " + " | ".join("–" if r[k] != r[k] else fmt.format(r[k]) for k, _, fmt in TABLE) + " |")  # NaN -> dash
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for voice in sorted({r["voice"] for r in rows}):
        for mode, style in zip(MODES, ("o-", "s--"), strict=True):
            rs = [r for r in rows if r["voice"] == voice and r["mode"] == mode]
            if not rs:
                continue
            n = [r["streams"] for r in rs]
            line, = axes[0].plot(n, [r["first_chunk_p50_ms"] for r in rs], style, label=f"{voice} {mode} p50")
            axes[0].plot(n, [r["first_chunk_p95_ms"] for r in rs], style, alpha=0.4, color=line.get_color(), label=f"{voice} {mode} p95")
            axes[1].plot(n, [r["rtfx"] for r in rs], style, label=f"{voice} {mode}")
            if mode == "stream":
                axes[2].plot(n, [r["stalled_pct"] for r in rs], style, label=voice)
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


def levels(client: Any, voices: list[str], streams: list[int], *, seconds: float) -> Iterator[Level]:
    pool = texts()
    for voice in voices:
        audio = client.spec(voice).audio
        frame_s = audio.hop_length / audio.sample_rate
        # warm-up: gRPC channels, every network instance, the front end; a second of two streams, not measured
        run_level(client, voice, "stream", 2, seconds=min(seconds, 1.0), frame_s=frame_s, pool=pool)
        for mode in MODES:
            for n in streams:
                level = run_level(client, voice, mode, n, seconds=seconds, frame_s=frame_s, pool=pool)
                print(f"  {voice} {mode} N={n}: {len(level.timings)} utterances in {level.wall_s:.1f} s"
                      + (f", {len(level.errors)} errors, first: {level.errors[0]}" if level.errors else ""), flush=True)
                yield level


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="gRPC HOST:PORT of a running server (default: start one)")
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

    from melstream.client import Client
    from melstream.serving.server import TritonServer

    args.out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        url = args.url
        if url is None:
            repo = Path(args.repo) if args.repo else args.out / "repo"
            if args.repo is None:
                from melstream.serving.repo import build_repository

                build_repository(ROOT / "addons", repo, max_streams={None: max(streams)})
            server = stack.enter_context(TritonServer.on_free_ports(repo, log_file=args.out / "tritonserver.log"))
            url = server.grpc_url
        client = stack.enter_context(Client(url))
        voices = args.voices.split(",") if args.voices else client.voices()
        rows = [row(level) for level in levels(client, voices, streams, seconds=args.seconds_per_level)]
        if args.url is None:  # the server's own view (python_backends/pipeline/model.py metrics), kept for comparison
            import urllib.request

            with urllib.request.urlopen(f"http://localhost:{server.metrics_port}/metrics", timeout=10) as resp:
                text = resp.read().decode()
            (args.out / "server_metrics.txt").write_text("".join(ln + "\n" for ln in text.splitlines() if "melstream_" in ln))

    table = markdown(rows)
    print(f"\nper level: every stream loops over held-out sentences for {args.seconds_per_level:g} s; latencies in ms; "
          f"percentiles {', '.join(f'p{p}' for p in PERCENTILES)}\n{table}")
    with open(args.out / "streams.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (args.out / "streams.md").write_text(table + "\n")
    wrote = ["streams.csv", "streams.md"] + (["streams.png"] if plot(rows, args.out / "streams.png") else [])
    print(f"wrote {', '.join(str(args.out / w) for w in wrote)}")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
