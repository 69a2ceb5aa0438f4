"""DICOM SEG output: re-read with highdicom and pydicom, frames decode back to the masks, codes and references."""

from __future__ import annotations

from pathlib import Path

import dicom_factory as f
import numpy as np
import pydicom
import pytest

from edge_runtime import dicom_seg
from edge_runtime.dicom_io import discover, load_pixels
from edge_runtime.manifest import Manifest, TensorSpec
from edge_runtime.preprocessing import PreprocessSpec

hd = pytest.importorskip("highdicom")

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _manifest() -> Manifest:
    return Manifest(
        model_file="unet-int8.tflite",
        format="tflite",
        precision="int8",
        sha256="0123456789abcdef" * 4,
        inputs=[TensorSpec("input", [None, 64, 64, 1], "int8", 0.0039, -128)],
        outputs=[TensorSpec("scores", [None, 64, 64, 5], "int8", 0.0039, -128)],
        preprocessing=PreprocessSpec(input_size=64),
        name="unet-test",
        variant="tflite-int8",
    )


def _masks(n: int, shape: tuple[int, int]) -> list[np.ndarray]:
    masks = []
    for k in range(n):
        mask = np.zeros(shape, dtype=np.uint8)
        if k == 0:
            masks.append(mask)  # an empty slice: no frames, must still decode as background
            continue
        mask[2 : 10 + k, 3:20] = 1
        mask[12:18, 8 : 12 + k] = 3
        mask[20:30, 4:26] = 2
        mask[10 + k : 12, 5:15] = 4
        masks.append(mask)
    return masks


@pytest.fixture()
def written(tmp_path: Path) -> tuple[Path, list, list[np.ndarray]]:
    images = [np.random.default_rng(k).integers(0, 4000, (32, 30)).astype(np.uint16) for k in range(4)]
    for k, ds in enumerate(f.mr_series(images)):
        f.write(ds, tmp_path / "in" / "T2" / f"IM{k}.ima")
    (series,) = discover(tmp_path / "in").selected
    for record in series.slices:
        load_pixels(record)  # as in a run: decoded from a fresh read, the kept header untouched
    masks = _masks(len(series.slices), (32, 30))
    path = dicom_seg.write_dicom_seg(tmp_path / "out" / "T2_seg.dcm", [r.dataset for r in series.slices], masks, _manifest())
    return path, series.slices, masks


def test_seg_frames_decode_back_to_the_masks(written) -> None:
    path, slices, masks = written
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == SEG_STORAGE
    assert seg.SegmentationType == "BINARY"
    assert list(seg.get_segment_numbers()) == [1, 2, 3, 4]
    for record, mask in zip(slices, masks, strict=True):
        decoded = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[record.sop_instance_uid],
            combine_segments=True,
            assert_missing_frames_are_empty=True,
        )
        np.testing.assert_array_equal(decoded[0], mask)


def test_seg_references_every_source_instance_and_study(written) -> None:
    path, slices, _ = written
    ds = pydicom.dcmread(path)
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in ds.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {r.sop_instance_uid for r in slices}
    assert ds.StudyInstanceUID == slices[0].dataset.StudyInstanceUID
    assert ds.FrameOfReferenceUID == slices[0].dataset.FrameOfReferenceUID
    # every slice gets a frame per segment, empty or not: viewers that map frames by index never shift
    assert int(ds.NumberOfFrames) == len(slices) * 4 == 16
    by_frame = [
        (item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
         int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber))
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    assert sorted(by_frame) == sorted((r.sop_instance_uid, k) for r in slices for k in (1, 2, 3, 4))


def test_segments_carry_coded_anatomy_labels_and_algorithm(written) -> None:
    ds = pydicom.dcmread(written[0])
    by_label = {item.SegmentLabel: item for item in ds.SegmentSequence}
    assert list(by_label) == ["IVD", "PE", "TS", "AAP"]
    codes = {label: item.SegmentedPropertyTypeCodeSequence[0] for label, item in by_label.items()}
    assert (codes["IVD"].CodeValue, codes["IVD"].CodingSchemeDesignator) == ("360499006", "SCT")
    assert codes["PE"].CodeValue == "40265002"
    assert codes["TS"].CodeValue == "37554007"
    assert codes["AAP"].CodeValue == "61853006"  # vertebral canal (edge_runtime.codes), not the category code
    for item in ds.SegmentSequence:
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "unet-test"
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "unet-test"
        assert algorithm.AlgorithmVersion == "tflite-int8"
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert by_label["TS"].SegmentDescription == "thecal sac"


def test_mismatched_sources_and_masks_are_refused(tmp_path: Path, written) -> None:
    _, slices, masks = written
    with pytest.raises(ValueError, match="one mask per source image"):
        dicom_seg.write_dicom_seg(tmp_path / "x.dcm", [r.dataset for r in slices], masks[:-1], _manifest())


def test_missing_highdicom_gives_a_one_line_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dicom_seg.seg_unavailable_reason() is None
    monkeypatch.setattr(dicom_seg.importlib.util, "find_spec", lambda name: None)
    hint = dicom_seg.seg_unavailable_reason()
    assert hint is not None and "pip install 'edge-seg[dicom-seg]'" in hint and "\n" not in hint


# --------------------------------------------------------------------------- one series -> one SEG per orientation block


def _dciodvfy_errors(path: Path) -> list[str]:
    import shutil
    import subprocess

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy is not installed (Debian package dicom3tools: apt-get install -y dicom3tools)")
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def _series_segs(tmp_path: Path, datasets: list, masks_by_uid: dict[str, np.ndarray]) -> tuple[object, dicom_seg.SeriesSeg]:
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "in" / "T2" / f"IM{k:02d}.dcm")
    (series,) = discover(tmp_path / "in").selected
    masks = {i: masks_by_uid[r.sop_instance_uid] for i, r in enumerate(series.slices)}
    folder = tmp_path / "out"
    folder.mkdir()
    orientations = {b.index: b.orientation for b in series.blocks}
    return series, dicom_seg.write_series_segs(folder, "T2", series.slices, orientations, masks, _manifest(), "edge-seg T2")


def test_each_orientation_block_gets_a_valid_seg_and_rounding_jitter_shares_one(tmp_path: Path) -> None:
    images = [np.random.default_rng(k).integers(0, 4000, (32, 30)).astype(np.uint16) for k in range(6)]
    blocks = f.angled_blocks(f.mr_series(images, thickness=10.0), angles=(-10.0, 15.0), spacing=4.0)
    jittered = [float(v) for v in blocks[1][1].ImageOrientationPatient]
    jittered[4] += 3e-5  # a scanner's rounding: same block, not the exact value highdicom compares
    blocks[1][1].ImageOrientationPatient = [f"{v:.6f}" for v in jittered]
    datasets = [ds for block in blocks for ds in block]
    masks = dict(zip((ds.SOPInstanceUID for ds in datasets), _masks(6, (32, 30)), strict=True))
    series, result = _series_segs(tmp_path, datasets, masks)
    assert [p.name for p in result.files] == ["T2_block1_seg.dcm", "T2_block2_seg.dcm"] and result.left_out == {}
    for block, path in zip(series.blocks, result.files, strict=True):
        assert _dciodvfy_errors(path) == []
        seg = hd.seg.segread(path)
        shared = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
        assert [float(v) for v in shared] == pytest.approx(block.orientation, abs=1e-9)
        for i in block.slice_indices:
            uid = series.slices[i].sop_instance_uid
            decoded = seg.get_pixels_by_source_instance([uid], combine_segments=True, assert_missing_frames_are_empty=True)
            np.testing.assert_array_equal(decoded[0], masks[uid])
    assert len({pydicom.dcmread(p).SeriesInstanceUID for p in result.files}) == 1  # one SEG series, one instance per block
    assert [int(pydicom.dcmread(p).InstanceNumber) for p in result.files] == [1, 2]


def test_a_slice_a_seg_cannot_reference_is_left_out_with_its_reason_and_the_rest_stay(tmp_path: Path) -> None:
    datasets = f.mr_series([np.zeros((16, 16), np.uint16) for _ in range(3)])
    del datasets[1].PixelSpacing
    masks = dict(zip((ds.SOPInstanceUID for ds in datasets), _masks(3, (16, 16)), strict=True))
    _, result = _series_segs(tmp_path, datasets, masks)
    assert result.left_out == {1: "no PixelSpacing in its header"}
    (path,) = result.files
    seg = pydicom.dcmread(path)
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == {datasets[0].SOPInstanceUID, datasets[2].SOPInstanceUID}


def test_repeated_positions_go_to_a_second_seg_instead_of_breaking_the_first(tmp_path: Path) -> None:
    datasets = f.mr_series([np.zeros((16, 16), np.uint16) for _ in range(3)])
    datasets[2].ImagePositionPatient = datasets[0].ImagePositionPatient  # a repeated acquisition
    masks = dict(zip((ds.SOPInstanceUID for ds in datasets), _masks(3, (16, 16)), strict=True))
    _, result = _series_segs(tmp_path, datasets, masks)
    assert result.left_out == {} and [g["n_slices"] for g in result.groups] == [2, 1]
    for path in result.files:
        assert _dciodvfy_errors(path) == []


def test_a_slice_highdicom_refuses_costs_only_that_slice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = f.mr_series([np.zeros((16, 16), np.uint16) for _ in range(4)])
    doomed = datasets[2].SOPInstanceUID
    real_build = dicom_seg.build_segmentation

    def refuse_one(sources, *args, **kwargs):  # injected fault: the writer rejects one source's header
        if any(ds.SOPInstanceUID == doomed for ds in sources):
            raise ValueError("Source images must have a shared orientation.")
        return real_build(sources, *args, **kwargs)

    monkeypatch.setattr(dicom_seg, "build_segmentation", refuse_one)
    masks = dict(zip((ds.SOPInstanceUID for ds in datasets), _masks(4, (16, 16)), strict=True))
    series, result = _series_segs(tmp_path, datasets, masks)
    (index,) = [i for i, r in enumerate(series.slices) if r.sop_instance_uid == doomed]
    reason = "refused by the DICOM SEG writer (ValueError: Source images must have a shared orientation.)"
    assert result.left_out == {index: reason}
    assert result.groups[0]["n_slices"] == 3 and len(result.files) == 1


def test_sources_a_valid_seg_cannot_copy_are_left_out_with_the_reason(tmp_path: Path) -> None:
    datasets = f.mr_series([np.zeros((16, 16), np.uint16) for _ in range(2)])
    for ds in datasets:  # as in pydicom's dicomdirtests files: dciodvfy rejects the source and any SEG of it
        ds.FrameOfReferenceUID = ds.StudyInstanceUID
    masks = dict(zip((ds.SOPInstanceUID for ds in datasets), _masks(2, (16, 16)), strict=True))
    _, result = _series_segs(tmp_path, datasets, masks)
    reason = f"its StudyInstanceUID and FrameOfReferenceUID are the same UID ({datasets[0].StudyInstanceUID})"
    assert result.files == [] and result.left_out == {0: reason, 1: reason}
