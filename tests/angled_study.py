"""A lumbar axial series in angled blocks (one per disc, each tilted differently), as scanners acquire it."""

from __future__ import annotations

import math

import dicom_factory as f
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid


def tilted(degrees: float) -> tuple[float, ...]:
    """Axial ImageOrientationPatient tilted about the patient's left-right axis."""
    a = math.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, round(math.cos(a), 6), round(math.sin(a), 6))


def angled_series(
    images: list[list[np.ndarray]],
    angles: tuple[float, ...] = (-12.0, 0.0, 14.0),
    block_z: tuple[float, ...] = (0.0, 40.0, 80.0),
    thickness: float = 4.0,
    comments: list[list[str | None]] | None = None,
) -> list[list[Dataset]]:
    """One series (one SeriesInstanceUID), block b = images[b] at `angles[b]`, centred at z = `block_z[b]`."""
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    blocks, instance = [], 1
    for b, block in enumerate(images):
        orientation = tilted(angles[b])
        normal = np.cross(orientation[:3], orientation[3:])
        centre = np.array([-110.0, -110.0, block_z[b]])
        datasets = []
        for k, pixels in enumerate(block):
            offset = (k - (len(block) - 1) / 2) * thickness
            position = tuple(float(v) for v in centre + normal * offset)
            ds = f.mr_slice(
                pixels,
                series_uid=series_uid,
                study_uid=study_uid,
                frame_uid=frame_uid,
                instance=instance,
                position=position,
                orientation=orientation,
            )
            if comments and comments[b][k]:
                ds.ImageComments = comments[b][k]
            datasets.append(ds)
            instance += 1
        blocks.append(datasets)
    return blocks
