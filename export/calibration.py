"""Calibration slices for int8 quantisation: training-split patients only, prepared like inference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.preprocessing import PreprocessSpec
from export.formats import ExportInputError

DEFAULT_CALIBRATION_SLICES = 64
"""Slices used when none are asked for: fewer when the training split has fewer."""
MIN_CALIBRATION_SLICES = 8
"""Below this, int8 activation ranges rest on too few images to trust: the export refuses."""


@dataclass(frozen=True)
class CalibrationSet:
    """(N, S, S, 1) float32 slices and where they came from (recorded in each manifest)."""

    images: np.ndarray
    source: str
    patients: tuple[str, ...] = ()
    note: str | None = None  # why fewer slices than the default were used, for the console

    def describe(self) -> dict:
        return {"slices": len(self.images), "source": self.source, "patients": len(self.patients)}


def as_calibration(calibration: np.ndarray | CalibrationSet, input_size: int) -> CalibrationSet:
    """Accept a bare array or a CalibrationSet; refuse a shape that does not fit the model input."""
    if not isinstance(calibration, CalibrationSet):
        calibration = CalibrationSet(np.asarray(calibration), source="array given to export_model")
    images = calibration.images
    expected = (input_size, input_size, 1)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected or len(images) == 0:
        raise ExportInputError(
            f"calibration data has shape {tuple(images.shape)}; expected (N, {input_size}, {input_size}, 1) with N >= 1"
        )
    if not np.isfinite(images).all():
        raise ExportInputError("calibration data holds NaN or infinite values")
    return CalibrationSet(images.astype(np.float32, copy=False), calibration.source, calibration.patients)


def spread_pick(items: list, n: int) -> list:
    """`n` items evenly spaced over a sorted list: deterministic and spread across patients."""
    if n >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def calibration_slices(
    data: Path, spec: PreprocessSpec, samples: int | None = None, modality: str = "T2", run=None, seed: int = 0
) -> CalibrationSet:
    """Prepared slices of the TRAINING split's patients (never validation or test).

    `samples` None takes DEFAULT_CALIBRATION_SLICES, or every training slice when the split has
    fewer (the returned set's `note` says so); an explicit number must be available. The split
    is the run's split.json when `run` is given, else the data set's own split for `seed`.
    Slices go through edge_runtime.preprocessing.prepare_slice, like inference.

    Raises
    ------
    ExportInputError
        The folder is missing or holds no training slices; an explicit `samples` is more than
        the split holds; or the split holds fewer than MIN_CALIBRATION_SLICES.
    """
    from train.evaluate import split_pairs
    from train.pipeline import prepare_arrays

    data = Path(data)
    if samples is not None and samples < 1:
        raise ExportInputError(f"calibration samples must be >= 1, got {samples}")
    if not data.is_dir():
        raise ExportInputError(f"{data}: calibration data folder not found")
    try:
        pairs, _ = split_pairs(data, "train", run, seed=seed)
    except (ValueError, OSError) as exc:
        raise ExportInputError(f"{data}: no usable training slices for calibration ({exc})") from exc
    if samples is not None and len(pairs) < samples:
        raise ExportInputError(
            f"{data}: asked for {samples} calibration slices but the training split has only {len(pairs)}; "
            f"pass --calibration-samples {len(pairs)} or fewer"
        )
    if len(pairs) < MIN_CALIBRATION_SLICES:
        raise ExportInputError(
            f"{data}: the training split has only {len(pairs)} slices; int8 calibration needs at least "
            f"{MIN_CALIBRATION_SLICES} (use a larger data set)"
        )
    note = None
    if samples is None:
        samples = min(DEFAULT_CALIBRATION_SLICES, len(pairs))
        if samples < DEFAULT_CALIBRATION_SLICES:
            note = (
                f"calibrating int8 on all {samples} training-split slices "
                f"(the default is {DEFAULT_CALIBRATION_SLICES}; the split has fewer)"
            )
    chosen = spread_pick(sorted(pairs, key=lambda p: (p.patient_id, p.disc)), samples)
    try:
        arrays = prepare_arrays(chosen, spec, modality)
    except (ValueError, OSError) as exc:
        raise ExportInputError(f"{data}: cannot read calibration slices ({exc})") from exc
    return CalibrationSet(
        arrays.images,
        source=f"{len(arrays)} slices ({modality}) of {len({p.patient_id for p in chosen})} training-split patients in {data}",
        patients=tuple(sorted({p.patient_id for p in chosen})),
        note=note,
    )
