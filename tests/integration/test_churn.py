"""Cancellation churn against a supervised server of its own: storms of gRPC and HTTP streams, each cancelled after its first
chunk, leave the server as they found it: no stream left active, every stub alive (same pids), both voices
still speak a whole utterance, and the voices counted the streams as cancelled.

The storm is benchmarks/churn.py's (``python benchmarks/churn.py --out DIR`` runs it round after round with its
own server and a PSS table).  Quick here: 2 rounds of 40 gRPC + 20 HTTP streams.  With MELSTREAM_FULL=1 (``make
reliability``): rounds of 500 gRPC + 200 HTTP streams, and PSS (server + stubs) may grow by less than 16 MiB per
round after two warm-up rounds.

Triton 2.51's gRPC frontend itself can crash under gRPC cancellation churn (about once in a few thousand
cancelled gRPC streams; never over HTTP): a race between a stream's cancellation and its responses, fixed
upstream after 2.51 (see benchmarks/churn.py).  melstream's answer is supervision, so this server runs under
the same Supervisor as `melstream serve` (its own server: a crash must not take the shared one down).  When
tritonserver crashed in the storm, the test checks that answer instead: the crash is the known one (a fatal
signal or the gRPC frontend's assertions in its log), the supervisor restarted it, and both voices speak again
within 30 s.  Otherwise it checks that the storm left the server as it was.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.churn import VOICES, Target, churn, growth, log_alarms
from melstream.errors import ClientError
from melstream.serving.server import TritonServer, stub_processes
from melstream.serving.supervisor import Supervisor
from melstream_client import Client
from tests.conftest import FULL
from tests.servers import poll, quiet, streams_key

pytestmark = pytest.mark.reliability

ROUNDS, GRPC, HTTP = (6, 500, 200) if FULL else (2, 40, 20)
WARMUP = 2
MAX_GROWTH_MIB = 16.0
#: seconds within which a voice has no stream left once the clients have cancelled theirs
QUIET_S = 5.0


def target(server: TritonServer) -> Target:
    assert server.pid is not None
    return Target(server.grpc_url, server.http_url, f"localhost:{server.metrics_port}", server.pid, server.log_file)


def cancelled(samples: dict[str, float]) -> int:
    return int(sum(samples.get(streams_key(v, "cancelled"), 0.0) for v in VOICES))


@pytest.fixture(scope="module")
def supervised(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TritonServer, Supervisor, list[str]]]:
    server = TritonServer.on_free_ports(root / "model_repository", log_file=tmp_path_factory.mktemp("churn") / "tritonserver.log")
    lines: list[str] = []
    sup = Supervisor(server, log=lines.append, start_timeout_s=180)
    sup.start()
    stop = threading.Event()
    thread = threading.Thread(target=sup.run, args=(stop,), daemon=True, name="supervisor")
    thread.start()
    try:
        yield server, sup, lines
    finally:
        stop.set()
        thread.join(60)
        server.stop()


def speaks(server: TritonServer, voice: str) -> bool:
    try:
        with Client(server.grpc_url, timeout_s=20) as client:
            return len(client.synthesize("The storm is over.", voice=voice)) > 20
    except ClientError:
        return False


def test_a_cancellation_storm_leaves_the_server_as_it_was(supervised: tuple[TritonServer, Supervisor, list[str]]) -> None:
    server, sup, lines = supervised
    assert server.pid is not None
    stubs = {s.pid: s.instance for s in stub_processes(server.pid)}
    alarms = len(log_alarms(server.log_file))
    before = quiet(server, *VOICES)

    t0 = time.perf_counter()
    rows = churn(target(server), rounds=ROUNDS, grpc=GRPC, http=HTTP)  # stops after a round that killed the server
    print(f"\n{ROUNDS} round(s) of {GRPC} gRPC + {HTTP} HTTP streams in {time.perf_counter() - t0:.1f} s:")
    for r in rows:
        print(f"  round {r['round']}: {r['served']} served+cancelled, {r['refused']} refusals (retried), quiet after "
              f"{r['quiet_s']:.2f} s, PSS {r['pss_mib']:.1f} MiB ({r['delta_mib']:+.1f}), {r['seconds']:.1f} s")

    new_alarms = log_alarms(server.log_file)[alarms:]
    if new_alarms or any(not r["ready"] for r in rows):
        poll(lambda: sup.restarts, bool, timeout_s=30)  # a crash: give the supervisor time to notice it
    if sup.restarts:
        # Triton 2.51's gRPC frontend crashed under the cancellations (its race, not ours): the answer is the
        # supervisor's restart
        print("tritonserver crashed in the storm; the supervisor said:\n  " + "\n  ".join(lines))
        assert any("Signal (" in a or "ASSERTION FAILED" in a or "double free" in a or "corrupted" in a for a in new_alarms) \
            or any("tritonserver died (killed by signal" in line for line in lines), "\n".join(lines + new_alarms[:10])
        assert poll(lambda: all(speaks(server, v) for v in VOICES), bool, timeout_s=30), "\n".join(lines)
        return
    assert not new_alarms, ("the server's log says something crashed (gRPC frontend assertions or heap corruption are "
                            "Triton 2.51's cancellation race: see benchmarks/churn.py):\n" + "\n".join(new_alarms[:10]))
    for r in rows:
        # every stream of every round was served, then cancelled (a refused one was tried again)
        assert r["served"] == GRPC + HTTP and r["errors"] == 0, r["first_error"]
        assert r["quiet_s"] <= QUIET_S, f"round {r['round']}: streams still active {r['quiet_s']:.1f} s after the storm"
        assert r["ready"]
    assert {s.pid: s.instance for s in stub_processes(server.pid)} == stubs, "a stub died (or was restarted) in the storm"

    # the voices counted the cancellations (a stream whose last chunk was already on its way when the client left
    # ends as completed: it is counted, just not as cancelled)
    served = sum(r["served"] for r in rows)
    after = quiet(server, *VOICES, timeout_s=QUIET_S)
    assert cancelled(after) - cancelled(before) >= 0.9 * served, (cancelled(after) - cancelled(before), served)
    assert sum(r["server_error"] for r in rows) == 0

    # and both voices still speak: a whole utterance each, to its final response
    with Client(server.grpc_url, timeout_s=60) as client:
        for voice in VOICES:
            mel = client.synthesize("The storm is over.", voice=voice)
            assert mel.ndim == 2 and len(mel) > 20 and np.isfinite(mel).all(), (voice, mel.shape)
    assert cancelled(quiet(server, *VOICES)) == cancelled(after)  # whole utterances are not cancellations

    if FULL:
        fit = growth(rows, WARMUP)
        assert fit is not None
        assert fit[0] < MAX_GROWTH_MIB, f"PSS grows {fit[0]:+.1f} MiB per round after {WARMUP} warm-up rounds: " + ", ".join(
            f"{r['pss_mib']:.0f}" for r in rows)
