"""DICOM Segmentation (SEG) output with highdicom: one BINARY SEG per orientation block, one segment per class.

highdicom's `Segmentation` needs identical ImageOrientationPatient, Rows/Columns, series and
frame of reference on all single-frame sources, so an angled lumbar series (one block per disc)
gets one SEG instance per block, all in one SEG series. Every source slice gets a frame per
segment (`omit_empty_frames=False`): viewers that map frames by index (OHIF) never shift.
One slice that highdicom refuses is left out of its block's SEG with the reason; the others stay.

highdicom is the optional `dicom-seg` extra; it is imported only when a SEG is written, and
`seg_unavailable_reason()` tells the caller what to install when it is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import __version__, codes
from edge_runtime.dicom_save import save_dicom
from edge_runtime.inputs import SliceRecord
from edge_runtime.labels import FOREGROUND
from edge_runtime.manifest import Manifest
from edge_runtime.research_use import intended_use

SEG_INSTALL_HINT = "DICOM SEG output needs highdicom: pip install 'edge-seg[dicom-seg]'"
# What a source slice must carry to be referenced by a SEG with patient geometry.
SEG_REQUIRED = (
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
)
# Patient and study attributes highdicom copies from the first source (Type 2: may be empty).
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


# Coded concepts come from the one table, edge_runtime.codes (checked there against pydicom's
# dictionary). AAP, the area between the anterior and posterior vertebral elements around the
# sac, is typed as the vertebral canal it lies in; label and description tell the classes apart.
ANATOMICAL_STRUCTURE = codes.ANATOMICAL_STRUCTURE  # segmented property category (CID 7150)
SEGMENT_TYPES = codes.SEGMENT_TYPES
ALGORITHM_FAMILY = codes.ARTIFICIAL_INTELLIGENCE
LUMBAR_SPINE_REGION = codes.LUMBAR_SPINE


def highdicom_unavailable(hint: str) -> str | None:
    """None when highdicom is importable, else `hint` (what to install for the output at hand)."""
    return None if importlib.util.find_spec("highdicom") is not None else hint


def seg_unavailable_reason() -> str | None:
    """None when highdicom is importable, else the SEG's install hint."""
    return highdicom_unavailable(SEG_INSTALL_HINT)


def _code(term: codes.Concept) -> Any:
    return term.highdicom()


def segment_descriptions(manifest: Manifest) -> list[Any]:
    """One highdicom SegmentDescription per foreground class, numbered by class id."""
    import highdicom as hd

    algorithm = hd.AlgorithmIdentificationSequence(
        name=(manifest.name or Path(manifest.model_file).stem)[:64],
        family=_code(ALGORITHM_FAMILY),
        version=(manifest.variant or manifest.precision or __version__)[:64],
        source="edge-seg",
        parameters={"format": manifest.format, "precision": manifest.precision, "sha256": manifest.sha256[:16]},
    )
    descriptions = []
    for cls in FOREGROUND:
        description = hd.seg.SegmentDescription(
            segment_number=cls.id,
            segment_label=cls.short,
            segmented_property_category=_code(ANATOMICAL_STRUCTURE),
            segmented_property_type=_code(SEGMENT_TYPES[cls.short]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[_code(LUMBAR_SPINE_REGION)],
            display_color=hd.color.CIELabColor.from_rgb(*cls.color),
        )
        description.SegmentDescription = cls.name[:64]
        descriptions.append(description)
    return descriptions


def source_header(dataset: Any, orientation: Sequence[float] | None = None) -> Any:
    """A copy of a source header as highdicom needs it; the original is not modified.

    Missing Type 2 patient/study attributes are added empty (highdicom reads them directly);
    SpacingBetweenSlices is dropped (an angled block's frames are not evenly spaced along the
    first slice's normal); `orientation` replaces ImageOrientationPatient when given, so
    slices of one block whose cosines differ only by rounding (within the block tolerance)
    share the exact value highdicom compares.
    """
    from pydicom.dataset import Dataset

    copy = Dataset()
    copy.file_meta = getattr(dataset, "file_meta", Dataset())
    for element in dataset:
        if element.tag not in (0x00180088,):  # SpacingBetweenSlices
            copy.add(element)
    for keyword in _TYPE2_COPIED:
        if keyword not in copy:
            setattr(copy, keyword, "")
    if orientation is not None:
        copy.ImageOrientationPatient = [f"{v:.10g}"[:16] for v in orientation]
    return copy


def write_dicom_seg(
    path: Path,
    source_datasets: Sequence[Any],
    masks: Sequence[np.ndarray],
    manifest: Manifest,
    series_number: int = 9901,
    series_description: str = "edge-seg lumbar segmentation",
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    orientation: Sequence[float] | None = None,
) -> Path:
    """Write one multi-frame BINARY SEG referencing `source_datasets` (same order as `masks`).

    `masks` are class-id arrays at each source image's size; segments are numbered by class id
    (1 IVD, 2 PE, 3 TS, 4 AAP) and every source gets one frame per segment, empty or not.
    """
    seg = build_segmentation(source_datasets, masks, manifest, series_number, series_description, series_instance_uid,
                             instance_number, orientation)
    return save_dicom(seg, path)


def build_segmentation(
    source_datasets: Sequence[Any],
    masks: Sequence[np.ndarray],
    manifest: Manifest,
    series_number: int = 9901,
    series_description: str = "edge-seg lumbar segmentation",
    series_instance_uid: str | None = None,
    instance_number: int = 1,
    orientation: Sequence[float] | None = None,
) -> Any:
    """The highdicom Segmentation object (not yet written); raises what highdicom raises."""
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if not source_datasets or len(source_datasets) != len(masks):
        raise ValueError(f"SEG needs one mask per source image, got {len(masks)} masks for {len(source_datasets)} images")
    sources = [source_header(ds, orientation) for ds in source_datasets]
    stack = np.stack([np.asarray(m, dtype=np.uint8) for m in masks])
    use = intended_use(manifest)  # research-only models mark every SEG (ContentQualification, descriptions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=stack,  # label map: value k -> segment k
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(manifest),
            series_instance_uid=series_instance_uid or generate_uid(),
            series_number=series_number,
            sop_instance_uid=generate_uid(),
            instance_number=instance_number,
            manufacturer="edge-seg",
            manufacturer_model_name=(manifest.name or "edge-seg model")[:64],
            software_versions=f"edge-seg {__version__}",
            device_serial_number="0",
            series_description=use.describe(series_description),
            content_label="SEGMENTATION",
            content_description=use.describe("Lumbar spine IVD/PE/TS/AAP"),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            omit_empty_frames=False,
        )
    seg.ContentQualification = use.content_qualification
    return seg


# --------------------------------------------------------------------------- one series -> SEG files


@dataclass
class SegGroup:
    """Slices that can share one SEG instance: one orientation block, one size, spacing and thickness."""

    block: int | None
    key: tuple[Any, ...]
    indices: list[int] = field(default_factory=list)  # into Series.slices
    orientation: tuple[float, ...] | None = None
    file_name: str = ""


@dataclass
class SeriesSeg:
    """What writing a series' SEGs produced: files written, and slices left out with their reasons."""

    files: list[Path] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    left_out: dict[int, str] = field(default_factory=dict)  # slice index -> reason


def seg_exclusion(record: SliceRecord) -> str | None:
    """Why a slice cannot be referenced by a SEG (missing identity or geometry), or None."""
    if record.seg_excluded:
        return record.seg_excluded
    missing = [k for k in SEG_REQUIRED if not str(record.dataset.get(k, "") or "").strip()]
    if missing:
        return f"no {', '.join(missing)} in its header"
    study, frame = (str(record.dataset.get(k, "")).strip() for k in ("StudyInstanceUID", "FrameOfReferenceUID"))
    if study == frame:  # a SEG must copy both: it would be as invalid as its source (dciodvfy rejects it)
        return f"its StudyInstanceUID and FrameOfReferenceUID are the same UID ({study[:64]})"
    return None


def plan_groups(series_name: str, slices: Sequence[SliceRecord]) -> tuple[list[SegGroup], dict[int, str]]:
    """SEG groups of a series (file names fixed before any inference) and the slices no SEG can hold.

    A slice at the same position as an earlier one of its group (a repeated acquisition) goes
    into a further group: one SEG instance may not hold two frames at one plane position.
    """
    groups: dict[tuple[Any, ...], SegGroup] = {}
    positions: dict[tuple[Any, ...], list[tuple[float, ...]]] = {}
    left_out: dict[int, str] = {}
    for index, record in enumerate(slices):
        if record.kind != "dicom":
            continue
        reason = seg_exclusion(record)
        if reason:
            left_out[index] = reason
            continue
        ds = record.dataset
        key = (
            record.block,
            record.shape,
            record.pixel_spacing,
            str(ds.get("SliceThickness", "")).strip(),
            str(ds.get("FrameOfReferenceUID", "")),
            0,
        )
        position = tuple(round(v, 3) for v in record.position or ())
        while position in positions.get(key, []):
            key = (*key[:-1], key[-1] + 1)
        positions.setdefault(key, []).append(position)
        group = groups.setdefault(key, SegGroup(record.block, key, orientation=record.orientation))
        group.indices.append(index)
    ordered = list(groups.values())
    for number, group in enumerate(ordered, start=1):
        group.file_name = f"{series_name}_seg.dcm" if len(ordered) == 1 else f"{series_name}_block{number}_seg.dcm"
    return ordered, left_out


def write_series_segs(
    folder: Path,
    series_name: str,
    slices: Sequence[SliceRecord],
    blocks_orientation: dict[int | None, tuple[float, ...] | None],
    masks: dict[int, np.ndarray],
    manifest: Manifest,
    description: str,
) -> SeriesSeg:
    """One SEG per group into `folder`; a slice highdicom refuses is left out of its group's SEG, not the rest."""
    from pydicom.uid import generate_uid

    result = SeriesSeg()
    groups, left_out = plan_groups(series_name, slices)
    result.left_out.update({i: r for i, r in left_out.items() if i in masks})
    series_uid = generate_uid()
    for number, group in enumerate(groups, start=1):
        indices = [i for i in group.indices if i in masks]
        if not indices:
            continue
        orientation = blocks_orientation.get(group.block, group.orientation)
        label = f"{description} block {number}/{len(groups)}" if len(groups) > 1 else description

        def build(chosen: list[int], label: str = label, orientation: Any = orientation, number: int = number) -> Any:
            return build_segmentation(
                [slices[i].dataset for i in chosen], [masks[i] for i in chosen], manifest,
                series_description=label, series_instance_uid=series_uid, instance_number=number, orientation=orientation,
            )

        try:
            seg = build(indices)
        except Exception as exc:  # highdicom validates the sources; find the slices it refuses
            bad = _refused_alone(indices, build)
            if not bad:
                for i in indices:
                    result.left_out[i] = f"DICOM SEG of its block not written ({type(exc).__name__}: {exc})"
                continue
            result.left_out.update(bad)
            indices = [i for i in indices if i not in bad]
            if not indices:
                continue
            try:
                seg = build(indices)
            except Exception as again:
                for i in indices:
                    result.left_out[i] = f"DICOM SEG of its block not written ({type(again).__name__}: {again})"
                continue
        path = folder / group.file_name
        save_dicom(seg, path)
        result.files.append(path)
        result.groups.append({"file": group.file_name, "block": group.block, "n_slices": len(indices),
                              "stems": [slices[i].stem for i in indices]})
    return result


def _refused_alone(indices: list[int], build: Any) -> dict[int, str]:
    """Slices whose single-slice SEG highdicom refuses, with its message (only tried after a group failed)."""
    bad = {}
    for i in indices:
        try:
            build([i])
        except Exception as exc:
            bad[i] = f"refused by the DICOM SEG writer ({type(exc).__name__}: {exc})"
    return bad
