"""Saving the DICOM objects the runtime builds (SEG, SR, Secondary Capture): atomically, as Part 10 files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_path


def save_dicom(dataset: Any, path: Path) -> Path:
    """Write `dataset` with preamble and checked file meta (pydicom's enforce_file_format) to `path`
    atomically: a reader never sees half a file, a failed write keeps the previous one."""
    with atomic_path(Path(path)) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return Path(path)
