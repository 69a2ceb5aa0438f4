"""int8 calibration slices: training-split patients only, deterministic, and a default that fits small data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.preprocessing import PreprocessSpec

pytest.importorskip("tf_keras", reason="calibration reads run folders built with the train extra (tf_keras)")

SIZE = 32
SPEC = PreprocessSpec(input_size=SIZE)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    import run_factory

    root = tmp_path_factory.mktemp("run")
    data = run_factory.make_data(root / "data", patients=6)
    return data, run_factory.make_run(root / "unet-tiny", data)


def test_calibration_takes_training_patients_only_deterministically(run_folder):
    from edge_runtime.preprocessing import prepare_slice
    from export.calibration import calibration_slices
    from train.data.mendeley import index_dataset, load_pair
    from train.run_dir import RunDir

    data, run = run_folder
    split = json.loads((run / "split.json").read_text())
    cal = calibration_slices(data, SPEC, 5, run=RunDir(run))
    assert cal.images.shape == (5, SIZE, SIZE, 1) and cal.images.dtype == np.float32
    assert set(cal.patients) <= set(split["train"])
    assert not set(cal.patients) & (set(split["val"]) | set(split["test"]))
    first = next(p for p in index_dataset(data) if p.patient_id in split["train"])
    np.testing.assert_allclose(cal.images[0, ..., 0], prepare_slice(load_pair(first, "T2")[0], SPEC)[0])
    again = calibration_slices(data, SPEC, 5, run=RunDir(run))
    np.testing.assert_array_equal(cal.images, again.images)


def test_calibration_refuses_missing_or_short_data(run_folder, tmp_path):
    from export.calibration import calibration_slices
    from export.formats import ExportInputError
    from train.run_dir import RunDir

    data, run = run_folder
    with pytest.raises(ExportInputError, match="nowhere: calibration data folder not found"):
        calibration_slices(tmp_path / "nowhere", SPEC, 4)
    with pytest.raises(ExportInputError, match=r"asked for 500 calibration slices .* only \d+; pass --calibration-samples"):
        calibration_slices(data, SPEC, 500, run=RunDir(run))
    with pytest.raises(ExportInputError, match="no usable training slices"):
        calibration_slices(tmp_path, SPEC, 4)


def test_the_default_takes_every_training_slice_of_a_small_set_and_says_so(run_folder):
    from export.calibration import DEFAULT_CALIBRATION_SLICES, calibration_slices
    from train.run_dir import RunDir

    data, run = run_folder
    train_patients = json.loads((run / "split.json").read_text())["train"]
    expected = 3 * len(train_patients)  # three disc levels per synthetic patient
    assert expected < DEFAULT_CALIBRATION_SLICES
    cal = calibration_slices(data, SPEC, None, run=RunDir(run))
    assert len(cal.images) == expected and sorted(cal.patients) == sorted(train_patients)
    assert cal.note == (
        f"calibrating int8 on all {expected} training-split slices (the default is 64; the split has fewer)"
    )
    assert calibration_slices(data, SPEC, 5, run=RunDir(run)).note is None  # an explicit number is not a default


def test_a_training_split_below_the_minimum_is_refused(tmp_path):
    import run_factory

    from export.calibration import calibration_slices
    from export.formats import ExportInputError

    data = run_factory.make_data(tmp_path / "data", patients=3)
    train_slices = 3 * len(json.loads((data / "split.json").read_text())["train"])
    assert train_slices < 8
    message = rf"the training split has only {train_slices} slices; int8 calibration needs at least 8"
    with pytest.raises(ExportInputError, match=message):
        calibration_slices(data, SPEC)
