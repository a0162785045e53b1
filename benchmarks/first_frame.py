"""Time to first frame over gRPC streaming vs a naive whole-utterance call, for growing texts.

    python benchmarks/first_frame.py [--url HOST:PORT] [--repeats 5] [--out out/bench]

Without --url it builds nothing and starts its own tritonserver on free ports from
model_repository/.  The naive call is the same voice asked for the whole utterance in one
response (CHUNK_FRAMES=0): what a wrap-everything-in-one-function integration gives.
Prints a table and writes first_frame.csv, first_frame.md and first_frame.png under --out.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays 12 songs."


def texts() -> dict[str, str]:
    return {f"{n} sentence{'s' * (n > 1)}": " ".join([SENTENCE] * n) for n in (1, 5, 20, 40)}


def measure(client, text: str, voice: str, *, chunk_frames: int | None) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    first = None
    frames = 0
    for mel in client.stream(text, voice=voice, chunk_frames=chunk_frames, timeout_s=600):
        if first is None:
            first = time.perf_counter() - t0
        frames += len(mel)
    total = time.perf_counter() - t0
    return first or total, total, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="gRPC HOST:PORT of a running server (default: start one)")
    ap.add_argument("--repo", default="model_repository")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    args = ap.parse_args()

    from melstream.serving.server import TritonServer
    from melstream_client import Client

    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with ExitStack() as stack:
        url = args.url
        if url is None:
            server = stack.enter_context(TritonServer.on_free_ports(Path(args.repo), log_file=args.out / "tritonserver.log"))
            url = server.grpc_url
        client = stack.enter_context(Client(url))
        for voice in client.voices():
            measure(client, SENTENCE, voice, chunk_frames=None)  # warm-up: first channel, first model runs
            for label, text in texts().items():
                stream = [measure(client, text, voice, chunk_frames=None) for _ in range(args.repeats)]
                naive = [measure(client, text, voice, chunk_frames=0) for _ in range(args.repeats)]
                rows.append({
                    "voice": voice, "text": label, "words": len(text.split()), "frames": stream[0][2],
                    "stream_first_ms": 1e3 * statistics.median(s[0] for s in stream),
                    "stream_total_ms": 1e3 * statistics.median(s[1] for s in stream),
                    "naive_first_ms": 1e3 * statistics.median(s[0] for s in naive),
                })
    for voice in sorted({r["voice"] for r in rows}):
        base = next(r["stream_first_ms"] for r in rows if r["voice"] == voice)
        for r in rows:
            if r["voice"] == voice:
                r["vs_1_sentence"] = r["stream_first_ms"] / base
    header = ["voice", "text", "words", "frames", "stream_first_ms", "vs_1_sentence", "stream_total_ms", "naive_first_ms"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[h]:.1f}" if isinstance(r[h], float) else str(r[h]) for h in header) + " |")
    table = "\n".join(lines)
    print(f"median of {args.repeats} runs; naive = whole utterance in one response (CHUNK_FRAMES=0)\n{table}")
    with open(args.out / "first_frame.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    (args.out / "first_frame.md").write_text(table + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for voice in sorted({r["voice"] for r in rows}):
        rs = [r for r in rows if r["voice"] == voice]
        ax.plot([r["words"] for r in rs], [r["stream_first_ms"] for r in rs], "o-", label=f"{voice} streaming")
        ax.plot([r["words"] for r in rs], [r["naive_first_ms"] for r in rs], "s--", label=f"{voice} naive")
    ax.set_xlabel("words in the text")
    ax.set_ylabel("time to first frame (ms)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "first_frame.png", dpi=120)
    print(f"wrote {args.out}/first_frame.csv, .md, .png")


if __name__ == "__main__":
    main()
