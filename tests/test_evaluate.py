"""`edge-seg evaluate` and evaluate_predictor: numbers equal an independent recomputation."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from band_model import expected_mask, write_band_model
from banded_data import SPLIT, make_banded
from PIL import Image
from typer.testing import CliRunner

from edge_runtime.cli import app
from edge_runtime.labels import CLASSES, NUM_CLASSES
from edge_runtime.preprocessing import PreprocessSpec, prepare_slice, restore_labels, restore_probabilities
from train.data.mendeley import index_dataset, load_pair, pixel_spacing_of
from train.data.splits import pairs_for
from train.evaluate import evaluate_predictor

runner = CliRunner()


def _dice_iou(pred: np.ndarray, truth: np.ndarray, class_id: int) -> tuple[float, float]:
    """Direct set arithmetic, no confusion matrix: 2|A&B|/(|A|+|B|), |A&B|/|A|B|."""
    a, b = pred == class_id, truth == class_id
    inter, total, union = (a & b).sum(), a.sum() + b.sum(), (a | b).sum()
    if union == 0:
        return 1.0, 1.0
    return 2 * inter / total, inter / union


def _independent_scores(preds: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, tuple[float, float]]:
    pred, truth = np.concatenate([p.ravel() for p in preds]), np.concatenate([t.ravel() for t in truths])
    return {cls.short: _dice_iou(pred, truth, cls.id) for cls in CLASSES}


@pytest.fixture(scope="module")
def banded(tmp_path_factory) -> Path:
    """A Mendeley-layout set of painted bands (one slice 60 px wide, to exercise padding)."""
    return make_banded(tmp_path_factory.mktemp("banded"))


def _band_predictor(spec: PreprocessSpec):
    from band_model import band_weights

    weight, bias = band_weights()

    def predict(batch: np.ndarray) -> np.ndarray:
        return batch * weight[0] + bias  # (N, S, S, 1) * (C,) -> (N, S, S, C)

    return predict


def test_exported_model_json_equals_independent_recomputation(banded: Path, tmp_path: Path) -> None:
    model = write_band_model(tmp_path / "models", input_size=64)
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", str(model), "--data", str(banded), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "IVD" in result.stdout and "mean (foreground)" in result.stdout
    report = json.loads(out.read_text())
    spec = PreprocessSpec(input_size=64)
    preds, truths, per_patient = [], [], {}
    for pid in SPLIT["test"]:
        p_preds, p_truths = [], []
        for disc in (3, 4, 5):
            image = np.asarray(Image.open(banded / f"04_Intermediary_Ground_Truth_Data/T2_Output/T2_{pid}_D{disc}.png"))
            label_png = np.asarray(Image.open(banded / f"05_Final_Ground_Truth_Data/Label_Images/L1_{pid}_D{disc}.png"))
            truth = {50: 1, 100: 2, 150: 3, 200: 4, 250: 0}
            p_truths.append(np.vectorize(truth.get)(label_png))
            p_preds.append(expected_mask(image, spec))
        preds += p_preds
        truths += p_truths
        per_patient[pid] = _independent_scores(p_preds, p_truths)
    expected = _independent_scores(preds, truths)
    assert report["split"] == "test" and report["patients"] == SPLIT["test"] and report["n_slices"] == 9
    for cls in CLASSES:
        assert report["per_class"][cls.short]["dice"] == pytest.approx(expected[cls.short][0], abs=1e-12)
        assert report["per_class"][cls.short]["iou"] == pytest.approx(expected[cls.short][1], abs=1e-12)
        for pid in SPLIT["test"]:
            assert report["per_patient"][pid]["per_class"][cls.short]["dice"] == pytest.approx(per_patient[pid][cls.short][0])
    fg_means = [np.mean([per_patient[p][c.short][0] for c in CLASSES[1:]]) for p in SPLIT["test"]]
    assert report["mean_dice"] == pytest.approx(np.mean([expected[c.short][0] for c in CLASSES[1:]]))
    assert report["spread"]["mean_dice"] == pytest.approx(
        {"min": min(fg_means), "median": float(np.median(fg_means)), "max": max(fg_means)}
    )
    assert report["per_patient"]["B2"]["mean_dice"] == pytest.approx(1.0)  # unshifted: exact
    assert report["per_patient"]["B4"]["mean_dice"] < 0.9  # shifted bands: a real, known error


def test_json_flag_prints_the_scores_file_content_on_stdout(banded: Path, tmp_path: Path) -> None:
    model = write_band_model(tmp_path / "models", input_size=64)
    out = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", str(model), "--data", str(banded), "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # stdout holds the JSON alone: no table around it
    assert printed == json.loads(out.read_text())
    assert printed["per_patient"]["B2"]["mean_dice"] == pytest.approx(1.0)


def test_evaluate_predictor_does_not_depend_on_batching(banded: Path) -> None:
    spec = PreprocessSpec(input_size=64)
    pairs = pairs_for(index_dataset(banded), SPLIT, "test")
    one = evaluate_predictor(_band_predictor(spec), pairs, spec, batch_size=1, keep_predictions=True)
    four = evaluate_predictor(_band_predictor(spec), pairs, spec, batch_size=4)
    assert one.to_dict() == four.to_dict()
    assert one.n_slices == 9 and one.slices_per_patient == {"B2": 3, "B3": 3, "B4": 3}
    assert [p.pred.shape for p in one.predictions][-1] == (64, 60)  # original size, padding undone
    assert four.predictions is None


def test_evaluate_predictor_rejects_wrong_output_shape(banded: Path) -> None:
    spec = PreprocessSpec(input_size=64)
    pairs = pairs_for(index_dataset(banded), SPLIT, "test")
    with pytest.raises(ValueError, match=r"predictor returned shape \(2, 32, 32, 5\)"):
        evaluate_predictor(lambda x: np.zeros((len(x), 32, 32, NUM_CLASSES), np.float32), pairs, spec, batch_size=2)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("tensorflow")
    from tiny_run import tiny_run

    return tiny_run(tmp_path_factory)


def test_evaluate_run_folder_equals_independent_recomputation_and_train_baseline(trained_run, tmp_path: Path) -> None:
    import tf_keras as keras

    data, run = trained_run
    out = tmp_path / "eval.json"
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(data), "-o", str(out), "--threads", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    split = json.loads((run / "split.json").read_text())
    model = keras.models.load_model(run / "model.keras", compile=False)
    spec = PreprocessSpec(input_size=json.loads((run / "config.json").read_text())["image_size"])
    tensors, geometries, truths = [], [], []
    for pid in split["test"]:
        for disc in (3, 4, 5):
            image = np.asarray(Image.open(data / f"04_Intermediary_Ground_Truth_Data/T2_Output/T2_{pid}_D{disc}.png"))
            label_png = np.asarray(Image.open(data / f"05_Final_Ground_Truth_Data/Label_Images/L1_{pid}_D{disc}.png"))
            truths.append(np.vectorize({50: 1, 100: 2, 150: 3, 200: 4, 250: 0, 0: 0}.get)(label_png))
            tensor, geometry = prepare_slice(image, spec)
            tensors.append(tensor)
            geometries.append(geometry)
    # one batch, as both evaluations ran it (an untrained model has near-ties that batch-size
    # dependent float rounding could flip)
    scores = model.predict_on_batch(np.stack(tensors)[..., None])
    preds = [restore_labels(s, g) for s, g in zip(scores, geometries, strict=True)]
    expected = _independent_scores(preds, truths)
    baseline = json.loads((run / "metrics.json").read_text())
    for cls in CLASSES:
        assert report["per_class"][cls.short]["dice"] == pytest.approx(expected[cls.short][0], abs=1e-9)
        assert report["per_class"][cls.short]["iou"] == pytest.approx(expected[cls.short][1], abs=1e-9)
        assert baseline["per_class"][cls.short]["dice"] == pytest.approx(report["per_class"][cls.short]["dice"], abs=1e-9)
    assert report["patients"] == sorted(split["test"])


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda b, m: [str(m), "--data", str(b), "--split", "holdout"], "unknown split 'holdout'"),
        (lambda b, m: [str(m.parent / "missing.onnx"), "--data", str(b)], "missing.onnx: model file not found"),
        (lambda b, m: [str(m.parent), "--data", str(b)], "not a run folder"),
        (lambda b, m: [str(m), "--data", str(b / "nowhere")], "data folder not found"),
        (lambda b, m: [str(m), "--data", str(b), "--modality", "T1"], "no T1 image"),
    ],
)
def test_bad_input_exits_2_with_one_line(banded: Path, tmp_path: Path, make_args, message: str) -> None:
    model = write_band_model(tmp_path / "models", input_size=64)
    result = runner.invoke(app, ["evaluate", *make_args(banded, model)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_tampered_export_is_refused(banded: Path, tmp_path: Path) -> None:
    model = write_band_model(tmp_path / "models", input_size=64)
    model.write_bytes(model.read_bytes() + b"\0")
    result = runner.invoke(app, ["evaluate", str(model), "--data", str(banded)])
    assert result.exit_code == 2
    assert "does not match the manifest" in " ".join(result.output.split())


def test_evaluation_module_imports_without_tensorflow() -> None:
    code = "import sys; sys.modules['tensorflow'] = None; sys.modules['tf_keras'] = None; import train.evaluate"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_evaluating_as_run_does_scores_the_mean_of_the_three_windows(banded: Path) -> None:
    """single_window=False: each slice's class probabilities summed over 0.9375 / 1 / 1.0625 of the field of view."""
    spec = PreprocessSpec(input_size=48, field_of_view_mm=36.0)
    pairs = pairs_for(index_dataset(banded), SPLIT, "test")
    predict = _band_predictor(spec)
    windows = evaluate_predictor(predict, pairs, spec, batch_size=4, keep_predictions=True, single_window=False)
    single = evaluate_predictor(predict, pairs, spec, batch_size=4, keep_predictions=True)
    preds, truths = [], []
    for pair in pairs:
        image, truth = load_pair(pair, "T2")
        total = 0
        for fov in (33.75, 36.0, 38.25):
            tensor, geometry = prepare_slice(image, replace(spec, field_of_view_mm=fov), pixel_spacing_of(pair))
            total = total + restore_probabilities(predict(tensor[None, ..., None])[0], geometry)
        preds.append(np.argmax(total, axis=-1))
        truths.append(truth)
    expected = _independent_scores(preds, truths)
    for cls in CLASSES:
        assert windows.scores.dice(cls.short) == pytest.approx(expected[cls.short][0], abs=1e-12)
    assert any(not np.array_equal(a.pred, b.pred) for a, b in zip(windows.predictions, single.predictions, strict=True))
