"""melstream.serving.balancer: HAProxy's configuration from one source (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from melstream.cli import main
from melstream.errors import MelstreamError
from melstream.serving.balancer import REPOSITORY_GRPC_PREFIX, REPOSITORY_HTTP_PREFIX, Replica, Template, haproxy_config
from melstream.serving.health import READY_PATH

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_CFG = ROOT / "deploy" / "haproxy" / "haproxy-compose.cfg"


def test_replicas_are_parsed_and_bad_ones_refused() -> None:
    assert Replica.parse("10.0.0.5:8001:8000:8003", name="r") == Replica("r", "10.0.0.5", 8001, 8000, 8003)
    for text, message in (("host:8001:8000", "expected HOST:GRPC_PORT:HTTP_PORT:HEALTH_PORT"), ("h:x:8000:8003", "must be numbers"),
                          ("h:8001:8000:70000", "port 70000 is out of range"), (":1:2:3", "expected HOST")):
        with pytest.raises(MelstreamError, match=message):
            Replica.parse(text, name="r")


def test_each_replica_is_checked_on_its_health_port_and_streams_balance_per_request() -> None:
    text = haproxy_config(replicas=[Replica("a", "127.0.0.1", 9001, 9000, 9003), Replica("b", "127.0.0.2", 9101, 9100, 9103)])
    grpc = text[text.index("\nbackend triton_grpc"):text.index("\nbackend triton_http")]
    http = text[text.index("\nbackend triton_http"):]
    for backend in (grpc, http):
        assert "balance leastconn" in backend
        assert f"http-check send meth GET uri {READY_PATH}" in backend and "/v2/" not in backend
    assert "server a 127.0.0.1:9001 proto h2 port 9003" in grpc and "server b 127.0.0.2:9101 proto h2 port 9103" in grpc
    assert "server a 127.0.0.1:9000 port 9003" in http  # HTTP/1.1 to the replica, checked on its health port
    assert f"deny deny_status 403 if {{ path_beg {REPOSITORY_HTTP_PREFIX} }}" in text
    assert f"deny deny_status 403 if {{ path_beg {REPOSITORY_GRPC_PREFIX} }}" in text
    assert "timeout server 3600s" in text and "bind 127.0.0.1:8001 proto h2" in text  # loopback unless opened


def test_a_balancer_needs_replicas_or_a_template() -> None:
    with pytest.raises(MelstreamError, match="either a list of replicas or a DNS template"):
        haproxy_config()
    with pytest.raises(MelstreamError, match="either a list of replicas or a DNS template"):
        haproxy_config(replicas=[Replica("a", "h", 1, 2, 3)], template=Template("x", 2))
    with pytest.raises(MelstreamError, match="must be positive"):
        haproxy_config(template=Template("x", 2), check_interval_s=0)


def test_the_committed_compose_configuration_is_what_the_command_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "haproxy.cfg"
    args = ["balancer-config", "--dns-name", "triton-replica", "--count", "3", "--grpc-bind", ":8001", "--http-bind", ":8000",
            "--out", str(out)]
    assert main(args) == 0
    assert out.read_text() == COMPOSE_CFG.read_text(), "regenerate it: melstream balancer-config (see its first line)"
    assert "server-template replica 3 triton-replica:8001 proto h2 port 8003 resolvers replicas init-addr none" in out.read_text()
