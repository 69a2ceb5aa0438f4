"""Areas from PixelSpacing, thecal-sac stenosis grades, AP diameter and disc levels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_runtime.dicom_io import discover
from edge_runtime.labels import mendeley_to_ids
from edge_runtime.measure import (
    StenosisGrade,
    StenosisThresholds,
    ap_diameter_mm,
    find_disc_levels,
    grade_stenosis,
    measure_series,
    measure_slice,
)


def _mask(ivd: int = 0, pe: int = 0, ts: int = 0, aap: int = 0, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    """A mask with exactly the given pixel counts per class, laid out row-major."""
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    start = 0
    for class_id, count in ((1, ivd), (2, pe), (3, ts), (4, aap)):
        flat[start : start + count] = class_id
        start += count
    return flat.reshape(shape)


def test_areas_are_pixel_counts_times_row_and_column_spacing() -> None:
    m = measure_slice(_mask(ivd=100, pe=37, ts=250, aap=3), (0.5, 0.8), index=4, stem="IM5")
    assert m.unit == "mm2"
    assert m.pixel_counts == {"IVD": 100, "PE": 37, "TS": 250, "AAP": 3}
    assert m.areas == pytest.approx({"IVD": 40.0, "PE": 14.8, "TS": 100.0, "AAP": 1.2})
    assert m.ts_area == pytest.approx(100.0)
    assert m.ts_grade == "normal"  # exactly 100 mm2 is normal
    assert (m.index, m.stem) == (4, "IM5")


@pytest.mark.parametrize(
    ("area", "grade"),
    [(150.0, "normal"), (100.0, "normal"), (99.99, "relative"), (75.0, "relative"), (74.99, "absolute"), (0.5, "absolute")],
)
def test_stenosis_grade_boundaries(area: float, grade: str) -> None:
    assert grade_stenosis(area) == StenosisGrade(grade)


def test_thresholds_are_configurable_and_validated() -> None:
    strict = StenosisThresholds(relative_mm2=120.0, absolute_mm2=70.0)
    assert grade_stenosis(110.0, strict) == StenosisGrade.RELATIVE
    assert grade_stenosis(72.0, strict) == StenosisGrade.RELATIVE
    assert grade_stenosis(69.0, strict) == StenosisGrade.ABSOLUTE
    with pytest.raises(ValueError, match="absolute"):
        StenosisThresholds(relative_mm2=70.0, absolute_mm2=75.0)
    m = measure_slice(_mask(ts=400), (0.5, 0.5), thresholds=strict)  # 100 mm2
    assert m.ts_grade == "relative"


def test_missing_pixel_spacing_gives_pixel_areas_and_no_grade() -> None:
    m = measure_slice(_mask(ivd=10, ts=30), None)
    assert m.unit == "px"
    assert m.areas["TS"] == 30.0 and m.areas["IVD"] == 10.0
    assert m.ts_grade is None and m.ts_ap_diameter_mm is None


def test_no_thecal_sac_means_no_grade() -> None:
    assert measure_slice(_mask(ivd=50), (1.0, 1.0)).ts_grade is None


def test_ap_diameter_is_the_longest_ts_run_along_the_ap_axis() -> None:
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[10:30, 20:25] = 3  # 20 rows tall
    mask[40:45, 30:34] = 3  # a second, shorter blob in other columns
    assert ap_diameter_mm(mask, (0.5, 0.7)) == pytest.approx(20 * 0.5)
    assert ap_diameter_mm(mask, (0.5, 0.7), ap_axis=1) == pytest.approx(5 * 0.7)
    assert ap_diameter_mm(np.zeros((4, 4), np.uint8), (1.0, 1.0)) is None


def test_disc_levels_are_runs_of_ivd_slices_represented_by_the_largest_disc() -> None:
    ivd = [0, 50, 300, 200, 0, 0, 400, 30, 0]  # 30 < 10% of 400: stray pixels, not a disc
    ts = [120, 110, 90, 95, 130, 125, 70, 80, 140]
    masks = [_mask(ivd=i, ts=t) for i, t in zip(ivd, ts, strict=True)]
    series = measure_series(masks, [(1.0, 1.0)] * len(masks), [f"s{k}" for k in range(len(masks))])
    assert [(lv.first_index, lv.last_index, lv.disc_index) for lv in series.levels] == [(1, 3, 2), (6, 6, 6)]
    first, second = series.levels
    assert (first.number, first.disc_stem, first.ivd_area, first.ts_area, first.ts_grade) == (1, "s2", 300.0, 90.0, "relative")
    assert (first.min_ts_area, first.min_ts_stem) == (90.0, "s2")
    assert (second.ts_area, second.ts_grade) == (70.0, "absolute")
    assert series.worst_grade == "absolute"


def test_failed_slices_are_left_out_and_break_level_runs() -> None:
    masks = [_mask(ivd=100, ts=200), None, _mask(ivd=120, ts=200)]
    series = measure_series(masks, [(1.0, 1.0)] * 3, ["a", "b", "c"])
    assert [m.index for m in series.slices] == [0, 2]
    assert [lv.disc_index for lv in series.levels] == [0, 2]


def test_mixed_units_are_reported_as_mixed() -> None:
    series = measure_series([_mask(ts=4), _mask(ts=4)], [(1.0, 1.0), None], ["a", "b"])
    assert series.unit == "mixed"
    assert [m.unit for m in series.slices] == ["mm2", "px"]


def test_out_of_range_class_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="class ids"):
        measure_slice(np.full((4, 4), 7, np.uint8), (1.0, 1.0))


def test_no_disc_anywhere_means_no_levels() -> None:
    slices = [measure_slice(_mask(ts=10), (1.0, 1.0), index=k) for k in range(3)]
    assert find_disc_levels(slices) == []
    assert find_disc_levels([]) == []



def test_a_disc_level_never_spans_two_orientation_blocks() -> None:
    masks = [_mask(ivd=50), _mask(ivd=80), _mask(ivd=90), _mask(ivd=60)]  # one IVD run by index...
    result = measure_series(masks, [(1.0, 1.0)] * 4, ["a", "b", "c", "d"], blocks=[0, 0, 1, 1])  # ...two blocks
    assert [(lv.first_index, lv.last_index, lv.disc_stem, lv.block) for lv in result.levels] == [(0, 1, "b", 0), (2, 3, "c", 1)]
    assert [s.block for s in result.slices] == [0, 0, 1, 1]
    single = measure_series(masks, [(1.0, 1.0)] * 4, ["a", "b", "c", "d"])
    assert [(lv.first_index, lv.last_index) for lv in single.levels] == [(0, 3)]


def test_each_slice_uses_its_own_anterior_posterior_axis() -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[2:8, 4:6] = 3  # TS 6 rows tall, 2 columns wide
    result = measure_series([mask, mask], [(0.5, 1.0)] * 2, ["rows", "cols"], ap_axis=[0, 1])
    assert [s.ts_ap_diameter_mm for s in result.slices] == [3.0, 2.0]  # 6 px x 0.5 mm; 2 px x 1.0 mm


# --------------------------------------------------------------------------- against the phantom's own truth


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.data.synth import synthesize  # numpy/pydicom/pillow only: no TensorFlow

    out = tmp_path_factory.mktemp("phantom")
    synthesize(out, patients=1, seed=3, dicom=True)
    return out


def test_truth_masks_measure_to_the_areas_in_truth_csv(phantom: Path) -> None:
    rows = list(csv.DictReader((phantom / "truth.csv").open()))
    assert len(rows) == 3
    for row in rows:
        mask = mendeley_to_ids(np.asarray(Image.open(phantom / row["label_png"])))
        spacing = float(row["pixel_spacing_mm"])
        m = measure_slice(mask, (spacing, spacing))
        for short in ("IVD", "PE", "TS", "AAP"):
            assert m.pixel_counts[short] == int(row[f"px_{short}"])
            assert m.areas[short] == pytest.approx(float(row[f"area_mm2_{short}"]), rel=1e-9)
        assert m.ts_area == pytest.approx(float(row["ts_area_mm2"]), rel=1e-9)
        assert m.ts_grade == grade_stenosis(float(row["ts_area_mm2"])).value


def test_phantom_dicom_study_gives_three_disc_levels_caudal_first(phantom: Path) -> None:
    (patient,) = (phantom / "01_MRI_Data").iterdir()
    study = discover(patient)
    (series,) = study.selected
    assert series.ordering.startswith("slice position") and 12 <= len(series.slices) <= 20
    assert all("_labels" in issue.reason or "label image" in issue.reason for issue in study.skipped)
    labels = series.folder.with_name(series.folder.name + "_labels")
    masks = [mendeley_to_ids(np.asarray(Image.open(labels / f"{r.stem}.png"))) for r in series.slices]
    result = measure_series(masks, [r.pixel_spacing for r in series.slices], [r.stem for r in series.slices])
    truth = {int(r["disc"]): r for r in csv.DictReader((phantom / "truth.csv").open())}
    assert len(result.levels) == 3
    for level, disc in zip(result.levels, (5, 4, 3), strict=True):  # D5 (L5-S1) is the most caudal
        assert level.ivd_area == pytest.approx(float(truth[disc]["area_mm2_IVD"]), rel=1e-9)
        assert level.ts_area == pytest.approx(float(truth[disc]["ts_area_mm2"]), rel=1e-9)
