"""The load balancer in front of N identical Triton replicas: HAProxy's configuration, from one source.

Why HAProxy (Debian's 2.6) rather than nginx (1.22): both proxy gRPC over cleartext HTTP/2 and balance each
HTTP/2 stream (a Triton ``ModelStreamInfer`` call, i.e. one melstream stream) on its own, but only HAProxy's
free edition checks its servers actively: nginx notices a dead replica only when a real request fails on it,
and cannot tell a replica whose voice is reloading from a healthy one.  HAProxy asks every replica's health
port each ``check_interval_s`` (``GET /ready`` of `melstream serve`, melstream.serving.health: the server and
every voice ready, and no voice with a dead stub, which Triton's own ready endpoints can still call ready), and
takes a replica out after two failed checks, back in after two good ones.

What the configuration does:

- gRPC frontend (``proto h2``, cleartext): each stream goes to the replica with the fewest streams in flight
  (``balance leastconn`` counts a server's active requests, so HTTP/2 streams, not connections) and stays
  there for its life; a stream that cannot connect to its replica is sent to another (``retries`` with
  ``option redispatch``);
- HTTP frontend: the same for HTTP/1.1 and Triton's ``generate_stream`` server-sent events, passed through
  as they come (HAProxy does not buffer responses; nothing here asks it to);
- timeouts long enough for the longest utterance (``stream_timeout_s``, default one hour) where an idle gap
  would cut a stream, short ones elsewhere (connect, queue);
- Triton's model-control and repository endpoints (``/v2/repository/...``, its gRPC ``Repository*`` calls)
  are refused at the balancer: only melstream's own supervisor, on each replica's loopback, loads and unloads
  models.

:func:`haproxy_config` writes the file from a list of replicas (``host:grpc_port:http_port``) or from a DNS
name resolved to a number of replicas (``server-template``: docker-compose's service name, a Kubernetes
headless service); ``melstream balancer-config`` is its command line, and the committed
``deploy/haproxy/haproxy-compose.cfg`` is its output for the compose file (never edited by hand).
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from melstream.errors import MelstreamError
from melstream.serving.health import DEFAULT_HEALTH_PORT, READY_PATH
from melstream.serving.server import poll, wait_answering
from melstream_client import wire

#: where the Triton model-control API lives: never routed through the balancer
REPOSITORY_HTTP_PREFIX = wire.REPOSITORY_PATH_PREFIX
REPOSITORY_GRPC_PREFIX = "/inference.GRPCInferenceService/Repository"
#: HAProxy's stats page (with stats_bind); ";csv" after it gives the CSV
STATS_PATH = "/stats"


@dataclass(frozen=True)
class Replica:
    """One Triton replica run by `melstream serve`: where its gRPC, HTTP and health ports are."""

    name: str
    host: str
    grpc_port: int
    http_port: int
    health_port: int = DEFAULT_HEALTH_PORT

    @classmethod
    def parse(cls, text: str, *, name: str) -> Replica:
        """``host:grpc_port:http_port:health_port`` (e.g. ``127.0.0.1:8001:8000:8003``)."""
        parts = text.rsplit(":", 3)
        if len(parts) != 4 or not parts[0]:
            raise MelstreamError(f"replica {text!r}: expected HOST:GRPC_PORT:HTTP_PORT:HEALTH_PORT, e.g. "
                                 f"127.0.0.1:8001:8000:{DEFAULT_HEALTH_PORT}")
        try:
            ports = [int(p) for p in parts[1:]]
        except ValueError:
            raise MelstreamError(f"replica {text!r}: the ports must be numbers") from None
        for port in ports:
            if not 0 < port < 65536:
                raise MelstreamError(f"replica {text!r}: port {port} is out of range")
        return cls(name, parts[0], *ports)


@dataclass(frozen=True)
class Template:
    """Replicas found by DNS: ``count`` slots filled from the addresses ``dns_name`` resolves to (re-resolved as
    replicas come and go), with the same ports on each."""

    dns_name: str
    count: int
    grpc_port: int = 8001
    http_port: int = 8000
    health_port: int = DEFAULT_HEALTH_PORT
    resolver: str = "127.0.0.11:53"  # Docker's embedded DNS; in Kubernetes, the cluster DNS service


def haproxy_config(*, replicas: Sequence[Replica] = (), template: Template | None = None,
                   grpc_bind: str = "127.0.0.1:8001", http_bind: str = "127.0.0.1:8000", stats_bind: str | None = None,
                   check_interval_s: float = 1.0, stream_timeout_s: float = 3600.0, max_connections: int = 4096) -> str:
    """HAProxy's configuration for ``replicas`` (or ``template``), each checked on its health port.
    ``*_bind``: where the balancer listens (loopback by default: open it deliberately);
    ``stats_bind``: HAProxy's own stats page and CSV (``/stats``), for operators and tests."""
    if bool(replicas) == (template is not None):
        raise MelstreamError("a balancer needs either a list of replicas or a DNS template, not both or neither")
    if check_interval_s <= 0 or stream_timeout_s <= 0:
        raise MelstreamError("the check interval and the stream timeout must be positive")
    check_ms = max(1, round(check_interval_s * 1000))
    stream_s = round(stream_timeout_s)
    lines = [
        "# generated by `melstream balancer-config` (melstream/serving/balancer.py); do not edit",
        "global",
        f"    maxconn {max_connections}",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout queue 5s",
        "    timeout http-request 10s",
        # a stream is one request whose response lasts as long as the utterance: the client and server side
        # may be quiet for a while between chunks, and must not be cut before the longest utterance ends
        f"    timeout client {stream_s}s",
        f"    timeout server {stream_s}s",
        "    timeout http-keep-alive 60s",
        # a stream whose replica refuses the connection is sent to another one (never a stream that has begun:
        # HAProxy does not retry a request once the server has it)
        "    retries 2",
        "    option redispatch",
        "",
    ]
    if template is not None:
        lines += ["resolvers replicas", f"    nameserver dns {template.resolver}", "    hold valid 5s", ""]
    lines += [
        "frontend grpc",
        f"    bind {grpc_bind} proto h2",
        f'    http-request deny deny_status 403 if {{ path_beg {REPOSITORY_GRPC_PREFIX} }}',
        "    default_backend triton_grpc",
        "",
        "frontend http",
        f"    bind {http_bind}",
        f'    http-request deny deny_status 403 if {{ path_beg {REPOSITORY_HTTP_PREFIX} }}',
        "    default_backend triton_http",
        "",
    ]
    if stats_bind is not None:
        lines += ["frontend stats", f"    bind {stats_bind}", "    stats enable", f"    stats uri {STATS_PATH}",
                  "    stats refresh 5s", ""]
    for backend, proto in (("triton_grpc", " proto h2"), ("triton_http", "")):
        # each replica's health: `melstream serve`'s readiness on its health port (the server's `port`)
        # (an explicit connect: the check speaks HTTP/1.1 to the health port, not the gRPC servers' h2)
        lines += [f"backend {backend}", "    balance leastconn", "    option httpchk", "    http-check connect",
                  f"    http-check send meth GET uri {READY_PATH}", "    http-check expect status 200",
                  f"    default-server check inter {check_ms}ms fall 2 rise 2"]
        if template is not None:
            port = template.grpc_port if proto else template.http_port
            lines.append(f"    server-template replica {template.count} {template.dns_name}:{port}{proto} "
                         f"port {template.health_port} resolvers replicas init-addr none")
        for r in replicas:
            port = r.grpc_port if proto else r.http_port
            lines.append(f"    server {r.name} {r.host}:{port}{proto} port {r.health_port}")
        lines.append("")
    return "\n".join(lines)


# --- running it (the loopback scale-out tests and benchmark) ----------------------------------------------------

class HAProxy:
    """``haproxy`` (Debian's package) in the foreground on a configuration file, stopped on exit.  ``stats_url`` is
    the CSV of its stats page (the configuration needs ``stats_bind``), read by :meth:`servers`."""

    def __init__(self, config: str, *, work_dir: Path, stats_url: str) -> None:
        self.config_file = Path(work_dir) / "haproxy.cfg"
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config)
        self.log_file = Path(work_dir) / "haproxy.log"
        self.stats_url = stats_url
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 30.0) -> HAProxy:
        """Start it and wait until its stats page answers (its servers may still be coming up: see :meth:`wait_for`)."""
        binary = shutil.which("haproxy")
        if binary is None:
            raise MelstreamError("haproxy is not installed: run `make sysdeps` (Debian's haproxy package)")
        with self.log_file.open("ab") as log:
            # -db: foreground, no daemon; -W would add a master process, which a test has no use for
            self._proc = subprocess.Popen([binary, "-db", "-f", str(self.config_file)], stdout=log, stderr=log)
        wait_answering(self._proc, self.servers, what=f"haproxy (stats page {self.stats_url})", timeout_s=timeout_s,
                       log_tail=lambda: self.log_file.read_text(errors="replace")[-2000:], error=MelstreamError)
        return self

    def servers(self) -> dict[tuple[str, str], str]:
        """``(backend, server) -> status`` (``UP``, ``DOWN``, ``UP 1/2``, ``MAINT``...) from the stats CSV."""
        with urllib.request.urlopen(self.stats_url, timeout=5) as resp:
            rows = list(csv.reader(io.StringIO(resp.read().decode().lstrip("# "))))
        header = rows[0]
        name, server, status = header.index("pxname"), header.index("svname"), header.index("status")
        return {(r[name], r[server]): r[status] for r in rows[1:]
                if len(r) > status and r[server] not in ("FRONTEND", "BACKEND")}

    def wait_for(self, want: dict[str, str], *, timeout_s: float = 30.0) -> dict[tuple[str, str], str]:
        """Poll until every server named in ``want`` has that status in every backend; the last statuses."""
        def matches(now: dict[tuple[str, str], str]) -> bool:
            return all(status == want[s] for (_, s), status in now.items() if s in want)

        now = poll(self.servers, matches, timeout_s=timeout_s)
        if not matches(now):
            raise MelstreamError(f"haproxy's servers are {now} after {timeout_s} s, expected {want}")
        return now

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)

    def __enter__(self) -> HAProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
