"""Series and slice selection as data: which modalities, planes and image types a run segments.

Like MONAI Deploy's series-selector rules, the defaults are a small table (MR, axial, no
LOCALIZER/DERIVED/SECONDARY image types) that `--series` or a JSON rules file overrides. Rules
apply to every slice on its own, so a localizer inside an axial series, or one corrupted slice
that claims to be CT or sagittal, costs that slice only and is reported with its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from edge_runtime.dicom_classify import HeaderError, image_type, text_attr
from edge_runtime.geometry import PLANES
from edge_runtime.inputs import Series, SliceRecord

DOMINANT = "dominant"  # plane value: the plane most slices of the series are in
EXCLUDED_IMAGE_TYPES = ("LOCALIZER", "DERIVED", "SECONDARY")


class RulesError(ValueError):
    """A rules file or value that cannot be used; the message names the offending key and value."""


@dataclass(frozen=True)
class SelectionRules:
    """Which series and slices are segmented. An empty tuple means 'any'.

    Parameters
    ----------
    modalities
        Modality values a slice must have (default MR).
    planes
        Planes a slice must lie in: axial, coronal, sagittal, unknown, or "dominant" (the
        series' most common plane).
    exclude_image_types
        A slice whose ImageType holds any of these values is left out.
    series
        Only series whose SeriesDescription or folder name contains this (case-insensitive),
        or whose SeriesInstanceUID equals it; None selects every series.
    """

    modalities: tuple[str, ...] = ("MR",)
    planes: tuple[str, ...] = ("axial",)
    exclude_image_types: tuple[str, ...] = EXCLUDED_IMAGE_TYPES
    series: str | None = None

    def __post_init__(self) -> None:
        unknown = [p for p in self.planes if p not in (*PLANES, DOMINANT)]
        if unknown:
            raise RulesError(f"unknown plane(s) {unknown}; choose from {', '.join((*PLANES, DOMINANT))}")

    @classmethod
    def for_series(cls, needle: str) -> SelectionRules:
        """`--series NEEDLE`: that series whatever its modality and image type, its dominant plane only."""
        return cls(modalities=(), planes=(DOMINANT,), exclude_image_types=(), series=needle)

    @classmethod
    def from_dict(cls, data: Any, source: str = "rules") -> SelectionRules:
        """Rules from JSON-like data: {"modalities": [...], "planes": [...], "exclude_image_types": [...], "series": str}."""
        if not isinstance(data, dict):
            raise RulesError(f"{source}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RulesError(f"{source}: unknown key(s) {unknown}; allowed: {', '.join(sorted(names))}")
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "series":
                if value is not None and not isinstance(value, str):
                    raise RulesError(f"{source}: 'series' must be a string or null, got {value!r}")
                values[key] = value
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise RulesError(f"{source}: {key!r} must be a list of strings, got {value!r}")
            values[key] = tuple(v.lower() if key == "planes" else v.upper() for v in value)
        try:
            return cls(**values)
        except RulesError as exc:
            raise RulesError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> SelectionRules:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RulesError(f"rules file {path}: unreadable ({exc})") from exc
        return cls.from_dict(data, source=f"rules file {path}")

    def with_series(self, needle: str | None) -> SelectionRules:
        return self if needle is None else replace(self, series=needle)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(self) for v in [getattr(self, f.name)]}


def series_matches(series: Series, needle: str) -> bool:
    """Description or folder substring (case-insensitive), or the exact SeriesInstanceUID."""
    low = needle.lower()
    return (
        low == series.uid.lower()
        or (bool(series.description) and low in series.description.lower())
        or low in series.name.lower()
        or low in series.folder.name.lower()
    )


def dominant_plane(records: list[SliceRecord]) -> str:
    """The plane most slices lie in (ties: the first slice's)."""
    counts = Counter(r.plane for r in records)
    return max(counts, key=lambda plane: (counts[plane], -next(i for i, r in enumerate(records) if r.plane == plane)))


def slice_exclusion(record: SliceRecord, rules: SelectionRules, series_plane: str) -> str | None:
    """Why the rules leave this slice out, or None to keep it."""
    if record.kind != "dicom":
        return None
    try:
        modality = text_attr(record.dataset, "Modality").upper()
        types = image_type(record.dataset)
    except HeaderError as exc:
        return f"unreadable selection attribute ({exc})"
    if rules.modalities and modality not in rules.modalities:
        wanted = ", ".join(rules.modalities)
        return f"Modality {modality or 'missing'} (rules select {wanted}; use --series or --rules to pick it)"
    banned = [t for t in types if t in rules.exclude_image_types]
    if banned:
        joined = "\\".join(types)
        return (
            f"ImageType {joined} is {banned[0]} "
            f"(rules exclude {', '.join(rules.exclude_image_types)}; use --series or --rules to pick it)"
        )
    planes = tuple(series_plane if p == DOMINANT else p for p in rules.planes)
    if planes and record.plane not in planes:
        wanted = ", ".join(dict.fromkeys(planes))
        return f"{record.plane} orientation (rules select {wanted}; use --series or --rules to pick it)"
    return None


def series_exclusion(reasons: list[str]) -> str:
    """One line for a series none of whose slices passed: the reason, or the reasons with counts."""
    counts = Counter(r.split(" (")[0] for r in reasons)
    if len(counts) == 1:
        return reasons[0]
    return "no slice passes the rules: " + "; ".join(f"{n} x {what}" for what, n in counts.most_common())
