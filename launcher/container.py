"""`python -m launcher.container [tritonserver flags]`: the CPU Triton container's entrypoint.

Runs the `tritonserver` of the nvidia-pytriton wheel the way DESIGN.md says it must run (the
Python-backend stub of this interpreter, the venv and libpython on the paths), with its log on
stdout, under the supervisor: a model whose Python stub dies is reloaded, the shared-memory
regions of dead stubs are removed. When the server itself exits, so does this process, with its
status, and the container's restart policy starts a new one (which first removes the regions
the old one left).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from launcher.supervisor import Supervisor
from launcher.tritonserver import TritonPorts, TritonServer


def flag(args: list[str], name: str, default: str) -> str:
    return next((a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")), default)


def admin_key() -> str:
    """TRITON_ADMIN_KEY, else the key in the file TRITON_ADMIN_KEY_FILE names (compose's generated one)."""
    key = os.environ.get("TRITON_ADMIN_KEY", "")
    path = os.environ.get("TRITON_ADMIN_KEY_FILE", "")
    if not key and path:
        try:
            key = Path(path).read_text().strip()
        except OSError as exc:
            print(f"cannot read TRITON_ADMIN_KEY_FILE {path}: {exc}", file=sys.stderr)
    return key


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    repository = Path(flag(args, "model-repository", "/models"))
    ports = TritonPorts(
        *(int(flag(args, f"{p}-port", d)) for p, d in (("http", "8000"), ("grpc", "8001"), ("metrics", "8002")))
    )
    own = ("model-repository", "http-port", "grpc-port", "metrics-port")
    extra = tuple(a for a in args if not a.startswith(tuple(f"--{name}=" for name in own)))
    key = admin_key()
    if not key:
        print(
            "TRITON_ADMIN_KEY or TRITON_ADMIN_KEY_FILE is required: Triton's admin protocols answer only to it",
            file=sys.stderr,
        )
        return 2
    server = TritonServer(
        repository,
        Path("/tmp/triton"),
        ports,
        log_path=Path("/dev/stdout"),
        extra_args=extra,
        address="0.0.0.0",
        admin_key=key,
    )
    supervisor = Supervisor(server)
    signal.signal(signal.SIGTERM, lambda *_: server.process and server.process.terminate())
    server.start()
    try:
        server.wait_ready(3600)
        supervisor.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"tritonserver did not become ready: {exc}", file=sys.stderr)
    code = server.process.wait()
    supervisor.stop()
    server.stop()  # removes what the server's stubs left in /dev/shm
    return code


if __name__ == "__main__":
    sys.exit(main())
