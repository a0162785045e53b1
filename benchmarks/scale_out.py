"""What the load balancer costs, and what replicas give, measured on loopback in one run.

    python benchmarks/scale_out.py [--replicas 2] [--streams 1,8] [--seconds-per-level 10] [--out out/scale-out]

Starts ``--replicas`` tritonservers from the committed model repository on free ports and HAProxy in front of
them (melstream/serving/balancer.py, the configuration ``melstream balancer-config`` writes), then for each voice
and each number of parallel streams measures, back to back with the same client code (benchmarks/streams.py's
closed loop over held-out sentences, gRPC): **direct** to one replica, then **through the balancer** to all of
them.  The first chunk's difference at one stream is the balancer's own latency; the RTFX columns show what more
replicas give on this machine (on 2 cores, replicas share the same cores: nothing, or less).

Prints a table and writes scale_out.csv and scale_out.md under --out.
"""

from __future__ import annotations

import argparse
import csv
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: benchmarks.streams is imported from the root

from benchmarks.streams import row, run_level, texts  # noqa: E402
from melstream.serving.balancer import STATS_PATH, HAProxy, Replica, haproxy_config  # noqa: E402
from melstream.serving.health import HealthServer  # noqa: E402
from melstream.serving.server import TritonServer, free_port  # noqa: E402
from melstream_client import Client  # noqa: E402

COLUMNS = [("voice", "{}"), ("streams", "{}"), ("path", "{}"), ("utterances", "{}"), ("first_chunk_p50_ms", "{:.1f}"),
           ("first_chunk_p95_ms", "{:.1f}"), ("rtfx", "{:.1f}"), ("stalled_pct", "{:.0f}"), ("errors", "{}")]


def measure(url: str, voices: list[str], streams: list[int], *, seconds: float, path: str) -> list[dict[str, Any]]:
    rows = []
    pool = texts()
    with Client(url, timeout_s=600) as client:
        for voice in voices:
            audio = client.spec(voice).audio
            frame_s = audio.hop_length / audio.sample_rate
            run_level(client, voice, "stream", 2, seconds=min(seconds, 1.0), frame_s=frame_s, pool=pool)  # warm-up
            for n in streams:
                level = run_level(client, voice, "stream", n, seconds=seconds, frame_s=frame_s, pool=pool)
                r = row(level)
                r["path"] = path
                rows.append(r)
                print(f"  {voice} N={n} {path}: first p50 {r['first_chunk_p50_ms']:.1f} ms, RTFX {r['rtfx']:.1f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--voices", default="fastvoice,tacovoice")
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--seconds-per-level", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("out/scale-out"))
    args = ap.parse_args(argv)
    if args.replicas < 1:
        ap.error(f"--replicas must be >= 1, got {args.replicas}")
    streams = [int(s) for s in args.streams.split(",")]
    voices = args.voices.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        servers, replicas = [], []
        for i in range(args.replicas):
            server = TritonServer.on_free_ports(ROOT / "model_repository", log_file=args.out / f"replica{i + 1}.log")
            servers.append(stack.enter_context(server))
            # the readiness `melstream serve` gives a replica, here without its supervisor (nothing is killed)
            health = stack.enter_context(HealthServer(server, port=0, host="127.0.0.1"))
            replicas.append(Replica(f"replica{i + 1}", "127.0.0.1", server.grpc_port, server.http_port, health.port))
        grpc, http, stats = free_port(), free_port(), free_port()
        config = haproxy_config(grpc_bind=f"127.0.0.1:{grpc}", http_bind=f"127.0.0.1:{http}",
                                stats_bind=f"127.0.0.1:{stats}", replicas=replicas)
        lb = stack.enter_context(HAProxy(config, work_dir=args.out / "haproxy", stats_url=f"http://127.0.0.1:{stats}{STATS_PATH};csv"))
        lb.wait_for({f"replica{i + 1}": "UP" for i in range(args.replicas)}, timeout_s=60)
        for path, url in (("direct (replica 1)", servers[0].grpc_url), (f"balancer ({args.replicas} replicas)", f"127.0.0.1:{grpc}")):
            rows += measure(url, voices, streams, seconds=args.seconds_per_level, path=path)
    rows.sort(key=lambda r: (r["voice"], r["streams"]))
    header = "| " + " | ".join(c for c, _ in COLUMNS) + " |\n|" + "---|" * len(COLUMNS)
    table = header + "\n" + "\n".join("| " + " | ".join(f.format(r[c]) for c, f in COLUMNS) + " |" for r in rows)
    print(f"\n{args.seconds_per_level:g} s per level; latencies in ms\n{table}")
    (args.out / "scale_out.md").write_text(table + "\n")
    with (args.out / "scale_out.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out / 'scale_out.md'} and scale_out.csv")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
