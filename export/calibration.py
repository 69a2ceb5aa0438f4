"""Calibration slices for int8 quantisation: training-split patients only, prepared like inference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from export.formats import ExportInputError


@dataclass(frozen=True)
class CalibrationSet:
    """(N, S, S, 1) float32 slices and where they came from (recorded in each manifest)."""

    images: np.ndarray
    source: str
    patients: tuple[str, ...] = ()

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
