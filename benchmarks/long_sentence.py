"""First chunk of one long sentence against a short one, over gRPC: alone and as 8 at once.

    python benchmarks/long_sentence.py [--url HOST:PORT] [--lengths 44,612,5000] [--together 8] [--repeats 7]
                                       [--voices fastvoice,tacovoice] [--out out/long-sentence]

Text from a language model is often one long sentence with many commas.  Each text here is one sentence of
about the given number of characters: clauses of held-out words joined by commas, one full stop at the end
(:func:`sentence`).  For each voice and length: the first chunk of the sentence alone (median of --repeats
streams, each closed at its first chunk on an idle server), then --together streams of it sent at once (p50 and
max of their first chunks).  The table gives both, and each as a ratio to the shortest length's figure of the
same voice and kind (the target: within 1.5x).

Without --url it starts its own tritonserver on free ports from model_repository/.  Prints the host
(benchmarks.streams.host_line) and the table, and writes long_sentence.md and long_sentence.csv under --out.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: benchmarks.streams is imported from the repository root
    sys.path.insert(0, str(ROOT))

from benchmarks.streams import host_line  # noqa: E402

WORDS = ROOT / "tests" / "data" / "heldout_sentences.txt"
#: words per clause of a long sentence
CLAUSE_WORDS = 6


def sentence(chars: int) -> str:
    """One sentence of ``chars`` characters (within a word's length): held-out words in clauses of
    :data:`CLAUSE_WORDS` joined by commas, capitalised, ending in a full stop and nowhere else."""
    if chars < 2:
        raise ValueError(f"a sentence needs at least 2 characters, got {chars}")
    words = [w.strip(".,;:!?\"'()").lower() for line in WORDS.read_text().splitlines() for w in line.split()]
    words = [w for w in words if w.isalpha()]
    out, i = "", 0
    while True:
        word = words[i % len(words)]
        sep = "" if not out else (", " if i % CLAUSE_WORDS == 0 else " ")
        if out and len(out) + len(sep) + len(word) + 1 > chars:
            break
        out += sep + word
        i += 1
    return out[0].upper() + out[1:] + "."


def first_chunk(client, text: str, voice: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds from sending ``text`` to its first chunk; the stream is closed there (the server stops it)."""
    t0 = time.perf_counter()
    stream = client.stream(text, voice=voice, timeout_s=600)
    for _ in stream:
        stream.close()
        break
    return time.perf_counter() - t0


def at_once(clients, text: str, voice: str) -> list[float]:  # type: ignore[no-untyped-def]
    """The first chunks of ``text``, one stream per client, all sent at the same moment (a barrier)."""
    seconds: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(clients))

    def one(client) -> None:  # type: ignore[no-untyped-def]
        barrier.wait()
        s = first_chunk(client, text, voice)
        with lock:
            seconds.append(s)

    threads = [threading.Thread(target=one, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return seconds


def main() -> int:
    from melstream.client import Client
    from melstream.serving.server import TritonServer, metric_samples, poll

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=None, help="gRPC HOST:PORT of a running server (default: start one)")
    ap.add_argument("--lengths", default="44,612,5000", help="sentence lengths in characters; the first is the reference")
    ap.add_argument("--together", type=int, default=8, help="streams of the same sentence sent at once")
    ap.add_argument("--repeats", type=int, default=7, help="streams alone per length (the median is reported)")
    ap.add_argument("--voices", default="fastvoice,tacovoice")
    ap.add_argument("--out", type=Path, default=Path("out/long-sentence"))
    args = ap.parse_args()
    lengths = [int(n) for n in args.lengths.split(",")]
    voices = args.voices.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, object]] = []
    with ExitStack() as stack:
        server = None
        url = args.url
        if url is None:
            server = TritonServer.on_free_ports(ROOT / "model_repository", log_file=args.out / "tritonserver.log").start()
            stack.callback(server.stop)
            url = server.grpc_url

        def quiet(voice: str) -> None:
            """Until no stream of ``voice`` is active (the last one, closed at its first chunk, has ended)."""
            if server is None:
                return
            key = f'melstream_active_streams{{voice="{voice}"}}'
            poll(lambda: metric_samples(f"localhost:{server.metrics_port}", timeout_s=5),
                 lambda samples: samples.get(key, 0.0) == 0, timeout_s=30)

        client = stack.enter_context(Client(url, timeout_s=600))
        clients = [stack.enter_context(Client(url, timeout_s=600)) for _ in range(args.together)]
        for voice in voices:
            for c in [client, *clients]:  # channels, the addon JSON and first calls: not measured
                first_chunk(c, "Warm up.", voice)
            for chars in lengths:
                text = sentence(chars)
                alone = []
                for _ in range(args.repeats):
                    quiet(voice)
                    alone.append(first_chunk(client, text, voice))
                quiet(voice)
                together = at_once(clients, text, voice)
                rows.append({"voice": voice, "chars": len(text), "alone_ms": 1000 * statistics.median(alone),
                             "together_p50_ms": 1000 * statistics.median(together),
                             "together_max_ms": 1000 * max(together)})
                print(f"{voice} {len(text)} chars: alone {rows[-1]['alone_ms']:.1f} ms, {args.together} at once "
                      f"p50 {rows[-1]['together_p50_ms']:.1f} max {rows[-1]['together_max_ms']:.1f} ms", flush=True)
    for row in rows:
        ref = next(r for r in rows if r["voice"] == row["voice"])
        for key in ("alone_ms", "together_p50_ms", "together_max_ms"):
            row[key.replace("_ms", "_x")] = float(row[key]) / float(ref[key])  # type: ignore[arg-type]
    header = host_line()
    lines = [header, "",
             f"First chunk of one sentence (commas, one full stop) over gRPC; alone: median of {args.repeats}; "
             f"{args.together} at once: p50 / max; x: against the {lengths[0]}-character sentence of the same voice",
             "", "| voice | chars | alone ms | x | together p50 ms | x | together max ms | x |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['voice']} | {r['chars']} | {r['alone_ms']:.1f} | {r['alone_x']:.2f} | {r['together_p50_ms']:.1f} | "
                     f"{r['together_p50_x']:.2f} | {r['together_max_ms']:.1f} | {r['together_max_x']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (args.out / "long_sentence.md").write_text(text)
    with (args.out / "long_sentence.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'long_sentence.md'}, {args.out / 'long_sentence.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
