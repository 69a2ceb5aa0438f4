"""What discovery hands a run: slice records, orientation blocks, series, studies and the files left out.

Every file found under an input ends up in exactly one place: a slice of a selected series, an
excluded slice or series (`Study.excluded_files`), `Study.skipped` (not a target) or
`Study.failed` (should have been segmented but cannot be), each with a reason naming the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SliceKind = Literal["dicom", "png", "npy"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def display_path(path: str | Path) -> str:
    """Printable, UTF-8-safe text for any file name: undecodable bytes and control characters become \\xNN.

    File names on Linux are bytes; Python hands undecodable ones over as surrogates, which crash
    UTF-8 writers (CSV, JSON readers, the console). Every output shows paths through this.
    """
    text = os.fsencode(str(path)).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def safe_name(text: str, fallback: str = "series") -> str:
    """A file or folder name usable on every platform (ASCII letters, digits, '.', '_', '-')."""
    cleaned = _UNSAFE_NAME.sub("_", display_path(text)).strip("._")
    return cleaned or fallback


class SliceDecodeError(ValueError):
    """One slice cannot be turned into pixels; the message names the file and the cause."""

    def __init__(self, source: str | Path, reason: str) -> None:
        super().__init__(f"{display_path(source)}: {reason}")
        self.source = display_path(source)
        self.reason = reason


@dataclass(frozen=True)
class InputIssue:
    """A file (or slice) that was not segmented, or not fully, and why."""

    path: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": display_path(self.path), "reason": self.reason}


@dataclass
class SliceRecord:
    """One slice found on disk; pixels are decoded later (`edge_runtime.decode.load_pixels`)."""

    path: Path
    kind: SliceKind
    stem: str
    dataset: Any = None  # pydicom Dataset: the header only (pixel data is read again when decoding)
    frame: int | None = None  # index into a 3-D .npy stack
    instance_number: int | None = None
    position: tuple[float, float, float] | None = None  # ImagePositionPatient (mm)
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient (6 direction cosines)
    pixel_spacing: tuple[float, float] | None = None  # (row spacing, column spacing) in mm
    sop_instance_uid: str | None = None
    location: float | None = None  # mm along the series' spine axis (mean block normal)
    plane: str = "unknown"  # axial, coronal, sagittal or unknown, from this slice's own orientation
    block: int | None = None  # index into Series.blocks
    shape: tuple[int, int] | None = None  # (Rows, Columns) the header declares
    seg_excluded: str | None = None  # why this slice cannot be referenced by a DICOM SEG


@dataclass
class Block:
    """Slices of one series that share an orientation (within a tolerance): one angled block per disc."""

    index: int
    orientation: tuple[float, ...] | None
    normal: tuple[float, float, float] | None
    plane: str
    slice_indices: list[int] = field(default_factory=list)  # into Series.slices, in anatomical order

    def summary(self, series: Series) -> dict[str, Any]:
        slices = [series.slices[i] for i in self.slice_indices]
        locations = [s.location for s in slices if s.location is not None]
        return {
            "index": self.index,
            "plane": self.plane,
            "orientation": list(self.orientation) if self.orientation else None,
            "normal": [round(v, 6) for v in self.normal] if self.normal else None,
            "n_slices": len(slices),
            "first_index": self.slice_indices[0] if self.slice_indices else None,
            "last_index": self.slice_indices[-1] if self.slice_indices else None,
            "location_range_mm": [min(locations), max(locations)] if locations else None,
            "stems": [s.stem for s in slices],
        }


@dataclass
class Series:
    """Slices that belong together, in anatomical order, with what selection needs to know."""

    uid: str
    name: str
    folder: Path
    kind: SliceKind
    description: str = ""
    modality: str = ""
    orientation: str = "unknown"  # the plane most of its slices are in
    ordering: str = "file name"  # how the slices were ordered
    series_number: int | None = None
    slices: list[SliceRecord] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    excluded_slices: list[InputIssue] = field(default_factory=list)  # left out by the selection rules
    all_excluded: bool = False  # no slice passed the rules (then `slices` lists them all, for the report)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "description": self.description,
            "modality": self.modality,
            "orientation": self.orientation,
            "ordering": self.ordering,
            "n_slices": len(self.slices),
            "n_blocks": len(self.blocks),
            "folder": display_path(self.folder),
        }


@dataclass
class Study:
    """What discovery found under one INPUT."""

    input: Path
    selected: list[Series] = field(default_factory=list)
    excluded: list[tuple[Series, str]] = field(default_factory=list)
    skipped: list[InputIssue] = field(default_factory=list)
    failed: list[InputIssue] = field(default_factory=list)
    n_files: int = 0  # every file listed under the input, hidden ones included

    @property
    def excluded_files(self) -> list[tuple[str, InputIssue]]:
        """(series name, issue) for every slice left out by selection: whole series and single slices."""
        out = []
        for series, reason in self.excluded:
            own = {issue.path: issue for issue in series.excluded_slices}
            out += [(series.name, own.get(r.path, InputIssue(r.path, reason))) for r in series.slices]
            out += [(series.name, issue) for issue in series.excluded_slices if issue.path not in {r.path for r in series.slices}]
        out += [(s.name, issue) for s in self.selected for issue in s.excluded_slices]
        return out
