"""What CPU this process runs on: model name and the SIMD extensions that decide kernel choice.

Both the measured backend choice (its cache key) and the benchmarks' machine description use
these, so a choice measured on one CPU is never reused on another.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

# Extensions that change which int8/fp32 kernels XNNPACK, MLAS and oneDNN pick.
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "fma", "neon", "asimd", "asimddp", "sve")


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    path = Path("/proc/cpuinfo")
    return path.read_text(errors="replace") if path.is_file() else ""


def cpu_model() -> str:
    """The CPU's marketing name, or the platform's best guess off Linux."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD extensions in SIMD_FLAGS this CPU reports, in that order."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [flag for flag in SIMD_FLAGS if flag in present]
    return []


def usable_cores() -> int:
    """Cores this process may use (respects CPU affinity, e.g. in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def cpu_signature() -> str:
    """One line that changes when the CPU (model, architecture, SIMD extensions) changes."""
    return f"{platform.machine()} {cpu_model()} [{' '.join(cpu_flags())}]"
