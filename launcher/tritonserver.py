"""Start the `tritonserver` binary shipped in the `nvidia-pytriton` wheel, on the CPU.

Facts from DESIGN.md: the Python-backend stub for the running interpreter must be
copied into the backends folder; the venv's `bin/` goes first on `PATH` (so the
stub finds the venv's packages) and `LD_LIBRARY_PATH` starts with a folder holding only links to the
base interpreter's libpython (so the stub's libpython is the interpreter's own build). Not `LIBDIR`
itself: on a system Python that is `/usr/lib/x86_64-linux-gnu`, where CUDA images keep NCCL and cuDNN,
which would then shadow torch's own inside the stub.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from contract import ADMIN_HEADER, RESTRICTED
from launcher.hidden_key import hide_when_parsed
from launcher.processes import die_with_parent
from launcher.shm import SHM, remove_orphan_regions, stubs_of

TRITONSERVER_DIR_ENV = "EMBED_TRITONSERVER_DIR"


def pytriton_dir() -> Path:
    """The wheel's `tritonserver` folder, or a copy of it with its `nvidia_pytriton.libs` two folders up
    (`EMBED_TRITONSERVER_DIR`: the GPU run's bundle, bench/device/, where pytriton's Python side is absent)."""
    if os.environ.get(TRITONSERVER_DIR_ENV):
        return Path(os.environ[TRITONSERVER_DIR_ENV]).resolve()
    import pytriton

    return Path(pytriton.__file__).resolve().parent / "tritonserver"


def prepare_backends(workdir: Path) -> Path:
    """A backends folder with the Python backend and the stub for this interpreter."""
    source = pytriton_dir()
    backends = workdir / "backends"
    if backends.exists():
        shutil.rmtree(backends)
    shutil.copytree(source / "backends", backends, ignore=shutil.ignore_patterns("__pycache__"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise RuntimeError(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    shutil.copy2(stub, backends / "python" / "triton_python_backend_stub")
    return backends


def libpython_dir(workdir: Path) -> Path:
    """`workdir/libpython`: links to this interpreter's shared libpython (its soname and link name), and
    nothing else of the folder it lives in."""
    folder = workdir / "libpython"
    folder.mkdir(parents=True, exist_ok=True)
    libdir = Path(sysconfig.get_config_var("LIBDIR") or "")
    for name in {sysconfig.get_config_var("INSTSONAME"), sysconfig.get_config_var("LDLIBRARY")} - {None, ""}:
        link, target = folder / name, libdir / name
        if target.exists() and not link.exists():
            link.symlink_to(target)
    return folder


def server_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    libs = [str(libpython_dir(workdir)), str(pytriton_dir().parent.parent / "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
    return env


def restriction_flags(key: str) -> list[str]:
    """`tritonserver` flags that restrict the admin protocols, on HTTP and gRPC, to `ADMIN_HEADER: key`."""
    protocols = ",".join(RESTRICTED)
    return [
        f"--http-restricted-api={protocols}:{ADMIN_HEADER}={key}",
        f"--grpc-restricted-protocol={protocols}:{ADMIN_HEADER}={key}",
    ]


def new_admin_key() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


class TritonServer:
    """One `tritonserver` process over a model repository."""

    def __init__(
        self,
        repository: Path,
        workdir: Path,
        ports: TritonPorts,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
        address: str = "127.0.0.1",
        admin_key: str | None = None,
    ) -> None:
        """`admin_key`: what the restricted protocols ask for (a new random one when not given)."""
        self.repository = repository
        self.admin_key = admin_key or new_admin_key()
        self.address = address
        self.workdir = workdir
        self.ports = ports
        self.log_path = log_path or workdir / "tritonserver.log"
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        self.key_hidden: threading.Thread | None = None  # erases the admin key from its command line

    @property
    def http_url(self) -> str:
        return f"{self.address}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.ports.grpc}"

    def command(self, backends: Path) -> list[str]:
        return [
            str(pytriton_dir() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--cache-directory={pytriton_dir() / 'caches'}",
            f"--http-address={self.address}",
            f"--grpc-address={self.address}",
            f"--http-port={self.ports.http}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true",
            "--exit-on-error=true",
            *restriction_flags(self.admin_key),
            *self.extra_args,
        ]

    def start(self) -> None:
        """Start the server, first removing the shared-memory regions earlier crashes left (launcher/shm.py)."""
        remove_orphan_regions()
        self.workdir.mkdir(parents=True, exist_ok=True)
        backends = prepare_backends(self.workdir)
        log = self.log_path.open("ab")
        command = self.command(backends)
        self.process = subprocess.Popen(
            die_with_parent(command),
            env=server_env(self.workdir),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.key_hidden = hide_when_parsed(self.process.pid, command[0], self.admin_key)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"tritonserver exited with {self.process.returncode}; see {self.log_path}:\n{self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.5)
        raise TimeoutError(f"tritonserver not ready after {timeout:.0f} s; see {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, SIGKILL to the process group after `timeout`; then no region of its stubs stays in
        /dev/shm, also when it had been killed before (a starting server maps its region within
        milliseconds, so an unmapped one older than 2 s is an orphan)."""
        if self.process is None:
            return
        regions = [stub.region for stub in stubs_of(self.process.pid).values()]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait()
        for region in regions:
            (SHM / region).unlink(missing_ok=True)
        remove_orphan_regions(min_age_s=2.0)
