"""save_dicom: the same bytes as pydicom's own writer, ambiguous VRs still corrected in nested items, atomic."""

from __future__ import annotations

import copy
import io
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


def test_the_bytes_are_pydicoms_and_the_nested_ambiguous_vr_is_still_corrected(tmp_path: Path) -> None:
    ds = _nested(6)
    expected = io.BytesIO()
    copy.deepcopy(ds).save_as(expected, enforce_file_format=True)
    path = save_dicom(ds, tmp_path / "out.dcm")
    assert path.read_bytes() == expected.getvalue()
    back = pydicom.dcmread(path)
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
