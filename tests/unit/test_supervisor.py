"""The supervisor's decisions, on a fake server (no tritonserver): which models it unloads and loads, in what
order, when it kills what, when it restarts the server and how long it waits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from melstream.errors import ServerDiedError, ServerError
from melstream.serving.server import StopReport, StubProcess
from melstream.serving.supervisor import Supervisor

MODELS = {"fastvoice": 1, "fastvoice__decoder": 2, "fastvoice__text_encoder": 1, "tacovoice": 1, "tacovoice__encoder": 2}


@dataclass
class FakeServer:
    """Stands in for TritonServer: its stubs are a dict pid -> StubProcess; loading a model gives it new stubs."""

    stubs: dict[int, StubProcess] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    returncode: int | None = None
    pid: int | None = None
    fail_loads: int = 0
    start_failures: list[Exception] = field(default_factory=list)
    crash: str | None = None
    live: bool = True
    http_url: str = "localhost:1"
    on_load: Any = None  # called after a load: lets a test kill another stub "during" a recovery
    _next_pid: int = 100

    def _spawn(self, model: str) -> None:
        for i in range(MODELS[model]):
            self._next_pid += 1
            self.stubs[self._next_pid] = StubProcess(self._next_pid, model, f"{model}_0_{i}")

    def start(self, *, timeout_s: float, attempts: int = 1) -> FakeServer:
        self.calls.append("start")
        if self.start_failures:
            raise self.start_failures.pop(0)
        self.pid, self.returncode, self.stubs = 1000 + len(self.calls), None, {}
        for model in MODELS:
            self._spawn(model)
        return self

    def poll(self) -> int | None:
        return self.returncode

    def repository_index(self) -> list[dict[str, str]]:
        loaded = {s.model for s in self.stubs.values()}
        return [{"name": m, "state": "READY" if m in loaded else "UNAVAILABLE"} for m in MODELS]

    def crashed(self) -> str | None:
        return self.crash

    def cleanup(self) -> StopReport:
        self.calls.append("cleanup")
        self.pid, self.stubs, self.crash = None, {}, None
        return StopReport(returncode=self.returncode)

    def log_tail(self, lines: int = 20) -> list[str]:
        return ["the last line"]

    def unload_model(self, name: str) -> None:
        self.calls.append(f"unload {name}")

    def load_model(self, name: str, *, timeout_s: float) -> None:
        self.calls.append(f"load {name}")
        if self.fail_loads:
            self.fail_loads -= 1
            raise ServerError(f"/v2/repository/models/{name}/load: HTTP 400: failed to load")
        self._spawn(name)  # the old copy's stubs stay: Triton never frees a model copy whose stub died
        if self.on_load is not None:
            self.on_load(self)

    def kill(self, pid: int) -> None:
        self.calls.append(f"kill {pid}")
        self.stubs.pop(pid, None)

    def of(self, model: str) -> list[StubProcess]:
        return [s for s in self.stubs.values() if s.model == model]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class NoWait:
    """A stop event whose wait returns at once (False: not stopped), keeping the delays asked for."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        return False

    def is_set(self) -> bool:
        return False


@pytest.fixture
def setup() -> tuple[Supervisor, FakeServer, Clock, list[str]]:
    server, clock, lines = FakeServer(), Clock(), []
    sup = Supervisor(server, log=lines.append, clock=clock, list_stubs=lambda pid: list(server.stubs.values()),  # type: ignore[arg-type]
                     kill=server.kill, sleep=lambda s: lines.append(f"slept {s}"), is_live=lambda url: server.live)
    sup.start()
    server.calls.clear()
    return sup, server, clock, lines


def test_nothing_dead_nothing_done(setup: Any) -> None:
    sup, server, _, _ = setup
    sup.check()
    assert server.calls == [] and sup.recoveries == []


def test_a_dead_network_stub_reloads_that_network_and_kills_the_old_copy_later(setup: Any) -> None:
    sup, server, clock, lines = setup
    dead, sibling = server.of("fastvoice__decoder")
    del server.stubs[dead.pid]
    sup.check()
    # the network alone: a second live copy of the voice model would share its metric series
    assert server.calls == ["unload fastvoice__decoder", "load fastvoice__decoder"]
    (rec,) = sup.recoveries
    assert rec.ok and rec.voice == "fastvoice" and rec.dead == [dead]
    assert any("fastvoice__decoder_0_0 (pid" in line and "is gone; voice 'fastvoice' is not ready" in line for line in lines)
    server.calls.clear()
    clock.now += sup.stale_grace_s - 0.1
    sup.check()
    assert server.calls == []  # the old copy's sibling may still finish a call
    clock.now += 0.2
    sup.check()
    assert server.calls == [f"kill {sibling.pid}"]  # then it is freed
    server.calls.clear()
    sup.check()
    assert server.calls == [] and len(sup.recoveries) == 1  # the killed sibling does not count as dead


def test_a_dead_voice_stub_reloads_only_that_voice(setup: Any) -> None:
    sup, server, clock, _ = setup
    (dead,) = server.of("tacovoice")
    del server.stubs[dead.pid]
    sup.check()
    assert server.calls == ["unload tacovoice", "load tacovoice"]
    clock.now += 60
    server.calls.clear()
    sup.check()
    assert server.calls == []  # nothing stale: the voice model has one instance, and it is the dead one


def test_two_voices_dead_at_once_are_reloaded_each(setup: Any) -> None:
    sup, server, _, _ = setup
    for model in ("fastvoice__text_encoder", "tacovoice"):
        del server.stubs[server.of(model)[0].pid]
    sup.check()
    assert server.calls == ["unload fastvoice__text_encoder", "load fastvoice__text_encoder", "unload tacovoice", "load tacovoice"]


def test_a_dead_voice_stub_and_network_stub_of_one_voice(setup: Any) -> None:
    sup, server, _, _ = setup
    for model in ("fastvoice__decoder", "fastvoice"):
        del server.stubs[server.of(model)[0].pid]
    sup.check()
    # the voice model first (it refuses new streams at once), its networks loaded back before it
    assert server.calls == ["unload fastvoice", "unload fastvoice__decoder", "load fastvoice__decoder", "load fastvoice"]
    assert len(sup.recoveries) == 1 and {s.model for s in sup.recoveries[0].dead} == {"fastvoice", "fastvoice__decoder"}


def test_a_stub_that_dies_during_a_recovery_is_noticed_next_time(setup: Any) -> None:
    sup, server, _, _ = setup
    victim = server.of("tacovoice__encoder")[1]

    def kill_taco(srv: FakeServer) -> None:
        srv.stubs.pop(victim.pid, None)
        srv.on_load = None

    server.on_load = kill_taco
    del server.stubs[server.of("fastvoice")[0].pid]
    sup.check()
    assert [r.voice for r in sup.recoveries] == ["fastvoice"]
    sup.check()
    assert [r.voice for r in sup.recoveries] == ["fastvoice", "tacovoice"]
    assert sup.recoveries[1].dead == [victim]


def test_a_voice_that_does_not_reload_restarts_the_server(setup: Any) -> None:
    sup, server, _, lines = setup
    server.fail_loads = 3
    del server.stubs[server.of("fastvoice")[0].pid]
    sup.check()
    assert server.calls.count("load fastvoice") == 3
    assert server.calls[-2:] == ["cleanup", "start"]
    assert not sup.recoveries[0].ok and "failed to load" in sup.recoveries[0].error
    assert any("voice 'fastvoice' could not be reloaded" in line for line in lines)
    assert sup.restarts == 1


def test_a_dead_server_is_restarted_with_a_back_off_that_grows_and_resets(setup: Any) -> None:
    sup, server, clock, lines = setup
    stop = NoWait()
    server.returncode = -11
    server.start_failures = [ServerDiedError("died while starting"), ServerError("not ready after 300 s")]
    sup.check(stop)  # type: ignore[arg-type]
    assert stop.waits == [1.0, 2.0, 4.0]  # two failed starts, then it serves
    assert server.calls == ["cleanup", "start", "start", "start"]  # a failed start cleans up after itself
    assert any("tritonserver died (killed by signal 11 (SIGSEGV))" in line for line in lines)
    assert any("| the last line" in line for line in lines)
    assert lines[-1].startswith("tritonserver is serving again (pid")
    server.returncode = 1
    sup.check(stop)  # type: ignore[arg-type]
    assert stop.waits[-1] == 8.0  # it died soon after: the back-off goes on growing
    clock.now += sup.healthy_after_s
    server.returncode = 1
    sup.check(stop)  # type: ignore[arg-type]
    assert stop.waits[-1] == 1.0  # it had served a minute: from the start again
    sup._failures = 20
    clock.now += 1
    server.returncode = 1
    sup.check(stop)  # type: ignore[arg-type]
    assert stop.waits[-1] == sup.backoff_s[1]  # capped


def test_voice_problems_names_what_is_not_ready() -> None:
    from types import SimpleNamespace

    from melstream.serving.health import voice_problems

    spec = SimpleNamespace(name="v", networks={"enc": None, "dec": None})
    networks = ["v__enc", "v__dec"]

    class FakeClient:
        def __init__(self, loaded: set[str], ready: set[str]) -> None:
            self.loaded, self.ready = loaded, ready

        def loaded_models(self) -> set[str]:
            return self.loaded

        def is_model_ready(self, model: str) -> bool:
            return model in self.ready

        def spec(self, voice: str) -> Any:
            return spec

    everything = {spec.name, *networks}
    assert voice_problems(FakeClient(everything, everything), []) == {spec.name: ""}
    reloading = voice_problems(FakeClient(set(networks), set(networks)), [])
    assert "its voice model is not ready" in reloading[spec.name]
    down = voice_problems(FakeClient(everything, everything - {networks[0]}), [])
    assert down[spec.name] == f"network model(s) not ready: {networks[0]}"
    assert voice_problems(FakeClient(everything, everything), ["nosuch"]) == {"nosuch": "no model of this voice is loaded"}


def test_a_server_that_crashed_but_did_not_exit_is_restarted(setup: Any) -> None:
    sup, server, _, lines = setup
    server.crash = "Signal (11) received."
    sup.check(NoWait())  # type: ignore[arg-type]
    assert server.calls == ["cleanup", "start"]  # cleanup kills it
    assert any("tritonserver crashed ('Signal (11) received.' in its log) and had not exited" in line for line in lines)


def test_a_server_that_stops_answering_is_restarted_after_hang_after_s(setup: Any) -> None:
    sup, server, clock, lines = setup
    server.live = False
    for _ in range(int(sup.hang_after_s / sup.live_every_s)):
        clock.now += sup.live_every_s * 0.99
        sup.check(NoWait())  # type: ignore[arg-type]
    assert server.calls == []  # not yet: it may just be busy
    server.live = True
    clock.now += sup.live_every_s
    sup.check(NoWait())  # type: ignore[arg-type]
    assert server.calls == []  # it answered again: the clock starts over
    server.live = False
    for _ in range(int(sup.hang_after_s / sup.live_every_s) + 2):
        clock.now += sup.live_every_s
        sup.check(NoWait())  # type: ignore[arg-type]
    assert server.calls[:2] == ["cleanup", "start"]
    assert any("has not answered /v2/health/live for 15 s" in line for line in lines)


def test_a_model_that_did_not_load_with_the_server_is_loaded_after_it(setup: Any) -> None:
    sup, server, _, lines = setup
    server.returncode = -9

    def start_without_taco(*, timeout_s: float, attempts: int = 1) -> FakeServer:
        FakeServer.start(server, timeout_s=timeout_s)
        for stub in server.of("tacovoice__encoder"):
            del server.stubs[stub.pid]  # its stub died while the server loaded it: the server is ready without it
        return server

    server.start = start_without_taco  # type: ignore[method-assign]
    sup.check(NoWait())  # type: ignore[arg-type]
    assert server.calls == ["cleanup", "start", "load tacovoice__encoder"]
    assert any("model 'tacovoice__encoder' did not load with the server; loaded it" in line for line in lines)
    assert len(server.of("tacovoice__encoder")) == 2
    server.calls.clear()
    sup.check(NoWait())  # type: ignore[arg-type]
    assert server.calls == []  # its new stubs are known: nothing dead


@pytest.mark.parametrize(("returncode", "crash", "death"), [
    (-6, None, "killed by signal 6 (SIGABRT)"),  # it exited, and the supervisor saw the exit
    (None, "Signal (6) received.", "killed by signal 6 (SIGABRT)"),  # the abort in its log, before the exit
    (None, "Signal (11) received.", "killed by signal 11 (SIGSEGV)"),
])
def test_the_kill_benchmark_reads_a_server_death_from_what_the_supervisor_logged(
        setup: Any, returncode: int | None, crash: str | None, death: str) -> None:
    """benchmarks/kills.py tells a dead tritonserver from a stub's death by the supervisor's own log lines."""
    from benchmarks.kills import server_death

    sup, server, _, lines = setup
    assert server_death("\n".join(lines)) == ""
    server.returncode, server.crash = returncode, crash
    sup.check(NoWait())  # type: ignore[arg-type]
    assert server_death("\n".join(f"melstream serve: {line}" for line in lines)) == death


def test_a_voice_is_marked_down_from_its_dead_stub_until_it_is_loaded_again(setup: Any) -> None:
    """The health endpoint's word (melstream.serving.health): down before the unload, up only after the load."""
    sup, server, _, _ = setup
    seen: list[dict[str, str]] = []
    server.on_load = lambda srv: seen.append(dict(sup.down))
    (dead,) = server.of("tacovoice")
    del server.stubs[dead.pid]
    sup.check()
    assert [set(d) for d in seen] == [{"tacovoice"}]  # still down while it loads
    assert f"tacovoice_0_0 (pid {dead.pid}) is gone" in seen[0]["tacovoice"]
    assert sup.down == {}


def test_a_voice_that_does_not_reload_stays_down_until_the_server_restarts(setup: Any) -> None:
    sup, server, _, _ = setup
    seen: list[dict[str, str]] = []
    server.fail_loads = 3
    real_load = server.load_model

    def load(name: str, *, timeout_s: float) -> None:
        seen.append(dict(sup.down))
        real_load(name, timeout_s=timeout_s)

    server.load_model = load  # type: ignore[method-assign]
    del server.stubs[server.of("fastvoice")[0].pid]
    sup.check()
    assert seen and all("fastvoice" in d for d in seen[:3])  # the failed attempts
    assert server.calls[-2:] == ["cleanup", "start"] and sup.down == {}  # a new server: loaded afresh


def test_unsupervised_a_dead_stub_only_marks_its_voice_down_and_a_dead_server_is_left_alone() -> None:
    server, lines = FakeServer(), list[str]()
    sup = Supervisor(server, log=lines.append, list_stubs=lambda pid: list(server.stubs.values()),  # type: ignore[arg-type]
                     kill=server.kill, is_live=lambda url: server.live, reload=False)
    sup.start()
    server.calls.clear()
    del server.stubs[server.of("fastvoice__decoder")[0].pid]
    sup.check()
    sup.check()
    assert server.calls == [] and set(sup.down) == {"fastvoice"}
    assert sum("stays not ready" in line for line in lines) == 1  # said once, not at every look
    server.returncode = -9
    sup.run(NoWait())  # type: ignore[arg-type]  # returns: the caller reports a dead server
    assert server.calls == []
