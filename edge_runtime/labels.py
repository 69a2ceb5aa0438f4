"""The one class table: ids, names, display colours and Mendeley label-PNG pixel values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegClass:
    """One segmentation class as every part of edge-seg sees it."""

    id: int
    name: str
    short: str
    color: tuple[int, int, int]
    mendeley_value: int


CLASSES: tuple[SegClass, ...] = (
    SegClass(0, "background", "BG", (0, 0, 0), 250),
    SegClass(1, "intervertebral disc", "IVD", (230, 159, 0), 50),
    SegClass(2, "posterior element", "PE", (0, 158, 115), 100),
    SegClass(3, "thecal sac", "TS", (86, 180, 233), 150),
    SegClass(4, "area between anterior and posterior vertebral elements", "AAP", (204, 121, 167), 200),
)
"""Colours are the Okabe-Ito colour-blind-safe palette."""

NUM_CLASSES = len(CLASSES)
FOREGROUND: tuple[SegClass, ...] = CLASSES[1:]
BY_SHORT: dict[str, SegClass] = {c.short: c for c in CLASSES}

# Mendeley label PNGs: 250 is "other"; 0 also occurs and means background.
_MENDELEY_TO_ID: dict[int, int] = {c.mendeley_value: c.id for c in CLASSES} | {0: 0}


class UnknownLabelValueError(ValueError):
    """A label image holds a pixel value that is not in the class table."""


def mendeley_to_ids(label_png: np.ndarray, source: str = "label image") -> np.ndarray:
    """Map Mendeley pixel values (50/100/150/200/250, 0) to class ids (uint8).

    Raises UnknownLabelValueError naming `source` and the offending values.
    """
    values = np.asarray(label_png)
    if values.ndim == 3:  # RGB(A) PNGs saved by some tools: all channels equal
        values = values[..., 0]
    lut = np.full(256, 255, dtype=np.uint8)
    for value, class_id in _MENDELEY_TO_ID.items():
        lut[value] = class_id
    if values.dtype != np.uint8:
        if values.min() < 0 or values.max() > 255:
            raise UnknownLabelValueError(f"{source}: pixel values outside 0-255")
        values = values.astype(np.uint8)
    ids = lut[values]
    if (ids == 255).any():
        bad = sorted(int(v) for v in np.unique(values[ids == 255]))[:10]
        raise UnknownLabelValueError(
            f"{source}: unknown label pixel value(s) {bad}; expected one of "
            f"{sorted(_MENDELEY_TO_ID)}"
        )
    return ids


def ids_to_mendeley(mask: np.ndarray) -> np.ndarray:
    """Map class ids back to Mendeley pixel values (uint8), e.g. for label PNGs."""
    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() >= NUM_CLASSES):
        raise ValueError(f"class ids must be in 0..{NUM_CLASSES - 1}, got {mask.min()}..{mask.max()}")
    lut = np.array([c.mendeley_value for c in CLASSES], dtype=np.uint8)
    return lut[mask.astype(np.intp)]


def palette() -> np.ndarray:
    """(NUM_CLASSES, 3) uint8 RGB colours indexed by class id."""
    return np.array([c.color for c in CLASSES], dtype=np.uint8)
