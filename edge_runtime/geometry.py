"""Per-slice geometry and slice order: plane, plausibility, orientation blocks, order along the spine.

Lumbar axial series are acquired in angled blocks, one per disc, so ImageOrientationPatient
differs inside one series. Slices are grouped into blocks of equal orientation (within
`ORIENTATION_TOLERANCE`), ordered along their block's normal, and the blocks along the spine
axis (their mean normal, pointing to the head), caudal block first.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.dicom_classify import HeaderError, float_attr, int_attr
from edge_runtime.inputs import Block, SliceRecord

# Plausible in-plane pixel spacing of an MR or CT slice, in mm (exclusive low, inclusive high).
SPACING_LIMITS_MM = (0.05, 5.0)
# Largest difference of any direction cosine for two slices to count as one orientation block.
ORIENTATION_TOLERANCE = 1e-4
# Direction cosines must be unit vectors and orthogonal within this.
_UNIT_TOLERANCE = 1e-2
_POSITION_LIMIT_MM = 1e5
PLANES = ("axial", "coronal", "sagittal", "unknown")


class GeometryError(HeaderError):
    """A slice's geometry is present but implausible (NaN, zero or absurd spacing, broken cosines)."""


@dataclass(frozen=True)
class PlaneGeometry:
    """Where one slice lies: position (mm), orientation cosines, pixel spacing (mm) and plane name."""

    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, float] | None
    plane: str


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """Unit normal (row cosines x column cosines) of an ImageOrientationPatient."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else normal


def orientation_name(orientation: tuple[float, ...] | None) -> str:
    """axial / coronal / sagittal by the patient axis the slice normal is mostly along."""
    if orientation is None:
        return "unknown"
    normal = np.abs(slice_normal(orientation))
    if not normal.any():
        return "unknown"
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))]


def read_geometry(dataset: Any) -> PlaneGeometry:
    """Geometry of one DICOM header; absent values are None, implausible ones raise GeometryError."""
    spacing = float_attr(dataset, "PixelSpacing", 2)
    if spacing is not None:
        low, high = SPACING_LIMITS_MM
        if not all(low < v <= high for v in spacing):
            raise GeometryError(
                f"PixelSpacing {list(spacing)} mm is implausible (allowed {low} < spacing <= {high} mm)"
            )
    orientation = float_attr(dataset, "ImageOrientationPatient", 6)
    if orientation is not None:
        row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
        if (
            abs(np.linalg.norm(row) - 1) > _UNIT_TOLERANCE
            or abs(np.linalg.norm(col) - 1) > _UNIT_TOLERANCE
            or abs(float(np.dot(row, col))) > _UNIT_TOLERANCE
        ):
            raise GeometryError(f"ImageOrientationPatient {list(orientation)} is not two orthogonal unit vectors")
    position = float_attr(dataset, "ImagePositionPatient", 3)
    if position is not None and max(abs(v) for v in position) > _POSITION_LIMIT_MM:
        raise GeometryError(f"ImagePositionPatient {list(position)} lies more than 100 m from the origin")
    return PlaneGeometry(position, orientation, spacing, orientation_name(orientation))  # type: ignore[arg-type]


def dicom_record(path: Any, dataset: Any, stem: str) -> SliceRecord:
    """A slice record with validated geometry; raises HeaderError/GeometryError naming the bad attribute."""
    geometry = read_geometry(dataset)
    try:
        instance = int_attr(dataset, "InstanceNumber")
    except HeaderError:
        instance = None  # only a tie-breaker for ordering; a bad value must not cost the slice
    rows, columns = int_attr(dataset, "Rows"), int_attr(dataset, "Columns")
    uid = str(dataset.get("SOPInstanceUID", "") or "").strip()
    return SliceRecord(
        path=path,
        kind="dicom",
        stem=stem,
        dataset=dataset,
        instance_number=instance,
        position=geometry.position,
        orientation=geometry.orientation,
        pixel_spacing=geometry.spacing,
        sop_instance_uid=uid or None,
        plane=geometry.plane,
        shape=(rows, columns) if rows and columns else None,
    )


def _same_orientation(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= ORIENTATION_TOLERANCE


def _upward(normal: np.ndarray) -> np.ndarray:
    """Flip a normal so it points to the head (+z in LPS) when it has a z component: caudal -> cranial."""
    return -normal if normal[2] < 0 else normal


def natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def order_slices(slices: list[SliceRecord]) -> tuple[list[SliceRecord], list[Block], str]:
    """Order slices and group them into orientation blocks; sets each record's `location` and `block`.

    With position and orientation on every slice: blocks of equal orientation, slices along
    their block's normal, blocks by their centre along the spine axis. Without: one block,
    ordered by InstanceNumber when unique, else by file name.
    """
    if not slices:
        return [], [], "none"
    if all(s.orientation is not None and s.position is not None for s in slices):
        return _order_by_geometry(slices)
    if all(s.instance_number is not None for s in slices) and len({s.instance_number for s in slices}) == len(slices):
        ordered, how = sorted(slices, key=lambda s: s.instance_number or 0), "InstanceNumber"
    else:
        ordered, how = sorted(slices, key=lambda s: natural_key(s.stem)), "file name"
    orientations = Counter(s.orientation for s in ordered if s.orientation is not None)
    orientation = orientations.most_common(1)[0][0] if orientations else None
    normal = tuple(float(v) for v in _upward(slice_normal(orientation))) if orientation else None
    block = Block(0, orientation, normal, orientation_name(orientation), list(range(len(ordered))))  # type: ignore[arg-type]
    for record in ordered:
        record.block, record.location = 0, None
    return ordered, [block], how


def _order_by_geometry(slices: list[SliceRecord]) -> tuple[list[SliceRecord], list[Block], str]:
    groups: list[tuple[tuple[float, ...], list[SliceRecord]]] = []
    for record in slices:
        assert record.orientation is not None
        for orientation, members in groups:
            if _same_orientation(orientation, record.orientation):
                members.append(record)
                break
        else:
            groups.append((record.orientation, [record]))
    reference = _upward(slice_normal(groups[0][0]))
    normals = []
    for orientation, _ in groups:
        normal = slice_normal(orientation)
        normals.append(-normal if np.dot(normal, reference) < 0 else normal)  # all blocks count the same way
    axis = np.sum([n * len(m) for n, (_, m) in zip(normals, groups, strict=True)], axis=0)
    axis = _upward(axis / np.linalg.norm(axis)) if np.linalg.norm(axis) > 0 else reference
    normals = [-n if np.dot(n, axis) < 0 else n for n in normals]
    placed = []
    for (orientation, members), normal in zip(groups, normals, strict=True):
        for record in members:
            record.location = float(np.dot(np.asarray(record.position), axis))
        along = sorted(members, key=lambda s: (float(np.dot(np.asarray(s.position), normal)), s.instance_number or 0, s.stem))
        centre = float(np.mean([s.location for s in members]))
        placed.append((centre, orientation, normal, along))
    placed.sort(key=lambda item: item[0])
    ordered: list[SliceRecord] = []
    blocks: list[Block] = []
    for index, (_, orientation, normal, along) in enumerate(placed):
        start = len(ordered)
        for record in along:
            record.block = index
        ordered.extend(along)
        cosines = tuple(float(v) for v in normal)
        blocks.append(Block(index, orientation, cosines, orientation_name(orientation), list(range(start, len(ordered)))))  # type: ignore[arg-type]
    how = "slice position along the normal (ImagePositionPatient)"
    if len(blocks) > 1:
        how = (
            f"slice position along each block's normal (ImagePositionPatient); "
            f"{len(blocks)} orientation blocks ordered along the spine"
        )
    return ordered, blocks, how


def ap_axis(orientation: tuple[float, ...] | None) -> int:
    """Image axis along anterior-posterior: rows (0) unless the row direction runs along patient y."""
    if orientation is None:
        return 0
    return 0 if abs(orientation[4]) >= abs(orientation[1]) else 1
