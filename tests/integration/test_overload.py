"""Overload against the shared server: many concurrent long streams on one voice, all sent at the same moment.
Every request is either served (its first chunk came and it completed) or refused as busy (a ServerBusyError, told
apart by its type: the voice admits at most its limit, fewer where the host keeps fewer in real time), nothing else
and nothing left hanging or unanswered; the other voice, probed back to back meanwhile, serves every probe; the
server and both voices are ready after.

The overload is benchmarks/overload.py's (``python benchmarks/overload.py --out DIR`` runs the issue's target,
200 streams per voice with the load kept up for 30 s, and prints the latencies against it: 1 s to a first chunk,
100 ms to a refusal, 100 ms to the other voice's first chunk).  Timings are printed here (``-s``), never asserted.
Quick: twice tacovoice's admission limit (its ``max_streams`` config parameter), one burst.  With MELSTREAM_FULL=1
(``make reliability``): 200 streams on each voice in turn.
"""

from __future__ import annotations

import pytest

from benchmarks.overload import HANG, PROBE_OK, REFUSED, SERVED, Run, max_streams, overload, row, verdicts
from melstream.errors import ServerBusyError
from melstream.serving.server import TritonServer, not_ready
from melstream_client import Client
from tests.conftest import FULL
from tests.integration.test_admission import SHORT, Outcome, run_stream
from tests.servers import quiet

pytestmark = pytest.mark.reliability

#: (loaded voice, probed voice, streams: None for twice the loaded voice's limit)
DIRECTIONS = ([("tacovoice", "fastvoice", 200), ("fastvoice", "tacovoice", 200)] if FULL
              else [("tacovoice", "fastvoice", None)])
#: held-out sentences per long stream: tacovoice speaks two in seconds, so the admitted streams outlast the burst
SENTENCES = 4 if FULL else 2
#: a client's wait for any one response: far beyond any figure here, reached only if something hangs
TIMEOUT_S = 60.0


def figures(run: Run) -> str:
    r = row(run)
    return (f"\n{run.streams} streams on {run.voice} (admits {run.limit}) at once, {run.other} probed, {run.wall_s:.1f} s: "
            f"{r['served']} served (first chunk p50 {r['first_p50_ms']:.0f} ms, max {r['first_max_ms']:.0f} ms), "
            f"{r['refused']} refused (p50 {r['refusal_p50_ms']:.0f} ms, max {r['refusal_max_ms']:.0f} ms), "
            f"{r['errors']} errors, {r['hangs']} hangs; {r['probes']} probes of {run.other} (first chunk p50 "
            f"{r['other_first_p50_ms']:.0f} ms, max {r['other_first_max_ms']:.0f} ms)\n"
            + "\n".join(f"  {'met' if ok else 'missed'} (not asserted here): {line}" for ok, line in verdicts(r)))


@pytest.mark.parametrize(("voice", "other", "streams"), DIRECTIONS, ids=[f"{v}-loaded" for v, _, _ in DIRECTIONS])
def test_an_overloaded_voice_serves_or_refuses_every_request_and_the_other_voice_keeps_serving(
        server: TritonServer, voice: str, other: str, streams: int | None) -> None:
    limit = max_streams(server.grpc_url, voice)
    n = streams or 2 * limit
    quiet(server, voice, other)  # no earlier test's stream holds a slot
    run = overload(server.grpc_url, voice, other, streams=n, seconds=0, timeout_s=TIMEOUT_S, sentences=SENTENCES)
    print(figures(run))

    assert [q for q in run.requests if q.outcome == HANG] == [], "requests left without an answer"
    assert [q.error for q in run.requests if q.unanswered] == [], "requests with neither a chunk nor a refusal"
    assert len(run.requests) == n  # one burst: each client sent exactly one request
    for q in run.requests:
        if q.outcome == SERVED:
            assert q.completed and q.chunks > 0, q.error  # a served stream completes
        else:
            assert q.outcome == REFUSED and q.chunks == 0, q.error  # nothing else: no timeout, no internal error
            assert isinstance(q.exc, ServerBusyError), q.error
    served = [q for q in run.requests if q.outcome == SERVED]
    refused = [q for q in run.requests if q.outcome == REFUSED]
    assert served and refused, f"{len(served)} served, {len(refused)} refused: an overload serves some and refuses some"

    assert run.probes, f"no probe of {other} finished"
    failed = [q.error for q in run.probes if q.outcome != PROBE_OK]
    assert failed == [], f"{len(failed)} of {len(run.probes)} probes of {other} failed: {failed[:3]}"

    assert not_ready(server.http_url, timeout_s=5) is None
    quiet(server, voice, other)  # every admitted stream has given its slot back
    with Client(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        assert client.is_model_ready(voice) and client.is_model_ready(other)
        assert {voice, other} <= set(client.voices())
        again = Outcome()  # the voice serves again
        run_stream(client, voice, SHORT, again)
        assert again.error is None and again.chunks > 0, again.error
