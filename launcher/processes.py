"""Start the adapter as a process and wait for ports; shared by `serve` and the tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from launcher.direct import DIRECT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def die_with_parent(command: list[str]) -> list[str]:
    """`command` made to receive SIGTERM when the process that started it dies, even by SIGKILL
    (util-linux's `setpriv --pdeathsig`): nothing we start outlives us. Children still run in
    sessions of their own, so the terminal's Ctrl-C reaches only the launcher, which stops them in order."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command


def port_holders(port: int) -> list[str]:
    """`pid name` of each process listening on `port` (from /proc), for a message a user can act on."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    holders = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                holders.append(f"{proc.name} {(proc / 'comm').read_text().strip()}")
        except OSError:
            continue
    return holders


def start_adapter(
    port: int, triton_grpc: str, log_path: Path, *extra: str, host: str = "127.0.0.1", admin_key: str | None = None
) -> subprocess.Popen[bytes]:
    """`python -m client` on `host:port`; `admin_key` (Triton's, for its model listing) goes in its
    environment, never on a command line other users can read."""
    log = log_path.open("ab")
    env = {**os.environ, "EMBED_TRITON_ADMIN_KEY": admin_key} if admin_key else None
    return subprocess.Popen(
        die_with_parent(
            [
                sys.executable,
                "-m",
                "client",
                "--host",
                host,
                "--port",
                str(port),
                "--triton-url",
                triton_grpc,
                *extra,
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
    )


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Wait until `url` answers 200, failing early if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with DIRECT.open(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
