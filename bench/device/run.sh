#!/usr/bin/env bash
# The GPU run, one command on the lent machine (PyTorch there, nothing else, no network):
#
#   bash bench/device/run.sh [--device cuda|cpu] [--sizes real|tiny] [any flag of python -m bench.gpu_served]
#
# It carries build/device/ (python -m bench.device.bundle, here, first): installs the adapter's packages
# the machine lacks at their pinned versions, unpacks tritonserver, checks that its Python-backend stub
# finds a libpython of this interpreter, then runs python -m bench.gpu_served, which writes results.json
# and results.md to $OUT (the device tool's folder that comes back) or build/device-out. Tested here with
# `--device cpu --sizes tiny`, which takes the same steps with the tiny checkpoints.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUNDLE=${EMBED_DEVICE_BUNDLE:-$ROOT/build/device}
OUT_DIR=${OUT:-$ROOT/build/device-out}
SITE=${EMBED_DEVICE_SITE:-/tmp/embed-device-site}
# Not under $SITE: a folder named triton on sys.path would pass for the compiler package torch probes for.
TRITON=${EMBED_DEVICE_TRITON:-/tmp/embed-device-triton}
PY=${PYTHON:-python3}
mkdir -p "$OUT_DIR" "$SITE" "$TRITON"
[ -f "$BUNDLE/triton.tar.xz" ] || { echo "no $BUNDLE/triton.tar.xz: run python -m bench.device.bundle first" >&2; exit 2; }

echo "== $(date -u +%FT%TZ) on $(hostname): $($PY --version), $(nproc) cores"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. The adapter's packages this interpreter lacks at the pinned version, from the carried wheels.
missing=$($PY - "$BUNDLE/wheels/requirements.txt" <<'PYEOF'
import importlib.metadata, sys
for pin in open(sys.argv[1]).read().split():
    name, version = pin.split("==")
    try:
        if importlib.metadata.version(name) == version:
            continue
    except importlib.metadata.PackageNotFoundError:
        pass
    print(pin)
PYEOF
)
if [ -n "$missing" ]; then
    echo "== installing into $SITE: $(echo $missing | tr '\n' ' ')"
    # shellcheck disable=SC2086
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        --find-links "$BUNDLE/wheels" $missing
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" EMBED_DEVICE_BUNDLE="$BUNDLE"

# 2. tritonserver, with its libraries where its RPATH looks.
if [ ! -x "$TRITON/pytriton/tritonserver/bin/tritonserver" ]; then
    tar -xJf "$BUNDLE/triton.tar.xz" -C "$TRITON"
fi
export EMBED_TRITONSERVER_DIR="$TRITON/pytriton/tritonserver"
VERSION=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
LIBDIR=$($PY -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
STUB="$EMBED_TRITONSERVER_DIR/python_backend_stubs/$VERSION/triton_python_backend_stub"
[ -x "$STUB" ] || { echo "the bundle has no Python-backend stub for Python $VERSION" >&2; exit 2; }
unresolved=$(LD_LIBRARY_PATH="$LIBDIR:$TRITON/nvidia_pytriton.libs" ldd "$STUB" | grep "not found" || true)
if [ -n "$unresolved" ]; then
    echo "the Python $VERSION stub cannot load: $unresolved (LIBDIR $LIBDIR)" >&2
    echo "this interpreter has no shared libpython; the Python backend needs one of the same build" >&2
    exit 2
fi
# `tritonserver --help` exits non-zero; what matters is that it loads and prints its usage.
usage=$("$EMBED_TRITONSERVER_DIR/bin/tritonserver" --help 2>&1 || true)
[[ $usage == *Usage* ]] || { echo "tritonserver does not start: $usage" >&2; exit 2; }

# 3. What stays on the machine comes back: whatever happens, the tail of every server and adapter log
#    under the run's work folders is packed into $OUT/logs.tar.gz on exit (a host failure tells its client
#    only "see the Triton log"). One archive, because the device tool brings back at most 8 files.
WORKDIRS=("$ROOT/build/gpu-served")
args=("$@")
for i in "${!args[@]}"; do [ "${args[$i]}" = "--workdir" ] && WORKDIRS+=("${args[$((i + 1))]}"); done
collect_logs() {
    local tails
    tails=$(mktemp -d)
    for dir in "${WORKDIRS[@]}"; do
        [ -d "$dir" ] || continue
        find "$dir" -name '*.log' -type f | while read -r log; do
            tail -n 2000 "$log" > "$tails/$(echo "${log#"$dir"/}" | tr / _)"
        done
    done
    tar -czf "$OUT_DIR/logs.tar.gz" -C "$tails" .
    rm -rf "$tails"
}
trap collect_logs EXIT

# 4. A preflight (seconds, before any long work): the adapter and tritonclient import; under the Python
#    stub's own environment (launcher.tritonserver.server_env) torch imports, touches the GPU and names its
#    cuDNN; the versions the run depends on; the shared memory the Python backend uses.
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "== preflight"
$PY - <<'PYEOF'
import importlib.metadata
import subprocess
import sys
import tempfile
from pathlib import Path

for name in ("torch", "transformers", "tokenizers", "numpy", "grpcio", "protobuf", "tritonclient", "fastapi"):
    try:
        print(f"  {name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
        print(f"  {name} MISSING")
import client.app  # noqa: E402,F401  the adapter
import tritonclient.grpc.aio  # noqa: E402,F401
from launcher.tritonserver import server_env  # noqa: E402

probe = (
    "import torch; gpu = torch.cuda.is_available(); torch.ones(1, device='cuda' if gpu else 'cpu').sum().item(); "
    "print('  stub environment: torch', torch.__version__, 'cuda', gpu, 'cudnn', torch.backends.cudnn.version())"
)
subprocess.run([sys.executable, "-c", probe], env=server_env(Path(tempfile.mkdtemp())), check=True)
PYEOF
df -h /dev/shm | tail -n 1 | awk '{print "  /dev/shm: " $2 " (" $4 " free)"}'

# 5. Measure.
$PY -m bench.gpu_served --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/run.log"
