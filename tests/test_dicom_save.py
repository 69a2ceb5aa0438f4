"""save_dicom: a Part 10 file with preamble and file meta, ambiguous VRs resolved in nested items, atomic."""

from __future__ import annotations

from pathlib import Path

import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from edge_runtime.dicom_save import save_dicom  # noqa: E402


def _nested(depth: int) -> Dataset:
    """A data set whose deepest item holds an ambiguous-VR element ('US or SS', decided by PixelRepresentation)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jörg"
    item = ds
    for level in range(depth):
        child = Dataset()
        child.TextValue = f"level {level} ü"
        item.ContentSequence = Sequence([child])
        item = child
    item.PixelRepresentation = 1
    item.add_new(0x00280106, "US or SS", -5)  # SmallestImagePixelValue, signed here
    return ds


def test_the_file_is_part_10_and_a_nested_ambiguous_vr_is_resolved(tmp_path: Path) -> None:
    ds = _nested(6)
    path = save_dicom(ds, tmp_path / "out.dcm")
    raw = path.read_bytes()
    assert raw[:128] == b"\0" * 128 and raw[128:132] == b"DICM"  # the data set had no preamble of its own
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    deepest = back
    for _ in range(6):
        deepest = deepest.ContentSequence[0]
    assert deepest[0x00280106].VR == "SS" and deepest.SmallestImagePixelValue == -5
    assert deepest.TextValue == "level 5 ü" and str(back.PatientName) == "Müller^Jörg"


def test_a_failed_save_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.dcm"
    path.write_bytes(b"previous run")
    ds = _nested(2)
    del ds.file_meta.TransferSyntaxUID  # enforce_file_format refuses a file meta without it
    with pytest.raises((AttributeError, ValueError), match="Transfer Syntax UID|TransferSyntaxUID"):
        save_dicom(ds, path)
    assert path.read_bytes() == b"previous run"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.dcm"]
