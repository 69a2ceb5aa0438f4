"""DICOM Segmentation (SEG) output with highdicom: one multi-frame BINARY SEG per series, one segment per class.

highdicom is the optional `dicom-seg` extra; it is imported only when a SEG is written, and
`seg_unavailable_reason()` tells the caller what to install when it is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import __version__
from edge_runtime.atomic import atomic_path
from edge_runtime.labels import FOREGROUND
from edge_runtime.manifest import Manifest

SEG_INSTALL_HINT = "DICOM SEG output needs highdicom: pip install 'edge-seg[dicom-seg]'"


@dataclass(frozen=True)
class CodedTerm:
    """A coded concept (value, scheme, meaning) as the SEG segment description needs it."""

    value: str
    scheme: str
    meaning: str


# Segmented property category for every class (CID 7150).
ANATOMICAL_STRUCTURE = CodedTerm("91723000", "SCT", "Anatomical Structure")
# Segmented property type per class short name. SNOMED CT body-structure concepts:
# TS is mapped like AAPM TG-263 "ThecalSac" (spinal dura mater structure); AAP (the area between
# the anterior and posterior vertebral elements) has no dedicated concept, so it carries the
# generic anatomical-structure code and is told apart by its segment label and description.
SEGMENT_TYPES: dict[str, CodedTerm] = {
    "IVD": CodedTerm("360499006", "SCT", "Intervertebral disc"),
    "PE": CodedTerm("40265002", "SCT", "Arch of vertebra"),
    "TS": CodedTerm("37554007", "SCT", "Spinal dura mater"),
    "AAP": CodedTerm("91723000", "SCT", "Anatomical Structure"),
}
ALGORITHM_FAMILY = CodedTerm("123110", "DCM", "Artificial Intelligence")
LUMBAR_SPINE_REGION = CodedTerm("122496007", "SCT", "Lumbar spine")


def seg_unavailable_reason() -> str | None:
    """None when highdicom is importable, else a one-line install hint."""
    return None if importlib.util.find_spec("highdicom") is not None else SEG_INSTALL_HINT


def import_in_background() -> threading.Thread:
    """Start importing highdicom (~0.3-0.5 s) on a thread, overlapping inference and PNG encoding.

    A later `import highdicom` waits on the import lock, so this is safe to call at any time.
    """
    thread = threading.Thread(target=importlib.import_module, args=("highdicom",), name="import-highdicom", daemon=True)
    thread.start()
    return thread


def _code(term: CodedTerm) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=term.value, scheme_designator=term.scheme, meaning=term.meaning)


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


def write_dicom_seg(
    path: Path,
    source_datasets: Sequence[Any],
    masks: Sequence[np.ndarray],
    manifest: Manifest,
    series_number: int = 9901,
    series_description: str = "edge-seg lumbar segmentation",
) -> Path:
    """Write one multi-frame BINARY SEG referencing `source_datasets` (same order as `masks`).

    `masks` are class-id arrays at each source image's size; empty frames are omitted by
    highdicom and segments are numbered by class id (1 IVD, 2 PE, 3 TS, 4 AAP).
    """
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if not source_datasets or len(source_datasets) != len(masks):
        raise ValueError(f"SEG needs one mask per source image, got {len(masks)} masks for {len(source_datasets)} images")
    stack = np.stack([np.asarray(m, dtype=np.uint8) for m in masks])
    seg = hd.seg.Segmentation(
        source_images=list(source_datasets),
        pixel_array=stack,  # label map: value k -> segment k
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(manifest),
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="edge-seg",
        manufacturer_model_name=(manifest.name or "edge-seg model")[:64],
        software_versions=f"edge-seg {__version__}",
        device_serial_number="0",
        series_description=series_description[:64],
        content_label="SEGMENTATION",
        content_description="Lumbar spine IVD/PE/TS/AAP",
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    with atomic_path(Path(path)) as tmp:
        seg.save_as(tmp)
    return Path(path)
