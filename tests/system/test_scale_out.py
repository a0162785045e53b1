"""Scale-out on loopback (issue 12): two Triton replicas from the wheel behind Debian's HAProxy, with the
configuration `melstream balancer-config` writes (melstream/serving/balancer.py), all on free ports, bounded in
time and stopped at the end.

Streams spread over the replicas and each stays on one for its life (each replica's own stream and frame
counters add up to whole streams); HTTP server-sent events pass through unbuffered; the model-control API is
refused at the balancer; a replica whose voice stub died is taken out by the balancer's health check (its
health port, melstream.serving.health) until its supervisor has reloaded the voice; and killing a replica
mid-run ends its open streams with a clear error, while new streams succeed on the other within seconds and
nothing hangs.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from melstream.errors import ClientError, ServerUnavailableError
from melstream.serving.balancer import STATS_PATH, HAProxy, Replica, haproxy_config
from melstream.serving.health import HealthServer
from melstream.serving.server import REPOSITORY_KEY_HEADER, TritonServer, free_port, stub_processes
from melstream.serving.supervisor import Supervisor
from melstream_client import Client, HttpClient
from tests.servers import quiet, scrape, start_server

VOICE = "fastvoice"
TEXTS = [f"Replica test sentence number {n}, {'and a little longer ' * (n % 4)}to tell the streams apart." for n in range(8)]
LONG = "This stream is long, and it keeps a replica busy for a good while. " * 30
COMPLETED = f'melstream_streams_total{{outcome="completed",voice="{VOICE}"}}'
FRAMES = f'melstream_frames_total{{voice="{VOICE}"}}'
CHECK_S = 0.25  # health-check interval: a dead replica is out after two failed checks


@dataclass
class Node:
    """A replica as `melstream serve` runs it, in this process: the server, its supervisor (reloads a voice whose
    stub died) and its health port (melstream.serving.health: what the balancer checks)."""

    server: TritonServer
    supervisor: Supervisor
    health: HealthServer
    stop: threading.Event = field(default_factory=threading.Event)
    #: the supervisor reloads a voice only while this is set (a test holds a dead voice down with it)
    reloads: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@pytest.fixture(scope="module")
def nodes(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    work = tmp_path_factory.mktemp("replicas")
    made: list[Node] = []
    try:
        for i in range(2):
            server = start_server(root / "model_repository", work / f"replica{i + 1}.log")
            supervisor = Supervisor(server)
            node = Node(server, supervisor, HealthServer(server, port=0, host="127.0.0.1", down=lambda s=supervisor: s.down))
            node.reloads.set()
            load = server.load_model

            def gated(name: str, *, timeout_s: float, node: Node = node, load: Any = load) -> None:
                assert node.reloads.wait(120), "a test held a reload for 120 s"
                load(name, timeout_s=timeout_s)

            server.load_model = gated  # type: ignore[method-assign]
            supervisor.adopt()
            node.thread = threading.Thread(target=supervisor.run, args=(node.stop,), daemon=True)
            node.thread.start()
            node.health.start()
            made.append(node)
        yield made
    finally:
        for node in made:
            node.stop.set()
            node.reloads.set()
            if node.thread is not None:
                node.thread.join(60)
            node.health.stop()
            node.server.stop()


@pytest.fixture(scope="module")
def replicas(nodes: list[Node]) -> list[TritonServer]:
    return [n.server for n in nodes]


@pytest.fixture(scope="module")
def balancer(nodes: list[Node], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HAProxy, str, str]]:
    grpc, http, stats = free_port(), free_port(), free_port()
    config = haproxy_config(check_interval_s=CHECK_S,
                            replicas=[Replica(f"replica{i + 1}", "127.0.0.1", n.server.grpc_port, n.server.http_port, n.health.port)
                                      for i, n in enumerate(nodes)],
                            grpc_bind=f"127.0.0.1:{grpc}", http_bind=f"127.0.0.1:{http}", stats_bind=f"127.0.0.1:{stats}")
    lb = HAProxy(config, work_dir=tmp_path_factory.mktemp("haproxy"), stats_url=f"http://127.0.0.1:{stats}{STATS_PATH};csv")
    with lb:
        lb.wait_for({"replica1": "UP", "replica2": "UP"}, timeout_s=30)
        yield lb, f"127.0.0.1:{grpc}", f"127.0.0.1:{http}"


def deltas(before: list[dict[str, float]], after: list[dict[str, float]], key: str) -> list[int]:
    return [int(a.get(key, 0.0) - b.get(key, 0.0)) for a, b in zip(after, before, strict=True)]


def run_concurrently(grpc_url: str, texts: list[str]) -> list[int]:
    """Each text as a stream of its own, all at once; the frames of each (0: failed)."""
    frames: list[int] = [0] * len(texts)

    def stream(i: int) -> None:
        with Client(grpc_url, timeout_s=60) as c:
            frames[i] = len(c.synthesize(texts[i], voice=VOICE))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a stream hangs"
    return frames


def test_streams_spread_over_the_replicas_and_each_stays_on_one(replicas: list[TritonServer], balancer: Any) -> None:
    _, grpc_url, _ = balancer
    before = [quiet(s, VOICE) for s in replicas]
    frames = run_concurrently(grpc_url, TEXTS)
    assert all(frames)
    after = [quiet(s, VOICE) for s in replicas]
    streams, sent = deltas(before, after, COMPLETED), deltas(before, after, FRAMES)
    assert sum(streams) == len(TEXTS) and min(streams) > 0, f"streams per replica: {streams}"  # both served
    # each replica's frames are the frames of exactly as many whole streams as it completed: no stream was split
    whole = [combo for combo in itertools.combinations(range(len(TEXTS)), streams[0])
             if sum(frames[i] for i in combo) == sent[0]]
    assert whole, f"replica 1 sent {sent[0]} frames, which are no {streams[0]} whole streams of {frames}"
    assert sum(sent) == sum(frames)


def test_http_server_sent_events_pass_through_and_equal_a_direct_stream(replicas: list[TritonServer], balancer: Any) -> None:
    _, _, http_url = balancer
    via = list(HttpClient(http_url, timeout_s=60).stream(TEXTS[1], voice=VOICE, chunk_frames=8))
    direct = list(HttpClient(f"localhost:{replicas[0].http_port}", timeout_s=60).stream(TEXTS[1], voice=VOICE, chunk_frames=8))
    assert len(via) == len(direct) > 1  # chunk by chunk, not one buffered body
    np.testing.assert_allclose(np.concatenate(via), np.concatenate(direct), atol=1e-5)


def test_the_model_control_api_is_refused_at_the_balancer(replicas: list[TritonServer], balancer: Any) -> None:
    """Each replica already refuses it without its supervisor's key; the balancer refuses it even with the key."""
    _, _, http_url = balancer
    server = replicas[0]
    key = {REPOSITORY_KEY_HEADER: server.repository_key}

    def index(where: str) -> int:
        request = urllib.request.Request(f"http://{where}/v2/repository/index", data=b"{}", method="POST", headers=key)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert any(m["name"] == VOICE for m in json.loads(resp.read()))
                return int(resp.status)
        except urllib.error.HTTPError as e:
            return e.code

    assert index(f"localhost:{server.http_port}") == 200  # the replica answers its supervisor
    assert index(http_url) == 403  # not through the balancer, key or not


def test_a_replica_whose_voice_stub_died_is_out_until_its_supervisor_reloaded_it(nodes: list[Node], balancer: Any) -> None:
    """The replica's health port says not ready from the moment its supervisor finds the stub gone; the reload
    is held here, so the balancer is seen to take the replica out, and new streams all go to the other one;
    once reloaded, it is back in and serves again."""
    lb, grpc_url, _ = balancer
    sick, well = nodes[1], nodes[0]
    assert sick.server.pid is not None
    before = [quiet(n.server, VOICE) for n in nodes]
    sick.reloads.clear()
    try:
        victim = next(p for p in stub_processes(sick.server.pid) if p.model == VOICE)
        os.kill(victim.pid, signal.SIGKILL)
        lb.wait_for({"replica2": "DOWN", "replica1": "UP"}, timeout_s=10 * CHECK_S + 10)
        for text in TEXTS[:4]:
            with Client(grpc_url, timeout_s=60) as c:
                assert len(c.synthesize(text, voice=VOICE)) > 0
        during = [quiet(n.server, VOICE) for n in nodes]
        # (<= 0: when tritonserver itself dies of the stub's death, now and then in Triton 2.51, the supervisor
        # restarts it and its counters start again from 0; the replica is out of the balancer meanwhile too)
        served = deltas(before, during, COMPLETED)
        assert served[0] == 4 and served[1] <= 0, served
        restarted = sick.supervisor.restarts > 0
        assert (VOICE in sick.supervisor.down or restarted) and well.supervisor.down == {}
    finally:
        sick.reloads.set()
    lb.wait_for({"replica2": "UP"}, timeout_s=120)
    assert sick.supervisor.down == {}
    assert [r.voice for r in sick.supervisor.recoveries if r.ok] == [VOICE] or sick.supervisor.restarts > 0
    back = [quiet(n.server, VOICE) for n in nodes]
    assert all(run_concurrently(grpc_url, TEXTS))  # at once: each to the replica with the fewest streams
    after = [quiet(n.server, VOICE) for n in nodes]
    assert min(deltas(back, after, COMPLETED)) > 0, deltas(back, after, COMPLETED)


def test_killing_a_replica_ends_its_streams_and_new_ones_go_to_the_other(nodes: list[Node], balancer: Any) -> None:
    """Last in this module: it leaves one replica dead."""
    lb, grpc_url, _ = balancer
    replicas = [n.server for n in nodes]
    nodes[1].stop.set()  # the whole replica dies, its supervisor with it
    assert nodes[1].thread is not None
    nodes[1].thread.join(30)
    results: list[Any] = [None] * 4
    started = [threading.Event() for _ in results]

    def stream(i: int) -> None:
        try:
            n = 0
            with Client(grpc_url, timeout_s=60) as c:
                for mel in c.stream(LONG, voice=VOICE):
                    n += len(mel)
                    started[i].set()
            results[i] = n
        except ClientError as e:
            results[i] = e
        finally:
            started[i].set()

    before = quiet(replicas[0], VOICE)
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    assert all(e.wait(60) for e in started)
    victim = replicas[1]
    on_victim = int(scrape(victim).get(f'melstream_active_streams{{voice="{VOICE}"}}', 0.0))
    assert victim.pid is not None
    os.killpg(victim.pid, signal.SIGKILL)  # the replica and its stubs, at once
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a stream hangs after its replica died"
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(failed) == on_victim and all(isinstance(e, ServerUnavailableError) for e in failed), results
    lb.wait_for({"replica2": "DOWN"}, timeout_s=10 * CHECK_S + 5)
    # new streams: every one served by the replica left
    for text in TEXTS[:4]:
        with Client(grpc_url, timeout_s=60) as c:
            assert len(c.synthesize(text, voice=VOICE)) > 0
    after = quiet(replicas[0], VOICE)  # a stream's outcome is counted just after its final response
    assert after[COMPLETED] - before.get(COMPLETED, 0.0) >= 4 + (len(results) - on_victim)


def test_the_committed_compose_balancer_configuration_is_valid_for_haproxy(root: Path) -> None:
    import shutil
    import subprocess

    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is not installed: run `make sysdeps`"
    check = subprocess.run([haproxy, "-c", "-f", str(root / "deploy" / "haproxy" / "haproxy-compose.cfg")],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "Configuration file is valid" in check.stdout, check.stdout + check.stderr


def test_the_scale_out_benchmark_measures_direct_and_through_the_balancer(tmp_path: Path) -> None:
    from benchmarks.scale_out import main

    assert main(["--replicas", "1", "--voices", VOICE, "--streams", "1", "--seconds-per-level", "0.5", "--out", str(tmp_path)]) == 0
    rows = [line for line in (tmp_path / "scale_out.md").read_text().splitlines()[2:] if line.strip()]
    assert [r.split("|")[3].strip() for r in rows] == ["direct (replica 1)", "balancer (1 replicas)"]
    assert all(int(r.split("|")[4]) > 0 for r in rows)  # utterances measured on both paths
