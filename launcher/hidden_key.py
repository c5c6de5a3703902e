"""The admin key out of `ps` and `/proc/<pid>/cmdline` once `tritonserver` has read it.

`tritonserver` takes its restricted-API key only as a command-line flag, and a process's command line
is world-readable on Linux: on a shared host any user could read the key, and key + the repository
API is code execution as the serving user. Once the server has parsed its flags (its option parser
runs before it starts its first thread, and keeps copies), the parent overwrites the key's bytes in
the server's argument area through `/proc/<pid>/mem`, which a parent may write to (ptrace access).
What remains is the moment between the exec and the first thread; a key passed to the adapter goes
in its environment (`/proc/<pid>/environ` is readable by its owner only).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

log = logging.getLogger("launcher")


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def erase_argument(pid: int, secret: str) -> bool:
    """Overwrite every occurrence of `secret` in the process's command line with `*`; True if done."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd on; arg_start, arg_end are the 48th, 49th
    start, end = int(fields[45]), int(fields[46])
    target = secret.encode()
    with open(f"/proc/{pid}/mem", "r+b", buffering=0) as mem:
        mem.seek(start)
        area = mem.read(end - start)
        at = area.find(target)
        while at >= 0:
            mem.seek(start + at)
            mem.write(b"*" * len(target))
            at = area.find(target, at + len(target))
    return target not in Path(f"/proc/{pid}/cmdline").read_bytes()


def hide_when_parsed(pid: int, executable: str, secret: str, timeout: float = 60.0) -> threading.Thread:
    """In the background: once `pid` runs `executable` with more than one thread, erase `secret` from its
    command line. A failure is logged, never raised: the server serves either way."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        program = Path(executable).resolve()
        try:
            while time.monotonic() < deadline:
                if Path(f"/proc/{pid}/exe").resolve() == program and _threads(pid) > 1:
                    if not erase_argument(pid, secret):
                        log.warning("tritonserver %d: the admin key is still on its command line", pid)
                    return
                time.sleep(0.01)
            log.warning(
                "tritonserver %d: not started within %.0f s; its admin key stays on its command line", pid, timeout
            )
        except OSError as exc:  # it exited, or this system forbids writing its memory
            log.warning("tritonserver %d: cannot erase the admin key from its command line (%s)", pid, exc)

    thread = threading.Thread(target=run, name=f"hide-key-{pid}", daemon=True)
    thread.start()
    return thread
