"""The Python-backend stubs of a tritonserver and the shared-memory regions they leave in /dev/shm.

Each stub maps one region (`triton_python_backend_shm_region_<uuid>`, 1 MiB or the configured size);
a stub or server killed with SIGKILL leaves it behind, and a handful of faults can fill a container's
/dev/shm, after which Triton cannot start.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

SHM = Path("/dev/shm")
REGION_PREFIX = "triton_python_backend_shm_region_"
_INSTANCE = re.compile(r"^(?P<model>.+)_\d+_\d+$")  # `<model>_<group>_<instance>`


@dataclass(frozen=True)
class Stub:
    """One Python-backend stub process of the server."""

    pid: int
    model: str
    region: str  # its shared-memory region's name in /dev/shm


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def stubs_of(server_pid: int) -> dict[int, Stub]:
    """The live stubs among the server's children, by pid (a stub's argv: model.py, region, …, instance)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        stat = _read(proc / "stat")
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2 or fields[1] != str(server_pid) or fields[0] == "Z":
            continue
        argv = _read(proc / "cmdline").split("\0")
        if not argv or not argv[0].endswith("triton_python_backend_stub") or len(argv) < 10:
            continue
        instance = _INSTANCE.match(argv[-3] if argv[-1] == "" else argv[-2])
        if instance is not None:
            found[int(proc.name)] = Stub(int(proc.name), instance["model"], argv[2])
    return found


def mapped_regions() -> set[str]:
    """Names of the Python-backend regions some live process maps."""
    names = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for line in _read(proc / "maps").splitlines():
                if f"/dev/shm/{REGION_PREFIX}" in line:
                    names.add(line.rsplit("/", 1)[-1].removesuffix(" (deleted)"))
    return names


def remove_orphan_regions(min_age_s: float = 30.0) -> list[str]:
    """Delete Python-backend regions no process maps (left by killed stubs or servers); young ones are
    spared, since a starting server creates its region just before mapping it."""
    in_use = mapped_regions()
    removed = []
    for region in SHM.glob(f"{REGION_PREFIX}*"):
        try:
            old = time.time() - region.stat().st_ctime > min_age_s
            if region.name not in in_use and old:
                region.unlink()
                removed.append(region.name)
        except OSError:
            continue
    return removed
