"""The machine a figure was measured on: CPU model, the SIMD flags that change ONNX Runtime's kernels, cores."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# AVX2 or AVX-512 pick ONNX Runtime's fp32 kernels; VNNI (and AMX) its int8 ones; BF16 its bf16 ones.
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def describe() -> str:
    """`AMD EPYC; avx2 avx512f avx512_vnni avx512_bf16; 2 cores`."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    present = " ".join(f for f in FLAGS if f in flags) or "no AVX2"
    return f"{model}; {present}; {os.cpu_count()} cores"
