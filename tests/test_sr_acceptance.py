"""Issue 13 acceptance: `edge-seg run` on the example study and on a 3-block angled study.

SR, SEG and key-image DICOM are written with 0 dciodvfy errors; dcmqi's tid1500reader finds the
areas of report.json (to 0.1 mm2) and the same grades; segimage2itkimage's label volumes equal
the masks; highdicom reads SR and SEG back. The bundled model is used as shipped: every expected
number comes from this run's report.json and masks, never from constants.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from angled_study import angled_series
from dicom_readers import dciodvfy_errors, seg_label_volume, tid1500_json
from PIL import Image

from edge_runtime.labels import mendeley_to_ids
from edge_runtime.run import run_command

hd = pytest.importorskip("highdicom")
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "study"
SEVERITY = {"17621005": "normal", "6736007": "relative", "24484000": "absolute"}


def _run(input_path: Path, output: Path) -> dict:
    assert run_command(input=input_path, output=output, threads=1, backend="litert") == 0
    return json.loads((output / "report.json").read_text())


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("example") / "out"
    return out, _run(EXAMPLE, out)


@pytest.fixture(scope="module")
def angled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The example's 12 slices re-acquired as 3 blocks of 4 at -12, 0 and +14 degrees, one SeriesInstanceUID."""
    root = tmp_path_factory.mktemp("angled")
    files = sorted(EXAMPLE.glob("*.ima"))
    pixels = [pydicom.dcmread(p).pixel_array for p in files]
    by_z = sorted(range(len(files)), key=lambda i: float(pydicom.dcmread(files[i]).ImagePositionPatient[2]))
    blocks = angled_series([[pixels[i] for i in by_z[4 * b : 4 * b + 4]] for b in range(3)], block_z=(0.0, 30.0, 60.0))
    (root / "in").mkdir()
    for b, block in enumerate(blocks):
        for k, ds in enumerate(block):
            ds.save_as(root / "in" / f"B{b}_{k:02d}.dcm", enforce_file_format=True)
    return root / "out", _run(root / "in", root / "out")


def _check_sr_against_report(sr_path: Path, series: dict, workdir: Path) -> dict:
    data = tid1500_json(sr_path, workdir)
    groups = data["Measurements"]
    with_sac = [e for e in series["slices"] if e["status"] == "ok" and e["pixel_counts"]["TS"] > 0]
    levels = series["levels"]
    assert len(groups) == len(with_sac) + len(levels)
    by_stem = {e["stem"]: e for e in series["slices"]}
    expected = [(e["ts_area"], e["ts_grade"], e["stem"]) for e in with_sac]
    expected += [(lv["min_ts_area"], by_stem[lv["min_ts_stem"]]["ts_grade"], None) for lv in levels]
    for group, (area, grade, stem) in zip(groups, expected, strict=True):
        (item,) = group["measurementItems"]
        assert float(item["value"]) == pytest.approx(area, abs=0.1)
        severity = [
            q["conceptValue"]["CodeValue"]
            for q in group["qualitativeEvaluations"]
            if q["conceptCode"]["CodeValue"] == "246112005"
        ]
        assert [SEVERITY[v] for v in severity] == [grade]
        if stem is not None:
            assert f"slice {stem}" in group["TrackingIdentifier"]
    for group in groups[len(with_sac) :]:
        assert group["ReferencedSegment"] == 3 and "from caudal" in group["TrackingIdentifier"]
    return data


def _check_seg_volume(seg_path: Path, stems: list[str], labels: Path, workdir: Path) -> None:
    """dcmqi's merged label volume equals the label PNGs of the slices this SEG holds, in anatomical order."""
    volume, _ = seg_label_volume(seg_path, workdir)
    masks = []
    for stem in stems:
        with Image.open(labels / f"{stem}.png") as png:
            masks.append(mendeley_to_ids(np.asarray(png)))
    np.testing.assert_array_equal(volume, np.stack(masks))


def test_example_study_objects_are_valid_dicom(example: tuple[Path, dict]) -> None:
    out, report = example
    (series,) = report["series"]
    name = series["name"]
    for path in (out / name / f"{name}_sr.dcm", out / name / f"{name}_seg.dcm", out / "key_images.dcm"):
        assert dciodvfy_errors(path) == [], path


def test_example_study_sr_equals_report_json(example: tuple[Path, dict], tmp_path: Path) -> None:
    out, report = example
    (series,) = report["series"]
    name = series["name"]
    data = _check_sr_against_report(out / name / f"{name}_sr.dcm", series, tmp_path)
    seg = pydicom.dcmread(out / name / f"{name}_seg.dcm", stop_before_pixels=True)
    assert data["compositeContext"] == [seg.SOPInstanceUID]
    sr = hd.sr.srread(out / name / f"{name}_sr.dcm")
    assert len(sr.content.get_planar_roi_measurement_groups()) == sum(
        1 for e in series["slices"] if e.get("pixel_counts", {}).get("TS")
    )
    assert len(sr.content.get_volumetric_roi_measurement_groups()) == len(series["levels"])


def test_example_study_seg_reads_back_as_the_masks(example: tuple[Path, dict], tmp_path: Path) -> None:
    out, report = example
    (series,) = report["series"]
    name = series["name"]
    stems = [e["stem"] for e in series["slices"]]
    _check_seg_volume(out / name / f"{name}_seg.dcm", stems, out / name / "labels", tmp_path)
    seg = hd.seg.segread(out / name / f"{name}_seg.dcm")
    npy = np.load(out / name / f"{name}_labels.npy")
    for stem, mask in zip(series["outputs"]["npy_stems"], npy, strict=True):
        uid = next(e["sop_instance_uid"] for e in series["slices"] if e["stem"] == stem)
        decoded = seg.get_pixels_by_source_instance([uid], combine_segments=True)[0]
        np.testing.assert_array_equal(decoded, mask)


def test_example_study_summary_is_written_and_marked(example: tuple[Path, dict]) -> None:
    out, report = example
    summary = json.loads((out / "summary.json").read_text())
    assert {"key_images.png", "key_images.dcm"} <= {Path(p).name for p in summary["files"]}
    sc = pydicom.dcmread(out / "key_images.dcm")
    assert sc.ContentQualification == "RESEARCH"
    assert sc.StudyInstanceUID == pydicom.dcmread(EXAMPLE / "IM_0001.ima", stop_before_pixels=True).StudyInstanceUID
    seg = pydicom.dcmread(out / report["series"][0]["name"] / f"{report['series'][0]['name']}_seg.dcm", stop_before_pixels=True)
    assert seg.ContentQualification == "RESEARCH" and seg.SeriesDescription.startswith("RESEARCH USE ONLY")
    assert sc.StudyInstanceUID == seg.StudyInstanceUID


def test_angled_study_one_seg_per_block_sr_equals_report(angled: tuple[Path, dict], tmp_path: Path) -> None:
    out, report = angled
    (series,) = report["series"]
    name = series["name"]
    seg_files = series["outputs"]["seg_files"]
    assert len(seg_files) == 3
    sr_path = out / name / f"{name}_sr.dcm"
    for path in [sr_path, out / "key_images.dcm", *(Path(g["file"]) for g in seg_files)]:
        assert dciodvfy_errors(path) == [], path
    data = _check_sr_against_report(sr_path, series, tmp_path)
    seg_uids = {pydicom.dcmread(g["file"], stop_before_pixels=True).SOPInstanceUID for g in seg_files}
    assert set(data["compositeContext"]) <= seg_uids
    level_groups = data["Measurements"][-len(series["levels"]) :]
    assert {g["segmentationSOPInstanceUID"] for g in level_groups} <= seg_uids
    for group in seg_files:
        _check_seg_volume(Path(group["file"]), group["stems"], out / name / "labels", tmp_path)
