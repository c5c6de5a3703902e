"""The card's peak and model FLOPs utilisation, shared by the GPU benchmarks."""

from __future__ import annotations

import subprocess

# Dense fp16/bf16 tensor-core peaks in TFLOPS (vendor datasheets, without sparsity).
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
}


def gpu_name() -> str:
    return subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]


def peak_tflops(given: float | None = None) -> tuple[float, str]:
    """(dense fp16/bf16 peak, the card's name): `given` wins, else looked up by the name nvidia-smi reports."""
    name = gpu_name()
    if given:
        return given, name
    for key, value in PEAK_TFLOPS.items():
        if all(part in name for part in key.split()):
            return value, name
    raise SystemExit(f"unknown GPU {name!r}: pass --peak-tflops")


def mfu(flops_per_s: float, peak: float) -> float:
    """Model FLOPs utilisation: the model's FLOPs per second over the card's peak (in TFLOPS)."""
    return flops_per_s / (peak * 1e12)
