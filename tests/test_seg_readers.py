"""The SEG as readers nobody here wrote see it: dciodvfy finds no error, dcmqi's label volume equals the masks."""

from __future__ import annotations

from pathlib import Path

import dicom_factory as f
import numpy as np
import pytest
from angled_study import angled_series
from dicom_readers import dciodvfy_errors, mhd_geometry, seg_label_volume

from edge_runtime import dicom_seg
from edge_runtime.manifest import Manifest, TensorSpec
from edge_runtime.preprocessing import PreprocessSpec

pytest.importorskip("highdicom")


def _manifest() -> Manifest:
    return Manifest(
        model_file="m.tflite",
        format="tflite",
        precision="int8",
        sha256="0" * 64,
        inputs=[TensorSpec("x", [None, 64, 64, 1], "float32")],
        outputs=[TensorSpec("y", [None, 64, 64, 5], "float32")],
        preprocessing=PreprocessSpec(input_size=64),
        name="unet-test",
    )


def _masks(n: int, shape: tuple[int, int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        mask = np.zeros(shape, np.uint8)
        for cls in (1, 2, 3, 4):
            r, c = rng.integers(0, shape[0] - 8), rng.integers(0, shape[1] - 8)
            mask[r : r + rng.integers(3, 8), c : c + rng.integers(3, 8)] = cls
        masks.append(mask)
    return masks


def test_dcmqi_label_volume_equals_the_masks_voxel_for_voxel(tmp_path: Path) -> None:
    images = [np.zeros((36, 40), np.uint16) for _ in range(5)]
    sources = f.mr_series(images)  # z increases with the slice index
    masks = _masks(5, (36, 40), seed=3)
    path = dicom_seg.write_dicom_seg(tmp_path / "seg.dcm", sources, masks, _manifest())
    assert dciodvfy_errors(path) == []
    volume, header = seg_label_volume(path, tmp_path)
    np.testing.assert_array_equal(volume, np.stack(masks))
    geometry = mhd_geometry(header)
    assert geometry["ElementSpacing"] == [0.6875, 0.6875, 4.0]
    assert geometry["Offset"][2] == pytest.approx(float(sources[0].ImagePositionPatient[2]))


def test_each_angled_block_seg_reads_back_as_its_masks(tmp_path: Path) -> None:
    images = [[np.zeros((30, 32), np.uint16) for _ in range(3)] for _ in range(3)]
    blocks = angled_series(images)
    for b, block in enumerate(blocks):
        masks = _masks(3, (30, 32), seed=10 + b)
        path = dicom_seg.write_dicom_seg(tmp_path / f"block{b}.dcm", block, masks, _manifest())
        assert dciodvfy_errors(path) == []
        volume, _ = seg_label_volume(path, tmp_path)
        np.testing.assert_array_equal(volume, np.stack(masks))


def test_research_model_marks_the_seg_and_a_clinical_one_does_not(tmp_path: Path) -> None:
    from dataclasses import replace

    import pydicom

    sources = f.mr_series([np.zeros((20, 20), np.uint16) for _ in range(2)])
    masks = _masks(2, (20, 20), seed=1)
    research = replace(_manifest(), provenance={"intended_use": "Research and evaluation only."})
    ds = pydicom.dcmread(
        dicom_seg.write_dicom_seg(tmp_path / "r.dcm", sources, masks, research, series_description="edge-seg T2")
    )
    assert ds.ContentQualification == "RESEARCH"
    assert ds.SeriesDescription == "RESEARCH USE ONLY: edge-seg T2"
    assert ds.ContentDescription.startswith("RESEARCH USE ONLY: ")
    clinical = replace(_manifest(), provenance={"intended_use": "Cleared for clinical use."})
    ds = pydicom.dcmread(
        dicom_seg.write_dicom_seg(tmp_path / "c.dcm", sources, masks, clinical, series_description="edge-seg T2")
    )
    assert ds.ContentQualification == "PRODUCT" and ds.SeriesDescription == "edge-seg T2"
