"""The ``melstream`` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from melstream.errors import MelstreamError

if TYPE_CHECKING:
    pass

#: the one environment variable a container picks its deployment profile by (docker-compose.yml, Dockerfile)
PROFILE_VARIABLE = "MELSTREAM_PROFILE"


def cmd_balancer_config(args: argparse.Namespace) -> int:
    from pathlib import Path

    from melstream.serving.balancer import Replica, Template, haproxy_config

    replicas = [Replica.parse(r, name=f"replica{i + 1}") for i, r in enumerate(args.replica or [])]
    template = Template(args.dns_name, args.count, grpc_port=args.grpc_port, http_port=args.http_port,
                        health_port=args.health_port, resolver=args.resolver) if args.dns_name else None
    text = haproxy_config(replicas=replicas, template=template, grpc_bind=args.grpc_bind,
                          http_bind=args.http_bind, stats_bind=args.stats_bind, check_interval_s=args.check_interval_s,
                          stream_timeout_s=args.stream_timeout_s)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: {len(replicas) or args.count} replicas")
    return 0


def cmd_build_repo(args: argparse.Namespace) -> int:
    from melstream.serving.repo import build_repository, parse_max_streams

    report = build_repository(args.addons, args.out, profile=args.profile, network_instances=args.network_instances,
                              max_streams=parse_max_streams(args.max_streams or []), placement=args.placement,
                              batch_wait_us=args.batch_wait_us, lockstep_rows=args.lockstep_rows,
                              compute_slots=args.compute_slots)
    for where, message in report.refused.items():
        print(f"refused addon {where}: {message}", file=sys.stderr)
    print(f"wrote {args.out} (profile {args.profile}): voices {', '.join(report.voices) or 'none'}; "
          f"{len(report.models)} models")
    return 1 if report.refused else 0


def cmd_build_plans(args: argparse.Namespace) -> int:
    from melstream.serving.plans import build_plans

    build_plans(args.repo, compute_capabilities=args.compute_capability, dry_run=args.dry_run)
    return 0


def prepare_repository(args: argparse.Namespace) -> None:
    """With ``serve --profile P`` (or MELSTREAM_PROFILE=P): (re)write ``--repo`` from ``--addons`` for P before
    starting, and build its TensorRT plans for this machine's GPUs if P runs them (gpu-trt): what a container does
    at start, where the GPU is known (plans do not carry over between GPU types or TensorRT versions)."""
    from melstream.serving.plans import build_plans
    from melstream.serving.repo import build_repository, get_profile

    profile = get_profile(args.profile)
    report = build_repository(args.addons, args.repo, profile=profile.name)
    for where, message in report.refused.items():
        print(f"refused addon {where}: {message}", file=sys.stderr)
    print(f"wrote {args.repo} (profile {profile.name}): voices {', '.join(report.voices) or 'none'}", file=sys.stderr)
    if profile.network_backend == "tensorrt":
        build_plans(args.repo, say=lambda line: print(line, file=sys.stderr))


def cmd_serve(args: argparse.Namespace) -> int:
    """Run tritonserver until SIGTERM or Ctrl-C (then stop it: 0 if it stopped cleanly, 1 if not), supervised:
    a dead tritonserver is restarted, a voice whose stub died is reloaded (melstream.serving.supervisor).  With
    ``--no-supervise``, a server that dies ends ``serve``: it says how, with the end of its log, cleans up after
    it and exits 1."""
    import threading

    from melstream.serving.health import READY_PATH
    from melstream.serving.server import TritonServer, describe_exit
    from melstream.serving.supervisor import Supervisor

    if args.profile:
        prepare_repository(args)
    server = TritonServer(repo=Path(args.repo), http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, log_verbose=args.log_verbose,
                          triton_home=Path(args.triton_home) if args.triton_home else None,
                          exit_timeout_s=args.exit_timeout_s)
    supervisor = Supervisor(server, start_timeout_s=args.timeout_s, reload=args.supervise)
    health = None
    if args.health_port:
        from melstream.serving.health import HealthServer

        try:
            # up before the server: a probe gets "not ready, no answer from tritonserver" while it starts
            health = HealthServer(server, port=args.health_port, host=args.health_host, down=lambda: supervisor.down)
        except OSError as e:
            raise MelstreamError(f"--health-port {args.health_port}: cannot listen there: {e}") from None
        health.start()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # explicitly: a process started in the background by a shell inherits SIGINT ignored, and Python then
    # installs no KeyboardInterrupt for it; `kill -INT` must still stop the server
    signal.signal(signal.SIGINT, on_term)
    try:
        try:
            supervisor.start()
            for m in server.repository_index():
                state = m.get("state", "?")
                note = f" ({m['reason']})" if m.get("reason") and state != "READY" else ""
                print(f"  {m['name']:<32} {state}{note}", file=sys.stderr)
            print(f"melstream serving {args.repo}: HTTP :{args.http_port}, gRPC :{args.grpc_port}, "
                  f"metrics :{args.metrics_port}"
                  f"{f', health :{args.health_port}{READY_PATH}' if health is not None else ''}; tritonserver pid "
                  f"{server.pid}{', supervised' if args.supervise else ''}; Ctrl-C stops", file=sys.stderr, flush=True)
            # until a signal (not supervised: also until the server dies; dead stubs are only marked down)
            supervisor.run(threading.Event())
            returncode = server.wait()
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it died: report that, even if a stop is asked for now
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except KeyboardInterrupt:
            # A second signal must not interrupt the stop: it is bounded (exit timeout, then a kill).
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if server.pid is None:
                print("melstream serve: stopped (tritonserver was not running)", file=sys.stderr)
                return 0
            print("melstream serve: stopping tritonserver", file=sys.stderr)
            report = server.stop()
            if report.clean:
                print(f"melstream serve: tritonserver stopped cleanly in {report.seconds:.1f} s", file=sys.stderr)
                return 0
            why = (f"An open client gRPC stream keeps its voice loaded in Triton 2.51 until the exit timeout "
                   f"({server.exit_timeout_s} s) runs out")
            if any(r.ok for r in supervisor.recoveries):
                why += ("; so does the old copy of a model whose stub died (Triton 2.51 never frees it: see "
                        "melstream.serving.supervisor)")
            print(f"melstream serve: tritonserver did not stop cleanly: {report.describe()}; its processes and "
                  f"shared memory are removed. {why}", file=sys.stderr)
            return 1
        report = server.cleanup()
        tail = server.log_tail(20)
        print(f"melstream serve: tritonserver died ({describe_exit(returncode or 0)}); removed what it left: "
              f"{len(report.leftover_processes)} process(es) of its group (Python backend stubs), "
              f"{len(report.leftover_regions)} shared-memory region(s). The last lines of its log:", file=sys.stderr)
        for line in tail:
            print(f"  | {line}", file=sys.stderr)
        return 1
    finally:
        if server.pid is not None:  # start() or the model listing failed: stop what started
            server.stop()
        if health is not None:
            health.stop()


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the server is ready and so is every voice (each ``--voice``, else every voice it has loaded):
    its voice model and all its network models answer ready; else 1, naming what is not ready and why.

    Used as the container health check: it needs nothing but this Python (the image has no curl).  A voice
    whose stub died is not ready from the moment the supervisor notices until it is reloaded.
    """
    from melstream.errors import ClientError
    from melstream.serving.health import voice_problems
    from melstream.serving.server import not_ready
    from melstream_client import HttpClient

    reason = not_ready(args.url, timeout_s=args.timeout_s)
    if reason is not None:
        print(f"melstream health: {reason}", file=sys.stderr)
        return 1
    try:
        problems = voice_problems(HttpClient(args.url, timeout_s=args.timeout_s), args.voice or [])
    except ClientError as e:
        print(f"melstream health: cannot tell whether its voices are ready: {e}", file=sys.stderr)
        return 1
    for voice, problem in problems.items():
        print(f"{voice}\t{problem or 'ready'}")
    bad = {v: p for v, p in problems.items() if p}
    if bad:
        print(f"melstream health: not ready: {'; '.join(f'voice {v!r}: {p}' for v, p in bad.items())}", file=sys.stderr)
        return 1
    print("ready")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from melstream.addon import load_addon
    from melstream.runners.base import UnboundRunner

    addon = load_addon(args.addon)
    a = addon.audio
    print(f"{addon.name} {addon.version}: {addon.description}")
    print(f"audio: {a.sample_rate} Hz, hop {a.hop_length}, {a.n_mels} mel bins; text front end: {addon.text['frontend']}")
    for name, spec in addon.networks.items():
        ins = ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in spec.all_inputs())
        outs = ", ".join(f"{t.name} {t.dtype}{list(t.shape)}" for t in spec.outputs)
        buckets = f"; buckets {', '.join(map(str, spec.buckets))}" if spec.buckets else ""
        print(f"network {name} ({spec.role}, {spec.file}): {ins} -> {outs}{buckets}")
    print(addon.build(UnboundRunner()).describe())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from melstream.demo import run_demo

    return run_demo(Path(args.out), addons=Path(args.addons), repo=Path(args.repo))


def build_parser() -> argparse.ArgumentParser:
    from melstream.serving.health import DEFAULT_HEALTH_PORT, READY_PATH
    from melstream_client.cli import add_synth, add_voices

    p = argparse.ArgumentParser(prog="melstream", description="Serve TTS acoustic models on Triton, streaming mel frames.")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build-repo", help="generate the Triton model repository from addons")
    b.add_argument("--addons", default="addons")
    b.add_argument("--profile", default="cpu")
    b.add_argument("--network-instances", type=int, default=None, metavar="N",
                   help="instances per network model (default: the profile's; about one per core on CPU hosts)")
    b.add_argument("--max-streams", action="append", metavar="[VOICE=]N",
                   help="streams a voice admits at once, the next refused as busy: N for every voice, VOICE=N for "
                        "one; repeatable (default: the profile's, measured per voice)")
    b.add_argument("--placement", choices=("triton", "voice"), default=None,
                   help="where voices run their networks: their Triton network models (BLS) or inside the voice "
                        "model's process (default: the profile's)")
    b.add_argument("--batch-wait-us", type=int, default=None, metavar="US",
                   help="cross-stream batching: how long a network call waits for other streams' calls to share "
                        "a run (0: none; default: the profile's)")
    b.add_argument("--lockstep-rows", type=int, default=None, metavar="N",
                   help="rows of one lockstep step: every stream's attention steps in one call (0: each stream "
                        "steps alone; default: the profile's)")
    b.add_argument("--compute-slots", type=int, default=None, metavar="N",
                   help="listener-first scheduling: streams of a voice computing a chunk at once, the one whose "
                        "listener needs audio soonest first (0: off; default: the profile's)")
    b.add_argument("--out", default="model_repository")
    b.set_defaults(func=cmd_build_repo)

    lb = sub.add_parser("balancer-config", help="write HAProxy's configuration for N Triton replicas "
                                                "(melstream/serving/balancer.py)")
    lb.add_argument("--replica", action="append", metavar="HOST:GRPC_PORT:HTTP_PORT:HEALTH_PORT",
                    help="a replica run by `melstream serve` (repeatable); or --dns-name and --count")
    lb.add_argument("--dns-name", default=None, help="replicas found by DNS (a compose service, a headless Service)")
    lb.add_argument("--count", type=int, default=3, help="with --dns-name: the most replicas it fills")
    lb.add_argument("--grpc-port", type=int, default=8001, help="with --dns-name: each replica's gRPC port")
    lb.add_argument("--http-port", type=int, default=8000, help="with --dns-name: each replica's HTTP port")
    lb.add_argument("--health-port", type=int, default=DEFAULT_HEALTH_PORT,
                    help="with --dns-name: each replica's health port (`melstream serve --health-port`)")
    lb.add_argument("--resolver", default="127.0.0.11:53", help="with --dns-name: the DNS server (Docker's by default)")
    lb.add_argument("--grpc-bind", default="127.0.0.1:8001", help="where the balancer takes gRPC (loopback unless "
                                                                  "opened deliberately)")
    lb.add_argument("--http-bind", default="127.0.0.1:8000", help="where the balancer takes HTTP")
    lb.add_argument("--stats-bind", default=None, help="HAProxy's stats page (/stats), if wanted")
    lb.add_argument("--check-interval-s", type=float, default=1.0, help="seconds between health checks")
    lb.add_argument("--stream-timeout-s", type=float, default=3600.0, help="the longest a stream may last")
    lb.add_argument("--out", default="-", help="file to write (default: standard output)")
    lb.set_defaults(func=cmd_balancer_config)

    s = sub.add_parser("serve", help="start tritonserver on the model repository")
    s.add_argument("--repo", default="model_repository")
    s.add_argument("--http-port", type=int, default=8000)
    s.add_argument("--grpc-port", type=int, default=8001)
    s.add_argument("--metrics-port", type=int, default=8002)
    s.add_argument("--log-verbose", type=int, default=0)
    s.add_argument("--timeout-s", type=float, default=300.0, help="how long to wait for readiness")
    s.add_argument("--triton-home", default=None, metavar="DIR",
                   help="run an installed Triton (DIR/bin/tritonserver, DIR/backends) instead of the wheel's, "
                        "e.g. /opt/tritonserver in NVIDIA's container")
    s.add_argument("--exit-timeout-s", type=int, default=7, metavar="S",
                   help="on SIGTERM/Ctrl-C, how long Triton may drain and unload (its --exit-timeout-secs); it is "
                        "killed 2 s later")
    s.add_argument("--no-supervise", dest="supervise", action="store_false",
                   help="do not restart a dead tritonserver or reload a voice whose stub died (it stays not ready "
                        "on the health port): exit 1 when the server dies (for running under another supervisor)")
    s.add_argument("--health-port", type=int, default=DEFAULT_HEALTH_PORT,
                   help=f"serve the replica's readiness on GET {READY_PATH} here: 200 when the server and every voice "
                        "are ready, 503 naming what is not (a voice whose stub died, at once; Triton's own ready "
                        "endpoints can still say ready); for balancers and readiness probes. 0: none")
    s.add_argument("--health-host", default="", help="the address the health port listens on (default: every "
                                                     "interface, as Triton's ports)")
    s.add_argument("--profile", default=os.environ.get(PROFILE_VARIABLE) or None,
                   help=f"first (re)write --repo from --addons for this profile, and build its TensorRT plans for "
                        f"gpu-trt (default: ${PROFILE_VARIABLE}; unset: serve --repo as it is)")
    s.add_argument("--addons", default="addons", help="the addons --profile builds from")
    s.set_defaults(func=cmd_serve)

    bp = sub.add_parser("build-plans", help="build the TensorRT plans of a gpu-trt repository for this machine's GPUs")
    bp.add_argument("--repo", default="model_repository")
    bp.add_argument("--compute-capability", action="append", metavar="CC",
                    help="build for compute capability CC, e.g. 8.6 (repeatable; default: each GPU's here)")
    bp.add_argument("--dry-run", action="store_true", help="print the trtexec commands, build nothing")
    bp.set_defaults(func=cmd_build_plans)

    h = sub.add_parser("health", help="exit 0 if a server and its voices are ready, else 1 naming what is not")
    h.add_argument("--url", default="localhost:8000", help="HTTP HOST:PORT")
    h.add_argument("--voice", action="append", metavar="VOICE",
                   help="check this voice (repeatable; default: every voice the server has loaded)")
    h.add_argument("--timeout-s", type=float, default=2.0)
    h.set_defaults(func=cmd_health)

    # the client's own commands (melstream_client.cli), the same here
    add_synth(sub)
    add_voices(sub)

    d = sub.add_parser("describe", help="print an addon's networks and block tree")
    d.add_argument("addon")
    d.set_defaults(func=cmd_describe)

    m = sub.add_parser("demo", help="build, serve, stream a sentence from every voice over gRPC and HTTP, stop")
    m.add_argument("--addons", default="addons")
    m.add_argument("--repo", default="model_repository")
    m.add_argument("--out", default="out")
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MelstreamError as e:
        print(f"melstream {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
