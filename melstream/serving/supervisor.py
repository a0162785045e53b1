"""Keep a tritonserver serving: restart it when it dies, reload a voice whose Python backend stub died.

Triton 2.51's Python backend restarts no crashed stub, and its ready endpoints keep answering 200 after one
died: every request to that model then fails ("Stub process ... is not healthy") or, for a voice model's
stub, hangs.  :class:`Supervisor` looks at the server's process group every ``poll_s`` (a stub is a process
whose command line names its model: :func:`~melstream.serving.server.stub_processes`) and:

* **a stub is gone** -> the dead model is reloaded through Triton's repository API (explicit model control;
  the endpoints need the server's key, which only the supervisor has): unloaded (its ready endpoint, and so
  ``melstream health`` and ``Client.voices()`` for its voice, say not ready from then on; a dead voice model
  refuses new streams), then loaded again with new stubs.  The other voices are not touched.  Why not
  restart the whole server: it would cut every other voice's streams.
* **tritonserver is gone**, or it logged a fatal signal without exiting (Triton 2.51 can hang in its signal
  handler), or it has not answered ``/v2/health/live`` for ``hang_after_s`` -> what it left is removed (its
  stubs, its shared memory), the reason is logged with the end of its log, and it is started again after a
  back-off (1 s, doubling up to 30 s; back to 1 s once it has served for a minute).  If reloading a voice
  fails three times, the server is restarted too.

What Triton 2.51 does not let us fix (python_backend ``src/python_be.cc``, core ``src/infer_response.h``):
the parent side of the Python backend makes one response factory per request of a decoupled model and frees
it only when the stub says so (a final response or ``PYTHONSTUB_DecoupledResponseFactoryCleanup``); each
factory holds a reference to its model (``InferenceResponseFactory::model_``).  When a voice model's stub
dies, its streams in flight get no final response, ever, and the old copy of the model is never freed.  Those
streams end only when their client gives up (melstream's clients: ``timeout_s``) or the server restarts;
restarting the server would cut every other voice's streams, so the supervisor does not.  A dead network
stub's calls do end (with an error), but its old copy stays too: its surviving stubs are killed after
``stale_grace_s`` (they can take no request any more), and the server's next stop runs into its exit timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from melstream.errors import ServerError
from melstream.serving.server import StubProcess, TritonServer, describe_exit, live, stub_processes
from melstream_client.wire import voice_of


def _stderr(line: str) -> None:
    print(f"melstream serve: {line}", file=sys.stderr, flush=True)


@dataclass
class Recovery:
    """One voice brought back after a stub of it died."""

    voice: str
    dead: list[StubProcess]
    #: from noticing the dead stub until the voice was loaded again
    seconds: float = 0.0
    ok: bool = False
    error: str = ""


@dataclass
class Supervisor:
    """Runs ``server`` and keeps it serving (see the module's docstring); :meth:`run` until ``stop`` is set."""

    server: TritonServer
    #: how often the server's processes are looked at (a few ms each: the sooner a dead stub's voice is unloaded,
    #: the fewer requests reach it)
    poll_s: float = 0.2
    #: how long a (re)started server may take to be ready
    start_timeout_s: float = 300.0
    #: back-off before restarting a dead server: first, longest
    backoff_s: tuple[float, float] = (1.0, 30.0)
    #: a server that served this long without dying starts the back-off again from its first value
    healthy_after_s: float = 60.0
    #: the stubs of a dead model's old copy left alive are killed this long after the reload
    stale_grace_s: float = 5.0
    #: reload attempts of a voice before the whole server is restarted
    reload_attempts: int = 3
    #: how often the server is asked whether it is alive (``/v2/health/live``), and how long it may not answer
    #: before it counts as hung and is restarted
    live_every_s: float = 2.0
    hang_after_s: float = 15.0
    #: whether the server answers /v2/health/live (fakes in tests)
    is_live: Callable[[str], bool] = lambda url: live(url, timeout_s=2.0)
    log: Callable[[str], None] = _stderr
    clock: Callable[[], float] = time.monotonic
    #: the server's stubs from its pid (fakes in tests)
    list_stubs: Callable[[int], list[StubProcess]] = stub_processes
    #: SIGKILLs a process (fakes in tests)
    kill: Callable[[int], None] = lambda pid: os.kill(pid, signal.SIGKILL)
    #: waits out a back-off when no stop event is given
    sleep: Callable[[float], None] = time.sleep
    #: reload a voice whose stub died (False, `serve --no-supervise`: only mark it down, and leave a dead server
    #: to whoever runs this one: :meth:`run` returns)
    reload: bool = True
    #: voices a stub of which was found gone, with why, from then until they are loaded again: the replica's
    #: health endpoint (melstream.serving.health) says not ready meanwhile, where Triton's may still say ready
    down: dict[str, str] = field(default_factory=dict)
    #: what happened, for reports and tests
    recoveries: list[Recovery] = field(default_factory=list)
    restarts: int = 0
    _known: dict[int, StubProcess] = field(default_factory=dict)
    _stale: list[tuple[float, StubProcess]] = field(default_factory=list)
    _failures: int = 0
    _started_at: float = 0.0
    _live_at: float = 0.0
    _asked_at: float = 0.0

    # --- the loop ------------------------------------------------------------------------------------------
    def start(self, *, attempts: int = 3) -> None:
        """Start the server (a server that dies while starting is tried ``attempts`` times: see
        :meth:`TritonServer.start`) and note its stubs."""
        self.server.start(timeout_s=self.start_timeout_s, attempts=attempts)
        self._load_missing()
        self.adopt()

    def adopt(self) -> None:
        """Supervise the server as it runs now (started here or by the caller): note its stubs."""
        self._started_at = self._live_at = self._asked_at = self.clock()
        self._known = {s.pid: s for s in self._stubs()}
        self._stale.clear()
        self.down.clear()  # a new server: every voice loaded afresh (one that did not load is not ready in Triton)

    def _load_missing(self) -> None:
        """Load the models that did not come up with the server (a stub that died while it loaded; the server is
        ready without them: one voice that fails must not hide the others), ``reload_attempts`` times each."""
        try:
            missing = [m["name"] for m in self.server.repository_index() if m.get("state") != "READY"]
        except ServerError as e:
            self.log(f"cannot list the server's models: {e}")
            return
        for model in missing:
            for attempt in range(1, self.reload_attempts + 1):
                try:
                    self.server.load_model(model, timeout_s=self.start_timeout_s)
                    self.log(f"model {model!r} did not load with the server; loaded it (attempt {attempt})")
                    break
                except ServerError as e:
                    self.log(f"model {model!r} did not load with the server, nor now (attempt {attempt} of "
                             f"{self.reload_attempts}): {e}")

    def run(self, stop: threading.Event) -> None:
        """Check every ``poll_s`` until ``stop`` is set (the caller then stops the server); without ``reload``,
        also until the server dies (the caller reports that)."""
        while not stop.wait(self.poll_s):
            if not self.reload and self.server.poll() is not None:
                return
            self.check(stop)

    def check(self, stop: threading.Event | None = None) -> None:
        """One look: restart a dead server, reload the voices with a dead stub, kill stale stubs (without
        ``reload``: only mark voices with a dead stub down)."""
        returncode = self.server.poll()
        if not self.reload:
            if returncode is None:
                self._mark_dead()
            return
        if returncode is not None:
            self._restart(f"tritonserver died ({describe_exit(returncode)})", stop)
            return
        crash = self.server.crashed()
        if crash is not None:
            self._restart(f"tritonserver crashed ({crash!r} in its log) and had not exited", stop)
            return
        if self._hung():
            self._restart(f"tritonserver has not answered /v2/health/live for {self.hang_after_s:.0f} s", stop)
            return
        alive = self._mark_dead()
        now = self.clock()
        for when, stub in list(self._stale):
            if when <= now:
                self._stale.remove((when, stub))
                if stub.pid in alive:
                    self._kill(stub)
        for voice, stubs in sorted(self._dead(alive).items()):
            if stop is not None and stop.is_set():
                return
            self.recover(voice, stubs, alive)
            if self.server.poll() is not None:
                return  # it died meanwhile: the next check restarts it

    def _dead(self, alive: dict[int, StubProcess]) -> dict[str, list[StubProcess]]:
        """The known stubs not ``alive``, by voice."""
        dead: dict[str, list[StubProcess]] = {}
        for pid, stub in self._known.items():
            if pid not in alive:
                dead.setdefault(voice_of(stub.model), []).append(stub)
        return dead

    def _mark_dead(self) -> dict[int, StubProcess]:
        """Mark down every voice with a known stub gone (before anything else: the health endpoint says so at
        once); the stubs alive."""
        alive = {s.pid: s for s in self._stubs()}
        for voice, stubs in self._dead(alive).items():
            if voice not in self.down:
                names = ", ".join(f"{s.instance} (pid {s.pid})" for s in stubs)
                self.down[voice] = f"the Python backend stub of {names} is gone"
                if not self.reload:
                    self.log(f"{self.down[voice]}; voice {voice!r} stays not ready (not supervised: restart the "
                             "server to bring it back)")
        return alive

    # --- a dead stub -------------------------------------------------------------------------------------
    def recover(self, voice: str, dead: list[StubProcess], alive: dict[int, StubProcess]) -> Recovery:
        """Reload ``voice``: unload its voice model (not ready from here on) and the dead models, load them
        again; after ``reload_attempts`` failures restart the server."""
        started = self.clock()
        rec = Recovery(voice=voice, dead=dead)
        dead_models = sorted({s.model for s in dead})
        names = ", ".join(f"{s.instance} (pid {s.pid})" for s in dead)
        self.log(f"the Python backend stub of {names} is gone; voice {voice!r} is not ready until it is reloaded")
        # A dead voice model is unloaded first (not ready at once), its dead networks after it, and loaded back
        # the other way round.  A dead network alone is reloaded alone: the voice model stays (its ready endpoint
        # says ready meanwhile, but the network's does not, nor do `melstream health` and Client.voices(), which
        # check a voice's networks too), because two live copies of a voice model would share its Prometheus
        # series, and Triton 2.51 frees a shared series when the old copy unloads while the new one still writes
        # it (core src/metric_family.cc counts references per family object): tritonserver segfaulted.
        reload = ([voice] if voice in dead_models else []) + [m for m in dead_models if m != voice]
        for attempt in range(1, self.reload_attempts + 1):
            try:
                for model in reload:
                    with contextlib.suppress(ServerError):  # not loaded (any more): nothing to unload
                        self.server.unload_model(model)
                for model in reversed(reload):  # the networks before the voice model that calls them
                    self.server.load_model(model, timeout_s=self.start_timeout_s)
                rec.ok = True
                break
            except ServerError as e:
                rec.error = str(e)
                self.log(f"reloading voice {voice!r} failed (attempt {attempt} of {self.reload_attempts}): {e}")
                if self.server.poll() is not None:
                    break
        rec.seconds = self.clock() - started
        self.recoveries.append(rec)
        if not rec.ok:
            self._restart(f"voice {voice!r} could not be reloaded: {rec.error}", None)
            return rec
        now_alive = {s.pid: s for s in self._stubs()}
        reloaded = set(reload)
        # what was known, less the old copies of the reloaded models, plus the new stubs: a stub that died
        # during the reload is still known, so the next check sees it
        self._known = {pid: s for pid, s in self._known.items() if s.model not in reloaded}
        self._known.update({pid: s for pid, s in now_alive.items() if pid not in alive})
        for stub in alive.values():
            # a dead model's old copy is never freed (see the module's docstring); the stubs it has left can
            # take no request: free their memory once the calls they may be running have ended
            if stub.model in dead_models and stub.pid in now_alive:
                self._stale.append((self.clock() + self.stale_grace_s, stub))
        self.down.pop(voice, None)
        self.log(f"voice {voice!r} is ready again ({rec.seconds:.1f} s after its stub was found gone)")
        return rec

    def _hung(self) -> bool:
        """Whether the server has not answered /v2/health/live for ``hang_after_s`` (asked every ``live_every_s``)."""
        now = self.clock()
        if now - self._asked_at >= self.live_every_s:
            self._asked_at = now
            if self.is_live(self.server.http_url):
                self._live_at = self.clock()
        return self.clock() - self._live_at >= self.hang_after_s

    def _kill(self, stub: StubProcess) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            self.kill(stub.pid)
            self.log(f"killed {stub.instance} (pid {stub.pid}): a stub of a model copy that was replaced")

    def _stubs(self) -> list[StubProcess]:
        pid = self.server.pid
        return [] if pid is None else self.list_stubs(pid)

    # --- a dead server -----------------------------------------------------------------------------------
    def _restart(self, why: str, stop: threading.Event | None) -> None:
        """Remove what the server left, wait the back-off, start it again (until it starts or ``stop``)."""
        tail = self.server.log_tail(10)
        report = self.server.cleanup()
        self.log(f"{why}; removed {len(report.leftover_processes)} leftover process(es) and "
                 f"{len(report.leftover_regions)} shared-memory region(s). The last lines of its log:")
        for line in tail:
            self.log(f"  | {line}")
        if self.clock() - self._started_at >= self.healthy_after_s:
            self._failures = 0
        while True:
            delay = min(self.backoff_s[1], self.backoff_s[0] * 2 ** self._failures)
            self._failures += 1
            self.restarts += 1
            self.log(f"restarting tritonserver in {delay:.0f} s (restart {self.restarts})")
            if stop is not None and stop.wait(delay):
                return
            if stop is None:
                self.sleep(delay)  # the back-off itself
            try:
                self.start(attempts=1)
            except ServerError as e:  # TritonServer.start has cleaned up after it
                self.log(f"tritonserver did not start: {e}")
                continue
            self.log(f"tritonserver is serving again (pid {self.server.pid})")
            return
