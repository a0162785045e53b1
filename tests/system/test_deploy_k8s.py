"""Scale-out deployments, checked offline: deploy/k8s (Kubernetes) and docker-compose.yml's `replicas` profile.

No cluster and no Docker engine: `kubectl kustomize` renders the manifests, every rendered object is validated
against the Kubernetes JSON schemas that kubernetes-validate bundles (strict: an unknown field fails), and what
matters is then asserted on the objects: the command and probes are melstream's own (parsed by its CLI parser),
the ports, the shared memory, the Services, the autoscaler's metric and the adapter rule that provides it, and
that the compose replicas and Kubernetes pods run what the compose services run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from melstream.cli import build_parser, cmd_serve
from melstream.serving.health import DEFAULT_HEALTH_PORT, READY_PATH
from melstream.serving.repo import PROFILES
from tests.system.test_deploy import HEALTH, compose_python, docker_compose

yaml = pytest.importorskip("yaml", reason="PyYAML is in the dev extra: pip install -e .[dev]")
kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra: pip install -e .[dev]")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy-compose.cfg"
VOICE_MODEL = ROOT / "melstream" / "serving" / "voice_model.py"
METRIC = "melstream_active_streams"
KUSTOMIZATIONS = ["base", "overlays/gpu", "prometheus-adapter"]
# the oldest schemas kubernetes-validate bundles, and the minor of the kubectl these tests render with
SCHEMA_VERSIONS = ["1.25", "1.32"]
TIMEOUT_S = 60


# --- rendering -------------------------------------------------------------------------------------

def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: it renders deploy/k8s (`kubectl kustomize`; no cluster needed)")
    return path


def render(kustomization: str) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl(), "kustomize", str(K8S / kustomization)], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    objects = [o for o in yaml.safe_load_all(proc.stdout) if o]
    assert objects, f"{kustomization} renders nothing"
    return objects


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {k: render(k) for k in KUSTOMIZATIONS}


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{len(found)} {kind}/{name} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    return found[0]


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment", "melstream")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["triton"]
    return dict(containers[0])


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return dict(one(objects, "Deployment", "melstream")["spec"]["template"]["spec"])


def container_ports(objects: list[dict[str, Any]]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(objects)["ports"]}


def target_port(objects: list[dict[str, Any]], port: dict[str, Any]) -> int:
    """The container port a Service port reaches (targetPort by name or number; by default its own port)."""
    target = port.get("targetPort", port["port"])
    return container_ports(objects)[target] if isinstance(target, str) else int(target)


_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}


def quantity(value: str | int) -> float:
    """A Kubernetes quantity ("3Gi", "500m", 2) as a number."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert m and m.group(2) in _UNITS, f"not a quantity this test reads: {value!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def seconds(duration: str) -> float:
    """A duration as docker-compose prints it ("5m0s", "300s", "1h2m3.5s") in seconds."""
    parts = re.findall(r"([0-9.]+)(h|ms|m|s|us)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration this test reads: {duration!r}"
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[u] for n, u in parts)


def adapter_rules(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    config = one(rendered["prometheus-adapter"], "ConfigMap", "adapter-config")
    assert config["metadata"]["namespace"] == "monitoring"
    return list(yaml.safe_load(config["data"]["config.yaml"])["rules"])


def compose_config(*profiles: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`docker-compose [--profile P] config`, parsed: the file as docker-compose resolves it."""
    args = [a for p in profiles for a in ("--profile", p)]
    proc = subprocess.run([docker_compose(), "-f", str(COMPOSE), *args, "config"], cwd=ROOT, capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stderr
    return dict(yaml.safe_load(proc.stdout))


# --- every object is a valid Kubernetes object --------------------------------------------------------

@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_rendered_object_matches_the_kubernetes_schema(rendered: dict[str, list[dict[str, Any]]], kustomization: str,
                                                             version: str) -> None:
    for obj in rendered[kustomization]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_can_fail(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Strict validation refuses a misspelt field and a wrong type: the check above is not vacuous (and the
    schemas are the package's own files: nothing is downloaded)."""
    deployment = one(render("base"), "Deployment", "melstream")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="pathh"):
        kubernetes_validate.validate(deployment, SCHEMA_VERSIONS[-1], strict=True)
    service = one(render("base"), "Service", "melstream-grpc")
    service["spec"]["ports"][0]["port"] = "grpc"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, SCHEMA_VERSIONS[-1], strict=True)


def test_kustomize_refuses_a_broken_kustomization(tmp_path: Path) -> None:
    """Rendering can fail too: a patch of a Deployment that is not there."""
    shutil.copytree(K8S, tmp_path / "k8s")
    patch = tmp_path / "k8s" / "overlays" / "gpu" / "deployment-gpu.yaml"
    patch.write_text(patch.read_text().replace("name: melstream", "name: not-melstream", 1))
    proc = subprocess.run([kubectl(), "kustomize", str(tmp_path / "k8s" / "overlays" / "gpu")], capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert proc.returncode != 0 and "not-melstream" in proc.stderr


def test_what_each_kustomization_makes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {k: sorted((o["kind"], o["metadata"]["name"]) for o in objs) for k, objs in rendered.items()}
    base = [("Deployment", "melstream"), ("HorizontalPodAutoscaler", "melstream"), ("PodDisruptionBudget", "melstream"),
            ("Service", "melstream"), ("Service", "melstream-grpc")]
    assert kinds == {"base": base, "overlays/gpu": base, "prometheus-adapter": [("ConfigMap", "adapter-config")]}
    # no namespace of its own: it goes where it is applied (-n, or an overlay's `namespace:`)
    assert all("namespace" not in o["metadata"] for o in rendered["base"])


# --- the Deployment ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kustomization", "service", "profile"), [("base", "triton-cpu", "cpu"), ("overlays/gpu", "triton", "gpu")])
def test_pods_run_what_the_compose_service_runs(rendered: dict[str, list[dict[str, Any]]], kustomization: str, service: str,
                                                profile: str) -> None:
    c = container(rendered[kustomization])
    compose = compose_config("cpu", "gpu")["services"][service]
    assert c["image"] == compose["image"] == "melstream:triton-24.10"
    assert c["command"] == compose["command"]
    args = build_parser().parse_args(c["command"][1:])
    assert args.func is cmd_serve and args.triton_home == "/opt/tritonserver" and args.supervise
    assert (args.http_port, args.grpc_port, args.metrics_port) == (8000, 8001, 8002)
    # no model-control flags: serve runs Triton in explicit mode for its supervisor, nothing more is exposed
    assert not [a for a in c["command"] if "model-control" in a or "load-model" in a], c["command"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {"MELSTREAM_PROFILE": profile} and profile in PROFILES
    assert compose["environment"]["MELSTREAM_PROFILE"] == profile


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu"])
def test_ports_are_triton_http_grpc_metrics_and_the_health_port_only(rendered: dict[str, list[dict[str, Any]]],
                                                                     kustomization: str) -> None:
    objects = rendered[kustomization]
    assert container_ports(objects) == {"http": 8000, "grpc": 8001, "metrics": 8002, "health": DEFAULT_HEALTH_PORT}
    assert all("hostPort" not in p for p in container(objects)["ports"])
    assert not pod_spec(objects).get("hostNetwork")
    annotations = one(objects, "Deployment", "melstream")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_ports(objects)["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu"])
def test_probes(rendered: dict[str, list[dict[str, Any]]], kustomization: str) -> None:
    objects = rendered[kustomization]
    c = container(objects)
    # readiness and startup: serve's health port (melstream.serving.health), which says not ready while any
    # voice is, and from the moment a voice's stub is found dead
    serve = build_parser().parse_args(c["command"][1:])
    assert serve.func is cmd_serve
    for probe in ("startupProbe", "readinessProbe"):
        check = c[probe]["httpGet"]
        assert "exec" not in c[probe] and check["path"] == READY_PATH, probe
        port = check["port"]
        assert (container_ports(objects)[port] if isinstance(port, str) else port) == serve.health_port, probe
        assert c[probe]["timeoutSeconds"] > 2.0, f"{probe}: the probe times out before the check does"  # its timeout_s
    # loading every voice takes minutes: at least compose's start_period before liveness counts
    startup = c["startupProbe"]
    start_period = seconds(compose_config("cpu")["services"]["triton-cpu"]["healthcheck"]["start_period"])
    assert start_period >= 300
    assert startup["periodSeconds"] * startup["failureThreshold"] >= start_period
    # liveness: Triton answers, not the voice check (a dead voice is the supervisor's to reload)
    live = c["livenessProbe"]
    assert "exec" not in live and live["httpGet"]["path"] == "/v2/health/live"
    port = live["httpGet"]["port"]
    assert (container_ports(objects)[port] if isinstance(port, str) else port) == 8000


@pytest.mark.parametrize(("kustomization", "least"), [("base", "1Gi"), ("overlays/gpu", "2Gi")])
def test_shared_memory_and_resources(rendered: dict[str, list[dict[str, Any]]], kustomization: str, least: str) -> None:
    objects = rendered[kustomization]
    c = container(objects)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volume = next(v for v in pod_spec(objects)["volumes"] if v["name"] == mounts["/dev/shm"])
    assert volume["emptyDir"]["medium"] == "Memory"
    shm = quantity(volume["emptyDir"]["sizeLimit"])
    # at least compose's shm_size (1gb); the GPU overlay's larger
    assert shm >= quantity(least)
    resources = c["resources"]
    for kind in ("cpu", "memory"):
        assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind]), kind
    # tmpfs is charged to the pod: the limit holds a full /dev/shm and the server's ~1 GiB besides
    assert quantity(resources["limits"]["memory"]) >= shm + quantity("1Gi")
    # the admission limits were measured on 2 cores
    assert quantity(resources["requests"]["cpu"]) >= 2


def test_gpu_overlay(rendered: dict[str, list[dict[str, Any]]]) -> None:
    gpu, base = rendered["overlays/gpu"], rendered["base"]
    assert str(container(gpu)["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    assert "nvidia.com/gpu" not in container(base)["resources"]["limits"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(gpu)["tolerations"]
    assert "tolerations" not in pod_spec(base)
    # the rest of the pod is the base's
    for key in ("startupProbe", "readinessProbe", "livenessProbe", "ports", "securityContext", "volumeMounts"):
        assert container(gpu)[key] == container(base)[key], key


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu"])
def test_pod_security(rendered: dict[str, list[dict[str, Any]]], kustomization: str) -> None:
    spec = pod_spec(rendered[kustomization])
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = container(rendered[kustomization])["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"] and not sc.get("privileged")


@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu"])
def test_selectors_select_the_pods(rendered: dict[str, list[dict[str, Any]]], kustomization: str) -> None:
    objects = rendered[kustomization]
    deployment = one(objects, "Deployment", "melstream")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = {"Deployment": deployment["spec"]["selector"]["matchLabels"],
                 "PodDisruptionBudget": one(objects, "PodDisruptionBudget", "melstream")["spec"]["selector"]["matchLabels"],
                 "melstream": one(objects, "Service", "melstream")["spec"]["selector"],
                 "melstream-grpc": one(objects, "Service", "melstream-grpc")["spec"]["selector"]}
    for what, selector in selectors.items():
        assert selector and selector.items() <= labels.items(), what
    # the autoscaler owns the count: a fixed one would be reset by every apply
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


# --- the Services -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kustomization", ["base", "overlays/gpu"])
def test_services(rendered: dict[str, list[dict[str, Any]]], kustomization: str) -> None:
    objects = rendered[kustomization]
    cluster = one(objects, "Service", "melstream")["spec"]
    assert cluster.get("type", "ClusterIP") == "ClusterIP"  # in-cluster only: no NodePort, no LoadBalancer
    assert {p["name"]: (p["port"], target_port(objects, p)) for p in cluster["ports"]} == {
        "http": (8000, 8000), "grpc": (8001, 8001), "metrics": (8002, 8002)}
    headless = one(objects, "Service", "melstream-grpc")["spec"]
    assert headless["clusterIP"] == "None"  # DNS answers with each pod: clients balance per stream
    assert [(p["name"], p["port"], target_port(objects, p)) for p in headless["ports"]] == [("grpc", 8001, 8001)]
    assert not headless.get("publishNotReadyAddresses"), "a pod with a dead voice must drop out of the DNS answers"
    assert all(o["spec"].get("type", "ClusterIP") == "ClusterIP" for o in objects if o["kind"] == "Service")


# --- the autoscaler and its metric -------------------------------------------------------------------

def test_the_metric_is_melstreams_active_streams_gauge_per_voice() -> None:
    """The series the adapter rule reads is the one the voice model exports: a gauge labelled by voice."""
    source = VOICE_MODEL.read_text()
    m = re.search(rf'(\w+) = family\(name="{METRIC}", kind=family\.(\w+)', source)
    assert m and m.group(2) == "GAUGE", f"{METRIC} is not a gauge of {VOICE_MODEL.name}"
    assert re.search(rf"self\.\w+ = {m.group(1)}\.Metric\(labels=labels\)", source) and 'labels = {"voice": voice}' in source


def test_adapter_rule_gives_one_number_per_pod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    rules = [r for r in adapter_rules(rendered) if r["seriesQuery"].startswith(METRIC + "{")]
    assert len(rules) == 1, adapter_rules(rendered)
    rule = rules[0]
    assert re.search(r'namespace!=""', rule["seriesQuery"]) and re.search(r'pod!=""', rule["seriesQuery"])
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    assert re.fullmatch(rule["name"]["matches"], METRIC) and rule["name"]["as"] == METRIC
    # summed over the voice label, grouped by what the autoscaler asks for (the pod)
    assert rule["metricsQuery"].replace(" ", "") == "sum(<<.Series>>{<<.LabelMatchers>>})by(<<.GroupBy>>)"


@pytest.mark.parametrize(("kustomization", "profile"), [("base", "cpu"), ("overlays/gpu", "gpu")])
def test_hpa(rendered: dict[str, list[dict[str, Any]]], kustomization: str, profile: str) -> None:
    objects = rendered[kustomization]
    hpa = one(objects, "HorizontalPodAutoscaler", "melstream")
    assert hpa["apiVersion"] == "autoscaling/v2"
    deployment = one(objects, "Deployment", "melstream")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (deployment["apiVersion"], "Deployment", deployment["metadata"]["name"])
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    assert metric["pods"]["metric"]["name"] == METRIC == adapter_rules(rendered)[0]["name"]["as"]
    # scale out well before a voice of the profile refuses streams, even with all of a pod's streams on it
    average = quantity(metric["pods"]["target"]["averageValue"])
    admits = min(PROFILES[profile].voice_max_streams.values())
    assert 0 < average <= admits / 2, (average, admits)
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300


# --- docker-compose.yml's replicas profile -----------------------------------------------------------

def test_docker_compose_config_accepts_the_replicas_profile() -> None:
    proc = subprocess.run([docker_compose(), "-f", str(COMPOSE), "--profile", "replicas", "config", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr


# what `docker-compose --profile replicas up` would start, and how many of each (compose's own library)
_PROJECT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from compose.config import config
from compose.config.environment import Environment
from compose.project import Project
from compose_project import FreshEngine
cfg = config.load(config.find(sys.argv[2], ["docker-compose.yml"], Environment.from_env_file(sys.argv[2])))
project = Project.from_config("melstream", cfg, FreshEngine(), enabled_profiles=["replicas"])
print(json.dumps({s.name: s.scale_num for s in project.get_services(include_deps=True)}))
"""


@pytest.mark.parametrize(("replicas", "expected"), [(None, 3), ("5", 5)])
def test_replicas_profile_starts_n_replicas_a_balancer_and_locust(replicas: str | None, expected: int) -> None:
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != "MELSTREAM_REPLICAS"} | ({"MELSTREAM_REPLICAS": replicas} if replicas else {})
    proc = subprocess.run([compose_python(), "-c", _PROJECT, str(Path(__file__).parent), str(ROOT)], capture_output=True, text=True,
                          timeout=TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"triton-replica": expected, "balancer": 1, "locust-master": 1, "locust-worker": 1}


def test_replicas_are_the_cpu_service_without_ports() -> None:
    services = compose_config("cpu", "replicas")["services"]
    replica, cpu = services["triton-replica"], services["triton-cpu"]
    assert "ports" not in replica, "replicas publish nothing: only the balancer is reachable from outside"
    for key in ("image", "build", "command", "environment", "healthcheck", "shm_size", "ulimits", "restart"):
        assert replica[key] == cpu[key], key
    assert replica["healthcheck"]["test"] == ["CMD", *HEALTH]
    assert replica["profiles"] == ["replicas"] and "networks" not in replica  # found by its service name


def test_balancer() -> None:
    services = compose_config("replicas")["services"]
    balancer = services["balancer"]
    assert balancer["image"] == "haproxy:2.6" and balancer["profiles"] == ["replicas"]
    assert [(p["published"], p["target"]) for p in balancer["ports"]] == [(8000, 8000), (8001, 8001)]
    source, target, mode = balancer["volumes"][0].rsplit(":", 2) if isinstance(balancer["volumes"][0], str) else (
        balancer["volumes"][0]["source"], balancer["volumes"][0]["target"], "ro" if balancer["volumes"][0].get("read_only") else "rw")
    assert len(balancer["volumes"]) == 1
    assert (Path(source), target, mode) == (HAPROXY_CFG, "/usr/local/etc/haproxy/haproxy.cfg", "ro")
    # locust, in this profile too, reaches the balancer by the name it uses for Triton
    assert balancer["networks"]["default"]["aliases"] == ["triton"]
    for name in ("locust-master", "locust-worker"):
        assert "replicas" in services[name]["profiles"]
        assert services[name]["environment"]["MELSTREAM_GRPC_URL"] == "triton:8001"
        assert services[name]["environment"]["MELSTREAM_HTTP_URL"] == "triton:8000"


def test_haproxy_config_finds_the_compose_replicas() -> None:
    """The mounted configuration reaches the replicas as compose names them, on the ports they serve, through
    Docker's resolver; listens on every interface of its container (a published port arrives on eth0); and
    fills at least as many servers as the profile starts."""
    if not HAPROXY_CFG.is_file():
        pytest.skip(f"{HAPROXY_CFG.relative_to(ROOT)} is not written yet (`melstream balancer-config --dns-name triton-replica ...`)")
    text = HAPROXY_CFG.read_text()
    templates = re.findall(r"^\s*server-template\s+\S+\s+(\d+)\s+(\S+):(\d+)\b.*$", text, re.MULTILINE)
    assert sorted((host, int(port)) for _, host, port in templates) == [("triton-replica", 8000), ("triton-replica", 8001)]
    assert all(int(count) >= 3 for count, _, _ in templates)
    assert re.search(r"^\s*nameserver\s+\S+\s+127\.0\.0\.11:53\s*$", text, re.MULTILINE)
    binds = re.findall(r"^\s*bind\s+(\S*):(\d+)\b", text, re.MULTILINE)
    assert sorted(int(port) for _, port in binds) == [8000, 8001]
    assert all(host in ("", "*", "0.0.0.0", "::") for host, _ in binds), binds
