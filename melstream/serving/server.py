"""Start and stop ``tritonserver``: the one shipped in the ``nvidia-pytriton`` wheel, or an installed one.

The wheel carries a real Triton server, its Python backend and one backend stub per Python
version.  The stub finds its interpreter on ``PATH`` and must load the same ``libpython`` as the
interpreter running melstream, so both ``PATH`` and ``LD_LIBRARY_PATH`` are set here.

An installed Triton (``triton_home``, e.g. ``/opt/tritonserver`` in NVIDIA's container) works the same
way once its ``backends/python/triton_python_backend_stub`` is the wheel's stub for this Python.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from melstream.errors import ServerError

_PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def free_port() -> int:
    """A TCP port that is free on localhost right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wheel_dir() -> Path:
    try:
        import pytriton
    except ImportError as e:  # pragma: no cover - the wheel is a hard dependency
        raise ServerError("the nvidia-pytriton wheel is not installed; run `pip install nvidia-pytriton==0.7.0`") from e
    return Path(pytriton.__file__).parent / "tritonserver"


def triton_home(cache_dir: Path | None = None) -> Path:
    """A copy of the wheel's server with the Python backend stub in place (made once)."""
    src = _wheel_dir()
    home = cache_dir or Path(sys.prefix) / "melstream-tritonserver"
    stub = home / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        tmp = home.with_name(home.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, symlinks=True)
        shutil.copy2(src / "python_backend_stubs" / _PY_VERSION / "triton_python_backend_stub",
                     tmp / "backends" / "python" / "triton_python_backend_stub")
        try:
            tmp.rename(home)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    return home


def _stub_path(home: Path) -> Path:
    return home / "backends" / "python" / "triton_python_backend_stub"


def check_triton_home(home: Path) -> Path:
    """``home`` if it is a Triton install whose Python backend stub runs this Python; else a ServerError saying how to fix it."""
    binary, stub = home / "bin" / "tritonserver", _stub_path(home)
    wheel_stub = _wheel_dir() / "python_backend_stubs" / _PY_VERSION / "triton_python_backend_stub"
    if not binary.is_file():
        raise ServerError(f"{binary} does not exist: the Triton home must be an installed Triton (bin/tritonserver, "
                          "backends/), e.g. /opt/tritonserver in NVIDIA's tritonserver container")
    if not stub.is_file():
        raise ServerError(f"{stub} does not exist: copy the Python {_PY_VERSION} stub there: cp {wheel_stub} {stub}")
    # The container's own stub embeds its system Python (3.10 in 24.10); it would never import melstream.
    if f"libpython{_PY_VERSION}.so".encode() not in stub.read_bytes():
        raise ServerError(f"{stub} is not built for Python {_PY_VERSION} (the Python running melstream): "
                          f"replace it: cp {wheel_stub} {stub}")
    return home


def not_ready(http_url: str, *, timeout_s: float) -> str | None:
    """None if the server at ``http_url`` (HOST:PORT) is ready (``/v2/health/ready`` answers 200), else why not."""
    url = f"http://{http_url}/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:  # Triton answers 400 while models load or after one failed
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        return f"no answer from {url}: {reason} (is tritonserver running on {http_url}?)"
    if status != 200:
        return f"{url} answered HTTP {status}: not ready (models still loading, or one failed: see the server log)"
    return None


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment in which the server's Python stubs run this interpreter's environment."""
    env = dict(os.environ if base is None else base)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    libs = [str(_wheel_dir().parent.parent / "nvidia_pytriton.libs"), str(sysconfig.get_config_var("LIBDIR"))]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    # One thread per stub for numpy/torch/ORT unless the user says otherwise: many stubs share few cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@dataclass
class TritonServer:
    """A running ``tritonserver`` process; use as a context manager or call start/stop."""

    repo: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_verbose: int = 0
    log_file: Path | None = None
    extra_args: list[str] = field(default_factory=list)
    # an installed Triton to run instead of the wheel's (its bin/tritonserver and backends/)
    triton_home: Path | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @classmethod
    def on_free_ports(cls, repo: Path, *, log_file: Path | None = None, triton_home: Path | None = None) -> TritonServer:
        """A server (not yet started) on HTTP, gRPC and metrics ports that are free right now."""
        return cls(repo=Path(repo), http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                   log_file=log_file, triton_home=triton_home)

    @property
    def pid(self) -> int | None:
        """The tritonserver process id (also its process group: the stubs run in it), None when stopped."""
        return None if self._proc is None else self._proc.pid

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    def command(self) -> list[str]:
        home = triton_home() if self.triton_home is None else check_triton_home(Path(self.triton_home))
        return [
            str(home / "bin" / "tritonserver"),
            f"--model-repository={Path(self.repo).resolve()}",
            f"--backend-directory={home / 'backends'}",
            f"--http-port={self.http_port}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--model-control-mode=none",
            "--disable-auto-complete-config",
            "--exit-on-error=false",
            "--strict-readiness=false",  # one voice that fails to load must not hide the others
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def start(self, *, timeout_s: float = 120.0) -> TritonServer:
        if self._proc is not None:
            raise ServerError("server already started")
        if not Path(self.repo).is_dir():
            raise ServerError(f"model repository {self.repo} does not exist; run `melstream build-repo` first")
        out = open(self.log_file, "wb") if self.log_file else None  # noqa: SIM115 - closed in stop()
        self._log = out
        self._proc = subprocess.Popen(self.command(), env=server_env(), stdout=out, stderr=subprocess.STDOUT if out else None,
                                      start_new_session=True)
        try:
            self.wait_ready(timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, *, timeout_s: float) -> None:
        """Poll ``/v2/health/ready`` until it answers 200, the process dies, or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self._proc.returncode} before it was ready"
                                  + (f"; see {self.log_file}" if self.log_file else ""))
            if not_ready(self.http_url, timeout_s=1.0) is None:
                return
            if time.monotonic() > deadline:
                raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s" + (f"; see {self.log_file}" if self.log_file else ""))
            time.sleep(0.1)  # polling interval of the health probe, not a readiness guess

    def wait(self) -> int:
        assert self._proc is not None
        return self._proc.wait()

    def stop(self, *, timeout_s: float = 30.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # Triton drains in-flight requests and unloads models on SIGINT
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            # A server that crashed (or was killed) leaves its Python backend stubs running, each holding
            # a model and its shared memory; they are in the server's own session, so end what is left.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if getattr(self, "_log", None) is not None:
            self._log.close()  # type: ignore[union-attr]
            self._log = None

    def __enter__(self) -> TritonServer:
        return self.start() if self._proc is None else self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
