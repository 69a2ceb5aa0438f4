"""Findings of a measured series, the key-image sheet (PNG) and its Secondary Capture (dciodvfy, highdicom)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dicom_factory as f
import numpy as np
import pydicom
import pytest
from dicom_readers import dciodvfy_errors
from PIL import Image

from edge_runtime import key_images, report_outputs
from edge_runtime.findings import series_findings
from edge_runtime.labels import BY_SHORT
from edge_runtime.manifest import Manifest, TensorSpec
from edge_runtime.measure import StenosisThresholds, measure_series
from edge_runtime.research_use import intended_use

SPACING = (0.6875, 0.6875)
TS_COLOUR = BY_SHORT["TS"].color


def _manifest(statement: str = "Research and evaluation only.") -> Manifest:
    from edge_runtime.preprocessing import PreprocessSpec

    return Manifest(
        model_file="m.tflite",
        format="tflite",
        precision="int8",
        sha256="fedcba98" * 8,
        inputs=[TensorSpec("x", [None, 64, 64, 1], "float32")],
        outputs=[TensorSpec("y", [None, 64, 64, 5], "float32")],
        preprocessing=PreprocessSpec(input_size=64),
        name="unet-test",
        variant="tflite-int8",
        provenance={"intended_use": statement},
    )


def _series(n: int = 7) -> tuple[list, list[np.ndarray], list[np.ndarray]]:
    """Slices 1-2 and 4-5 carry a disc (two levels, largest disc on 2 and 4); slice 5 has no sac."""
    images, masks = [], []
    sides = [10, 9, 12, 14, 11, 0, 13]
    for k in range(n):
        images.append(np.random.default_rng(k).integers(100, 3000, (160, 150)).astype(np.uint16))
        mask = np.zeros((160, 150), np.uint8)
        if k in (1, 2, 4, 5):
            mask[10 : 32 if k in (2, 4) else 30, 10:140] = 1
        if sides[k]:
            mask[90 : 90 + sides[k], 60 : 60 + sides[k]] = 3
        masks.append(mask)
    return f.mr_series(images), images, masks


@pytest.fixture()
def measured() -> tuple:
    sources, images, masks = _series()
    stems = [f"IM{k}" for k in range(len(sources))]
    measurement = measure_series(masks, [SPACING] * len(masks), stems, StenosisThresholds())
    found = series_findings("T2", "T2_TSE_TRA", stems, sources, dict(enumerate(masks)), dict(enumerate(images)), measurement)
    return sources, masks, measurement, found


def test_findings_carry_the_areas_and_grades_of_the_measurement(measured: tuple) -> None:
    sources, _, measurement, found = measured
    with_sac = [m for m in measurement.slices if m.pixel_counts["TS"] > 0]
    assert [s.label for s in found.slices] == [m.stem for m in with_sac]  # IM5 has no sac: not reported
    for finding, m in zip(found.slices, with_sac, strict=True):
        assert finding.area_mm2 == m.ts_area == pytest.approx(m.pixel_counts["TS"] * SPACING[0] * SPACING[1])
        assert finding.grade == m.ts_grade
        assert finding.source is sources[m.index]
    assert len(measurement.levels) == 2 and len(found.levels) == 2
    for level, disc in zip(found.levels, measurement.levels, strict=True):
        assert level.min_area_mm2 == disc.min_ts_area
        narrowest = next(m for m in measurement.slices if m.stem == disc.min_ts_stem)
        assert level.grade == narrowest.ts_grade
        assert level.min_slice_uid == sources[narrowest.index].SOPInstanceUID
    assert found.levels[1].slice_uids == (sources[4].SOPInstanceUID,)  # IM5 (no sac) is left out of the level
    assert [n.label for n in found.level_names] == ["level 1 from caudal", "level 2 from caudal"]


def test_one_key_image_per_level_on_its_narrowest_slice(measured: tuple) -> None:
    _, _, measurement, found = measured
    assert [k.slice_label for k in found.keys] == [lv.min_ts_stem for lv in measurement.levels] == ["IM1", "IM4"]
    assert found.keys[0].slices == "IM1-IM2 (2)" and found.keys[0].grade == "absolute"
    assert found.keys[0].disc_area_mm2 == pytest.approx(next(m.ts_area for m in measurement.slices if m.index == 2))


def _count(image: Image.Image, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> int:
    """Pixels within 25 % of `colour` in `box` (anti-aliased text included)."""
    region = np.asarray(image.crop(box)).astype(int)
    return int((np.abs(region - np.asarray(colour)).max(axis=-1) < 64).sum())


def test_sheet_shows_outlines_and_the_research_line(measured: tuple) -> None:
    found = measured[3]
    use = intended_use(_manifest())
    sheet = key_images.key_image_sheet(found.keys, "title", "thresholds", use)
    header = (0, 0, sheet.width, 60)
    assert _count(sheet, key_images._WARN, header) > 20  # the RESEARCH USE ONLY line, in its colour
    top = 3 * 18 + 10
    tile = (8, top, 8 + key_images.TILE, top + key_images.TILE)
    assert _count(sheet, TS_COLOUR, tile) > 50
    ys, xs = np.nonzero(np.all(np.asarray(sheet.crop(tile)) == TS_COLOUR, axis=-1))
    assert abs(xs.mean() - key_images.TILE / 2) < 20 and abs(ys.mean() - key_images.TILE / 2) < 20  # sac centred


def test_clinical_model_sheet_has_no_research_line(measured: tuple) -> None:
    use = intended_use(_manifest("cleared for clinical use"))
    sheet = key_images.key_image_sheet(measured[3].keys, "title", "thresholds", use)
    assert _count(sheet, key_images._WARN, (0, 0, sheet.width, 60)) == 0


def test_sheet_inputs_are_checked(measured: tuple) -> None:
    use = intended_use(_manifest())
    with pytest.raises(ValueError, match="at least one disc level"):
        key_images.key_image_sheet([], "t", "x", use)
    bad = replace(measured[3].keys[0], grey=np.zeros((5, 5), np.float32))
    with pytest.raises(ValueError, match="grey must be 2-D uint8, got float32"):
        key_images.key_image_sheet([bad], "t", "x", use)


def test_secondary_capture_holds_the_sheet_and_is_valid(measured: tuple, tmp_path: Path) -> None:
    sources, _, _, found = measured
    use = intended_use(_manifest())
    sheet = key_images.key_image_sheet(found.keys, "title", "thresholds", use)
    path = key_images.write_secondary_capture(tmp_path / "sc.dcm", sheet, sources[0], use)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    np.testing.assert_array_equal(ds.pixel_array, np.asarray(sheet))
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID and ds.PatientID == sources[0].PatientID
    assert ds.ContentQualification == "RESEARCH" and ds.SeriesDescription.startswith("RESEARCH USE ONLY")
    assert ds.ImageComments.startswith("RESEARCH USE ONLY") and ds.BurnedInAnnotation == "NO"
    assert list(ds.PatientOrientation) == ["L", "P"]


def test_patient_orientation_follows_the_source_cosines() -> None:
    flipped = f.mr_series([np.zeros((8, 8), np.uint16)], orientation=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0))[0]
    assert key_images.patient_orientation(flipped) == ("R", "A")


def test_summary_paths_per_study() -> None:
    one = report_outputs.summary_paths(Path("out"), ["s1", "s1"])
    assert one == {"s1": [Path("out/key_images.png"), Path("out/key_images.dcm")]}
    two = report_outputs.summary_paths(Path("out"), ["s1", "s2"], dicom=False)
    assert two == {"s1": [Path("out/key_images_1.png")], "s2": [Path("out/key_images_2.png")]}


def test_study_sheet_png_and_its_secondary_capture_hold_the_same_pixels(measured: tuple, tmp_path: Path) -> None:
    found = measured[3]
    paths = [tmp_path / "key_images.png", tmp_path / "key_images.dcm"]
    manifest = _manifest()
    sheet, reference = report_outputs.study_sheet([found], StenosisThresholds(), intended_use(manifest), manifest)
    assert reference is found.reference is not None
    key_images.save_png(sheet, paths[0])
    key_images.write_secondary_capture(paths[1], sheet, reference, intended_use(manifest))
    with Image.open(paths[0]) as png:
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), pydicom.dcmread(paths[1]).pixel_array)


def test_no_sac_means_no_sr_and_a_note(tmp_path: Path) -> None:
    sources, images, masks = _series(3)
    masks = [np.where(m == 3, 0, m).astype(np.uint8) for m in masks]
    stems = ["a", "b", "c"]
    measurement = measure_series(masks, [SPACING] * 3, stems)
    found = series_findings("T2", "", stems, sources, dict(enumerate(masks)), dict(enumerate(images)), measurement)
    manifest = _manifest()
    assert (
        report_outputs.write_series_sr(tmp_path / "sr.dcm", found, manifest, StenosisThresholds(), intended_use(manifest)) is None
    )
    assert any("no slice with a thecal sac" in n for n in found.notes) and not (tmp_path / "sr.dcm").exists()


def test_without_highdicom_the_sr_is_a_note_and_the_sheet_png_only(monkeypatch: pytest.MonkeyPatch, measured: tuple) -> None:
    from types import SimpleNamespace

    monkeypatch.setattr(report_outputs, "highdicom_missing", lambda: report_outputs.SR_INSTALL_HINT)
    series = SimpleNamespace(name="T2", kind="dicom", slices=[SimpleNamespace(kind="dicom", dataset=measured[0][0])])
    assert report_outputs.planned_summaries(Path("out"), [series]) == [Path("out/key_images.png")]
    outcome = SimpleNamespace(notes=[], failed=[], measurement=measured[2], outputs={}, findings=None)
    result = SimpleNamespace(
        series=series, outcome=outcome, masks={0: None}, images={}, manifest=_manifest(), folder=Path("out/T2")
    )
    report_outputs.SrWriter().write(result, outputs=None)
    assert outcome.notes == ["DICOM SR and key-image DICOM need highdicom: pip install 'edge-seg[dicom-seg]'"]
    assert outcome.findings is None and not outcome.failed
