"""Measurements from label masks: per-class areas, thecal-sac area with stenosis grade, disc levels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import numpy as np

from edge_runtime.cutoffs import ABSOLUTE_STENOSIS_MM2, RELATIVE_STENOSIS_MM2
from edge_runtime.labels import BY_SHORT, FOREGROUND, NUM_CLASSES

TS_ID = BY_SHORT["TS"].id
IVD_ID = BY_SHORT["IVD"].id


class StenosisGrade(StrEnum):
    """Central canal stenosis from the thecal-sac cross-sectional area."""

    NORMAL = "normal"
    RELATIVE = "relative"
    ABSOLUTE = "absolute"


@dataclass(frozen=True)
class StenosisThresholds:
    """Area cut-offs in mm2: normal >= relative_mm2 > relative >= absolute_mm2 > absolute.

    Defaults follow the common literature values (100 and 75 mm2; some authors use 70).
    """

    relative_mm2: float = RELATIVE_STENOSIS_MM2
    absolute_mm2: float = ABSOLUTE_STENOSIS_MM2

    def __post_init__(self) -> None:
        if not 0 < self.absolute_mm2 <= self.relative_mm2:
            raise ValueError(
                f"need 0 < absolute ({self.absolute_mm2}) <= relative ({self.relative_mm2}) stenosis threshold in mm2"
            )


def grade_stenosis(ts_area_mm2: float, thresholds: StenosisThresholds = StenosisThresholds()) -> StenosisGrade:
    """Grade a thecal-sac area in mm2 (callers must not pass pixel counts)."""
    if ts_area_mm2 >= thresholds.relative_mm2:
        return StenosisGrade.NORMAL
    if ts_area_mm2 >= thresholds.absolute_mm2:
        return StenosisGrade.RELATIVE
    return StenosisGrade.ABSOLUTE


@dataclass
class SliceMeasurement:
    """Areas of one slice; `unit` is "mm2", or "px" when PixelSpacing is missing (then no grade)."""

    index: int
    stem: str
    unit: str
    pixel_counts: dict[str, int]
    areas: dict[str, float]
    ts_area: float
    ts_grade: str | None
    ts_ap_diameter_mm: float | None
    location_mm: float | None = None
    block: int | None = None  # orientation block (one per disc in angled lumbar series)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DiscLevel:
    """One disc level: a run of IVD-bearing slices, represented by its largest-IVD slice."""

    number: int  # 1 = most caudal level found (the series is ordered caudal -> cranial when geometry is known)
    first_index: int
    last_index: int
    disc_index: int
    disc_stem: str
    ivd_area: float
    ts_area: float
    ts_grade: str | None
    min_ts_area: float
    min_ts_stem: str
    unit: str
    block: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SeriesMeasurement:
    """All slices of a series plus its disc levels."""

    slices: list[SliceMeasurement]
    levels: list[DiscLevel] = field(default_factory=list)
    unit: str = "mm2"
    thresholds: StenosisThresholds = field(default_factory=StenosisThresholds)

    @property
    def worst_grade(self) -> str | None:
        order = [g.value for g in StenosisGrade]
        grades = [s.ts_grade for s in self.slices if s.ts_grade]
        return max(grades, key=order.index) if grades else None

    def to_dict(self) -> dict:
        return {
            "unit": self.unit,
            "thresholds_mm2": asdict(self.thresholds),
            "worst_ts_grade": self.worst_grade,
            "slices": [s.to_dict() for s in self.slices],
            "levels": [level.to_dict() for level in self.levels],
        }


def pixel_area_mm2(pixel_spacing: Sequence[float] | None) -> float | None:
    """Area of one pixel from DICOM PixelSpacing (row, column spacing in mm); None if unknown."""
    if pixel_spacing is None:
        return None
    row, col = (float(v) for v in pixel_spacing)
    if not (np.isfinite(row) and np.isfinite(col)) or row <= 0 or col <= 0:
        return None
    return row * col


def class_pixel_counts(mask: np.ndarray) -> dict[str, int]:
    """Foreground pixel count per class short name."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_CLASSES):
        raise ValueError(f"mask holds class ids outside 0..{NUM_CLASSES - 1}")
    counts = np.bincount(mask.astype(np.intp).ravel(), minlength=NUM_CLASSES)
    return {c.short: int(counts[c.id]) for c in FOREGROUND}


def ap_diameter_mm(mask: np.ndarray, pixel_spacing: Sequence[float] | None, ap_axis: int = 0) -> float | None:
    """Largest thecal-sac extent along the anterior-posterior image axis, in mm.

    Counts TS pixels per line parallel to the AP axis (image columns when `ap_axis` is 0, the
    usual axial layout with anterior at the top) and takes the longest; a cheap stand-in for
    the mid-sagittal canal AP diameter. None when spacing is unknown or there is no TS.
    """
    if pixel_spacing is None:
        return None
    ts = np.asarray(mask) == TS_ID
    if not ts.any():
        return None
    longest = int(ts.sum(axis=ap_axis).max())
    return longest * float(pixel_spacing[ap_axis])


def measure_slice(
    mask: np.ndarray,
    pixel_spacing: Sequence[float] | None,
    index: int = 0,
    stem: str = "",
    thresholds: StenosisThresholds = StenosisThresholds(),
    ap_axis: int = 0,
    location_mm: float | None = None,
    block: int | None = None,
) -> SliceMeasurement:
    """Per-class areas (mm2, or pixels when spacing is unknown) and the TS stenosis grade."""
    counts = class_pixel_counts(mask)
    per_pixel = pixel_area_mm2(pixel_spacing)
    unit = "mm2" if per_pixel is not None else "px"
    scale = per_pixel if per_pixel is not None else 1.0
    areas = {short: count * scale for short, count in counts.items()}
    ts_area = areas["TS"]
    grade = grade_stenosis(ts_area, thresholds).value if unit == "mm2" and counts["TS"] > 0 else None
    return SliceMeasurement(
        index=index,
        stem=stem,
        unit=unit,
        pixel_counts=counts,
        areas=areas,
        ts_area=ts_area,
        ts_grade=grade,
        ts_ap_diameter_mm=ap_diameter_mm(mask, pixel_spacing, ap_axis) if per_pixel is not None else None,
        location_mm=location_mm,
        block=block,
    )


def find_disc_levels(slices: Sequence[SliceMeasurement], min_fraction: float = 0.1) -> list[DiscLevel]:
    """Runs of consecutive IVD-bearing slices; each run is one level, shown by its largest-IVD slice.

    A slice bears IVD when its IVD area is at least `min_fraction` of the series maximum, so
    a few stray predicted pixels do not invent a level. Slices must be in anatomical order; a
    run never crosses from one orientation block into the next (each block is aimed at one disc).
    """
    if not slices:
        return []
    peak = max(s.areas["IVD"] for s in slices)
    if peak <= 0:
        return []
    bearing = [s.areas["IVD"] > 0 and s.areas["IVD"] >= min_fraction * peak for s in slices]
    runs: list[list[SliceMeasurement]] = []
    for measurement, has_disc in zip(slices, bearing, strict=True):
        if not has_disc:
            continue
        if runs and runs[-1][-1].index == measurement.index - 1 and runs[-1][-1].block == measurement.block:
            runs[-1].append(measurement)
        else:
            runs.append([measurement])
    levels = []
    for number, run in enumerate(runs, start=1):
        disc = max(run, key=lambda s: s.areas["IVD"])
        with_ts = [s for s in run if s.pixel_counts["TS"] > 0] or run
        narrowest = min(with_ts, key=lambda s: s.ts_area)
        levels.append(
            DiscLevel(
                number=number,
                first_index=run[0].index,
                last_index=run[-1].index,
                disc_index=disc.index,
                disc_stem=disc.stem,
                ivd_area=disc.areas["IVD"],
                ts_area=disc.ts_area,
                ts_grade=disc.ts_grade,
                min_ts_area=narrowest.ts_area,
                min_ts_stem=narrowest.stem,
                unit=disc.unit,
                block=disc.block,
            )
        )
    return levels


def measure_series(
    masks: Sequence[np.ndarray | None],
    spacings: Sequence[Sequence[float] | None],
    stems: Sequence[str],
    thresholds: StenosisThresholds = StenosisThresholds(),
    locations: Sequence[float | None] | None = None,
    ap_axis: int | Sequence[int] = 0,
    blocks: Sequence[int | None] | None = None,
) -> SeriesMeasurement:
    """Measure every slice that has a mask (None = failed slice, left out) and find disc levels.

    `ap_axis` is one image axis for all slices or one per slice (angled blocks can differ);
    `blocks` gives each slice's orientation block, so a disc level never spans two blocks.
    """
    n = len(masks)
    locations = locations if locations is not None else [None] * n
    axes = [ap_axis] * n if isinstance(ap_axis, int) else list(ap_axis)
    block_ids = list(blocks) if blocks is not None else [None] * n
    measured = [
        measure_slice(mask, spacing, index, stem, thresholds, axis, location, block)
        for index, (mask, spacing, stem, location, axis, block) in enumerate(
            zip(masks, spacings, stems, locations, axes, block_ids, strict=True)
        )
        if mask is not None
    ]
    units = {m.unit for m in measured}
    unit = units.pop() if len(units) == 1 else ("mixed" if units else "mm2")
    return SeriesMeasurement(measured, find_disc_levels(measured), unit, thresholds)
