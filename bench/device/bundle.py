"""`python -m bench.device.bundle`: what the GPU run carries to a machine that has PyTorch and nothing else.

The lent GPU machine (an H100 or H200 with Python 3.12, PyTorch, transformers, tokenizers, numpy and
aiohttp; no network) lacks Triton and the adapter's packages, and may hold grpcio and protobuf at
versions tritonclient's generated code was not built with. This writes `build/device/`:

- `triton.tar.xz`: the `tritonserver` of the `nvidia-pytriton` wheel (a CUDA 12.6 build) with its
  Python backend, the stubs for Python 3.12 and for this interpreter, and the libraries it links
  (its bundled libpython 3.13 left out: the 3.12 stub links the machine's own);
- `wheels/`: the adapter's packages for CPython 3.12 on manylinux, at the versions this venv pins,
  and `wheels/requirements.txt` (`distribution==version`), from which `run.sh` installs
  only what the machine lacks at that version;
- `minilm/`: all-MiniLM-L6-v2's tokenizer and configs. Its 87 MB of weights do not fit beside Triton
  in the 64 MiB a run carries; the run uses the machine's copy when its Hugging Face cache has one,
  else the same architecture with random weights (a request rate does not depend on weight values).

Everything else the run needs is built there (the 7B decoder and GME with random weights).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from launcher import default_model

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "build" / "device"
DEVICE_PYTHON = "3.12"
LIMIT_MB = 60  # of the 64 MiB a run carries, the working tree's own files included

# The adapter's packages, and what they need that the machine may lack or hold at another version
# (typing-extensions and anyio for pydantic and starlette, h11 for httpcore).
PACKAGES = (
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "typing-inspection",
    "annotated-types",
    "annotated-doc",
    "typing-extensions",
    "anyio",
    "opentelemetry-api",
    "uvicorn",
    "httptools",
    "h11",
    "httpcore",
    "httpx",
    "orjson",
    "tritonclient",
    "python-rapidjson",
    "prometheus-client",
    "rich",
    # tritonclient's generated gRPC code needs these at versions near its own: the machine's may differ.
    "grpcio",
    "protobuf",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_27_x86_64")


def triton_archive(out: Path, preset: int = 6) -> Path:
    """The server, its Python backend, two stubs and its libraries, with the wheel's relative layout
    (the binary finds its libraries at `$ORIGIN/../../../nvidia_pytriton.libs`)."""
    from launcher.tritonserver import pytriton_dir

    server = pytriton_dir()
    site = server.parent.parent
    local = f"{sys.version_info.major}.{sys.version_info.minor}"
    keep = {DEVICE_PYTHON, local}

    def wanted(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if "__pycache__" in parts or Path(info.name).name.startswith("libpython3"):
            return None
        if "python_backend_stubs" in parts and len(parts) > 3 and parts[3] not in keep:
            return None
        return info

    path = out / "triton.tar.xz"
    with tarfile.open(path, "w:xz", preset=preset) as tar:
        tar.add(server, arcname="pytriton/tritonserver", filter=wanted)
        tar.add(site / "nvidia_pytriton.libs", arcname="nvidia_pytriton.libs", filter=wanted)
    return path


def wheels(out: Path, download: bool = True) -> Path:
    """The pinned wheels and their requirements.txt (`download=False`: the list alone, which the tests use:
    with this interpreter's own packages at those versions, run.sh installs nothing)."""
    folder = out / "wheels"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in PACKAGES]
    (folder / "requirements.txt").write_text("\n".join(pins) + "\n")
    if not download:
        return folder
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", DEVICE_PYTHON, "--implementation", "cp", "-d", str(folder)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    subprocess.run([*command, *pins], check=True)
    return folder


def minilm(out: Path) -> Path:
    folder = out / "minilm"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(default_model.checkpoint(), folder, ignore=shutil.ignore_patterns("*.safetensors", "README.md"))
    return folder


def size_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.device.bundle", description=__doc__)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--rebuild-triton", action="store_true", help="write triton.tar.xz again (about a minute)")
    ap.add_argument("--xz-preset", type=int, default=6, choices=range(10), help="0 is fast and larger")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.rebuild_triton or not (args.out / "triton.tar.xz").exists():
        triton_archive(args.out, args.xz_preset)
    wheels(args.out)
    minilm(args.out)
    for part in ("triton.tar.xz", "wheels", "minilm"):
        print(f"  {part:14} {size_mb(args.out / part):6.1f} MB")
    total = size_mb(args.out)
    print(f"  {'total':14} {total:6.1f} MB (a run carries at most 64 MiB, the working tree included)")
    return 0 if total <= LIMIT_MB else 1


if __name__ == "__main__":
    sys.exit(main())
