"""Small hand-built DICOM objects for the runtime tests (MR slices, SR, RGB, truncated files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _file_meta(sop_class: str, sop_instance: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _patient_study(ds: Dataset, study_uid: str) -> None:
    ds.PatientName = "Phantom^Test"
    ds.PatientID = "TEST001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""


def mr_slice(
    pixels: np.ndarray,
    *,
    series_uid: str,
    study_uid: str,
    frame_uid: str,
    instance: int,
    position: tuple[float, float, float],
    orientation: tuple[float, ...] = AXIAL,
    spacing: tuple[float, float] | None = (0.6875, 0.6875),
    photometric: str = "MONOCHROME2",
    slope: float | None = None,
    intercept: float | None = None,
    bits_stored: int = 12,
    modality: str = "MR",
    description: str = "T2_TSE_TRA",
) -> Dataset:
    """A single-frame greyscale image with full geometry; signed when `pixels` is a signed dtype."""
    pixels = np.asarray(pixels)
    signed = np.issubdtype(pixels.dtype, np.signedinteger)
    sop_uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(MRImageStorage, sop_uid)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    _patient_study(ds, study_uid)
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 5
    ds.SeriesDescription = description
    ds.InstanceNumber = instance
    ds.FrameOfReferenceUID = frame_uid
    ds.Manufacturer = "edge-seg tests"
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    if spacing is not None:
        ds.PixelSpacing = [f"{v:.6f}" for v in spacing]
    ds.SliceThickness = "4.0"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = f"{slope}"
    if intercept is not None:
        ds.RescaleIntercept = f"{intercept}"
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    return ds


def mr_series(
    images: list[np.ndarray],
    *,
    spacing: tuple[float, float] | None = (0.6875, 0.6875),
    thickness: float = 4.0,
    orientation: tuple[float, ...] = AXIAL,
    description: str = "T2_TSE_TRA",
    modality: str = "MR",
) -> list[Dataset]:
    """One series, slice k at z = 10 + k*thickness along the normal, InstanceNumber k+1."""
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    row = np.asarray(orientation[:3])
    col = np.asarray(orientation[3:])
    normal = np.cross(row, col)
    out = []
    for k, image in enumerate(images):
        position = tuple(float(v) for v in (np.array([-110.0, -110.0, 0.0]) + normal * (10 + k * thickness)))
        out.append(
            mr_slice(
                image,
                series_uid=series_uid,
                study_uid=study_uid,
                frame_uid=frame_uid,
                instance=k + 1,
                position=position,
                orientation=orientation,
                spacing=spacing,
                description=description,
                modality=modality,
            )
        )
    return out


def write(ds: Dataset, path: Path, preamble: bool = True) -> Path:
    """Save `ds`; preamble=False writes a raw stream with no 128-byte preamble or 'DICM'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        body = Dataset()
        body.update(ds)
        body.save_as(path, implicit_vr=True, little_endian=True)
    return path


def structured_report(study_uid: str) -> Dataset:
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(BasicTextSRStorage, uid)
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = uid
    _patient_study(ds, study_uid)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    return ds


def rgb_image(study_uid: str, size: int = 32) -> Dataset:
    uid = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(SecondaryCaptureImageStorage, uid)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid
    _patient_study(ds, study_uid)
    ds.Modality = "OT"
    ds.SeriesInstanceUID = generate_uid()
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8).tobytes()
    return ds


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a written file to a fraction of its bytes (a copy interrupted mid-transfer)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def tilted(degrees: float) -> tuple[float, ...]:
    """Axial ImageOrientationPatient tilted about the patient's left-right axis (as a disc block is)."""
    a = np.radians(degrees)
    return (1.0, 0.0, 0.0, 0.0, float(np.cos(a)), float(np.sin(a)))


def angled_blocks(
    datasets: list[Dataset], angles: tuple[float, ...] = (-12.0, 0.0, 14.0), spacing: float = 4.0
) -> list[list[Dataset]]:
    """Re-acquire an axial series as len(angles) angled blocks: one series, each block tilted differently.

    `datasets` are in caudal -> cranial order; block b holds the b-th equal share of them, centred
    where those slices were, stacked `spacing` mm apart along its own tilted normal. Each copy gets a
    new SOPInstanceUID; patient, study, series and frame of reference are kept.
    """
    import copy as _copy

    share = len(datasets) // len(angles)
    blocks = []
    for b, angle in enumerate(angles):
        members = datasets[b * share : (b + 1) * share if b < len(angles) - 1 else len(datasets)]
        orientation = tilted(angle)
        normal = np.cross(orientation[:3], orientation[3:])
        centre = np.mean([[float(v) for v in ds.ImagePositionPatient] for ds in members], axis=0)
        block = []
        for k, source in enumerate(members):
            ds = _copy.deepcopy(source)
            uid = generate_uid()
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            offset = (k - (len(members) - 1) / 2) * spacing
            ds.ImagePositionPatient = [f"{v:.4f}" for v in centre + normal * offset]
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
            if "SliceLocation" in ds:
                del ds.SliceLocation
            block.append(ds)
        blocks.append(block)
    return blocks


def read_series(folder: Path) -> list[Dataset]:
    """Every DICOM file of a folder, ordered by ImagePositionPatient z (an axial series, caudal first)."""
    import pydicom

    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def raw_value(ds: Dataset, keyword: str, vr: str, value: bytes) -> Dataset:
    """Store `value` bytes as the element, unvalidated: what a broken writer or a bit flip leaves in a file."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import RawDataElement

    tag = tag_for_keyword(keyword)
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    return ds
