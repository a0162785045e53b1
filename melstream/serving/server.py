"""Start and stop ``tritonserver``: the one shipped in the ``nvidia-pytriton`` wheel, or an installed one.

The wheel carries a real Triton server, its Python backend and one backend stub per Python
version.  The stub finds its interpreter on ``PATH`` and must load the same ``libpython`` as the
interpreter running melstream, so both ``PATH`` and ``LD_LIBRARY_PATH`` are set here.

An installed Triton (``triton_home``, e.g. ``/opt/tritonserver`` in NVIDIA's container) works the same
way once its ``backends/python/triton_python_backend_stub`` is the wheel's stub for this Python.

Stopping (:meth:`TritonServer.stop`): SIGINT, then Triton drains, unloads its models and exits within
``exit_timeout_s`` (``--exit-timeout-secs``); whatever is left after that (the server, its Python backend stubs
in its process group, their shared-memory regions in ``/dev/shm``) is removed by :meth:`TritonServer.cleanup`.
Each server names its regions with its own prefix (the Python backend's ``shm-region-prefix-name``), so the
cleanup removes exactly its own and never another server's.  Why a stop with clients' gRPC streams still open
is not clean in Triton 2.51: see :meth:`TritonServer.stop`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

from melstream.errors import ServerDiedError, ServerError
from melstream_client.wire import REPOSITORY_INDEX_PATH, REPOSITORY_PATH_PREFIX, SERVER_READY_PATH, model_ready_path

T = TypeVar("T")
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


def poll(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float, interval_s: float = 0.05) -> T:
    """``fetch()`` again every ``interval_s`` until ``done`` says yes or ``timeout_s`` passes; the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)  # polling interval


def wait_answering(process: subprocess.Popen[bytes], answers: Callable[[], object], *, what: str, timeout_s: float,
                   log_tail: Callable[[], str] = lambda: "", error: type[Exception] = ServerError,
                   interval_s: float = 0.05) -> None:
    """Poll ``answers()`` (an OSError: not listening yet) until it returns something true, for a process started
    just now; ``error`` naming ``what`` and ending with ``log_tail()`` if the process exits first or ``timeout_s``
    passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise error(f"{what} exited with status {process.returncode} before it answered:\n{log_tail()}")
        try:
            if answers():
                return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise error(f"{what} did not answer within {timeout_s} s:\n{log_tail()}")
        time.sleep(interval_s)  # polling interval


_SAMPLE_RE = re.compile(r"^([a-z_]+\{[^}]*\}|[a-z_]+) (\S+)$", re.M)


def metric_samples(metrics_url: str, *, timeout_s: float = 10.0) -> dict[str, float]:
    """Every sample on the metrics endpoint at ``metrics_url`` (HOST:PORT), keyed by its name and labels exactly
    as exported (``melstream_active_streams{voice="fastvoice"}``)."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    return {m.group(1): float(m.group(2)) for m in _SAMPLE_RE.finditer(text)}


def not_ready(http_url: str, *, timeout_s: float) -> str | None:
    """None if the server at ``http_url`` (HOST:PORT) is ready (``/v2/health/ready`` answers 200), else why not."""
    url = f"http://{http_url}{SERVER_READY_PATH}"
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


def model_ready(http_url: str, model: str, *, timeout_s: float = 2.0) -> bool:
    """Whether model ``model`` of the server at ``http_url`` answers its ready endpoint with 200 (False for
    any other answer, or none: a server being restarted)."""
    try:
        with urllib.request.urlopen(f"http://{http_url}{model_ready_path(model)}", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):  # HTTPError (400: not ready) is a URLError
        return False


def live(http_url: str, *, timeout_s: float) -> bool:
    """Whether the server at ``http_url`` answers ``/v2/health/live`` at all (any status: it is not hung)."""
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/live", timeout=timeout_s):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except (urllib.error.URLError, OSError):
        return False


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


#: where POSIX shared memory lives (boost::interprocess, which the Python backend uses, makes its files here)
SHM_DIR = Path("/dev/shm")
#: the Python backend's own prefix when none is given (python_backend src/python_be.cc)
DEFAULT_SHM_PREFIX = "triton_python_backend_shm_region_"


def shm_regions(prefix: str, shm_dir: Path = SHM_DIR) -> list[Path]:
    """The shared-memory regions named with ``prefix`` (one per Python backend stub: prefix + a UUID)."""
    if not prefix or "/" in prefix:
        raise ValueError(f"a shared-memory prefix is a plain, non-empty file name prefix, got {prefix!r}")
    try:
        return sorted(p for p in shm_dir.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def remove_shm_regions(prefix: str, shm_dir: Path = SHM_DIR) -> list[Path]:
    """Remove the shared-memory regions named with ``prefix``; the ones removed (a region another process
    removed first is not counted).  Never call it with the Python backend's default prefix: every server that
    does not set its own shares it."""
    if prefix == DEFAULT_SHM_PREFIX:
        raise ValueError(f"{prefix!r} is the Python backend's default prefix, shared by every server that does not "
                         "set its own: its regions are not this server's to remove")
    removed = []
    for region in shm_regions(prefix, shm_dir):
        with contextlib.suppress(FileNotFoundError):
            region.unlink()
            removed.append(region)
    return removed


def group_members(pgid: int, proc_dir: Path = Path("/proc")) -> list[int]:
    """Live processes (not zombies) in process group ``pgid``."""
    members = []
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class Memory:
    """Resident (RSS) and proportional (PSS: shared pages divided among their users) set sizes, in bytes."""

    rss: int = 0
    pss: int = 0

    def __add__(self, other: Memory) -> Memory:
        return Memory(self.rss + other.rss, self.pss + other.pss)


def process_memory(pid: int, proc_dir: Path = Path("/proc")) -> Memory | None:
    """A process's RSS and PSS from ``/proc/<pid>/smaps_rollup``; None if it is gone."""
    try:
        text = (proc_dir / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    kb = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(Rss|Pss):\s+(\d+) kB", text, re.M)}
    return Memory(kb.get("Rss", 0) * 1024, kb.get("Pss", 0) * 1024)


@dataclass(frozen=True)
class StubProcess:
    """A Python backend stub: the process that runs one instance of one Python-backend model."""

    pid: int
    #: the Triton model it serves (``fastvoice``, ``fastvoice__decoder``)
    model: str
    #: the model instance (``fastvoice__decoder_0_1``: the model, its instance group, the instance)
    instance: str


#: how tritonserver's signal handler reports a signal (main.cc), and the signals that mean it crashed (SIGINT and
#: SIGTERM are stops)
_FATAL_SIGNAL = re.compile(r"^\s*Signal \((\d+)\) received")
_FATAL_SIGNALS = {signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSEGV}

#: the header that carries a server's repository key (see TritonServer.repository_key)
REPOSITORY_KEY_HEADER = "melstream-supervisor-key"

#: the Python backend stub's executable name (its command line: stub, model.py path, shm region, ..., instance)
STUB_EXECUTABLE = "triton_python_backend_stub"


def stub_processes(pgid: int, proc_dir: Path = Path("/proc")) -> list[StubProcess]:
    """The live Python backend stubs in process group ``pgid`` (a tritonserver's: it starts them in its own
    group), read from their command lines: ``<stub> <repo>/<model>/<version>/model.py <shm region> <size>
    <growth> <parent pid> <backend dir> <ipc handle> <instance name> ...`` (python_backend's stub_launcher.cc)."""
    stubs = []
    for pid in group_members(pgid, proc_dir):
        try:
            argv = (proc_dir / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if len(argv) < 9 or not argv[0].decode(errors="replace").endswith(STUB_EXECUTABLE):
            continue
        model_py = Path(argv[1].decode(errors="replace"))
        stubs.append(StubProcess(pid=pid, model=model_py.parent.parent.name, instance=argv[8].decode(errors="replace")))
    return sorted(stubs, key=lambda s: s.instance)


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by signal 9 (SIGKILL)``, from a Popen return code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {-returncode} ({name})"
    return f"exit status {returncode}"


@dataclass
class StopReport:
    """What :meth:`TritonServer.stop` (or :meth:`TritonServer.cleanup`) found and did."""

    #: tritonserver's return code (negative: the signal that ended it); None if it was not running
    returncode: int | None = None
    #: it did not exit by itself within its exit timeout (or the stop's deadline) and was killed
    killed: bool = False
    #: processes of its group (Python backend stubs) still alive after it had exited, then killed
    leftover_processes: list[int] = field(default_factory=list)
    #: its shared-memory regions still in /dev/shm after it had exited, then removed
    leftover_regions: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Triton exited by itself with status 0 within the deadline (every model unloaded; Triton exits 1 when
        its exit timeout runs out with models still loaded) and left nothing behind."""
        return self.returncode in (0, None) and not self.killed and not self.leftover_processes and not self.leftover_regions

    def describe(self) -> str:
        parts = [] if self.returncode is None else [describe_exit(self.returncode)]
        if self.killed:
            parts.append("killed once its exit timeout had run out")
        if self.leftover_processes:
            parts.append(f"{len(self.leftover_processes)} leftover process(es) killed")
        if self.leftover_regions:
            parts.append(f"{len(self.leftover_regions)} shared-memory region(s) removed")
        return f"{'clean' if self.clean else 'not clean'} ({', '.join(parts) or 'nothing to stop'}) in {self.seconds:.1f} s"


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
    #: Triton's own deadline to drain and unload (``--exit-timeout-secs``; Triton's default is 30 s)
    exit_timeout_s: int = 7
    #: names this server's Python backend shared-memory regions in /dev/shm (unique per server by default)
    shm_prefix: str = field(default_factory=lambda: f"melstream_{os.getpid()}_{secrets.token_hex(4)}_")
    #: where its regions are (POSIX shared memory; a tmp dir in tests)
    shm_dir: Path = SHM_DIR
    #: the secret that opens this server's repository endpoints (index, load, unload): only its supervisor
    #: knows it (it is on tritonserver's command line, readable by the same user: see README, Security)
    repository_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    _proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    #: the last lines of the server's output when it has no log file (kept by a reader thread)
    _tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    _reader: threading.Thread | None = None
    #: the crash line seen in its output since it started ("Signal (11) received."), if any
    _crash: str | None = None
    #: how far crashed() has read the log file
    _log_read: int = 0

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
            # explicit model control, every model loaded at start: a supervisor reloads a model whose stub died
            # (Triton 2.51 restarts none); the repository endpoints (index, load, unload) answer only requests
            # that carry this server's key, so nobody but its supervisor can load or unload models
            "--model-control-mode=explicit",
            "--load-model=*",
            f"--http-restricted-api=model-repository:{REPOSITORY_KEY_HEADER}={self.repository_key}",
            f"--grpc-restricted-protocol=model-repository:{REPOSITORY_KEY_HEADER}={self.repository_key}",
            "--disable-auto-complete-config",
            "--exit-on-error=false",
            "--strict-readiness=false",  # one voice that fails to load must not hide the others
            f"--log-verbose={self.log_verbose}",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *self.extra_args,
        ]

    def start(self, *, timeout_s: float = 120.0, attempts: int = 3, retry_after_s: float = 1.0) -> TritonServer:
        """Start tritonserver and wait until it is ready (``timeout_s`` per attempt).  A server that dies while
        starting is started again, up to ``attempts`` times in all, ``retry_after_s`` later (doubling): Triton
        2.51 now and then aborts while loading its models (``boost::interprocess::lock_exception``, seen on a
        busy machine), and a second start works.  Any other failure (no repository; not ready in time) raises
        at once; a failed start leaves nothing running."""
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once(timeout_s=timeout_s)
            except ServerDiedError as e:
                if attempt == attempts:
                    raise
                delay = retry_after_s * 2 ** (attempt - 1)
                print(f"melstream: {e} (attempt {attempt} of {attempts}); starting it again in {delay:.0f} s. "
                      "The last lines of its log:", file=sys.stderr)
                for line in self.log_tail(5):
                    print(f"  | {line}", file=sys.stderr)
                time.sleep(delay)  # the back-off itself
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, *, timeout_s: float) -> TritonServer:
        if self._proc is not None:
            raise ServerError("server already started")
        if not Path(self.repo).is_dir():
            raise ServerError(f"model repository {self.repo} does not exist; run `melstream build-repo` first")
        if not self.shm_prefix or "/" in self.shm_prefix or self.shm_prefix == DEFAULT_SHM_PREFIX:
            raise ServerError(f"shm_prefix {self.shm_prefix!r}: give this server a prefix of its own (no '/')")
        # appended to: a supervisor restarts a dead server with the same log, which keeps the first one's end
        out = open(self.log_file, "ab") if self.log_file else None  # noqa: SIM115 - closed in cleanup()
        self._log = out
        self._tail.clear()
        self._crash = None
        self._log_read = Path(self.log_file).stat().st_size if self.log_file and Path(self.log_file).exists() else 0
        # Without a log file the output is passed on to our stderr line by line, keeping the last lines for
        # a report when the server dies.
        self._proc = subprocess.Popen(self.command(), env=server_env(), stdout=out or subprocess.PIPE,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        if out is None:
            assert self._proc.stdout is not None
            self._reader = threading.Thread(target=self._pass_on, args=(self._proc.stdout,), daemon=True,
                                            name="tritonserver-output")
            self._reader.start()
        try:
            self.wait_ready(timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, *, timeout_s: float) -> None:
        """Poll ``/v2/health/ready`` until it answers 200 and the metrics endpoint answers too (Triton 2.51 starts
        its metrics service tens of milliseconds after it reports ready: a scrape just after ready was refused),
        the process dies, or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerDiedError(f"tritonserver exited ({describe_exit(self._proc.returncode)}) before it was ready"
                                  + (f"; see {self.log_file}" if self.log_file else ""))
            if not_ready(self.http_url, timeout_s=1.0) is None and self._metrics_answer():
                return
            if time.monotonic() > deadline:
                raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s" + (f"; see {self.log_file}" if self.log_file else ""))
            time.sleep(0.1)  # polling interval of the health probe, not a readiness guess

    def _metrics_answer(self) -> bool:
        try:
            metric_samples(f"localhost:{self.metrics_port}", timeout_s=1.0)
        except OSError:  # not listening yet (URLError is one)
            return False
        return True

    # --- the repository endpoints (explicit model control; they need the key) ----------------------------------
    def _repository(self, path: str, *, timeout_s: float) -> bytes:
        req = urllib.request.Request(f"http://{self.http_url}{path}", data=b"{}", method="POST",
                                     headers={REPOSITORY_KEY_HEADER: self.repository_key})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return bytes(resp.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                detail = json.loads(detail)["error"]
            raise ServerError(f"{path}: HTTP {e.code}: {detail}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ServerError(f"{path}: no answer from {self.http_url}: {e}") from None

    def repository_index(self, *, timeout_s: float = 5.0) -> list[dict[str, str]]:
        """Every model of the repository with its state (``READY``, ``UNAVAILABLE`` and why)."""
        return list(json.loads(self._repository(REPOSITORY_INDEX_PATH, timeout_s=timeout_s)))

    def load_model(self, name: str, *, timeout_s: float = 120.0) -> None:
        """Load model ``name`` (a new copy of it, with new stubs, when it is loaded already); returns once it
        is ready, a ServerError if it failed."""
        self._repository(f"{REPOSITORY_PATH_PREFIX}/models/{name}/load", timeout_s=timeout_s)

    def unload_model(self, name: str, *, timeout_s: float = 30.0) -> None:
        """Unload model ``name``: it stops taking requests at once (its ready endpoint says not ready); Triton
        frees it once its requests in flight have ended."""
        self._repository(f"{REPOSITORY_PATH_PREFIX}/models/{name}/unload", timeout_s=timeout_s)

    def crashed(self) -> str | None:
        """The line with which tritonserver reported a fatal signal (``Signal (11) received.``), if it has since
        it started.  Such a server usually exits, but Triton 2.51 can also hang in its signal handler, alive and
        listening yet serving nothing: a supervisor must not wait for it to exit."""
        if self._crash is None and self.log_file is not None:
            try:
                with open(self.log_file, "rb") as f:
                    f.seek(self._log_read)
                    chunk = f.read()
            except OSError:
                chunk = b""
            complete = chunk[:chunk.rfind(b"\n") + 1]  # whole lines only: the rest is read next time
            self._log_read += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                self._note_crash(line)
        return self._crash

    def _note_crash(self, line: str) -> None:
        match = _FATAL_SIGNAL.match(line)
        if match and self._crash is None and int(match.group(1)) in _FATAL_SIGNALS:
            self._crash = line.strip()

    def _pass_on(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace")
            self._note_crash(line)
            self._tail.append(line.rstrip("\n"))
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(line)
                sys.stderr.flush()

    def poll(self) -> int | None:
        """tritonserver's return code if it has exited (negative: the signal that ended it), else None."""
        return None if self._proc is None else self._proc.poll()

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait until tritonserver exits: its return code, or None if it still runs after ``timeout_s``.  A
        supervisor loops on this, then calls :meth:`cleanup` (what the server left) before starting it again."""
        assert self._proc is not None, "wait() before start()"
        try:
            return self._proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines of the server's output (its log file, or what was passed on to stderr),
        without Triton's tables."""
        if self.log_file is not None:
            try:
                text = Path(self.log_file).read_text(errors="replace").splitlines()
            except OSError:
                text = []
        else:
            text = list(self._tail)
        return [line for line in text if line.strip() and not line.startswith(("|", "+"))][-lines:]

    def _gave_up(self) -> bool:
        """Whether Triton's log ends with its exit timeout having run out."""
        if self.log_file is None:
            last = list(self._tail)[-5:]
        else:
            try:
                with open(self.log_file, "rb") as f:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - 2048))
                    last = f.read().decode(errors="replace").splitlines()
            except OSError:
                return False
        return any("Exit timeout expired" in line for line in last)

    def stop(self, *, timeout_s: float | None = None) -> StopReport:
        """Stop the server: SIGINT, then Triton refuses new requests (also the voice models' calls to their
        networks, so streams in flight end with an error), waits for in-flight inferences, unloads every model
        (a voice model's ``finalize`` ends what is still running) and exits, 0 when all unloaded within
        ``exit_timeout_s``.  It is killed when its exit timeout has run out (Triton logs "Exit timeout expired.
        Exiting immediately." and calls exit(1), which then hangs in 2.51: seen here still running 10 s later), or
        after ``timeout_s`` (default ``exit_timeout_s`` + 2 s).  Then :meth:`cleanup` removes what it left.

        A client's gRPC stream that stays open holds its voice model in Triton 2.51: each request of a stream
        keeps its ``TRITONSERVER_InferenceRequest`` (which holds the model) in the stream's state until the
        stream ends (server src/grpc/stream_infer_handler.cc, ``state->inference_request_``), and the gRPC
        endpoint closes its streams only after the models are unloaded (src/main.cc).  Such a model never
        unloads; Triton exits 1 when ``exit_timeout_s`` runs out, which is why that is short here (Triton's
        default is 30 s).  Later Triton releases end gRPC streams at shutdown (server#7969, a gRPC shutdown timer).
        An open HTTP connection, even an idle keep-alive one, does the same another way: Triton's first step is to
        wait, from its exit timeout, until no HTTP connection is open (src/http_server.cc ``HTTPServer::Stop``),
        leaving nothing of it for unloading; its exit(1) then hangs or segfaults (both seen here)."""
        proc = self._proc
        report = StopReport()
        started = time.monotonic()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            deadline = started + (self.exit_timeout_s + 2.0 if timeout_s is None else timeout_s)
            while proc.poll() is None:
                # Once Triton has given up ("Exit timeout expired. Exiting immediately.") its exit(1) hangs in
                # 2.51: nothing more will happen, so it is killed at once instead of at the deadline.
                if time.monotonic() > deadline or self._gave_up():
                    report.killed = True
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
        after = self.cleanup()
        report.returncode = after.returncode
        report.leftover_processes, report.leftover_regions = after.leftover_processes, after.leftover_regions
        report.seconds = time.monotonic() - started
        return report

    def cleanup(self) -> StopReport:
        """After tritonserver has exited (stopped, crashed or killed): kill what is left of its process group
        (Python backend stubs, each holding a model and its shared memory; they are in the server's own
        session) and remove its shared-memory regions from /dev/shm.  Kills the server too if it still runs.
        What it found is in the report; afterwards :meth:`start` may be called again."""
        proc, self._proc = self._proc, None
        report = StopReport()
        if proc is not None:
            if proc.poll() is None:
                report.killed = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            report.returncode = proc.returncode
            report.leftover_processes = group_members(proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0
            while group_members(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.02)  # SIGKILL is delivered asynchronously; a dead stub may still map its region
        report.leftover_regions = remove_shm_regions(self.shm_prefix, self.shm_dir)
        if self._reader is not None:
            self._reader.join(timeout=2.0)  # the last lines of its output (EOF once every process of it is gone)
            if not self._reader.is_alive() and proc is not None and proc.stdout is not None:
                proc.stdout.close()
            self._reader = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return report

    def __enter__(self) -> TritonServer:
        return self.start() if self._proc is None else self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
