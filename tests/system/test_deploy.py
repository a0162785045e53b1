"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker engine.

docker-compose itself parses and validates the compose file, and its library resolves what
`docker-compose --profile P up` would start; everything the files point at (commands, paths, the model
repositories, the backend stub) is checked to exist and to work here, outside Docker.
"""

from __future__ import annotations

import http.server
import json
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from melstream.cli import build_parser, cmd_build_repo, cmd_health, cmd_serve, main
from melstream.serving.repo import build_repository, parse_config
from melstream.serving.server import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
BASE_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"  # Triton 2.51, the server of the nvidia-pytriton wheel
SRC = PurePosixPath("/opt/melstream/src")  # the checkout inside the image (the Dockerfile's WORKDIR)
VENV = PurePosixPath("/opt/melstream/venv")
HEALTH = [f"{VENV}/bin/melstream", "health", "--url", "localhost:8000"]


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is not installed: run `make sysdeps` (Debian's docker-compose; no engine needed)")
    return path


def compose_python() -> str:
    """The interpreter docker-compose runs on (its library and PyYAML live there, not in our venv)."""
    first = Path(docker_compose()).read_text(errors="replace").splitlines()[0]
    assert first.startswith("#!"), f"{docker_compose()} is not a Python script; install Debian's docker-compose (`make sysdeps`)"
    return first[2:].strip().split()[0]


def run_compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker_compose(), "-f", str(COMPOSE), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The resolved compose file and, per profile ("" = none), the services `up` would start, in order."""
    proc = subprocess.run([compose_python(), str(Path(__file__).with_name("compose_project.py")), str(ROOT), COMPOSE.name, "", "gpu", "cpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def service(resolved: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(resolved["config"]["services"][name])


def in_checkout(path: str) -> Path:
    """The file in this checkout that the image has at ``path`` (under /opt/melstream/src)."""
    rel = PurePosixPath(path).relative_to(SRC)
    return ROOT / rel


# --- docker-compose.yml ------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", [None, "gpu", "cpu"])
def test_docker_compose_config_accepts_the_file(profile: str | None) -> None:
    proc = run_compose(*(["--profile", profile] if profile else []), "config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_docker_compose_config_refuses_a_broken_file(tmp_path: Path) -> None:
    """The check above can fail: docker-compose validates against the compose schema."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("shm_size: 1gb", "shm_size: [1gb]"))
    proc = subprocess.run([docker_compose(), "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "shm_size" in proc.stderr


def test_each_profile_starts_one_triton_and_locust(resolved: dict[str, Any]) -> None:
    names = {profile: [s["name"] for s in services] for profile, services in resolved["profiles"].items()}
    assert names == {"": [], "gpu": ["triton", "locust-master", "locust-worker"], "cpu": ["triton-cpu", "locust-master", "locust-worker"]}


def test_gpu_reserved_for_triton_only(resolved: dict[str, Any]) -> None:
    devices = {s["name"]: s["device_requests"] for p in ("gpu", "cpu") for s in resolved["profiles"][p]}
    assert devices.pop("triton") == [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}]  # count: all
    assert all(d == [] for d in devices.values()), devices


def test_locust_reaches_either_triton_as_triton(resolved: dict[str, Any]) -> None:
    cpu = {s["name"]: s for s in resolved["profiles"]["cpu"]}
    assert cpu["triton-cpu"]["aliases"] == ["triton"]  # the gpu service is called triton already
    for name in ("locust-master", "locust-worker"):
        # an empty reference-addons path: checks compare with the server's own whole utterance (GPU floats)
        assert service(resolved, name)["environment"] == {"MELSTREAM_GRPC_URL": "triton:8001", "MELSTREAM_HTTP_URL": "triton:8000",
                                                          "MELSTREAM_REFERENCE_ADDONS": ""}


def test_a_locust_dependency_on_triton_would_break_the_other_profile(tmp_path: Path) -> None:
    """Why locust has no depends_on triton: docker-compose 1.29 refuses it at `up` (and this helper sees it)."""
    text = COMPOSE.read_text().replace('    ports:\n      - "8089:8089"', '    depends_on: [triton]\n    ports:\n      - "8089:8089"')
    assert text != COMPOSE.read_text()
    (tmp_path / "docker-compose.yml").write_text(text)
    proc = subprocess.run([compose_python(), str(Path(__file__).with_name("compose_project.py")), str(tmp_path), "docker-compose.yml", "cpu"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not enabled by the active profiles" in proc.stderr


@pytest.mark.parametrize("name", ["triton", "triton-cpu"])
def test_triton_services(resolved: dict[str, Any], name: str) -> None:
    svc = service(resolved, name)
    assert [(p["published"], p["target"]) for p in svc["ports"]] == [(8000, 8000), (8001, 8001), (8002, 8002)]
    assert svc["healthcheck"]["test"] == ["CMD", *HEALTH]
    assert svc["shm_size"] == "1gb"
    assert svc["image"] == service(resolved, "locust-master")["image"] and svc["build"] == service(resolved, "locust-master")["build"]


def dockerfile_env() -> dict[str, str]:
    """The Dockerfile's ENV settings (``KEY=value`` form)."""
    return dict(word.split("=", 1) for ins, args in dockerfile_instructions() if ins == "ENV" for word in shlex.split(args))


def test_venv_is_the_images_venv() -> None:
    """VENV above is where the Dockerfile makes its venv, puts it first on PATH, and installs the checkout."""
    env = dockerfile_env()
    assert env["VIRTUAL_ENV"] == str(VENV)
    assert env["PATH"].split(":")[0] == f"{VENV}/bin"  # so the RUN lines' `pip` is the venv's pip
    assert ["python3.11", "-m", "venv", str(VENV)] in dockerfile_runs()


@pytest.mark.parametrize("name", ["triton", "triton-cpu"])
def test_health_check_runs_the_console_script_the_package_declares(resolved: dict[str, Any], name: str) -> None:
    """The compose health check runs `<venv>/bin/<script> health`: a script of pyproject.toml's
    [project.scripts] (which `pip install -e` writes into the venv's bin/), bound to melstream's CLI."""
    import tomllib

    test = service(resolved, name)["healthcheck"]["test"]
    assert test[0] == "CMD"
    exe = PurePosixPath(test[1])
    assert exe.parent == PurePosixPath(dockerfile_env()["VIRTUAL_ENV"]) / "bin"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts.get(exe.name) == "melstream.cli:main", f"{exe.name} is not a console script of melstream: {scripts}"
    assert (Path(sys.executable).parent / exe.name).is_file()  # this venv has it too, from the same declaration
    args = build_parser().parse_args(test[2:])
    assert args.func is cmd_health and args.url == "localhost:8000"


@pytest.mark.parametrize(("name", "profile"), [("triton", "gpu"), ("triton-cpu", "cpu")])
def test_triton_command_serves_the_profiles_repository(resolved: dict[str, Any], name: str, profile: str, tmp_path: Path) -> None:
    command = service(resolved, name)["command"]
    assert command[0] == f"{VENV}/bin/melstream"
    args = build_parser().parse_args(command[1:])
    assert args.func is cmd_serve and args.triton_home == "/opt/tritonserver"
    assert (args.http_port, args.grpc_port, args.metrics_port) == (8000, 8001, 8002)
    if profile == "cpu":  # the committed repository, copied into the image
        assert in_checkout(args.repo) == ROOT / "model_repository"
        assert (ROOT / "model_repository" / "fastvoice" / "config.pbtxt").is_file()
    else:  # generated at image build time by a RUN line; run the same command here
        build = next(b for b in dockerfile_runs() if b[:2] == ["melstream", "build-repo"])
        bargs = build_parser().parse_args(build[1:])
        assert bargs.func is cmd_build_repo and bargs.profile == "gpu" and bargs.out == args.repo
        shutil.copytree(ROOT / "addons", tmp_path / "addons")
        report = build_repository(tmp_path / "addons", tmp_path / "model_repository_gpu", profile=bargs.profile)
        assert report.voices == ["fastvoice", "tacovoice"] and not report.refused
        cfg = parse_config((tmp_path / "model_repository_gpu" / "fastvoice__decoder" / "config.pbtxt").read_text())
        assert cfg.parameters["ort_providers"].string_value.startswith("CUDAExecutionProvider")


@pytest.mark.parametrize("name", ["locust-master", "locust-worker"])
def test_locust_commands(resolved: dict[str, Any], name: str) -> None:
    command = service(resolved, name)["command"]
    assert command[0] == f"{VENV}/bin/locust"
    locustfile = command[command.index("-f") + 1]
    assert in_checkout(locustfile) == ROOT / "loadtests" / "locustfile.py"
    assert in_checkout(locustfile).is_file(), f"{locustfile}: loadtests/locustfile.py is missing"
    if name == "locust-worker":
        assert command[command.index("--master-host") + 1] == "locust-master" and "--worker" in command
        assert "ports" not in service(resolved, name), "workers publish no port, so --scale locust-worker=N works"
    else:
        assert "--master" in command and [(p["published"], p["target"]) for p in service(resolved, name)["ports"]] == [(8089, 8089)]
    # locust's own parser (in a subprocess: importing locust monkey-patches the standard library with gevent)
    code = ("import sys; from locust.argument_parser import get_parser; "
            "o = get_parser(default_config_files=[]).parse_args(sys.argv[1:]); print(o.master, o.worker)")
    proc = subprocess.run([sys.executable, "-c", code, *command[1:]], capture_output=True, text=True, timeout=60)
    if "No module named 'locust'" in proc.stderr:
        pytest.skip("locust is not installed in this venv (the image installs it)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == (["True", "False"] if name == "locust-master" else ["False", "True"])


# --- Dockerfile and .dockerignore ------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in text.splitlines() if line.strip()]


def dockerfile_runs() -> list[list[str]]:
    """Each simple command of each RUN (split at &&)."""
    return [shlex.split(part) for ins, args in dockerfile_instructions() if ins == "RUN" for part in args.split("&&")]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _pattern_re(pattern: str) -> re.Pattern[str]:
    # Docker's rules: `*` and `?` stay within a path segment, `**` crosses segments
    out = re.sub(r"\\\*\\\*/", "(.*/)?", re.escape(pattern)).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last pattern matching the path or
    one of its parent directories decides; ``!`` patterns take paths back in."""
    prefixes = ["/".join(PurePosixPath(path).parts[:i]) for i in range(1, len(PurePosixPath(path).parts) + 1)]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_re(str(PurePosixPath(pattern.lstrip("!"))))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_base_image_is_triton_24_10() -> None:
    froms = [args for ins, args in dockerfile_instructions() if ins == "FROM"]
    assert froms == [BASE_IMAGE]


def test_copy_sources_exist_and_are_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    copies = [shlex.split(args) for ins, args in dockerfile_instructions() if ins in ("COPY", "ADD")]
    assert copies, "the Dockerfile copies nothing"
    for *sources, _dest in copies:
        for src in sources:
            path = ROOT / src
            assert path.exists(), f"Dockerfile copies {src}, which is not in the checkout"
            # the checkout's own files under it (not what an install left there, e.g. client/*.egg-info)
            tracked = subprocess.run(["git", "ls-files", "-z", "--", src], cwd=ROOT, capture_output=True, check=True,
                                     timeout=60).stdout.decode().split("\0")
            files = [ROOT / f for f in tracked if f]
            assert files, f"{src} is empty"
            for f in files:
                rel = f.relative_to(ROOT).as_posix()
                assert not dockerignored(rel, patterns), f"{rel} is copied by the Dockerfile but excluded by .dockerignore"


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = dockerignore_patterns()
    for rel in (".venv/bin/python", "out/demo.json", "data/corpus.json", ".git/HEAD", "melstream/__pycache__/cli.cpython-311.pyc",
                "melstream.egg-info/PKG-INFO", "benchmarks/first_frame.py"):
        assert dockerignored(rel, patterns), rel
    for rel in ("pyproject.toml", "README.md", "melstream/cli.py", "python_backends/network/model.py", "addons/fastvoice/addon.json",
                "model_repository/fastvoice/config.pbtxt", "loadtests/locustfile.py"):
        assert not dockerignored(rel, patterns), rel


def test_dockerignore_matcher() -> None:
    assert dockerignored("a/b/__pycache__/x.pyc", ["**/__pycache__"]) and dockerignored("__pycache__/x", ["**/__pycache__"])
    assert not dockerignored("melstream/x.py", ["*", "!melstream/"]) and dockerignored("other/x.py", ["*", "!melstream/"])
    assert not dockerignored("ab/c", ["a*/d"]) and dockerignored("ab/c", ["a*"])


def test_the_backend_stub_the_dockerfile_installs_exists_in_the_wheel() -> None:
    cp = next(r for r in dockerfile_runs() if r[0] == "cp" and r[-1].endswith("triton_python_backend_stub"))
    src, dest = cp[1], cp[2]
    assert dest == "/opt/tritonserver/backends/python/triton_python_backend_stub"
    site = PurePosixPath(src).relative_to(f"{VENV}/lib/python3.11/site-packages")
    here = Path(sysconfig.get_paths()["purelib"]) / site
    assert site == PurePosixPath("pytriton/tritonserver/python_backend_stubs/3.11/triton_python_backend_stub")
    assert here.is_file() and b"libpython3.11.so" in here.read_bytes()


def test_dockerfile_installs_what_serving_needs() -> None:
    runs = dockerfile_runs()
    apt = next(r for r in runs if "apt-get" in r and "install" in r)
    assert {"python3.11", "python3.11-venv", "libpython3.11", "espeak-ng", "libespeak-ng1"} <= set(apt)
    pips = [r for r in runs if r[:2] == ["pip", "install"]]
    torch_pin = next(d for d in optional_deps(ROOT / "pyproject.toml", "dev") if d.startswith("torch"))
    assert any(torch_pin in r for r in pips), f"the image's torch must be pyproject's {torch_pin}"
    assert any(["-e", str(SRC)] == r[r.index("-e"):r.index("-e") + 2] for r in pips if "-e" in r)
    assert ["pip", "uninstall", "-y", "onnxruntime"] in runs and any(any(a.startswith("onnxruntime-gpu==") for a in r) for r in pips)
    workdir = [args for ins, args in dockerfile_instructions() if ins == "WORKDIR"]
    assert workdir == [str(SRC)]
    cmd = json.loads(next(args for ins, args in dockerfile_instructions() if ins == "CMD"))
    args = build_parser().parse_args(cmd[1:])
    assert args.func is cmd_serve and args.triton_home == "/opt/tritonserver"


def optional_deps(pyproject: Path, extra: str) -> list[str]:
    import tomllib

    return list(tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"][extra])


# --- melstream health ------------------------------------------------------------------------------

@pytest.fixture
def fake_triton() -> Iterator[tuple[str, dict[str, int]]]:
    """An HTTP server answering /v2/health/ready with a status the test sets, and no model loaded."""
    state = {"status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = b'{"model_stats": []}' if self.path == "/v2/models/stats" else b""
            code = state["status"] if self.path == "/v2/health/ready" else 200 if body else 404
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


def test_health_without_a_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"localhost:{free_port()}"
    assert main(["health", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "no answer" in err and url in err and "tritonserver running" in err


def test_health_follows_the_ready_endpoint(fake_triton: tuple[str, dict[str, int]], capsys: pytest.CaptureFixture[str]) -> None:
    url, state = fake_triton
    assert main(["health", "--url", url]) == 0
    assert capsys.readouterr().out == "ready\n"
    state["status"] = 400  # Triton while models load, or when one failed
    assert main(["health", "--url", url]) == 1
    err = capsys.readouterr().err
    assert "answered HTTP 400" in err and "not ready" in err
