"""``make loadtest``: start a melstream server on free ports, run locust headless against it for a bounded
time, leave locust's CSV and HTML reports, stop the server.  Exit status: locust's (1 if any failure).

    .venv/bin/python -m loadtests.run --users 8 --run-time 60s --out out/loadtest [-- extra locust options]

Options after ``--`` go to locust unchanged, e.g. ``-- --voices fastvoice --texts paragraph GrpcStreamUser``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from melstream.serving.server import TritonServer

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def locust_command(*, grpc_url: str, http_url: str, users: int, spawn_rate: float, run_time: str, out: Path,
                   extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(users), "--spawn-rate", str(spawn_rate), "--run-time", run_time,
        # in-flight utterances finish (and are reported) when the time is up, rather than being cut off
        "--stop-timeout", "30",
        "--csv", str(out / "locust"), "--csv-full-history", "--html", str(out / "report.html"),
        "--exit-code-on-error", "1", "--only-summary",
        "--grpc-url", grpc_url, "--http-url", http_url,
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    p = argparse.ArgumentParser(prog="python -m loadtests.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=8, help="concurrent users (default 8)")
    p.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second (default 4)")
    p.add_argument("--run-time", default="60s", help="how long to run, locust syntax: 30s, 2m (default 60s)")
    p.add_argument("--out", type=Path, default=Path("out/loadtest"), help="reports folder (default out/loadtest)")
    p.add_argument("--repo", type=Path, default=Path("model_repository"), help="model repository to serve")
    args = p.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    server = TritonServer.on_free_ports(args.repo, log_file=args.out / "tritonserver.log")
    print(f"starting tritonserver (log: {args.out / 'tritonserver.log'})", flush=True)
    with server.start(timeout_s=180):
        cmd = locust_command(grpc_url=server.grpc_url, http_url=server.http_url, users=args.users, spawn_rate=args.spawn_rate,
                             run_time=args.run_time, out=args.out, extra=extra)
        print(" ".join(cmd), flush=True)
        code = subprocess.call(cmd)
    print(f"reports: {args.out / 'report.html'}, {args.out}/locust_stats.csv, _failures.csv, _stats_history.csv"
          f" (locust exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
