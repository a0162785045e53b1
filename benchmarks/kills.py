"""Kill Python backend stubs (and tritonserver) under a supervised `melstream serve`, and measure the recovery.

For each round, for each voice, for each of its models (the voice model and every network model), one stub
of that model is SIGKILLed while (a) a long stream of that voice is in flight and (b) the other voice serves
short utterances back to back.  Measured per kill: how long until the voice serves again, whether the killed
model's ready endpoint said not ready meanwhile, how the stream in flight ended and when, how many of the other voice's
requests failed, and whether tritonserver itself died (Triton 2.51 sometimes aborts or segfaults after a
stub's death; the supervisor then restarts it).  Then tritonserver itself is killed once per round.

    python benchmarks/kills.py --rounds 3 --out out/reliability

Prints a table and saves kills.md and kills.csv in --out.  Exit status 1 if a voice did not come back within
its target (15 s after a stub kill, 30 s after a server kill) or the other voice failed a request while
tritonserver stayed up.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import signal
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: tests.servers (serve as a user runs it) is imported from the root

from melstream.errors import ClientError  # noqa: E402
from melstream.serving.server import describe_exit, model_ready, stub_processes  # noqa: E402
from melstream_client import Client, wire  # noqa: E402

VOICES = ("fastvoice", "tacovoice")
LONG_TEXT = " ".join(["This sentence is long, and it keeps a stream busy for quite a while."] * 20)
SHORT_TEXT = "Hello there."
#: the in-flight stream's client timeout: it bounds a stream whose voice stub died (Triton never ends it)
INFLIGHT_TIMEOUT_S = 4.0
STUB_TARGET_S, SERVER_TARGET_S = 15.0, 30.0


def serves(grpc_url: str, voice: str) -> bool:
    try:
        with Client(grpc_url, timeout_s=5) as c:
            return len(c.synthesize(SHORT_TEXT, voice=voice)) > 0
    except ClientError:
        return False


@dataclass
class Traffic:
    """Full utterances of one voice, one after another, until stopped; every failure is kept."""

    grpc_url: str
    voice: str
    done: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        with Client(self.grpc_url, timeout_s=20) as c:
            while not self._stop.is_set():
                try:
                    if len(c.synthesize(SHORT_TEXT, voice=self.voice)) > 0:
                        self.done += 1
                    else:
                        self.failures.append("no frames")
                except ClientError as e:
                    self.failures.append(f"{type(e).__name__}: {e}")
                    self._stop.wait(0.05)  # a server being restarted refuses at once: do not spin

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)


@dataclass
class InFlight:
    """One long stream of ``voice``; when and how it ended."""

    grpc_url: str
    voice: str
    chunks: int = 0
    error: BaseException | None = None
    ended_at: float | None = None
    started: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            with Client(self.grpc_url, timeout_s=INFLIGHT_TIMEOUT_S) as c:
                for _ in c.stream(LONG_TEXT, voice=self.voice, chunk_frames=4):
                    self.chunks += 1
                    self.started.set()
        except ClientError as e:
            self.error = e
        self.ended_at = time.monotonic()
        self.started.set()


@dataclass
class Kill:
    """One stub killed, and what followed."""

    voice: str
    model: str
    instance: str
    #: from the kill until the voice served a request again (after the killed model's ready endpoint had said
    #: not ready)
    back_after_s: float
    seen_not_ready: bool
    inflight_error: str
    inflight_ended_after_s: float
    other_done: int
    other_failures: int
    #: tritonserver itself died after the kill ("" if not): how, from serve's log
    server_died: str
    #: serve's log lines of this kill (for a report)
    log: str = field(default="", repr=False)


def server_death(log: str) -> str:
    """How tritonserver died, from ``melstream serve``'s log ("" if it did not): its exit (``killed by signal 6
    (SIGABRT)``), or a crash the supervisor saw in Triton's log before the process had exited (an abort from a
    lock in a killed stub's shared memory prints "Signal (6) received."), read as the same death."""
    died = re.search(r"tritonserver died \(([^)]*\)?)\)", log)
    if died:
        return died.group(1)
    crashed = re.search(r"tritonserver crashed \('Signal \((\d+)\) received\.'", log)
    return describe_exit(-int(crashed.group(1))) if crashed else ""


def kill_stub(srv: object, voice: str, model: str, *, watch_s: float = 30.0) -> Kill:
    """Kill one stub of ``model`` (of ``voice``) with a long stream of the voice in flight and the other voice
    busy; watch until the voice serves again (or ``watch_s``).  ``srv`` is a tests.servers.Serve."""
    grpc_url, http_url = srv.grpc_url, srv.http_url  # type: ignore[attr-defined]
    other = next(v for v in VOICES if v != voice)
    deadline = time.monotonic() + 60
    while not all(model_ready(http_url, m) for m in (voice, other)) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval: the previous kill's recovery may still run
    victim = next(s for s in stub_processes(srv.current_pid()) if s.model == model)  # type: ignore[attr-defined]
    log_before = len(srv.stderr())  # type: ignore[attr-defined]
    inflight = InFlight(grpc_url, voice)
    with Traffic(grpc_url, other) as traffic:
        thread = threading.Thread(target=inflight.run, daemon=True)
        thread.start()
        if not inflight.started.wait(30) or inflight.chunks == 0:
            raise RuntimeError(f"the stream of {voice} did not start: {inflight.error}")
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        seen_not_ready = False
        back_again = f"voice '{voice}' is ready again"
        while time.monotonic() - killed_at < watch_s:
            if not model_ready(http_url, model):  # the dead model: unloaded, then loaded again
                seen_not_ready = True
            # back: the dead model was seen not ready (or the supervisor says it reloaded it: its not-ready
            # window can be shorter than one poll) and the voice serves
            elif (seen_not_ready or back_again in srv.stderr()[log_before:]) and serves(grpc_url, voice):  # type: ignore[attr-defined]
                break
            time.sleep(0.01)  # polling interval of the ready endpoint
        back_after = time.monotonic() - killed_at
        thread.join(INFLIGHT_TIMEOUT_S + 5)
        other_deadline = time.monotonic() + 30
        while not serves(grpc_url, other) and time.monotonic() < other_deadline:
            time.sleep(0.1)  # polling interval: a restarted server
    log = srv.stderr()[log_before:]  # type: ignore[attr-defined]
    err = inflight.error
    return Kill(voice=voice, model=model, instance=victim.instance, back_after_s=back_after, seen_not_ready=seen_not_ready,
                inflight_error="" if err is None else f"{type(err).__name__}: {err}",
                inflight_ended_after_s=(inflight.ended_at or time.monotonic()) - killed_at,
                other_done=traffic.done, other_failures=len(traffic.failures),
                server_died=server_death(log), log=log)


def kill_server(srv: object) -> float:
    """SIGKILL tritonserver; seconds until every voice serves again (inf if not within the target)."""
    pid = srv.current_pid()  # type: ignore[attr-defined]
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    while time.monotonic() - killed_at < SERVER_TARGET_S + 30:
        if srv.current_pid() != pid and all(serves(srv.grpc_url, v) for v in VOICES):  # type: ignore[attr-defined]
            return time.monotonic() - killed_at
        time.sleep(0.1)  # polling interval
    return float("inf")


def models_of(voice: str, pid: int) -> list[str]:
    """The voice model and its network models, from the running server's stubs."""
    return sorted({s.model for s in stub_processes(pid) if wire.voice_of(s.model) == voice}, key=lambda m: (m != voice, m))


def inflight_kind(kill: Kill) -> str:
    if "is not healthy" in kill.inflight_error:
        return "error: stub not healthy"
    if "is not ready" in kill.inflight_error:
        return "error: network not ready (being reloaded)"
    if "no response within" in kill.inflight_error:
        return "client timeout (Triton never answers)"
    if kill.server_died:
        return "cut by the server's death"
    return kill.inflight_error.split(":", 1)[0] or "completed"


def table(kills: list[Kill], server_kills: list[float]) -> list[str]:
    lines = ["| voice | model killed | kills | tritonserver died | serves again p50 / max (s) | not ready seen | "
             "stream in flight | ended after p50 / max (s) | other voice: requests / failed (server up) |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(k.voice, k.model) for k in kills}, key=lambda vm: (vm[0], vm[1] != vm[0], vm[1]))
    for voice, model in keys:
        ks = [k for k in kills if (k.voice, k.model) == (voice, model)]
        up = [k for k in ks if not k.server_died]
        back = [k.back_after_s for k in ks]
        ended = [k.inflight_ended_after_s for k in ks]
        kinds = sorted({inflight_kind(k) for k in ks})
        lines.append(f"| {voice} | {model} | {len(ks)} | {sum(1 for k in ks if k.server_died)} "
                     f"({', '.join(sorted({k.server_died for k in ks if k.server_died})) or '-'}) | "
                     f"{statistics.median(back):.2f} / {max(back):.2f} | {sum(k.seen_not_ready for k in ks)}/{len(ks)} | "
                     f"{'; '.join(kinds)} | {statistics.median(ended):.2f} / {max(ended):.2f} | "
                     f"{sum(k.other_done for k in up)} / {sum(k.other_failures for k in up)} |")
    if server_kills:
        lines += ["", f"tritonserver SIGKILLed {len(server_kills)}x: every voice served again after "
                      f"{', '.join(f'{s:.1f}' for s in server_kills)} s (target {SERVER_TARGET_S:.0f} s)"]
    return lines


def verdict(kills: list[Kill], server_kills: list[float]) -> list[str]:
    bad = [f"{k.instance}: back after {k.back_after_s:.1f} s" for k in kills
           if k.back_after_s >= (SERVER_TARGET_S if k.server_died else STUB_TARGET_S)]
    bad += [f"{k.instance}: the other voice failed {k.other_failures} request(s) with tritonserver up"
            for k in kills if not k.server_died and k.other_failures]
    bad += [f"tritonserver kill: back after {s:.1f} s" for s in server_kills if s >= SERVER_TARGET_S]
    return bad


def main(argv: list[str] | None = None) -> int:
    from tests.servers import serve

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("out/reliability"))
    ap.add_argument("--no-server-kill", dest="server_kill", action="store_false")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    kills: list[Kill] = []
    server_kills: list[float] = []
    with serve(ROOT) as srv:
        for r in range(args.rounds):
            for voice in VOICES:
                for model in models_of(voice, srv.current_pid()):
                    k = kill_stub(srv, voice, model)
                    kills.append(k)
                    print(f"round {r + 1}: {k.instance} killed: {voice} back after {k.back_after_s:.2f} s; in flight: "
                          f"{inflight_kind(k)} after {k.inflight_ended_after_s:.2f} s; other voice {k.other_done} ok / "
                          f"{k.other_failures} failed{'; tritonserver died: ' + k.server_died if k.server_died else ''}",
                          flush=True)
            if args.server_kill:
                server_kills.append(kill_server(srv))
                print(f"round {r + 1}: tritonserver killed: every voice back after {server_kills[-1]:.1f} s", flush=True)
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=60)
    lines = table(kills, server_kills)
    bad = verdict(kills, server_kills)
    lines += ["", "PASS: every voice back within its target; the other voice failed nothing while tritonserver stayed up"
              if not bad else "FAIL: " + "; ".join(bad)]
    print("\n".join(lines))
    (args.out / "kills.md").write_text("\n".join(lines) + "\n")
    with open(args.out / "kills.csv", "w", newline="") as f:
        fields = [k for k in asdict(kills[0]) if k != "log"] if kills else []
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for k in kills:
            w.writerow(asdict(k))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
