"""`edge-seg export` on a run folder: the run's data gives calibration and held-out validation slices."""

from __future__ import annotations

import json

import pytest
import trained_tiny

from edge_runtime.manifest import load_verified_manifest


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """(data, run): 6 synthetic patients and a run around a trained tiny U-Net (tests/trained_tiny.py)."""
    pytest.importorskip("tf_keras", reason="export needs the train extra (tf_keras)")
    import run_factory

    root = tmp_path_factory.mktemp("run")
    data = run_factory.make_data(root / "data", patients=6)
    return data, run_factory.make_run(root / "unet-tiny", data, model=trained_tiny.trained_unet())


def test_export_command_on_a_run_folder(run_folder, tmp_path):
    from export.exporter import export_command

    _, run = run_folder
    config = json.loads((run / "config.json").read_text())
    results = export_command(run, tmp_path, "tflite-int8,onnx-int8", calibration_samples=4)
    assert [r.path.name for r in results] == ["unet-tiny-tflite-int8.tflite", "unet-tiny-onnx-int8.onnx"]
    manifest = load_verified_manifest(results[0].path)
    assert manifest.provenance["calibration"]["slices"] == 4
    assert "training-split patients" in manifest.provenance["calibration"]["source"]
    assert manifest.provenance["data"] == config["data"] and manifest.provenance["seed"] == 0
    assert manifest.validation["reference"] == "ground-truth" and manifest.validation["held_out"]
    assert "test-split" in manifest.validation["source"]
    baseline = json.loads((run / "metrics.json").read_text())
    assert manifest.baseline_metrics["mean_dice"] == baseline["mean_dice"]
    # validation scores the Keras model at original size on the test slices, like train.evaluate did
    for short, scores in baseline["per_class"].items():
        assert manifest.validation["dice_keras"][short] == pytest.approx(scores["dice"], abs=1e-6)
    assert manifest.macs_per_slice == config["macs_per_slice"]
    summary = json.loads((tmp_path / "unet-tiny-export.json").read_text())
    assert [s["format"] for s in summary] == ["tflite-int8", "onnx-int8"]


def test_export_cli_refuses_unusable_calibration_data(run_folder, tmp_path):
    from typer.testing import CliRunner

    from edge_runtime.cli import app

    _, run = run_folder
    args = ["export", str(run), "--out", str(tmp_path / "o"), "--formats", "tflite-int8", "--calibration-data"]
    result = CliRunner().invoke(app, [*args, str(tmp_path / "missing")])
    assert result.exit_code == 2 and "calibration data folder not found" in result.output
    result = CliRunner().invoke(app, [*args, str(tmp_path)])
    assert result.exit_code == 2 and "no usable training slices" in result.output
    assert not (tmp_path / "o").exists()


def test_export_with_default_calibration_on_a_small_set(run_folder, tmp_path, capsys):
    from export.exporter import export_command

    _, run = run_folder
    train_patients = json.loads((run / "split.json").read_text())["train"]
    (result,) = export_command(run, tmp_path, "tflite-int8")  # no --calibration-samples: the split has fewer than 64
    calibration = load_verified_manifest(result.path).provenance["calibration"]
    assert calibration["slices"] == 3 * len(train_patients) and calibration["patients"] == len(train_patients)
    assert f"calibrating int8 on all {3 * len(train_patients)} training-split slices" in capsys.readouterr().err
