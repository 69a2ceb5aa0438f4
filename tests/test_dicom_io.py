"""DICOM/PNG/NPY input discovery, series grouping, geometric ordering, selection and pixel decoding."""

from __future__ import annotations

import io
from pathlib import Path

import dicom_factory as f
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless, RLELossless, generate_uid

from edge_runtime import decode, dicom_io
from edge_runtime.dicom_io import SliceDecodeError, dicom_pixels, discover, load_pixels


def _ramp(k: int, shape: tuple[int, int] = (16, 20)) -> np.ndarray:
    return (np.arange(shape[0] * shape[1]).reshape(shape) % 97 + 100 * k).astype(np.uint16)


def test_slices_are_ordered_by_position_along_the_normal_not_instance_number_or_name(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(6)])
    scramble = [4, 1, 5, 0, 3, 2]  # file i holds slice scramble[i]; InstanceNumbers reversed against geometry
    for i, k in enumerate(scramble):
        datasets[k].InstanceNumber = 6 - k
        f.write(datasets[k], tmp_path / "T2" / f"IM{i:02d}.ima")
    study = discover(tmp_path)
    (series,) = study.selected
    assert series.ordering.startswith("slice position")
    locations = [r.location for r in series.slices]
    assert locations == sorted(locations) == [10.0, 14.0, 18.0, 22.0, 26.0, 30.0]
    first_pixels = [load_pixels(r)[0, 0] for r in series.slices]
    assert first_pixels == [100.0 * k for k in range(6)]
    assert [r.stem for r in series.slices] == [f"IM{scramble.index(k):02d}" for k in range(6)]


def test_axial_series_with_downward_normal_still_runs_caudal_to_cranial(tmp_path: Path) -> None:
    flipped = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # normal = -z
    datasets = f.mr_series([_ramp(k) for k in range(3)], orientation=flipped)
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"{k}.dcm")
    (series,) = discover(tmp_path).selected
    z = [r.position[2] for r in series.slices]
    assert z == sorted(z)


def test_instance_number_is_the_fallback_without_geometry(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(4)])
    for i, k in enumerate([2, 0, 3, 1]):
        del datasets[k].ImagePositionPatient
        f.write(datasets[k], tmp_path / "s" / f"file{i}.dcm")
    (series,) = discover(tmp_path).selected
    assert series.ordering == "InstanceNumber"
    assert [r.instance_number for r in series.slices] == [1, 2, 3, 4]


def test_dicom_is_recognised_by_content_whatever_the_extension(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(4)])
    f.write(datasets[0], tmp_path / "a.dcm")
    f.write(datasets[1], tmp_path / "b.IMA")
    f.write(datasets[2], tmp_path / "1.3.12.2.1107.5.2")  # no extension, UID-like name
    f.write(datasets[3], tmp_path / "raw_no_preamble", preamble=False)
    (tmp_path / "fake.dcm").write_text("this is not DICOM\n")
    (tmp_path / "notes.txt").write_bytes(b"\x08\x00\x05\x00garbage that starts like a tag")
    study = discover(tmp_path)
    (series,) = study.selected
    assert sorted(r.path.name for r in series.slices) == ["1.3.12.2.1107.5.2", "a.dcm", "b.IMA", "raw_no_preamble"]
    assert {r.stem for r in series.slices} == {"a", "b", "1.3.12.2.1107.5.2", "raw_no_preamble"}
    skipped = {issue.path.name: issue.reason for issue in study.skipped}
    assert set(skipped) == {"fake.dcm", "notes.txt"}
    assert all("not a DICOM file" in reason for reason in skipped.values())


def test_series_are_grouped_by_uid_and_selected_by_rules(tmp_path: Path) -> None:
    axial = f.mr_series([_ramp(k) for k in range(3)], description="T2_TSE_TRA")
    sagittal = f.mr_series([_ramp(k) for k in range(3)], orientation=f.SAGITTAL, description="T2_TSE_SAG")
    ct = f.mr_series([_ramp(k) for k in range(2)], modality="CT", description="CT AXIAL")
    for name, group in (("ax", axial), ("sag", sagittal), ("ct", ct)):
        for k, ds in enumerate(group):
            f.write(ds, tmp_path / "study" / f"{name}_{k}.dcm")  # all in ONE folder: grouping must use the UID
    study = discover(tmp_path)
    assert [s.description for s in study.selected] == ["T2_TSE_TRA"]
    reasons = {s.description: reason for s, reason in study.excluded}
    assert "sagittal orientation" in reasons["T2_TSE_SAG"]
    assert "Modality CT" in reasons["CT AXIAL"]
    assert len({s.name for s in [*study.selected, *(s for s, _ in study.excluded)]}) == 3  # distinct output names

    by_description = discover(tmp_path, series="tse_sag")
    assert [s.description for s in by_description.selected] == ["T2_TSE_SAG"]
    assert by_description.selected[0].orientation == "sagittal"
    by_uid = discover(tmp_path, series=ct[0].SeriesInstanceUID)
    assert [s.description for s in by_uid.selected] == ["CT AXIAL"]
    assert discover(tmp_path, series="nothing-like-this").selected == []


def test_non_images_colour_multiframe_and_broken_files_get_reasons(tmp_path: Path) -> None:
    good = f.mr_series([_ramp(k) for k in range(2)])
    for k, ds in enumerate(good):
        f.write(ds, tmp_path / f"good{k}.dcm")
    f.write(f.structured_report(good[0].StudyInstanceUID), tmp_path / "report_sr")
    f.write(f.rgb_image(good[0].StudyInstanceUID), tmp_path / "screenshot.dcm")
    multi = f.mr_series([_ramp(0)])[0]
    multi.NumberOfFrames = 2
    multi.PixelData = np.stack([_ramp(0), _ramp(1)]).tobytes()
    f.write(multi, tmp_path / "multi.dcm")
    header_cut = f.write(f.mr_series([_ramp(0)])[0], tmp_path / "header_cut.dcm")
    header_cut.write_bytes(header_cut.read_bytes()[:300])
    study = discover(tmp_path)
    assert [len(s.slices) for s in study.selected] == [2]
    skipped = {issue.path.name: issue.reason for issue in study.skipped}
    assert "structured report (SR)" in skipped["report_sr"]
    assert "colour image" in skipped["screenshot.dcm"] and "RGB" in skipped["screenshot.dcm"]
    assert "multi-frame image (2 frames)" in skipped["multi.dcm"]
    failed = {issue.path.name: issue.reason for issue in study.failed}
    assert "truncated or corrupt" in failed["header_cut.dcm"]


def test_truncated_pixel_data_fails_that_slice_with_the_file_named(tmp_path: Path) -> None:
    path = f.write(f.mr_series([_ramp(0, (64, 64))])[0], tmp_path / "cut.dcm")
    data = path.read_bytes()  # the header's length varies with its generated UIDs: find where the pixels start
    tag = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data, little endian
    start = tag + (12 if data[tag + 4 : tag + 6] in (b"OW", b"OB") else 8)
    f.truncate(path, 0.6)
    left = path.stat().st_size - start
    (series,) = discover(tmp_path).selected
    with pytest.raises(SliceDecodeError, match=rf"cut\.dcm: truncated: the pixel data ends after {left} of 8192 bytes"):
        load_pixels(series.slices[0])


def test_duplicate_instances_are_skipped(tmp_path: Path) -> None:
    ds = f.mr_series([_ramp(0)])[0]
    f.write(ds, tmp_path / "a.dcm")
    f.write(ds, tmp_path / "copy" / "a_copy.dcm")
    study = discover(tmp_path)
    assert sum(len(s.slices) for s in study.selected) == 1
    assert "duplicate of" in study.skipped[0].reason


def test_monochrome1_is_inverted_in_the_nominal_range_before_rescale() -> None:
    stored = np.array([[0, 1, 2000], [4095, 100, 7]], dtype=np.uint16)
    ds = f.mr_series([stored])[0]
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.RescaleSlope = "2"
    ds.RescaleIntercept = "-100"
    expected = np.array([[8090, 8088, 4090], [-100, 7890, 8076]], dtype=np.float32)  # (4095 - v) * 2 - 100
    np.testing.assert_array_equal(dicom_pixels(ds), expected)


def test_signed_pixels_keep_their_sign_and_rescale_applies() -> None:
    stored = np.array([[-1024, -1], [0, 3071]], dtype=np.int16)
    ds = f.mr_series([stored])[0]
    ds.BitsStored, ds.HighBit = 16, 15
    ds.RescaleSlope = "0.5"
    ds.RescaleIntercept = "10"
    assert ds.PixelRepresentation == 1
    np.testing.assert_array_equal(dicom_pixels(ds), np.array([[-502.0, 9.5], [10.0, 1545.5]], dtype=np.float32))
    assert dicom_io.nominal_range(12, signed=True) == (-2048, 2047)


def test_non_square_slices_keep_their_shape(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 4095, (320, 310)).astype(np.uint16)
    f.write(f.mr_series([image])[0], tmp_path / "wide.ima")
    (series,) = discover(tmp_path).selected
    pixels = load_pixels(series.slices[0])
    assert pixels.shape == (320, 310)
    np.testing.assert_array_equal(pixels, image.astype(np.float32))


def _compressed_copy(ds: pydicom.Dataset, syntax) -> pydicom.Dataset:
    from pydicom.pixels import get_encoder

    if not get_encoder(syntax).is_available:
        pytest.skip(f"no encoder for {syntax.name} here")
    ds = pydicom.dcmread(io.BytesIO(_bytes(ds)))
    ds.compress(syntax)
    return pydicom.dcmread(io.BytesIO(_bytes(ds)))


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_lossless_compressed_copies_decode_to_the_same_pixels(tmp_path: Path, syntax) -> None:
    image = np.random.default_rng(2).integers(0, 4095, (48, 40)).astype(np.uint16)
    original = f.mr_series([image])[0]
    compressed = _compressed_copy(original, syntax)
    assert compressed.file_meta.TransferSyntaxUID == syntax
    path = tmp_path / "c.dcm"
    compressed.save_as(path)
    (series,) = discover(tmp_path).selected
    np.testing.assert_array_equal(load_pixels(series.slices[0]), image.astype(np.float32))


def test_jpeg_baseline_decodes_like_an_independent_jpeg_decoder(tmp_path: Path) -> None:
    image = (np.add.outer(np.arange(32), np.arange(32)) * 4).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="JPEG", quality=90)
    ds = f.mr_series([image.astype(np.uint16)])[0]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(tmp_path / "j.dcm")
    reference = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)
    (series,) = discover(tmp_path).selected
    decoded = load_pixels(series.slices[0])
    assert np.abs(decoded - reference).max() <= 2  # libjpeg vs Pillow IDCT rounding
    assert np.abs(decoded - image).mean() < 3  # and close to the original (lossy)


def test_a_missing_decoder_gives_a_per_file_install_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom.pixels

    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda uid: Unavailable())
    monkeypatch.setattr(decode, "_DECODER_CHECKED", {})
    ds = _compressed_copy(f.mr_series([_ramp(0, (48, 40))])[0], JPEG2000Lossless)
    with pytest.raises(SliceDecodeError, match=r"slice\.j2k: no decoder installed for JPEG 2000.*pylibjpeg-openjpeg"):
        dicom_pixels(ds, source="slice.j2k")


def test_a_transfer_syntax_without_any_decoder_is_named() -> None:
    ds = f.mr_series([_ramp(0)])[0]
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
    with pytest.raises(SliceDecodeError, match="MPEG2"):
        dicom_pixels(ds, source="video.dcm")


def test_png_and_npy_slices_form_series_and_label_folders_are_ignored(tmp_path: Path) -> None:
    png_dir = tmp_path / "pngs"
    png_dir.mkdir()
    for k in range(3):
        Image.fromarray((_ramp(k) * 10).astype(np.uint16)).save(png_dir / f"slice_{k + 1}.png")
    (tmp_path / "pngs_labels").mkdir()
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(tmp_path / "pngs_labels" / "slice_1.png")
    stack = np.stack([_ramp(k) for k in range(4)]).astype(np.int16)
    np.save(tmp_path / "volume.npy", stack)
    study = discover(tmp_path)
    by_name = {s.name: s for s in study.selected}
    assert set(by_name) == {"pngs", tmp_path.name}
    pngs = by_name["pngs"]
    assert [r.stem for r in pngs.slices] == ["slice_1", "slice_2", "slice_3"]
    np.testing.assert_array_equal(load_pixels(pngs.slices[2]), (_ramp(2) * 10).astype(np.float32))
    volume = by_name[tmp_path.name]
    assert [r.stem for r in volume.slices] == ["volume_000", "volume_001", "volume_002", "volume_003"]
    np.testing.assert_array_equal(load_pixels(volume.slices[3]), stack[3].astype(np.float32))
    assert any("label image" in issue.reason for issue in study.skipped)


def test_png_slices_are_ignored_when_the_input_holds_dicom(tmp_path: Path) -> None:
    f.write(f.mr_series([_ramp(0)])[0], tmp_path / "a.dcm")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "preview.png")
    study = discover(tmp_path)
    assert [s.kind for s in study.selected] == ["dicom"]
    assert "ignored because the input holds DICOM" in study.excluded[0][1]


def test_single_file_input_and_missing_input(tmp_path: Path) -> None:
    path = f.write(f.mr_series([_ramp(0)])[0], tmp_path / "series_dir" / "one.dcm")
    (series,) = discover(path).selected
    assert series.name == "series_dir" and len(series.slices) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover(tmp_path / "nope")


def test_unique_stems_within_a_series(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(2)])
    series_uid = generate_uid()
    for k, ds in enumerate(datasets):
        ds.SeriesInstanceUID = series_uid
        f.write(ds, tmp_path / f"part{k}" / "IM0001.dcm")
    (series,) = discover(tmp_path).selected
    assert sorted(r.stem for r in series.slices) == ["IM0001", "IM0001_2"]


@pytest.mark.parametrize(
    ("sop_class", "modality", "expected"),
    [
        ("1.2.840.10008.5.1.4.1.1.481.3", "RTSTRUCT", "RT structure set (RTSTRUCT)"),
        ("1.2.840.10008.5.1.4.1.1.66.4", "SEG", "segmentation (SEG)"),
        ("1.2.840.10008.5.1.4.1.1.11.1", "PR", "presentation state (PR)"),
        ("1.2.840.10008.1.3.10", "", "DICOMDIR"),
        ("1.2.840.10008.5.1.4.1.1.88.22", "SR", "structured report (SR)"),
    ],
)
def test_non_image_objects_are_skipped_by_sop_class(tmp_path: Path, sop_class: str, modality: str, expected: str) -> None:
    ds = f.structured_report(generate_uid())
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    f.write(ds, tmp_path / "object")
    f.write(f.mr_series([_ramp(0)])[0], tmp_path / "image.dcm")
    study = discover(tmp_path)
    assert [len(s.slices) for s in study.selected] == [1]
    (issue,) = study.skipped
    assert issue.path.name == "object" and expected in issue.reason and "not an image" in issue.reason


# --------------------------------------------------------------------------- angled blocks and mixed planes


def test_angled_blocks_are_grouped_ordered_along_each_normal_and_along_the_spine(tmp_path: Path) -> None:
    axial = f.mr_series([_ramp(k) for k in range(9)], thickness=8.0)
    blocks = f.angled_blocks(axial, angles=(-12.0, 0.0, 14.0), spacing=4.0)
    flat = [ds for block in blocks for ds in block]
    for i, k in enumerate([7, 2, 5, 0, 8, 3, 1, 6, 4]):  # file order unrelated to anatomy or InstanceNumber
        flat[k].InstanceNumber = 9 - k
        f.write(flat[k], tmp_path / "T2" / f"IM{i:02d}.ima")
    (series,) = discover(tmp_path).selected
    assert len(series.blocks) == 3 and "3 orientation blocks" in series.ordering
    assert [b.slice_indices for b in series.blocks] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    expected = [tuple(float(v) for v in block[0].ImageOrientationPatient) for block in blocks]
    assert [b.orientation for b in series.blocks] == expected
    assert [r.sop_instance_uid for r in series.slices] == [ds.SOPInstanceUID for ds in flat]  # caudal block first
    assert [load_pixels(r)[0, 0] for r in series.slices] == [100.0 * k for k in range(9)]
    assert [r.block for r in series.slices] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    locations = [r.location for r in series.slices]
    assert locations == sorted(locations)  # blocks do not overlap here: one monotonic run along the spine


def test_orientation_rounding_within_the_tolerance_is_one_block(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(3)])
    datasets[1].ImageOrientationPatient = ["1.0", "0.00002", "0.0", "-0.00002", "1.0", "0.0"]  # scanner rounding
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"{k}.dcm")
    (series,) = discover(tmp_path).selected
    assert len(series.blocks) == 1 and series.ordering == "slice position along the normal (ImagePositionPatient)"


def test_localizer_planes_inside_an_axial_series_are_excluded_slice_by_slice(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(5)])
    datasets[0].ImageOrientationPatient = [f"{v}" for v in f.SAGITTAL]  # a corrupted or localizer FIRST slice
    datasets[1].ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]  # coronal
    datasets[2].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]  # axial, but a localizer
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    study = discover(tmp_path)
    (series,) = study.selected
    assert [r.stem for r in series.slices] == ["IM3", "IM4"] and series.orientation == "axial"
    left_out = {issue.path.name: issue.reason for issue in series.excluded_slices}
    assert left_out["IM0.dcm"].startswith("sagittal orientation (rules select axial")
    assert left_out["IM1.dcm"].startswith("coronal orientation (rules select axial")
    assert left_out["IM2.dcm"].startswith("ImageType ORIGINAL\\PRIMARY\\LOCALIZER is LOCALIZER")
    assert sorted(Path(issue.path).name for _, issue in study.excluded_files) == ["IM0.dcm", "IM1.dcm", "IM2.dcm"]


def test_one_slice_claiming_ct_costs_that_slice_not_the_series(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(3)])
    datasets[0].Modality = "CT"
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    study = discover(tmp_path)
    (series,) = study.selected
    assert series.modality == "MR" and [r.stem for r in series.slices] == ["IM1", "IM2"]
    (issue,) = series.excluded_slices
    assert issue.path.name == "IM0.dcm" and issue.reason.startswith("Modality CT (rules select MR")


def test_rules_from_data_override_the_defaults_and_bad_rules_are_named(tmp_path: Path) -> None:
    from edge_runtime.selection import RulesError, SelectionRules

    datasets = f.mr_series([_ramp(k) for k in range(3)])
    datasets[0].ImageType = ["DERIVED", "SECONDARY"]
    datasets[1].ImageOrientationPatient = [f"{v}" for v in f.SAGITTAL]
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    assert [r.stem for r in discover(tmp_path).selected[0].slices] == ["IM2"]
    rules = SelectionRules.from_dict({"planes": ["axial", "sagittal"], "exclude_image_types": []})
    assert sorted(r.stem for r in discover(tmp_path, rules=rules).selected[0].slices) == ["IM0", "IM1", "IM2"]
    path = tmp_path / "rules.json"
    path.write_text('{"planes": ["axial"], "modalities": ["mr"], "exclude_image_types": ["derived"]}')
    assert [r.stem for r in discover(tmp_path / "s", rules=SelectionRules.load(path)).selected[0].slices] == ["IM2"]
    with pytest.raises(RulesError, match=r"unknown key\(s\) \['plane'\]"):
        SelectionRules.from_dict({"plane": ["axial"]})
    with pytest.raises(RulesError, match=r"unknown plane\(s\) \['oblique'\]"):
        SelectionRules.from_dict({"planes": ["oblique"]})
    with pytest.raises(RulesError, match="'modalities' must be a list of strings, got 'MR'"):
        SelectionRules.from_dict({"modalities": "MR"})
    with pytest.raises(RulesError, match="expected a JSON object, got list"):
        SelectionRules.from_dict([])


# --------------------------------------------------------------------------- hostile files


def test_pydicoms_bad_vr_file_beside_a_study_fails_alone_with_its_name(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    for k, ds in enumerate(f.mr_series([_ramp(k) for k in range(2)])):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "badVR.dcm").write_bytes(Path(get_testdata_file("badVR.dcm")).read_bytes())
    study = discover(tmp_path)
    assert [len(s.slices) for s in study.selected] == [2]
    named = {issue.path.name: issue.reason for issue in study.skipped + study.failed}
    assert named["badVR.dcm"] == "radiotherapy object (RT): not an image"


@pytest.mark.parametrize(
    ("keyword", "vr", "value", "reason"),
    [
        ("NumberOfFrames", "IS", b"abc ", "corrupt DICOM header: NumberOfFrames 'abc' is not an integer"),
        ("PixelSpacing", "DS", b"1e-12\\1e-12 ", "PixelSpacing [1e-12, 1e-12] mm is implausible (allowed 0.05 < spacing <= 5.0"),
        ("PixelSpacing", "DS", b"0\\0 ", "PixelSpacing [0.0, 0.0] mm is implausible"),
        ("PixelSpacing", "DS", b"6\\6 ", "PixelSpacing [6.0, 6.0] mm is implausible"),
        ("PixelSpacing", "DS", b"NaN\\1 ", "PixelSpacing [NaN, 1] is not finite"),
        ("ImagePositionPatient", "DS", b"nan\\0\\0 ", "ImagePositionPatient [nan, 0, 0] is not finite"),
        ("ImageOrientationPatient", "DS", b"1\\0\\0\\1\\0\\0 ", "ImageOrientationPatient [1.0, 0.0, 0.0, 1.0, 0.0, 0.0] is not"),
        ("Columns", "US", b"\x10\x00", "Rows x Columns (16 x 16) disagree with the pixel data (640 bytes, expected 512"),
    ],
)
def test_implausible_or_unreadable_header_values_fail_that_file_by_name(
    tmp_path: Path, keyword: str, vr: str, value: bytes, reason: str
) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(3)])
    f.raw_value(datasets[1], keyword, vr, value)
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    study = discover(tmp_path)
    assert [r.stem for r in study.selected[0].slices] == ["IM0", "IM2"]
    (issue,) = study.failed
    assert issue.path.name == "IM1.dcm" and reason in issue.reason


def test_an_unknown_vr_from_a_flipped_byte_fails_that_file(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(2)])
    path = f.write(datasets[1], tmp_path / "s" / "IM1.dcm")
    f.write(datasets[0], tmp_path / "s" / "IM0.dcm")
    data = bytearray(path.read_bytes())
    at = data.find(b"\x28\x00\x30\x00DS")  # PixelSpacing's VR
    data[at + 4 : at + 6] = b"QQ"
    path.write_bytes(bytes(data))
    study = discover(tmp_path)
    assert [r.stem for r in study.selected[0].slices] == ["IM0"]
    (issue,) = study.failed
    assert issue.path.name == "IM1.dcm" and "Unknown Value Representation 'QQ'" in issue.reason


def test_a_bad_instance_number_does_not_cost_the_slice(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(2)])
    f.raw_value(datasets[0], "InstanceNumber", "IS", b"1A")  # as in pydicom's badVR.dcm
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    study = discover(tmp_path)
    assert [r.stem for r in study.selected[0].slices] == ["IM0", "IM1"] and study.failed == []
    assert study.selected[0].slices[0].instance_number is None


def test_a_slice_from_another_study_or_frame_of_reference_fails_alone(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(4)])
    datasets[1].StudyInstanceUID = generate_uid()
    datasets[2].FrameOfReferenceUID = generate_uid()
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    study = discover(tmp_path)
    assert [r.stem for r in study.selected[0].slices] == ["IM0", "IM3"]
    reasons = {issue.path.name: issue.reason for issue in study.failed}
    assert reasons["IM1.dcm"].startswith(f"StudyInstanceUID {datasets[1].StudyInstanceUID} differs from the rest of its series")
    assert reasons["IM2.dcm"].startswith(f"FrameOfReferenceUID {datasets[2].FrameOfReferenceUID} differs")


def test_conflicting_sop_instance_uids_keep_both_slices_out_of_the_seg_and_a_forged_one_fails(tmp_path: Path) -> None:
    datasets = f.mr_series([_ramp(k) for k in range(4)])
    datasets[1].SOPInstanceUID = datasets[1].file_meta.MediaStorageSOPInstanceUID = datasets[0].SOPInstanceUID
    datasets[3].SOPInstanceUID = datasets[2].SOPInstanceUID  # the file meta still says who it really is
    for k, ds in enumerate(datasets[:3]):
        f.write(ds, tmp_path / "s" / f"IM{k}.dcm")
    datasets[3].save_as(tmp_path / "s" / "IM3.dcm", enforce_file_format=False)  # as saved by a careless editor
    study = discover(tmp_path)
    (series,) = study.selected
    assert [r.stem for r in series.slices] == ["IM0", "IM1", "IM2"]
    assert series.slices[0].seg_excluded == f"SOPInstanceUID is also claimed by {tmp_path / 's' / 'IM1.dcm'} (different content)"
    assert series.slices[1].seg_excluded.endswith("IM0.dcm (different content)") and series.slices[2].seg_excluded is None
    (forged,) = study.failed
    assert forged.path.name == "IM3.dcm" and "differs from the file meta's MediaStorageSOPInstanceUID" in forged.reason


def test_hidden_files_fifos_and_linked_folders_are_listed_with_reasons(tmp_path: Path) -> None:
    import os

    f.write(f.mr_series([_ramp(0)])[0], tmp_path / "s" / "IM0.dcm")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "IM9.dcm").write_bytes(b"x")
    os.mkfifo(tmp_path / "s" / "pipe")
    os.symlink(tmp_path / "s", tmp_path / "again")
    os.symlink(tmp_path / "nowhere.dcm", tmp_path / "s" / "dangling.dcm")
    study = discover(tmp_path)  # must not block on the FIFO nor follow the folder link
    reasons = {issue.path.name: issue.reason for issue in study.skipped}
    assert reasons[".DS_Store"].startswith("hidden file") and reasons["IM9.dcm"].startswith("hidden file")
    assert reasons["pipe"] == "not a regular file (FIFO, socket or device): not read"
    assert reasons["again"] == "symbolic link to a folder: not followed"
    assert reasons["dangling.dcm"].startswith("broken link or vanished file")
    assert study.n_files == 6 and [len(s.slices) for s in study.selected] == [1]


def test_undecodable_file_names_become_safe_stems_and_display_paths(tmp_path: Path) -> None:
    import os

    from edge_runtime.inputs import display_path

    name = os.fsdecode(b"IM\xff\n01.dcm")
    f.write(f.mr_series([_ramp(0)])[0], tmp_path / "s" / name)
    (record,) = discover(tmp_path).selected[0].slices
    assert record.stem == "IM_xff_x0a01"  # ASCII: usable as an output file name everywhere
    assert display_path(record.path).endswith("IM\\xff\\x0a01.dcm")
    display_path(record.path).encode("utf-8")  # no surrogates left


def test_decoding_never_modifies_the_kept_header(tmp_path: Path) -> None:
    f.write(f.mr_series([_ramp(0)])[0], tmp_path / "s" / "IM0.dcm")
    (record,) = discover(tmp_path).selected[0].slices
    before = {e.tag: e.value for e in record.dataset}
    np.testing.assert_array_equal(load_pixels(record), _ramp(0).astype(np.float32))
    np.testing.assert_array_equal(load_pixels(record), _ramp(0).astype(np.float32))
    assert {e.tag: e.value for e in record.dataset} == before and "PixelData" not in record.dataset
    assert not hasattr(record.dataset, "_pixel_array") or record.dataset._pixel_array is None


def test_a_file_replaced_between_discovery_and_decoding_fails_by_name(tmp_path: Path) -> None:
    first, other = f.mr_series([_ramp(0)])[0], f.mr_series([_ramp(1)])[0]
    path = f.write(first, tmp_path / "s" / "IM0.dcm")
    (record,) = discover(tmp_path).selected[0].slices
    f.write(other, path)
    with pytest.raises(SliceDecodeError, match=r"IM0\.dcm: file changed during the run \(SOPInstanceUID"):
        load_pixels(record)
