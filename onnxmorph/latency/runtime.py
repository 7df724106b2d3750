"""What the deployment runtime's fast kernels need, detected on this machine.

onnxruntime's CPU provider moves a Conv to its blocked NCHWc kernels (nchwc_transformer.cc)
only when the output channels are a multiple of the block, the input channels are a
multiple too (or fewer than one block, for the first layer), and, for a grouped conv, the
channels per group are; a depthwise conv needs its channel count to be a multiple. The
block is MLAS's vector width in floats: 16 with AVX-512F, 8 with AVX2 (or AVX).
"""

from __future__ import annotations

import functools
import os
import platform

RUNTIMES = ("ort-cpu",)
_NEON_WIDTH = 4  # ARM has no NCHWc in ORT 1.19; its sgemm packs 4 floats


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def channel_block(runtime: str = "ort-cpu", flags: frozenset[str] | None = None) -> int:
    """The channel multiple `runtime`'s fast kernels need on this machine (or given flags)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime '{runtime}'")
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags:
        return 16
    if "avx2" in flags or "avx" in flags:
        return 8
    if platform.machine().lower() in ("aarch64", "arm64") or "asimd" in flags:
        return _NEON_WIDTH
    return 8  # unknown x86-like CPU: the common AVX2 block


def machine_id() -> str:
    """What a latency table's validity depends on besides the model: CPU, its cores."""
    return f"{platform.machine()}|{cpu_model_name()}|{os.cpu_count()} cpus"
