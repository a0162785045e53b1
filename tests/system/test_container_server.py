"""What the containers rely on, against real servers: `melstream health` (the compose health check) and
`melstream serve --triton-home` (the container's own tritonserver instead of the wheel's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from melstream.cli import main
from melstream.errors import ServerError
from melstream.serving.server import TritonServer, _wheel_dir, free_port, triton_home
from melstream_client import Client


def test_health_of_a_running_server(server: TritonServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--url", server.http_url]) == 0
    assert capsys.readouterr().out == "fastvoice\tready\ntacovoice\tready\nready\n"
    assert main(["health", "--url", server.http_url, "--voice", "fastvoice", "--voice", "nosuch"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "fastvoice\tready\nnosuch\tno model of this voice is loaded\n"
    assert "not ready: voice 'nosuch': no model of this voice is loaded" in captured.err
    # the console script, as the compose health check runs it
    script = Path(sys.executable).parent / "melstream"
    proc = subprocess.run([str(script), "health", "--url", server.http_url], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout.splitlines()[-1]) == (0, "ready"), proc.stderr


def test_the_wheel_runs_the_server_of_the_triton_home_image(server: TritonServer) -> None:
    """The Dockerfile's base image, nvcr.io/nvidia/tritonserver:24.10-py3, is Triton 2.51: the same server
    as the wheel's, so the wheel's Python backend stub fits the image's Python backend."""
    with urllib.request.urlopen(f"http://{server.http_url}/v2", timeout=5) as resp:
        assert json.load(resp)["version"] == "2.51.0"


def test_triton_home_serves(root: Path, tmp_path: Path) -> None:
    home = triton_home()  # a full install: bin/tritonserver, backends/, the 3.11 stub in place
    srv = TritonServer.on_free_ports(root / "model_repository", log_file=tmp_path / "tritonserver.log", triton_home=home)
    assert srv.command()[0] == str(home / "bin" / "tritonserver")
    assert f"--backend-directory={home / 'backends'}" in srv.command()
    with srv.start(timeout_s=180), Client(srv.grpc_url, timeout_s=60) as client:
        mel = np.concatenate(list(client.stream("Hello.", voice="fastvoice")))
        assert mel.ndim == 2 and mel.shape[1] == 80 and len(mel) > 0


def fake_home(tmp_path: Path, *, stub: Path | None) -> Path:
    """An install dir with the real binary and Python backend, and the given stub (or none)."""
    real = triton_home()
    home = tmp_path / "tritonserver"
    (home / "bin").mkdir(parents=True)
    (home / "backends" / "python").mkdir(parents=True)
    os.symlink(real / "bin" / "tritonserver", home / "bin" / "tritonserver")
    os.symlink(real / "backends" / "python" / "libtriton_python.so", home / "backends" / "python" / "libtriton_python.so")
    if stub is not None:
        os.symlink(stub, home / "backends" / "python" / "triton_python_backend_stub")
    return home


def test_triton_home_without_the_stub_says_how_to_fix_it(root: Path, tmp_path: Path) -> None:
    home = fake_home(tmp_path, stub=None)
    srv = TritonServer(repo=root / "model_repository", http_port=free_port(), triton_home=home)
    wheel_stub = _wheel_dir() / "python_backend_stubs" / "3.11" / "triton_python_backend_stub"
    with pytest.raises(ServerError, match=r"triton_python_backend_stub does not exist: copy the Python 3\.11 stub there: cp ") as e:
        srv.start(timeout_s=5)
    assert str(wheel_stub) in str(e.value)


def test_triton_home_with_the_images_own_stub_is_refused(root: Path, tmp_path: Path) -> None:
    """NVIDIA's image ships a stub for its Python 3.10; it could never import melstream."""
    home = fake_home(tmp_path, stub=_wheel_dir() / "python_backend_stubs" / "3.10" / "triton_python_backend_stub")
    with pytest.raises(ServerError, match=r"not built for Python 3\.11 .*replace it: cp "):
        TritonServer(repo=root / "model_repository", triton_home=home).start(timeout_s=5)


def test_triton_home_that_is_not_a_triton_install(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ServerError, match=r"bin/tritonserver does not exist: the Triton home must be an installed Triton"):
        TritonServer(repo=root / "model_repository", triton_home=tmp_path).start(timeout_s=5)
