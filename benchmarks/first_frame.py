"""Time to first frame over gRPC streaming vs a naive whole-utterance call, for growing texts.

    python benchmarks/first_frame.py [--url HOST:PORT] [--repeats 5] [--out out/bench] [--compare-whole-text]

Without --url it builds nothing and starts its own tritonserver on free ports from
model_repository/.  The naive call is the same voice asked for the whole utterance in one
response (CHUNK_FRAMES=0): what a wrap-everything-in-one-function integration gives.  Texts: 1 to 40
sentences, among them 14 (about 60 s of speech: ~5,200 frames at 22050 Hz, hop 256).
--compare-whole-text (no --url) first runs a server whose voices phonemise the whole text before the first
frame, as before issue 13 (MELSTREAM_WHOLE_TEXT=1), then one that reads it sentence by sentence: the "text"
column says which ("whole" / "sentences"); each server is measured after its own warm-up.
Prints a table and writes first_frame.csv, first_frame.md and first_frame.png under --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

#: how long the server may take to end a stream closed at its first chunk (the next one waits until it has)
SETTLE_TIMEOUT_S = 10.0
SENTENCE = "The quick brown fox jumps over the lazy dog while the band plays 12 songs."


def texts(counts: tuple[int, ...] = (1, 5, 14, 20, 40)) -> dict[str, str]:
    return {f"{n} sentence{'s' * (n > 1)}": " ".join([SENTENCE] * n) for n in counts}


def measure(client, text: str, voice: str, *, chunk_frames: int | None, first_only: bool = False) -> tuple[float, float, int]:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    first = None
    frames = 0
    stream = client.stream(text, voice=voice, chunk_frames=chunk_frames, timeout_s=600)
    for mel in stream:
        if first is None:
            first = time.perf_counter() - t0
        frames += len(mel)
        if first_only:
            stream.close()  # the rest is not measured: the server stops the stream
            break
    total = time.perf_counter() - t0
    return first or total, total, frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="gRPC HOST:PORT of a running server (default: start one)")
    ap.add_argument("--metrics-url", default=None,
                    help="with --url: the server's metrics HOST:PORT (default: --url's host, port 8002)")
    ap.add_argument("--repo", default="model_repository")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    ap.add_argument("--first-repeats", type=int, default=15, help="runs per text for the first frame")
    ap.add_argument("--sentences", default="1,5,14,20,40", help="text lengths in sentences (14: about 60 s of speech)")
    ap.add_argument("--compare-whole-text", action="store_true",
                    help="also measure a server that phonemises the whole text before the first frame (as before)")
    args = ap.parse_args()
    if args.url is not None and args.metrics_url is None:
        args.metrics_url = f"{args.url.rsplit(':', 1)[0]}:8002"

    args.out.mkdir(parents=True, exist_ok=True)
    modes = ["whole", "sentences"] if args.compare_whole_text and args.url is None else [""]
    rows = []
    for mode in modes:
        rows += run(args, mode)
    for voice, mode in sorted({(r["voice"], r["front_end"]) for r in rows}):
        base = next(r["stream_first_ms"] for r in rows if r["voice"] == voice and r["front_end"] == mode)
        for r in rows:
            if r["voice"] == voice and r["front_end"] == mode:
                r["vs_1_sentence"] = r["stream_first_ms"] / base
    rows.sort(key=lambda r: (r["voice"], r["front_end"]))
    header = ["voice", "front_end", "text", "words", "frames", "stream_first_ms", "vs_1_sentence", "stream_total_ms",
              "naive_first_ms"]
    if modes == [""]:
        header.remove("front_end")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[h]:.1f}" if isinstance(r[h], float) else str(r[h]) for h in header) + " |")
    table = "\n".join(lines)
    print(f"first frame: median of {args.first_repeats} runs; totals: median of {args.repeats} runs; "
          f"naive = whole utterance in one response (CHUNK_FRAMES=0)\n{table}")
    with open(args.out / "first_frame.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
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
    for voice, mode in sorted({(r["voice"], r["front_end"]) for r in rows}):
        rs = [r for r in rows if r["voice"] == voice and r["front_end"] == mode]
        name = f"{voice} {mode}".strip()
        style = "o:" if mode == "whole" else "o-"
        ax.plot([r["words"] for r in rs], [r["stream_first_ms"] for r in rs], style, label=f"{name} streaming")
        if mode != "whole":
            ax.plot([r["words"] for r in rs], [r["naive_first_ms"] for r in rs], "s--", label=f"{name} naive")
    ax.set_xlabel("words in the text")
    ax.set_ylabel("time to first frame (ms)")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out / "first_frame.png", dpi=120)
    print(f"wrote {args.out}/first_frame.csv, .md, .png")


def run(args: argparse.Namespace, mode: str) -> list[dict]:  # type: ignore[type-arg]
    """One server's rows; ``mode`` "whole" starts it with MELSTREAM_WHOLE_TEXT=1 (its stubs inherit it)."""
    from melstream.serving.server import TritonServer, metric_samples, poll
    from melstream_client import Client

    rows = []
    saved = os.environ.get("MELSTREAM_WHOLE_TEXT")
    os.environ["MELSTREAM_WHOLE_TEXT"] = "1" if mode == "whole" else "0"
    try:
        with ExitStack() as stack:
            url, metrics_url = args.url, args.metrics_url
            if url is None:
                log = args.out / f"tritonserver{'-' + mode if mode else ''}.log"
                server = stack.enter_context(TritonServer.on_free_ports(Path(args.repo), log_file=log))
                url, metrics_url = server.grpc_url, f"localhost:{server.metrics_port}"

            def settled(voice: str) -> None:
                """Wait until the server has ended every stream of ``voice`` (the one just closed at its first
                chunk is cancelled there a moment later), so that each first frame is measured on an idle server."""
                key = f'melstream_active_streams{{voice="{voice}"}}'
                active = poll(lambda: metric_samples(metrics_url).get(key, 0.0), lambda n: n == 0, timeout_s=SETTLE_TIMEOUT_S)
                if active:
                    raise SystemExit(f"voice {voice!r} still has {active:g} active streams {SETTLE_TIMEOUT_S:g} s after its last was closed")

            client = stack.enter_context(Client(url))
            for voice in client.voices():
                for _ in range(3):  # warm-up: first channel, first model runs, espeak-ng loaded
                    measure(client, SENTENCE, voice, chunk_frames=None)
                chosen = texts(tuple(int(n) for n in args.sentences.split(",")))
                # first frames from streams closed at their first chunk, each on an idle server (a whole stream
                # before it leaves work behind, tacovoice ~190 MB of alignments at 600 words, that slows the next
                # one's start), the texts taken in turn so that the machine's drift falls on all of them alike
                firsts: dict[str, list[float]] = {label: [] for label in chosen}
                for _ in range(args.first_repeats):
                    for label, text in chosen.items():
                        firsts[label].append(measure(client, text, voice, chunk_frames=None, first_only=True)[0])
                        settled(voice)
                for label, text in chosen.items():
                    first = firsts[label]
                    # the whole-text server only for its first frames (its later frames are the same)
                    stream = [] if mode == "whole" else [measure(client, text, voice, chunk_frames=None)
                                                         for _ in range(args.repeats)]
                    naive = [] if mode == "whole" else [measure(client, text, voice, chunk_frames=0) for _ in range(args.repeats)]
                    rows.append({
                        "voice": voice, "front_end": mode, "text": label, "words": len(text.split()),
                        "frames": stream[0][2] if stream else "-",
                        "stream_first_ms": 1e3 * statistics.median(first),
                        "stream_total_ms": 1e3 * statistics.median(s[1] for s in stream) if stream else "-",
                        "naive_first_ms": 1e3 * statistics.median(s[0] for s in naive) if naive else "-",
                    })
    finally:
        if saved is None:
            os.environ.pop("MELSTREAM_WHOLE_TEXT", None)
        else:
            os.environ["MELSTREAM_WHOLE_TEXT"] = saved
    return rows


if __name__ == "__main__":
    main()
