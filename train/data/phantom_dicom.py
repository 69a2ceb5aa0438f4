"""DICOM studies for phantom patients: one axial T2 TSE series through L3 to S1 per patient.

Slices are parallel and equally spaced; every fifth one passes through a disc centre (D3, D4,
D5), the others through vertebral bodies (near an endplate or at the pedicles). Disc-level
slices reuse the very pixels of the PNG layout's T2 images. Each slice also gets a label PNG
with Mendeley values. UIDs come from pydicom's generate_uid with the seed and patient as the
entropy source, and no tag depends on the clock, so a seed always writes the same bytes.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from edge_runtime.atomic import atomic_write_bytes
from edge_runtime.labels import ids_to_mendeley
from train.data.phantom import DISCS, SIZE, SPACING_MM, PatientAnatomy, SliceImages, render_slice
from train.data.png_io import encode_png

SLICE_THICKNESS_MM = 4.0
SLICES_PER_LEVEL = 5
"""Slice intervals between two disc centres (so disc spacing = 5 x slice spacing)."""
SERIES_DESCRIPTION = "T2_TSE_TRA"
MRI_DIR = "01_MRI_Data"


@dataclass(frozen=True)
class PlannedSlice:
    """Where one DICOM slice lies: its stack position and what anatomy it cuts."""

    instance: int  # 1-based, superior to inferior
    z_mm: float  # patient z (LPS: + is superior)
    disc: int  # nearest disc level
    zone: str  # 'disc', 'endplate' or 'pedicle'
    slice_key: int  # 0 for disc slices: same pixels as the PNG layout


def plan_slices(p: PatientAnatomy) -> list[PlannedSlice]:
    """12-15 equally spaced slices from above D3 to below D5."""
    above, below = p.extra_slices
    n = 2 * SLICES_PER_LEVEL + 1 + above + below
    z_top_disc = 40.0 + 5.0 * (p.index % 7)  # table position of D3; varies a little per patient
    plan = []
    for j in range(n):
        m = j - above  # steps below D3
        level = min(max(round(m / SLICES_PER_LEVEL), 0), len(DISCS) - 1)
        offset = m - SLICES_PER_LEVEL * level
        zone = "disc" if offset == 0 else "endplate" if abs(offset) == 1 else "pedicle"
        plan.append(PlannedSlice(j + 1, z_top_disc - m * p.slice_spacing, DISCS[level], zone,
                                 0 if offset == 0 else 10 + offset))
    return plan


def _study_date(p: PatientAnatomy) -> str:
    day = date(2024, 1, 1) + timedelta(days=(p.seed * 37 + p.index * 11) % 730)
    return day.strftime("%Y%m%d")


def _uid(p: PatientAnatomy, *parts: str) -> str:
    return generate_uid(entropy_srcs=["edge-seg phantom", str(p.seed), p.pid, *parts])


def series_folder(p: PatientAnatomy) -> str:
    return f"{SERIES_DESCRIPTION}_{p.series_number:04d}"


def make_dataset(p: PatientAnatomy, pixels: np.ndarray, s: PlannedSlice) -> Dataset:
    """One MR Image Storage instance (Explicit VR Little Endian, 16-bit allocated, 12 stored)."""
    if pixels.shape != (SIZE, SIZE) or pixels.dtype != np.uint16 or int(pixels.max()) > 4095:
        raise ValueError(f"expected {SIZE}x{SIZE} uint16 pixels <= 4095, got {pixels.shape} {pixels.dtype}")
    sop_uid = _uid(p, "instance", str(s.instance))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    study_date = _study_date(p)
    # SOP common, patient, general study
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = "101500"
    ds.AcquisitionTime = ds.ContentTime = f"{101500 + s.instance:06d}"
    ds.AccessionNumber = f"PH{p.seed:04d}{p.pid}"
    ds.Modality = "MR"
    ds.Manufacturer = "edge-seg phantom"
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "LUMBAR SPINE"
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.ProtocolName = SERIES_DESCRIPTION
    ds.ManufacturerModelName = "numpy phantom"
    ds.PatientName = f"Phantom^{p.pid}"
    ds.PatientID = f"PHANTOM-{p.seed}-{p.pid}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "LSPINE"
    # MR image module
    ds.ScanningSequence = ["SE"]
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = SLICE_THICKNESS_MM
    ds.SpacingBetweenSlices = round(p.slice_spacing, 4)
    ds.RepetitionTime = 3500.0
    ds.EchoTime = 100.0
    ds.EchoTrainLength = 15
    ds.MagneticFieldStrength = 1.5
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = _uid(p, "study")
    ds.SeriesInstanceUID = _uid(p, "series", str(p.series_number))
    ds.FrameOfReferenceUID = _uid(p, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.StudyID = p.pid
    ds.SeriesNumber = p.series_number
    ds.InstanceNumber = s.instance
    ds.AcquisitionNumber = 1
    # image plane: rows run to the patient's left (+x), columns to posterior (+y)
    first = -SIZE * SPACING_MM / 2 + SPACING_MM / 2
    ds.ImagePositionPatient = [round(first, 4), round(first, 4), round(s.z_mm, 4)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = round(s.z_mm, 4)
    ds.PixelSpacing = [SPACING_MM, SPACING_MM]
    # image pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    low, high = np.percentile(pixels, [1.0, 99.5])
    ds.WindowCenter = int(np.rint((low + high) / 2))
    ds.WindowWidth = max(int(np.rint(high - low)), 1)
    ds.PixelData = pixels.astype("<u2").tobytes()
    return ds


def encode_dataset(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def write_study(root: Path, p: PatientAnatomy, disc_slices: dict[int, SliceImages]) -> int:
    """Write the patient's T2 series (+ label PNGs) under root/01_MRI_Data/<pid>; returns files written.

    `disc_slices` are the already rendered disc-level slices of the PNG layout, reused as is.
    """
    series_dir = Path(root) / MRI_DIR / p.pid / series_folder(p)
    label_dir = series_dir.with_name(series_dir.name + "_labels")
    plan = plan_slices(p)
    for s in plan:
        rendered = disc_slices.get(s.disc) if s.zone == "disc" else None
        if rendered is None:
            rendered = render_slice(p, s.disc, s.zone, s.slice_key, with_t1=False)
        stem = f"IM_{s.instance:04d}"
        atomic_write_bytes(series_dir / f"{stem}.ima", encode_dataset(make_dataset(p, rendered.t2, s)))
        atomic_write_bytes(label_dir / f"{stem}.png", encode_png(ids_to_mendeley(rendered.labels)))
    return len(plan)
