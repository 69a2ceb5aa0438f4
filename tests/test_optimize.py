"""Pruning, QAT and pruning-preserving QAT: target sparsity reached and kept, int8 TFLite export works."""

from __future__ import annotations

import json

import numpy as np
import pytest
import run_factory
import trained_tiny
from typer.testing import CliRunner

from edge_runtime.manifest import load_verified_manifest
from train.run_dir import RunDir

SIZE = run_factory.SIZE


def _conv_kernels(model) -> dict[str, np.ndarray]:
    """Every Conv2D kernel by layer name, in graph order, read straight from the layer variables."""
    kernels = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if type(inner).__name__ == "Conv2D":
            kernels[inner.name] = next(w for w in layer.weights if w.name.split("/")[-1].startswith("kernel")).numpy()
    return kernels


def _pruned_share(model) -> float:
    """Zero share over all Conv2D kernels but the first and the last (kept dense by design)."""
    kernels = list(_conv_kernels(model).values())[1:-1]
    return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("optimize")
    data = run_factory.make_data(root / "data")
    # trained, so that its int8 exports have real decisions to reproduce (tests/trained_tiny.py)
    return root, data, run_factory.make_run(root / "run", data, model=trained_tiny.trained_unet())


@pytest.fixture(scope="module")
def pruned(workspace):
    from export.optimize import optimize_run

    root, _, run = workspace
    metrics = optimize_run(run, root / "pruned50", prune=0.5, epochs=2)
    return root / "pruned50", metrics


def test_pruning_reaches_the_target_counted_from_the_saved_weights(pruned, workspace):
    import tf_keras as keras

    out, metrics = pruned
    model = keras.models.load_model(out / "model.keras", compile=False)
    kernels = _conv_kernels(model)
    names = list(kernels)
    assert abs(_pruned_share(model) - 0.5) < 0.01
    for name in names[1:-1]:
        assert abs((kernels[name] == 0).mean() - 0.5) < 0.02, name
    assert (kernels[names[0]] != 0).all() and (kernels[names[-1]] != 0).all()  # first and head stay dense
    sparsity = json.loads((out / "sparsity.json").read_text())
    assert sparsity["kept_dense"] == sorted([names[0], names[-1]])
    assert sparsity["pruned_overall"] == pytest.approx(_pruned_share(model))
    assert sparsity["zeros"] == sum(int((k == 0).sum()) for k in kernels.values())
    config = json.loads((out / "config.json").read_text())
    assert config["model_file"] == "model.keras" and config["optimization"]["prune"] == 0.5
    assert config["source_run"] == str(workspace[2].resolve())
    assert (out / "split.json").read_text() == (workspace[2] / "split.json").read_text()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["split"] == "test" and set(saved["per_class"]) == {"BG", "IVD", "PE", "TS", "AAP"}
    assert saved["patients"] == json.loads((out / "split.json").read_text())["test"]
    assert metrics["mean_dice"] == saved["mean_dice"] and saved["source_metrics"]["mean_dice"] is not None


def test_pqat_keeps_the_sparsity_and_exports_full_int8_without_calibration(pruned, workspace):
    from ai_edge_litert.interpreter import Interpreter

    from export.exporter import export_command
    from export.model_io import load_keras_model

    root = workspace[0]
    qat_out = root / "pruned50-qat"
    from export.optimize import optimize_run

    optimize_run(pruned[0], qat_out, qat=True, epochs=1)
    config = json.loads((qat_out / "config.json").read_text())
    assert config["model_file"] == "model.h5" and not (qat_out / "model.keras").exists()
    assert config["optimization"]["scheme"] == "Default8BitPrunePreserveQuantizeScheme"
    model = load_keras_model(qat_out / "model.h5")
    assert _pruned_share(model) > 0.49  # sparsity survived QAT fine-tuning
    # The run folder API (evaluate, bench) finds and loads the QAT model too.
    assert RunDir(qat_out).model_path.name == "model.h5"
    assert RunDir(qat_out).load_model().count_params() == model.count_params()
    results = export_command(qat_out, root / "artefacts", "all", calibration_samples=4)
    assert [r.format for r in results] == ["tflite-int8"]  # "all" of a QAT model
    path = results[0].path
    interpreter = Interpreter(model_path=str(path))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    manifest = load_verified_manifest(path)
    assert manifest.provenance["pruned"] and manifest.provenance["quantization_aware"]
    assert manifest.provenance["calibration"] is None
    assert manifest.validation["reference"] == "ground-truth" and "test-split" in manifest.validation["source"]
    assert manifest.baseline_metrics["split"] == "test"


# unet PQAT runs through `optimize` above. Converting a QAT resunet costs 20-40 s on two cores,
# so the plain-QAT resunet is trained but not converted (same conversion path as its PQAT twin).
@pytest.mark.parametrize(
    ("arch", "preserve", "convert"), [("unet", False, True), ("resunet", False, False), ("resunet", True, True)]
)
def test_qat_and_pqat_train_and_export_int8(arch, preserve, convert, tmp_path):
    import tf_keras as keras

    from edge_runtime.preprocessing import PreprocessSpec
    from export.exporter import export_model
    from export.prune import measure_sparsity
    from export.qat import quantize_aware
    from export.validate import ValidationSet

    # trained first: QAT and its int8 conversion must reproduce real decisions to pass the export gate
    model = trained_tiny.trained_unet(arch=arch, epochs=20 if convert else 1)
    x = trained_tiny.blob_images(8, seed=0)
    y = trained_tiny.band_labels(x)
    if preserve:  # sparsify by hand (tfmot pruning itself is covered by the optimize tests above)
        for layer in model.layers:
            if type(layer).__name__ == "Conv2D":
                kernel = layer.kernel.numpy()
                kernel[np.abs(kernel) < np.median(np.abs(kernel))] = 0.0
                layer.kernel.assign(kernel)
        assert measure_sparsity(model)["overall"] > 0.49
    qat = quantize_aware(model, preserve_sparsity=preserve)
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    qat.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert [type(layer).__name__ for layer in qat.layers].count("QuantizeWrapperV2") > 10
    if preserve:
        assert measure_sparsity(qat)["overall"] > 0.49
    if not convert:
        return
    images = trained_tiny.blob_images(16, seed=2)
    validation = ValidationSet(images, trained_tiny.band_labels(images), "blob slices")
    (result,) = export_model(qat, tmp_path, "tflite-int8", PreprocessSpec(input_size=SIZE), name=arch, validation=validation)
    manifest = load_verified_manifest(result.path)
    assert manifest.inputs[0].dtype == "int8" and manifest.outputs[0].dtype == "int8"
    assert result.ops.float_ops == []


def test_recovery_fine_tunes_a_high_sparsity_until_the_validation_drop_is_within_the_gate(workspace):
    from export.optimize import optimize_run
    from train.evaluate import evaluate_predictor, keras_predictor, split_pairs

    root, data, run = workspace
    out = root / "pruned75"
    optimize_run(run, out, prune=0.75, epochs=1, recover_epochs=2)
    recovery = json.loads((out / "config.json").read_text())["optimization"]["recovery"]
    rounds = recovery["rounds"]
    assert [r["extra_epochs"] for r in rounds] == list(range(len(rounds))) and 1 <= len(rounds) <= 3
    assert recovery["gate_mean_drop"] == 0.02  # the pruned row of the tolerance table
    assert all(r["val_mean_dice_drop"] > 0.02 for r in rounds[:-1])  # it stopped at the first round within the gate
    assert recovery["within_gate"] == (rounds[-1]["val_mean_dice_drop"] <= 0.02)
    assert recovery["within_gate"] or len(rounds) == 3  # or it used every allowed epoch
    # the recorded drop is the saved model's, recomputed here on the validation patients
    pairs, _ = split_pairs(data, "val", RunDir(run))
    spec = RunDir(run).spec()
    source = evaluate_predictor(keras_predictor(RunDir(run).load_model()), pairs, spec).scores.mean_dice
    saved = evaluate_predictor(keras_predictor(RunDir(out).load_model()), pairs, spec).scores.mean_dice
    assert recovery["source_val_mean_dice"] == pytest.approx(source, abs=1e-6)
    assert rounds[-1]["val_mean_dice_drop"] == pytest.approx(source - saved, abs=1e-4)
    assert abs(_pruned_share(RunDir(out).load_model()) - 0.75) < 0.01


def test_optimize_bad_input_exits_2(workspace, tmp_path):
    from edge_runtime.cli import app

    _, data, run = workspace
    runner = CliRunner()
    cases = [
        ([str(run), "--out", str(tmp_path / "o")], "nothing to do"),
        ([str(run), "--out", str(tmp_path / "o"), "--prune", "1.5"], "between 0 and 1"),
        ([str(data), "--out", str(tmp_path / "o"), "--prune", "0.5"], "not a run folder"),
        ([str(run), "--out", str(run), "--prune", "0.5"], "source run folder"),
        ([str(run), "--out", str(tmp_path / "o"), "--qat", "--recover-epochs", "2"], "pass --prune"),
        ([str(run), "--out", str(tmp_path / "o"), "--prune", "0.5", "--data", str(tmp_path / "nowhere")], "not found"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["optimize", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    assert not (tmp_path / "o").exists()


def test_batchnorm_recalibration_averages_batch_statistics():
    import tf_keras as keras

    from export.batchnorm import recalibrate_batchnorm

    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False)
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, bn(conv(inputs)))
    bn.moving_mean.assign([5.0, 5.0, 5.0])
    bn.moving_variance.assign([9.0, 9.0, 9.0])
    images = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
    assert recalibrate_batchnorm(model, images, batch_size=4) == 1
    features = conv(images).numpy()
    np.testing.assert_allclose(bn.moving_mean.numpy(), features.mean(axis=(0, 1, 2)), rtol=1e-4)
    batch_vars = [features[i : i + 4].var(axis=(0, 1, 2)) for i in (0, 4)]
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean(batch_vars, axis=0), rtol=0.01)
    assert bn.momentum == 0.99  # restored
