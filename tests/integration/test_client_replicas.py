"""melstream.client.Client over two real servers: new streams go round robin over the replicas, and a replica
that nobody answers at is passed over before the stream's first chunk, every stream still served whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from melstream.errors import ServerUnavailableError
from melstream.serving.server import TritonServer, free_port
from melstream_client import Client
from tests.servers import quiet, scrape, start_server, streams_key, wait_for

pytestmark = pytest.mark.integration

VOICE = "fastvoice"
TEXTS = ["Hello there, from the first replica test.", "A second utterance, a little longer than the first.",
         "Number three.", "And the fourth one ends it."]
COMPLETED = streams_key(VOICE, "completed")


@pytest.fixture(scope="module")
def second(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A second tritonserver with the committed model_repository, for this module only (start_server bounds its
    start; stopped at the end)."""
    srv = start_server(root / "model_repository", tmp_path_factory.mktemp("triton-replica") / "tritonserver.log")
    try:
        yield srv
    finally:
        srv.stop()


def completed(srv: TritonServer) -> float:
    return scrape(srv).get(COMPLETED, 0.0)


def test_streams_go_round_robin_over_two_servers(server: TritonServer, second: TritonServer) -> None:
    before = [quiet(s, VOICE).get(COMPLETED, 0.0) for s in (server, second)]
    with Client([server.grpc_url, second.grpc_url], timeout_s=60) as client:
        for text in TEXTS:
            assert len(client.synthesize(text, voice=VOICE)) > 0
    # four streams, one replica after the other: two each (a stream's outcome is counted after its final response)
    for srv, base in zip((server, second), before, strict=True):
        wait_for(srv, COMPLETED, base + 2)
        assert completed(srv) == base + 2, srv.grpc_url


def test_a_replica_nobody_answers_at_is_passed_over_before_the_first_chunk(server: TritonServer) -> None:
    dead = f"localhost:{free_port()}"  # nothing listens there
    with Client(server.grpc_url, timeout_s=60) as single:
        want = [single.synthesize(text, voice=VOICE) for text in TEXTS]
    base = quiet(server, VOICE).get(COMPLETED, 0.0)
    with Client([dead, server.grpc_url], timeout_s=60) as client:
        assert client.voices()  # metadata from the replica that answers
        # the streams that start at the dead replica (the first, the third) are refused there and retried
        got = [client.synthesize(text, voice=VOICE) for text in TEXTS]
    for text, g, w in zip(TEXTS, got, want, strict=True):
        np.testing.assert_array_equal(g, w, err_msg=text)  # every frame once, as one server sends them
    wait_for(server, COMPLETED, base + len(TEXTS))
    assert completed(server) == base + len(TEXTS)
    # without retries the dead replica's refusal reaches the caller: a connection refused is what gets retried
    with Client([dead, server.grpc_url], timeout_s=60, retries=0) as client, \
            pytest.raises(ServerUnavailableError, match=f"voice 'fastvoice' at {dead}: "):
        client.synthesize(TEXTS[0], voice=VOICE)


def test_a_grpc_target_with_several_addresses_is_balanced_by_grpc(server: TritonServer, second: TritonServer) -> None:
    """``ipv4:a,b`` (like ``dns:///`` a gRPC target that resolves to several addresses) is one channel that
    round-robins calls; each stream is one call.  Which address the first calls go to depends on which
    connects first, so this streams until both servers have served one (a bounded number of streams)."""
    ports = [s.grpc_url.rpartition(":")[2] for s in (server, second)]
    before = [quiet(s, VOICE).get(COMPLETED, 0.0) for s in (server, second)]
    with Client(f"ipv4:127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}", timeout_s=60) as client:
        for _ in range(20):
            assert len(client.synthesize("Balanced by gRPC.", voice=VOICE)) > 0
            if all(completed(s) > b for s, b in zip((server, second), before, strict=True)):
                break
    # a stream's outcome is counted just after its final response: the last ones may show a moment later
    for srv, base in zip((server, second), before, strict=True):
        wait_for(srv, COMPLETED, base + 1)
    with Client(f"dns:///localhost:{ports[1]}", timeout_s=60) as client:
        assert len(client.synthesize("Through a dns target.", voice=VOICE)) > 0
