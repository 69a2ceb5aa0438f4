"""Export: every format is written, verified by its manifest, runs in the edge runtime and is validated."""

from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest
import trained_tiny

from edge_runtime.backends import BackendError, open_backend
from edge_runtime.manifest import ManifestError, load_verified_manifest, read_manifest
from edge_runtime.preprocessing import PreprocessSpec

SIZE = trained_tiny.SIZE
SPEC = PreprocessSpec(input_size=SIZE)
_images = trained_tiny.blob_images


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("tf_keras", reason="export needs the train extra (tf_keras)")
    return trained_tiny.trained_unet()


@pytest.fixture(scope="module")
def validation():
    from export.validate import ValidationSet

    images = _images(16, seed=2)
    return ValidationSet(images, trained_tiny.band_labels(images), "blob test slices")


@pytest.fixture(scope="module")
def exported(model, validation, tmp_path_factory):
    from export.exporter import export_model

    out = tmp_path_factory.mktemp("artefacts")
    results = export_model(
        model,
        out,
        "all",
        SPEC,
        calibration=_images(8, seed=1),
        validation=validation,
        name="tiny",
        provenance={"recipe": {"arch": "unet"}, "seed": 3},
        baseline_metrics={"mean_dice": 0.5},
    )
    return out, {r.format: r for r in results}


def test_every_format_is_written_with_a_manifest_that_verifies(exported):
    out, results = exported
    assert set(results) == {"tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-fp32", "onnx-int8"}
    for fmt, result in results.items():
        path = out / f"tiny-{fmt}.{fmt.split('-')[0]}"
        assert result.path == path and path.is_file()
        manifest = load_verified_manifest(path)
        data = path.read_bytes()
        assert manifest.sha256 == hashlib.sha256(data).hexdigest()
        assert manifest.size_bytes == len(data) == result.size_bytes
        assert manifest.gzip_bytes == len(gzip.compress(data, compresslevel=9, mtime=0))
        assert manifest.variant == fmt and manifest.format == fmt.split("-")[0]
        assert manifest.preprocessing == SPEC
        assert manifest.baseline_metrics == {"mean_dice": 0.5}
        assert manifest.provenance["seed"] == 3 and "git_commit" in manifest.provenance
        assert manifest.ops and manifest.validation["passed"] is True
        assert manifest.macs_per_slice and manifest.macs_per_slice > 0
        assert manifest.inputs[0].shape == [None, SIZE, SIZE, 1]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no scratch left behind
    assert results["tflite-fp16"].size_bytes < results["tflite-fp32"].size_bytes
    assert results["tflite-int8"].size_bytes < results["tflite-fp16"].size_bytes


def test_int8_tflite_has_int8_io_and_only_integer_compute(exported):
    from ai_edge_litert.interpreter import Interpreter

    from export.graph_ops import tflite_ops

    out, _ = exported
    path = out / "tiny-tflite-int8.tflite"
    interpreter = Interpreter(model_path=str(path))
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and outp["dtype"] == np.int8
    assert list(inp["shape_signature"]) == [-1, SIZE, SIZE, 1]
    manifest = read_manifest(path)
    assert manifest.inputs[0].dtype == "int8" and manifest.inputs[0].scale == pytest.approx(inp["quantization"][0])
    assert manifest.inputs[0].zero_point == inp["quantization"][1]
    assert manifest.outputs[0].scale == pytest.approx(outp["quantization"][0])
    report = tflite_ops(path)
    assert report.float_ops == [] and "CONV_2D" in report.ops
    # the float model really is float, so the check can fail
    assert "CONV_2D" in tflite_ops(out / "tiny-tflite-fp32.tflite").float_ops


def test_every_tflite_keeps_a_free_batch_dimension(exported):
    out, _ = exported
    images = _images(3, seed=5)
    for path in out.glob("*.tflite"):
        backend = open_backend(path, threads=1)
        assert backend.batch_free, path.name
        assert backend.predict(images).shape == (3, SIZE, SIZE, 5)


def test_onnx_uses_opset_17_free_batch_and_per_channel_qdq(exported):
    import onnx

    from export.graph_ops import onnx_ops

    out, _ = exported
    fp32 = onnx.load(str(out / "tiny-onnx-fp32.onnx"))
    onnx.checker.check_model(fp32, full_check=True)
    assert max(o.version for o in fp32.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert not fp32.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")
    int8 = onnx.load(str(out / "tiny-onnx-int8.onnx"))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    inits = {i.name: i for i in int8.graph.initializer}
    conv_weight_dq = [
        n for n in int8.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) == 4
    ]
    assert conv_weight_dq, "conv weights should be stored as int8 initialisers"
    scale = inits[conv_weight_dq[0].input[1]]
    assert len(scale.dims) == 1 and scale.dims[0] > 1  # one scale per output channel
    assert onnx_ops(out / "tiny-onnx-int8.onnx").float_ops == []
    assert "Conv" in onnx_ops(out / "tiny-onnx-fp32.onnx").float_ops


def test_validation_numbers_match_an_independent_run(exported, model, validation):
    from edge_runtime.metrics import segmentation_scores

    _, results = exported
    keras_pred = model(validation.images, training=False).numpy().argmax(-1)
    for fmt in ("tflite-fp32", "tflite-int8", "onnx-int8"):
        path = results[fmt].path
        pred = open_backend(path, threads=1).predict(validation.images).argmax(-1)
        report = results[fmt].validation
        assert report.agreement == pytest.approx(float((pred == keras_pred).mean()))
        expected = segmentation_scores(pred, validation.labels).dice("TS") - segmentation_scores(
            keras_pred, validation.labels
        ).dice("TS")
        assert report.dice_delta["TS"] == pytest.approx(expected)
        assert report.reference == "ground-truth" and report.slices == len(validation.images)
    keras_scores = model(validation.images, training=False).numpy()
    for fmt in ("tflite-fp32", "onnx-fp32"):  # float artefacts reproduce the scores, not just the argmax
        scores = open_backend(results[fmt].path, threads=1).predict(validation.images)
        assert np.abs(scores - keras_scores).max() < 1e-4, fmt
        assert results[fmt].validation.agreement >= 0.995
    assert results["tflite-fp16"].validation.agreement >= 0.995


def _one_slice_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, keras scores, artefact scores) on one 4x4 slice: the artefact misses 1 of 4 IVD pixels."""
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, :2, :2] = 1  # 4 IVD pixels
    keras = np.zeros((1, 4, 4, 5), np.float32)
    keras[..., 0] = 1
    keras[0, :2, :2] = [0, 1, 0, 0, 0]  # perfect
    artefact = keras.copy()
    artefact[0, 0, 0] = [1, 0, 0, 0, 0]  # misses one IVD pixel: Dice 2*3/(4+3) = 6/7
    return labels, keras, artefact


def test_compare_computes_dice_delta_by_hand_and_every_format_can_fail():
    from export.formats import FORMATS
    from export.validate import ValidationSet, compare

    labels, keras, artefact = _one_slice_case()
    validation = ValidationSet(np.zeros((1, 4, 4, 1), np.float32), labels, "x")
    report = compare(FORMATS["tflite-int8"], keras, artefact, validation)
    assert report.agreement == pytest.approx(15 / 16)
    assert report.dice_delta["IVD"] == pytest.approx(6 / 7 - 1)
    assert report.mean_abs_delta == pytest.approx((1 - 6 / 7) / 4)
    # IVD drops 1/7 = 0.143 > 0.02 per class; the mean drop 0.036 > 0.01: int8 is blocked, not just reported
    assert not report.passed
    assert {g.check for g in report.failed} == {"Dice drop IVD", "mean Dice drop"}
    for name in ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "onnx-fp32", "onnx-int8"):
        assert not compare(FORMATS[name], keras, artefact, validation).passed, name
    pruned = compare(FORMATS["tflite-int8"], keras, artefact, validation, pruned=True)
    assert pruned.gate.startswith("pruned") and not pruned.passed  # mean drop 0.036 > 0.02
    same = compare(FORMATS["tflite-fp32"], keras, keras.copy(), validation)
    assert same.passed and [g.value for g in same.gates] == [0.0, 0.0, 0.0, 0.0]


def test_export_gate_uses_the_benchmark_tolerance_rows():
    from export.formats import FORMATS
    from export.validate import ValidationSet, compare

    labels, keras, artefact = _one_slice_case()
    validation = ValidationSet(np.zeros((1, 4, 4, 1), np.float32), labels, "x")
    expected = {  # limits written out: the table's promise (README, benchmarks/gates.py)
        "tflite-fp32": {"|dDice IVD|": 0.002, "|dDice PE|": 0.002, "|dDice TS|": 0.002, "|dDice AAP|": 0.002},
        "tflite-int8": {"Dice drop IVD": 0.02, "Dice drop PE": 0.02, "Dice drop TS": 0.02, "Dice drop AAP": 0.02,
                        "mean Dice drop": 0.01},
    }  # fmt: skip
    for name, limits in expected.items():
        report = compare(FORMATS[name], keras, artefact, validation)
        assert {g.check: g.limit for g in report.gates} == limits, name
    pruned = compare(FORMATS["onnx-int8"], keras, artefact, validation, pruned=True)
    assert {g.check: g.limit for g in pruned.gates} == {"mean Dice drop": 0.02}


def _convert_rotated(monkeypatch) -> None:
    """Make every TFLite conversion convert the class-rotated twin of the model it is given."""
    import export.tflite

    real = export.tflite.convert_tflite

    def convert(model, precision, calibration=None):
        return real(trained_tiny.rotate_classes(model), precision, calibration)

    monkeypatch.setattr(export.tflite, "convert_tflite", convert)


def test_a_broken_int8_artefact_fails_export_with_exit_1_and_leaves_nothing(model, tmp_path, monkeypatch):
    """Channel-rotated head weights in the converted int8 model: every pixel's label moves to the next class."""
    import run_factory
    from typer.testing import CliRunner

    from edge_runtime.cli import app

    data = run_factory.make_data(tmp_path / "data", patients=6)
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    out = tmp_path / "art"
    out.mkdir()
    stale = [out / "m-tflite-int8.tflite", out / "m-tflite-int8.tflite.json"]
    for path in stale:
        path.write_text("an older export of the same name")
    _convert_rotated(monkeypatch)
    args = ["export", str(model_path), "-o", str(out), "--formats", "tflite-int8", "--calibration-data", str(data)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "tflite-int8: FAIL" in result.output and "export failed its gate" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["m-export.json", "m-export.log"]  # no model, no manifest
    summary = json.loads((out / "m-export.json").read_text())
    assert summary[0]["passed"] is False and summary[0]["path"] is None
    assert sorted(summary[0]["removed_stale"]) == ["m-tflite-int8.tflite", "m-tflite-int8.tflite.json"]
    failed = [g for g in summary[0]["validation"]["gates"] if not g["passed"]]
    assert failed and all(g["value"] > g["limit"] for g in failed)


def test_a_failed_gate_removes_an_older_artefact_of_the_same_name(model, validation, tmp_path, monkeypatch):
    from export.exporter import ExportGateError, export_model

    (passed,) = export_model(model, tmp_path, "tflite-fp32", SPEC, validation=validation)
    assert passed.passed and passed.path.is_file()
    _convert_rotated(monkeypatch)
    with pytest.raises(ExportGateError, match=r"tflite-fp32: FAIL .*failed: \|dDice") as info:
        export_model(model, tmp_path, "tflite-fp32", SPEC, validation=validation)
    assert [r.passed for r in info.value.results] == [False]
    assert info.value.results[0].removed_stale == ["model-tflite-fp32.tflite.json", "model-tflite-fp32.tflite"]
    assert list(tmp_path.iterdir()) == []


def test_bad_export_input_is_refused(model, tmp_path):
    from export.exporter import export_model
    from export.formats import ExportInputError, parse_formats

    with pytest.raises(ExportInputError, match="unknown export format 'tflite-int4'"):
        parse_formats("tflite-fp32,tflite-int4")
    assert [f.name for f in parse_formats("all", qat=True)] == ["tflite-int8"]
    with pytest.raises(ExportInputError, match="'onnx-fp32' is not available for a quantisation-aware-trained model"):
        parse_formats("onnx-fp32", qat=True)
    with pytest.raises(ExportInputError, match="tflite-int8 need calibration"):
        export_model(model, tmp_path, "tflite-int8", SPEC)
    with pytest.raises(ExportInputError, match=r"calibration data has shape \(4, 16, 16, 1\)"):
        export_model(model, tmp_path, "onnx-int8", SPEC, calibration=np.zeros((4, 16, 16, 1), np.float32))
    with pytest.raises(ExportInputError, match="does not match the preprocessing spec"):
        export_model(model, tmp_path, "tflite-fp32", PreprocessSpec(input_size=64))
    assert list(tmp_path.iterdir()) == []


def test_corrupted_artefact_is_refused_by_the_runtime(exported, tmp_path):
    out, _ = exported
    for name in ("tiny-tflite-int8.tflite", "tiny-onnx-fp32.onnx"):
        source = out / name
        copy = tmp_path / name
        data = bytearray(source.read_bytes())
        data[len(data) // 2] ^= 0xFF
        copy.write_bytes(bytes(data))
        (tmp_path / f"{name}.json").write_text((out / f"{name}.json").read_text())
        with pytest.raises(ManifestError, match="sha256 .* does not match"):
            load_verified_manifest(copy)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(BackendError, match="garbage.tflite"):
        open_backend(garbage, threads=1)


def test_export_command_cli_errors_exit_2(model, tmp_path):
    from typer.testing import CliRunner

    from edge_runtime.cli import app

    model_path = tmp_path / "m.keras"
    model.save(model_path)
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(model_path), "--out", str(tmp_path / "o"), "--formats", "tflite-int4"])
    assert result.exit_code == 2 and "unknown export format 'tflite-int4'" in result.output
    result = runner.invoke(app, ["export", str(model_path), "--out", str(tmp_path / "o"), "--formats", "tflite-int8"])
    assert result.exit_code == 2 and "--calibration-data" in result.output
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(model_path.read_bytes()[:2000])
    result = runner.invoke(app, ["export", str(corrupt), "--out", str(tmp_path / "o"), "--formats", "tflite-fp32"])
    assert result.exit_code == 2 and "corrupt.keras" in result.output and "not a Keras model" in result.output
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = runner.invoke(app, ["export", str(text), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a Keras model" in result.output
    assert not (tmp_path / "o").exists()


def test_export_command_writes_a_summary(model, tmp_path):
    from export.exporter import export_command

    model_path = tmp_path / "m.keras"
    model.save(model_path)
    results = export_command(model_path, tmp_path / "o", "onnx-fp32")
    summary = json.loads((tmp_path / "o" / "m-export.json").read_text())
    assert [s["format"] for s in summary] == ["onnx-fp32"] and summary[0]["passed"]
    assert results[0].path == tmp_path / "o" / "m-onnx-fp32.onnx"
    assert read_manifest(results[0].path).provenance["source_sha256"] == hashlib.sha256(model_path.read_bytes()).hexdigest()


def test_onnx_resize_uses_no_deprecated_mode(exported):
    import onnx
    from onnx import helper

    out, _ = exported
    for name in ("tiny-onnx-fp32.onnx", "tiny-onnx-int8.onnx"):
        graph = onnx.load(str(out / name)).graph
        modes = {
            helper.get_attribute_value(a)
            for n in graph.node
            if n.op_type == "Resize"
            for a in n.attribute
            if a.name == "coordinate_transformation_mode"
        }
        assert modes == {b"asymmetric"}, (name, modes)
