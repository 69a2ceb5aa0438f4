"""From a measured series to what the SR and the key-image sheet report: sac outlines, areas, grades, levels.

Works on plain inputs (stems, source headers, masks, images, the series measurement), so the
run pipeline can change how it gets them without touching the DICOM writers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge_runtime.dicom_sr import LevelFinding, SliceFinding
from edge_runtime.key_images import KeyImage
from edge_runtime.labels import BY_SHORT
from edge_runtime.level_names import LevelName, name_levels
from edge_runtime.measure import SeriesMeasurement
from edge_runtime.outline import largest_outline
from edge_runtime.render import display_grey

TS_ID = BY_SHORT["TS"].id


@dataclass
class SeriesFindings:
    """Per-slice and per-level thecal-sac findings of one series, ready for the SR and the key-image sheet."""

    series_name: str
    description: str
    slices: list[SliceFinding] = field(default_factory=list)
    levels: list[LevelFinding] = field(default_factory=list)
    level_names: list[LevelName] = field(default_factory=list)  # one per level found, reported or not
    keys: list[KeyImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def reference(self) -> Any | None:
        """A source header of the series (patient and study context for derived objects)."""
        return self.slices[0].source if self.slices else None

    @property
    def study_uid(self) -> str | None:
        return str(self.reference.StudyInstanceUID) if self.reference is not None else None


def _z(dataset: Any) -> float | None:
    position = dataset.get("ImagePositionPatient") if dataset is not None else None
    try:
        return float(position[2]) if position is not None and len(position) == 3 else None
    except (TypeError, ValueError):
        return None


def _span(stems: Sequence[str]) -> str:
    return f"{stems[0]}-{stems[-1]} ({len(stems)})" if len(stems) > 1 else stems[0]


def series_findings(
    series_name: str,
    description: str,
    stems: Sequence[str],
    sources: Sequence[Any | None],
    masks: Mapping[int, np.ndarray],
    images: Mapping[int, np.ndarray],
    measurement: SeriesMeasurement,
) -> SeriesFindings:
    """Collect the findings of one series.

    Parameters
    ----------
    stems, sources
        Per slice of the series (series order): its name and its DICOM header (None when the
        slice is not DICOM).
    masks, images
        Class-id masks and raw pixel arrays by slice index, for the slices that were segmented.
    measurement
        The series measurement (areas, grades and disc levels) that report.json holds.
    """
    found = SeriesFindings(series_name, description)
    by_index = {m.index: m for m in measurement.slices}
    outlines: dict[int, np.ndarray] = {}
    for index, m in sorted(by_index.items()):
        source = sources[index]
        if m.pixel_counts["TS"] == 0 or m.unit != "mm2" or m.ts_grade is None:
            continue
        if source is None or "SOPInstanceUID" not in source:
            found.notes.append(f"slice {m.stem}: no DICOM source image, not in the SR")
            continue
        shape = largest_outline(masks[index] == TS_ID)
        outlines[index] = shape  # type: ignore[assignment]
        found.slices.append(SliceFinding(source, m.stem, float(m.ts_area), m.ts_grade, shape))  # type: ignore[arg-type]
    spans = [list(range(level.first_index, level.last_index + 1)) for level in measurement.levels]
    found.level_names = name_levels(
        spans,
        [_z(s) for s in sources],
        [str(s.get("ImageComments")) if s is not None and "ImageComments" in s else None for s in sources],
    )
    stem_index = {stems[i]: i for i in range(len(stems))}
    for level, span, name in zip(measurement.levels, spans, found.level_names, strict=True):
        with_sac = [i for i in span if i in outlines]
        narrowest = stem_index.get(level.min_ts_stem)
        if not with_sac or narrowest not in outlines:
            found.notes.append(f"{name.label}: no thecal sac measured in mm2 on its slices, not in the SR")
            continue
        m = by_index[narrowest]
        found.levels.append(
            LevelFinding(
                name,
                float(level.min_ts_area),
                m.ts_grade,  # type: ignore[arg-type]
                tuple(sources[i].SOPInstanceUID for i in with_sac),
                sources[narrowest].SOPInstanceUID,
            )
        )
        disc = by_index.get(level.disc_index)
        found.keys.append(
            KeyImage(
                level=name.label,
                slice_label=m.stem,
                grey=display_grey(images[narrowest]),
                outline=outlines[narrowest],
                pixel_spacing=_spacing(sources[narrowest]),
                min_area_mm2=float(level.min_ts_area),
                grade=m.ts_grade,  # type: ignore[arg-type]
                slices=_span([stems[i] for i in span]),
                disc_area_mm2=float(disc.ts_area) if disc is not None and disc.unit == "mm2" else None,
            )
        )
    return found


def _spacing(dataset: Any) -> tuple[float, float]:
    row, col = (float(v) for v in dataset.PixelSpacing)
    return row, col
