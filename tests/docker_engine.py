"""A Docker Engine for `make test-compose`, and the stand-in base image no registry can give us.

If no engine answers and we run as root with `CI` set, Debian's `docker.io` (and `debootstrap`) are
installed and `dockerd` is started, and stopped again afterwards. Anywhere else a missing engine
is a failure that says what is missing: the test never pretends to pass.

No container registry is reachable here, so `python:3.11-slim-bookworm` cannot be pulled. The
stand-in is Debian bookworm from debootstrap with Python 3.11, `python` and `pip` on PATH and pip
installs allowed, as in the official image; it carries this host's CA bundle, since PyPI is reached
through a TLS proxy whose CA only that bundle holds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

STANDIN = "triton-embeddings/python-standin:3.11-bookworm"
DEBOOTSTRAP_PACKAGES = "python3,python3-pip,python3-venv,libpython3.11,ca-certificates"


class EngineMissing(RuntimeError):
    """No Docker Engine, and none may be installed here."""


def answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode == 0


@dataclass
class Engine:
    """The engine the tests use; `started` when they started it (and must stop it)."""

    process: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env, capture_output=True)


def ensure_engine(log: Path) -> Engine:
    """An engine that answers: the one running, or (root with CI set) one installed and started now."""
    if answers():
        return Engine()
    if os.geteuid() != 0 or not os.environ.get("CI"):
        raise EngineMissing(
            "no Docker Engine answers (`docker info` fails). Start one (Debian: apt-get install docker.io; "
            "dockerd &), or run as root with CI=true to have this test install and start it."
        )
    if shutil.which("dockerd") is None or shutil.which("debootstrap") is None:
        _apt_install("docker.io", "debootstrap")
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["dockerd"], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not answers():
        if process.poll() is not None or time.monotonic() > deadline:
            raise EngineMissing(f"dockerd did not start; see {log}")
        time.sleep(1)
    return Engine(process)


def image_exists(name: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0


def ensure_standin(workdir: Path) -> str:
    """The stand-in for the official Python 3.11 image, built once per engine."""
    if image_exists(STANDIN):
        return STANDIN
    if shutil.which("debootstrap") is None:
        if os.geteuid() != 0 or not os.environ.get("CI"):
            raise EngineMissing("the stand-in base image needs debootstrap (apt-get install debootstrap)")
        _apt_install("debootstrap")
    root = workdir / "standin-root"
    if root.exists():
        shutil.rmtree(root)
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={DEBOOTSTRAP_PACKAGES}", "bookworm", str(root)],
        check=True,
        capture_output=True,
    )
    bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
    shutil.copyfile(bundle, root / "etc/ssl/certs/ca-certificates.crt")
    for name, target in (("python", "python3"), ("pip", "pip3")):  # on PATH as in the official image
        if not (root / "usr/bin" / name).exists():
            (root / "usr/bin" / name).symlink_to(target)
    (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").unlink(missing_ok=True)  # pip installs allowed
    certs = "/etc/ssl/certs/ca-certificates.crt"
    changes = [
        f"ENV PIP_CERT={certs} SSL_CERT_FILE={certs} REQUESTS_CA_BUNDLE={certs} LANG=C.UTF-8",
        'CMD ["python3"]',
    ]
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    args = ["docker", "import", *(a for c in changes for a in ("--change", c)), "-", STANDIN]
    subprocess.run(args, stdin=tar.stdout, check=True, capture_output=True)
    tar.wait()
    shutil.rmtree(root)
    return STANDIN
