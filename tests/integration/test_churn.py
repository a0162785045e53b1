"""Cancellation churn against the shared server: storms of gRPC and HTTP streams, each cancelled after its first
chunk, leave the server as they found it: no stream left active, every stub alive (same pids), both voices
still speak a whole utterance, and the voices counted the streams as cancelled.

The storm is benchmarks/churn.py's (``python benchmarks/churn.py --out DIR`` runs it round after round with its
own server and a PSS table).  Quick here: 2 rounds of 40 gRPC + 20 HTTP streams.  With MELSTREAM_FULL=1 (``make
reliability``): rounds of 500 gRPC + 200 HTTP streams, and PSS (server + stubs) may grow by less than 16 MiB per
round after two warm-up rounds.

Triton 2.51's gRPC frontend itself can crash under gRPC cancellation churn (about once in a few thousand
cancelled gRPC streams; never over HTTP): a race between a stream's cancellation and its responses, fixed
upstream after 2.51 (see benchmarks/churn.py).  The quick storm cancels 80 gRPC streams, so it is rarely hit;
at full size it is likely.  When it happens this test fails with the crash lines of the server's log.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.churn import VOICES, Target, churn, growth, log_alarms
from melstream.client import Client
from melstream.serving.server import TritonServer, stub_processes
from tests.conftest import FULL
from tests.servers import quiet, scrape, streams_key

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


def test_a_cancellation_storm_leaves_the_server_as_it_was(server: TritonServer) -> None:
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
    assert cancelled(scrape(server)) == cancelled(after)  # whole utterances are not cancellations

    if FULL:
        fit = growth(rows, WARMUP)
        assert fit is not None
        assert fit[0] < MAX_GROWTH_MIB, f"PSS grows {fit[0]:+.1f} MiB per round after {WARMUP} warm-up rounds: " + ", ".join(
            f"{r['pss_mib']:.0f}" for r in rows)
