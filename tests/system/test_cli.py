"""The command line end to end: `melstream synth` against a running server, `melstream serve` as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import melstream
from melstream.cli import main
from melstream.errors import ClientError
from melstream.serving.health import READY_PATH
from melstream.serving.server import TritonServer, free_port
from melstream_client import Client

VOICES = ["fastvoice", "tacovoice"]
TEXT = "Hello from melstream, streaming 80 mel bins at a time."


@pytest.fixture(scope="module")
def references(root: Path) -> dict[str, melstream.StreamablePipeline]:
    return {v: melstream.load_addon(root / "addons" / v).build() for v in VOICES}


def test_cli_synth(server: TritonServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], references: dict[str, Any]) -> None:
    out = tmp_path / "mel.npy"
    assert main(["synth", TEXT, "--voice", "tacovoice", "--url", server.grpc_url, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    mel = np.load(out)
    assert "time to first frame" in printed and f"{len(mel)} frames" in printed
    assert float(np.abs(mel - references["tacovoice"].synthesize(TEXT)).max()) <= 1e-4
    assert main(["synth", TEXT, "--voice", "fastvoice", "--http", "--url", server.http_url, "--out", str(out)]) == 0
    assert f"{len(np.load(out))} frames" in capsys.readouterr().out
    assert float(np.abs(np.load(out) - references["fastvoice"].synthesize(TEXT)).max()) <= 1e-4
    wav = tmp_path / "hello.wav"
    for flags in (["--url", server.grpc_url], ["--http", "--url", server.http_url]):
        assert main(["synth", "Hello.", "--voice", "fastvoice", *flags, "--out", str(wav)]) == 0
        assert "s of audio (vocoded here)" in capsys.readouterr().out
        with wave.open(str(wav)) as f:
            assert f.getframerate() == 22050 and f.getnframes() == 256 * len(references["fastvoice"].synthesize("Hello."))
    assert main(["synth", "", "--voice", "fastvoice", "--url", server.grpc_url, "--out", str(out)]) == 2
    assert "nothing to speak" in capsys.readouterr().err


def test_serve_command_starts_and_stops_on_sigterm(root: Path) -> None:
    ports = [free_port() for _ in range(4)]
    proc = subprocess.Popen([sys.executable, "-m", "melstream.cli", "serve", "--repo", str(root / "model_repository"),
                             "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
                             "--health-port", str(ports[3]), "--health-host", "127.0.0.1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "melstream serving" in line:
                break
        assert any("fastvoice" in x and "READY" in x for x in lines), lines
        with Client(f"localhost:{ports[1]}") as client:
            assert client.voices() == VOICES
        with urllib.request.urlopen(f"http://127.0.0.1:{ports[3]}{READY_PATH}", timeout=10) as resp:  # the health port
            assert resp.status == 200 and resp.read().decode() == "".join(f"{v}\tready\n" for v in VOICES)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)  # read on: tritonserver's log comes through serve's stderr
        assert proc.returncode == 0, rest[-3000:]
        assert "tritonserver stopped cleanly" in rest
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    # tritonserver has exited (serve waits for it), so nothing answers on its port any more
    with pytest.raises(ClientError):
        Client(f"localhost:{ports[1]}", timeout_s=2).voices()


@pytest.mark.parametrize("voice", ["fastvoice", "tacovoice"])
def test_describe_shows_every_shipped_network_with_its_buckets(root: Path, voice: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", str(root / "addons" / voice)]) == 0
    out = capsys.readouterr().out
    spec = melstream.load_addon(root / "addons" / voice).spec
    for name, net in spec.networks.items():
        assert net.buckets, f"{voice}: network {name} declares no buckets"
        line = next(line for line in out.splitlines() if line.startswith(f"network {name} "))
        assert line.endswith(f"; buckets {', '.join(map(str, net.buckets))}"), line
