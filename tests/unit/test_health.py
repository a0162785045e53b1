"""melstream.serving.health: a replica's readiness endpoint, on fakes of the server (no tritonserver)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from melstream.errors import ServerError
from melstream.serving import health
from melstream.serving.health import READY_PATH, HealthServer


@dataclass
class FakeRepository:
    http_url: str = "localhost:1"
    models: list[str] = field(default_factory=lambda: ["fastvoice", "fastvoice__decoder", "tacovoice"])
    error: str = ""

    def repository_index(self) -> list[dict[str, str]]:
        if self.error:
            raise ServerError(self.error)
        return [{"name": m} for m in self.models]


@pytest.fixture
def triton(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What Triton answers: whether the server is ready, and each voice's problem (voice_problems)."""
    state: dict[str, Any] = {"not_ready": None, "problems": {}}
    monkeypatch.setattr("melstream.serving.server.not_ready", lambda url, timeout_s: state["not_ready"])

    def problems(client: Any, voices: list[str]) -> dict[str, str]:
        state["asked"] = voices
        return {v: state["problems"].get(v, "") for v in voices}

    monkeypatch.setattr(health, "voice_problems", problems)
    return state


def get(port: int, path: str = READY_PATH) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def endpoint(triton: dict[str, Any]) -> Iterator[tuple[HealthServer, FakeRepository, dict[str, str]]]:
    repo, down = FakeRepository(), dict[str, str]()
    with HealthServer(repo, port=0, host="127.0.0.1", down=lambda: down) as srv:
        yield srv, repo, down


def test_ready_when_the_server_and_every_voice_of_its_repository_are(endpoint: Any, triton: dict[str, Any]) -> None:
    srv, _, _ = endpoint
    assert get(srv.port) == (200, "fastvoice\tready\ntacovoice\tready\n")
    assert triton["asked"] == ["fastvoice", "tacovoice"]  # every voice in the repository, loaded or not


def test_a_voice_marked_down_is_not_ready_even_where_triton_says_ready(endpoint: Any) -> None:
    srv, _, down = endpoint
    down["tacovoice"] = "the Python backend stub of tacovoice_0_0 (pid 7) is gone"
    status, body = get(srv.port)
    assert status == 503 and "tacovoice\tthe Python backend stub of tacovoice_0_0 (pid 7) is gone" in body
    assert "fastvoice\tready" in body
    down.clear()
    assert get(srv.port)[0] == 200


def test_a_voice_triton_calls_not_ready_makes_the_replica_not_ready(endpoint: Any, triton: dict[str, Any]) -> None:
    srv, _, _ = endpoint
    triton["problems"] = {"fastvoice": "network model(s) not ready: fastvoice__decoder"}
    assert get(srv.port) == (503, "fastvoice\tnetwork model(s) not ready: fastvoice__decoder\ntacovoice\tready\n")


def test_a_server_not_answering_or_without_voices_is_not_ready(endpoint: Any, triton: dict[str, Any]) -> None:
    srv, repo, down = endpoint
    triton["not_ready"] = "no answer from http://localhost:1/v2/health/ready"
    down["fastvoice"] = "its stub is gone"
    assert get(srv.port) == (503, "no answer from http://localhost:1/v2/health/ready\nfastvoice\tits stub is gone\n")
    triton["not_ready"] = None
    repo.error = "/v2/repository/index: HTTP 500"
    assert get(srv.port) == (503, "cannot tell whether its voices are ready: /v2/repository/index: HTTP 500\n")
    repo.error, repo.models = "", []
    assert get(srv.port) == (503, "the model repository has no voice\n")


def test_only_the_ready_path_is_served(endpoint: Any) -> None:
    srv, _, _ = endpoint
    status, body = get(srv.port, "/v2/repository/index")
    assert status == 404 and READY_PATH in body


def test_a_port_in_use_is_refused_by_serve(endpoint: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from melstream.cli import main

    srv, _, _ = endpoint
    assert main(["serve", "--repo", "nowhere", "--health-port", str(srv.port), "--health-host", "127.0.0.1"]) != 0
    assert f"--health-port {srv.port}: cannot listen there" in capsys.readouterr().err
