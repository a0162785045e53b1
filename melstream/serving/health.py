"""A replica's readiness, as `melstream serve` knows it: the endpoint its load balancer and orchestrator ask.

Triton 2.51's own ready endpoints keep answering 200 for a model whose Python backend stub died (see
melstream.serving.supervisor), so they cannot be a replica's health on their own.  `melstream serve` knows more:
its supervisor watches the stubs, marks a voice down the moment one of its stubs is found gone, and clears the
mark only once the voice is loaded again.  ``GET /ready`` on ``--health-port`` (8003 by default, next to
Triton's 8000-8002) answers

* ``200`` and one ``<voice>\\tready`` line per voice when the server is ready and so is every voice in its model
  repository (its voice model and every network model of its addon), and no voice is marked down;
* ``503`` and one line per problem otherwise: the server not answering (starting, restarting), a voice marked
  down (its stub died: until it is reloaded; under ``--no-supervise``, until the replica is restarted), a voice
  not ready or not loaded at all (one that failed to load makes the replica unhealthy: it cannot serve it).

A balancer (``melstream balancer-config``, melstream.serving.balancer) and a Kubernetes readiness probe check
this one URL.  It tells nothing but readiness and answers only GET: the model-control API stays with the
supervisor.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Protocol

from melstream.errors import ClientError, ServerError
from melstream_client import wire

if TYPE_CHECKING:
    from melstream_client._voices import VoiceDirectory

#: the replica's readiness, on the health port
READY_PATH = "/ready"
#: `melstream serve`'s health port unless told otherwise (Triton's are 8000 HTTP, 8001 gRPC, 8002 metrics)
DEFAULT_HEALTH_PORT = 8003


class Repository(Protocol):
    """What readiness needs of the server (TritonServer; fakes in tests)."""

    @property
    def http_url(self) -> str: ...

    def repository_index(self) -> list[dict[str, str]]: ...


def voice_problems(client: VoiceDirectory, voices: list[str]) -> dict[str, str]:
    """For each of ``voices`` (none: every voice with a model loaded), why it is not ready ('' when it is)."""
    loaded = client.loaded_models()
    names = voices or sorted({wire.voice_of(m) for m in loaded})
    problems = {}
    for voice in names:
        if not client.is_model_ready(voice):
            problems[voice] = ("its voice model is not ready (being reloaded after its stub died, or it failed to "
                               "load: see the server log)" if any(wire.voice_of(m) == voice for m in loaded)
                               else "no model of this voice is loaded")
            continue
        try:
            networks = [wire.network_model_name(voice, n) for n in client.spec(voice).networks]
        except ClientError as e:
            problems[voice] = f"its addon cannot be read: {e}"
            continue
        down = [m for m in networks if not client.is_model_ready(m)]
        problems[voice] = f"network model(s) not ready: {', '.join(down)}" if down else ""
    return problems


def readiness(server: Repository, down: Mapping[str, str], *, timeout_s: float = 2.0) -> tuple[bool, list[str]]:
    """Whether the replica is ready, and a line for each voice (``voice<TAB>ready`` or why not) or for what
    keeps it from telling.  ``down``: voices the supervisor marked down, with why."""
    from melstream.serving.server import not_ready
    from melstream_client import HttpClient

    reason = not_ready(server.http_url, timeout_s=timeout_s)
    if reason is not None:
        return False, [reason] + [f"{v}\t{why}" for v, why in sorted(down.items())]
    try:
        voices = sorted({wire.voice_of(m["name"]) for m in server.repository_index()})
        problems = voice_problems(HttpClient(server.http_url, timeout_s=timeout_s), voices)
    except (ServerError, ClientError) as e:
        return False, [f"cannot tell whether its voices are ready: {e}"]
    if not voices:
        return False, ["the model repository has no voice"]
    for voice, why in down.items():  # the supervisor's word first: Triton may still say ready
        problems[voice] = why
    return all(not p for p in problems.values()), [f"{v}\t{p or 'ready'}" for v, p in sorted(problems.items())]


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # a checker that hangs up once it has the status line (HAProxy does) is no error worth a traceback
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class HealthServer:
    """``GET /ready`` (see the module's docstring) on ``host:port``, in a thread, until :meth:`stop`."""

    def __init__(self, server: Repository, *, port: int, host: str = "",
                 down: Callable[[], Mapping[str, str]] = dict, timeout_s: float = 2.0) -> None:
        def check() -> tuple[bool, list[str]]:
            return readiness(server, dict(down()), timeout_s=timeout_s)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?", 1)[0] != READY_PATH:
                    self._answer(HTTPStatus.NOT_FOUND, [f"not found: {self.path} (readiness is {READY_PATH})"])
                    return
                ok, lines = check()
                self._answer(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, lines)

            def _answer(self, status: HTTPStatus, lines: list[str]) -> None:
                body = "".join(f"{line}\n" for line in lines).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass  # a check a second from each balancer would drown serve's log

        self._httpd = _Quiet((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        # a short poll: stop() waits for it
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="melstream-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
