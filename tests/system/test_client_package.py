"""The light client (issue 13): ``pip install ./client`` into a fresh virtual environment, nothing else, and
stream from a served voice with it, over gRPC and HTTP, through its Python API and its command line.

Only numpy and tritonclient (and theirs) are installed, never torch, ONNX Runtime, pytriton or the server
package; wheels only (``--only-binary=:all:``: no compiler is needed); what the fresh client receives equals
what melstream's own client receives from the same server.  On this machine's Python (3.11) always, and on
Python 3.9 (the oldest the client supports) where one is installed (pyenv's, here; CI machines have none)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from melstream.serving.server import TritonServer
from melstream_client import Client, HttpClient

VOICES = ("fastvoice", "tacovoice")
TEXT = "The light client speaks, 42 words or so."
SERVER_PARTS = ("torch", "onnxruntime", "onnx", "nvidia-pytriton", "melstream")

def python_39() -> str | None:
    """A Python 3.9 that runs (pyenv's shim on PATH may name one it cannot run)."""
    for candidate in ("/root/.pyenv/versions/3.9.18/bin/python3.9", shutil.which("python3.9")):
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30).returncode == 0:
            return candidate
    return None


PYTHONS = {"3.11": sys.executable, "3.9": python_39()}

CHILD = """
import json, sys
import numpy as np
from melstream_client import Client, HttpClient
grpc_url, http_url, out = sys.argv[1], sys.argv[2], sys.argv[3]
with Client(grpc_url, timeout_s=60) as c:
    voices = c.voices()
    for v in voices:
        np.save(f"{out}/{v}-grpc.npy", c.synthesize(sys.argv[4], voice=v))
for v in voices:
    np.save(f"{out}/{v}-http.npy", np.concatenate(list(HttpClient(http_url, timeout_s=60).stream(sys.argv[4], voice=v))))
with Client(grpc_url, timeout_s=60) as c:
    words = [[w.text, w.start_s, w.end_s] for ch in c.stream_outputs(sys.argv[4], voice="fastvoice", words=True) for w in ch["words"]]
    pieces = [sys.argv[4][i:i + 5] for i in range(0, len(sys.argv[4]), 5)]
    texted = np.concatenate([ch["mel"] for ch in c.stream_text(pieces, voice="fastvoice")])
print(json.dumps({"voices": voices, "python": sys.version_info[:2], "numpy": np.__version__, "words": words,
                  "text_stream_frames": len(texted)}))
"""


def venv_with_client(python: str, where: Path, root: Path) -> Path:
    """A fresh virtual environment at ``where`` with only ``./client`` installed (wheels only); its python."""
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=120)
    bin_python = where / "bin" / "python"
    install = subprocess.run([str(bin_python), "-m", "pip", "install", "--quiet", "--only-binary=:all:", str(root / "client")],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return bin_python


@pytest.fixture(scope="module", params=sorted(PYTHONS))
def client_python(request: pytest.FixtureRequest, root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    python = PYTHONS[request.param]
    if python is None:
        pytest.skip(f"no Python {request.param} on this machine")
    yield venv_with_client(python, tmp_path_factory.mktemp(f"client-venv-{request.param}") / "venv", root)


def test_only_the_client_and_what_it_needs_is_installed(client_python: Path) -> None:
    listed = subprocess.run([str(client_python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True,
                            check=True, timeout=120)
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"melstream-client", "numpy", "tritonclient"} <= names
    assert sorted(n for n in names if n in SERVER_PARTS or n.startswith(("torch", "onnxruntime", "nvidia-"))) == []


def test_the_fresh_client_streams_what_melstreams_own_client_gets(client_python: Path, server: TritonServer, tmp_path: Path) -> None:
    run = subprocess.run([str(client_python), "-c", CHILD, server.grpc_url, server.http_url, str(tmp_path), TEXT],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout)
    assert sorted(seen["voices"]) == sorted(VOICES)
    with Client(server.grpc_url, timeout_s=60) as ours:
        for voice in VOICES:
            expected = ours.synthesize(TEXT, voice=voice)
            assert len(expected) > 0
            for transport in ("grpc", "http"):
                got = np.load(tmp_path / f"{voice}-{transport}.npy")
                assert got.shape == expected.shape and np.allclose(got, expected, atol=1e-4), (voice, transport)
    assert len(HttpClient(server.http_url).voices()) == len(VOICES)
    with Client(server.grpc_url, timeout_s=60) as ours:  # word timestamps and a text in pieces, from the light client
        words = [[w.text, w.start_s, w.end_s] for c in ours.stream_outputs(TEXT, voice="fastvoice", words=True) for w in c["words"]]
        assert seen["words"] == words and len(words) == len(TEXT.split())
        assert seen["text_stream_frames"] == len(ours.synthesize(TEXT, voice="fastvoice"))


def test_the_client_command_line(client_python: Path, server: TritonServer, tmp_path: Path) -> None:
    command = client_python.parent / "melstream-client"
    voices = subprocess.run([str(command), "voices", "--url", server.grpc_url], capture_output=True, text=True, timeout=120)
    assert voices.returncode == 0, voices.stderr
    assert sorted(line.split("\t")[0] for line in voices.stdout.splitlines()) == sorted(VOICES)
    wav = tmp_path / "hello.wav"
    synth = subprocess.run([str(command), "synth", TEXT, "--voice", "fastvoice", "--url", server.http_url, "--http", "--out", str(wav)],
                           capture_output=True, text=True, timeout=300)
    assert synth.returncode == 0, synth.stderr
    assert "(vocoded here)" in synth.stdout and wav.stat().st_size > 44  # fastvoice ends at mel: Griffin-Lim here
    bad = subprocess.run([str(command), "synth", TEXT, "--voice", "nosuch", "--url", server.grpc_url, "--out", str(tmp_path / "x.npy")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "nosuch" in bad.stderr and "Traceback" not in bad.stderr
