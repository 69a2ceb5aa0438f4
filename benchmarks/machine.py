"""Describe the machine a benchmark ran on: CPU, cores, memory, load, library versions."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from edge_runtime.cpu import cpu_flags, cpu_model, usable_cores

# Distribution names whose versions change benchmark numbers.
LIBRARIES = (
    "numpy",
    "ai-edge-litert",
    "tflite-runtime",
    "onnxruntime",
    "openvino",
    "onnx",
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "tf2onnx",
    "edge-seg",
)


def _memory_bytes() -> int | None:
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions from package metadata (nothing is imported; None = not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def describe_machine() -> dict:
    """A JSON-ready description; `load_average` says how busy the machine was at the start."""
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {
        "cpu_model": cpu_model(),
        "architecture": platform.machine(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_bytes": _memory_bytes(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "load_average": load,
        "libraries": library_versions(),
    }
