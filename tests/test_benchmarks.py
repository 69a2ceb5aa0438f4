"""Benchmarks: the quick profile end to end on a tiny trained and exported U-Net, gates, report.

One module past ~400 lines on purpose: its tests share one module-scoped run, export and quick
report (a minute or more on two cores), built once here.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.gates import GateKind, check_gates, gate_kind
from benchmarks.latency import parse_threads
from benchmarks.plots import Point, pareto_front
from benchmarks.variants import recipe_of
from benchmarks.worker import time_calls
from edge_runtime.labels import CLASSES, NUM_CLASSES

PIXEL_MM2 = 0.6875**2
SEED_MACS_BY_HAND = (
    # encoder at 256^2, 128^2 and bottom at 64^2: 3x3 convs (in*out*9*pixels)
    (1 * 64 + 64 * 64) * 9 * 256**2
    + (64 * 128 + 128 * 128) * 9 * 128**2
    + (128 * 256 + 256 * 256) * 9 * 64**2
    # 2x2 stride-2 transposed convs, counted per input pixel
    + 256 * 128 * 4 * 64**2
    + 128 * 64 * 4 * 128**2
    # decoder 3x3 convs after the concatenations, and the 1x1 head
    + (256 * 128 + 128 * 128) * 9 * 128**2
    + (128 * 64 + 64 * 64) * 9 * 256**2
    + 64 * NUM_CLASSES * 256**2
)


# --------------------------------------------------------------------------- fast checks (no TensorFlow)


def test_gate_kind_follows_precision_and_pruning():
    assert gate_kind("fp32") is GateKind.FLOAT
    assert gate_kind("fp16") is GateKind.FLOAT
    assert gate_kind("dynamic-int8") is GateKind.QUANTIZED
    assert gate_kind("int8") is GateKind.QUANTIZED
    assert gate_kind("int8", pruned=True) is GateKind.PRUNED
    assert gate_kind("fp32", pruned=True) is GateKind.PRUNED
    with pytest.raises(ValueError, match="bf16"):
        gate_kind("bf16")


def test_float_gate_is_two_sided_per_class():
    base = {"IVD": 0.90, "PE": 0.80, "TS": 0.85, "AAP": 0.70}
    better = {**base, "TS": 0.853}  # +0.003: a conversion that changes results, even upwards
    results = check_gates("v", GateKind.FLOAT, better, base)
    assert [r.check for r in results] == ["|dDice IVD|", "|dDice PE|", "|dDice TS|", "|dDice AAP|"]
    ts = results[2]
    assert ts.value == pytest.approx(0.003) and ts.limit == 0.002 and not ts.passed
    assert all(r.passed for r in results if r is not ts)


def test_quantized_gate_bounds_drop_per_class_and_mean():
    base = {"IVD": 0.90, "PE": 0.80, "TS": 0.85, "AAP": 0.70}
    variant = {"IVD": 0.885, "PE": 0.79, "TS": 0.84, "AAP": 0.695}  # drops .015 .01 .01 .005 -> mean .01
    results = {r.check: r for r in check_gates("q", GateKind.QUANTIZED, variant, base)}
    assert results["Dice drop IVD"].value == pytest.approx(0.015) and results["Dice drop IVD"].passed
    assert results["mean Dice drop"].value == pytest.approx(0.010)
    worse = {**variant, "AAP": 0.675}  # AAP drop 0.025 > 0.02; mean drop 0.015 > 0.01
    failed = {r.check for r in check_gates("q", GateKind.QUANTIZED, worse, base) if not r.passed}
    assert failed == {"Dice drop AAP", "mean Dice drop"}
    improved = {k: v + 0.05 for k, v in base.items()}
    assert all(r.passed for r in check_gates("q", GateKind.QUANTIZED, improved, base))


def test_pruned_gate_checks_only_the_mean():
    base = {"IVD": 0.90, "PE": 0.80, "TS": 0.85, "AAP": 0.70}
    variant = {"IVD": 0.87, "PE": 0.79, "TS": 0.85, "AAP": 0.70}  # IVD -0.03, mean drop 0.01
    results = check_gates("p", GateKind.PRUNED, variant, base)
    assert [(r.check, r.passed) for r in results] == [("mean Dice drop", True)]
    assert results[0].value == pytest.approx(0.01) and results[0].limit == 0.02


def test_gates_name_a_missing_class():
    with pytest.raises(KeyError, match="AAP"):
        check_gates("v", GateKind.FLOAT, {"IVD": 1, "PE": 1, "TS": 1}, {"IVD": 1, "PE": 1, "TS": 1, "AAP": 1})


def test_pareto_front_keeps_only_undominated_points():
    points = [
        Point("slow-best", 10.0, 0.95),
        Point("fast-worse", 1.0, 0.90),
        Point("dominated", 12.0, 0.94),  # slower and worse than slow-best
        Point("copy", 11.0, 0.95 + 1e-9),  # same Dice as slow-best within tolerance, slower
        Point("fastest", 0.5, 0.80),
    ]
    assert [p.label for p in pareto_front(points)] == ["fastest", "fast-worse", "slow-best"]


def test_parse_threads_accepts_lists_and_names_bad_entries():
    assert parse_threads("1, 2,2,4") == (1, 2, 4)
    with pytest.raises(ValueError, match="'two'"):
        parse_threads("1,two")
    with pytest.raises(ValueError, match="positive"):
        parse_threads("0")


def test_recipe_comes_from_provenance_or_name():
    assert recipe_of({"pruned": True, "optimization": {"sparsity": 0.5}, "quantization_aware": True}) == (
        "pruned50-qat",
        True,
        True,
    )
    assert recipe_of({"pruned": False, "quantization_aware": False}, "unet") == ("float", False, False)
    assert recipe_of({}, "unet-pruned75") == ("pruned", True, False)


def test_time_calls_honours_repeat_bounds():
    calls = []
    times = time_calls(lambda: calls.append(1), warmup=2, min_repeats=3, max_repeats=5, budget_s=0.0)
    assert len(times) == 3 and len(calls) == 5
    times = time_calls(lambda: None, warmup=0, min_repeats=1, max_repeats=7, budget_s=60.0)
    assert len(times) == 7


def _mask_with_ts(pixels: int) -> np.ndarray:
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[0:10, 0:10] = 1  # some IVD, irrelevant to the thecal sac
    rows, cols = divmod(pixels, 20)
    mask[20 : 20 + rows, 0:20] = 3
    mask[20 + rows, 0:cols] = 3
    return mask


def test_clinical_agreement_matches_hand_computed_areas_and_grades():
    from benchmarks.accuracy import clinical_agreement

    slices = [
        SimpleNamespace(truth=_mask_with_ts(200), pred=_mask_with_ts(220)),  # 94.5 mm2 relative vs 104.0 normal
        SimpleNamespace(truth=_mask_with_ts(100), pred=_mask_with_ts(0)),  # 47.3 mm2 absolute vs no TS at all
        SimpleNamespace(truth=_mask_with_ts(0), pred=_mask_with_ts(0)),  # no TS anywhere: not counted
    ]
    result = clinical_agreement(slices)
    assert result["slices"] == 3 and result["ts_slices"] == 2
    assert result["area_mae_mm2"] == pytest.approx(60 * PIXEL_MM2)
    assert result["area_bias_mm2"] == pytest.approx(-40 * PIXEL_MM2)
    assert result["area_max_abs_error_mm2"] == pytest.approx(100 * PIXEL_MM2)
    assert result["area_mean_abs_percent"] == pytest.approx(55.0)
    assert result["graded_slices"] == 2 and result["grade_agreement"] == 0.0
    assert result["grade_confusion"] == {"relative": {"normal": 1}, "absolute": {"none": 1}}


def test_bench_commands_exit_2_on_missing_inputs(tmp_path, capsys):
    from benchmarks.latency import latency_command
    from benchmarks.report import bench_all_command

    assert latency_command(tmp_path / "nope", "1") == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert bench_all_command(tmp_path / "run", tmp_path / "empty", tmp_path / "out", quick=True) == 2
    assert "no .tflite or .onnx artefacts" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end (tiny trained model)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Synthetic data, a 32 px U-Net run, its TFLite/ONNX exports, and a degraded artefact.

    The run's model is trained for seconds on blob images (tests/trained_tiny.py): the int8
    export gate needs real decisions to reproduce, which a one-epoch phantom model does not have.
    """
    pytest.importorskip("tf_keras")
    import run_factory
    import trained_tiny

    from export.exporter import export_command, export_model
    from train.data.splits import load_or_create_split
    from train.data.synth import synthesize
    from train.models import count_macs
    from train.run_dir import RunDir

    root = tmp_path_factory.mktemp("bench")
    data, run_dir, art = root / "data", root / "run", root / "art"
    synthesize(data, patients=10, seed=3)
    load_or_create_split(data, seed=0)
    run_factory.make_run(run_dir, data, model=trained_tiny.trained_unet())
    export_command(run_dir, art, formats="tflite-fp32,tflite-int8,onnx-fp32", calibration_samples=8)
    # Degraded variant: the head's output channels rotated by one, so every pixel's label shifts to
    # the next class. A real, valid fp32 artefact (its export validates against the rotated model).
    run = RunDir(run_dir)
    model = run.load_model()
    head = model.get_layer("head_conv")
    kernel, bias = head.get_weights()
    rotate = np.roll(np.arange(NUM_CLASSES), 1)
    head.set_weights([kernel[..., rotate], bias[rotate]])
    export_model(model, art, "tflite-fp32", run.spec(), name="degraded", macs=count_macs(model))
    return SimpleNamespace(root=root, data=data, run=run_dir, art=art)


@pytest.fixture(scope="module")
def quick_report(setup):
    from benchmarks.report import bench_all_command

    out = setup.root / "report"
    real = {"real_images": REAL, "real_reference": REAL / "reference.jsonl"} if (REAL / "reference.jsonl").is_file() else {}
    code = bench_all_command(setup.run, setup.art, out, quick=True, **real)
    return SimpleNamespace(
        code=code,
        out=out,
        report=json.loads((out / "report.json").read_text()),
        accuracy=json.loads((out / "accuracy.json").read_text()),
        latency=json.loads((out / "latency.json").read_text()),
    )


REAL = Path(__file__).resolve().parents[2] / "shared" / "real-axial"
ARTEFACTS = ("run-tflite-fp32", "run-tflite-int8", "run-onnx-fp32", "degraded-tflite-fp32")


def test_quick_report_writes_every_file_with_the_documented_structure(quick_report):
    out = quick_report.out
    for name in ("report.md", "report.json", "accuracy.json", "accuracy.md", "latency.json", "latency.md"):
        assert (out / name).is_file(), name
    for name in ("dice_per_class.png", "latency_vs_dice.png", "size_per_variant.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = quick_report.report
    assert report["schema"] == "edge-seg-bench/1"
    assert report["profile"]["name"] == "quick" and report["profile"]["latency"]["threads"] == [1]
    assert sorted(report["plots"]) == ["dice_per_class.png", "latency_vs_dice.png", "size_per_variant.png"]
    machine = report["machine"]
    assert machine["usable_cores"] >= 1 and machine["cpu_model"] and machine["libraries"]["numpy"] == np.__version__
    labels = [row["label"] for row in report["summary"]]
    assert labels[:2] == ["seed-unet-keras", "keras-float"] and sorted(labels[2:]) == sorted(ARTEFACTS)
    assert {t["gate"] for t in report["tolerances"]} == {"float", "quantized", "pruned"}
    markdown = (out / "report.md").read_text()
    for heading in ("## Summary", "## Findings", "## Accuracy", "## Latency", "## Tolerance gates", "## Machine"):
        assert heading in markdown
    assert "| model | recipe | size KiB | gzip KiB | mean Dice |" in markdown
    for label in ARTEFACTS:
        assert f"| {label} |" in markdown
    assert "![latency_vs_dice.png](latency_vs_dice.png)" in markdown


def test_real_slices_are_scored_per_variant_like_bench_real(setup, quick_report):
    if not (REAL / "reference.jsonl").is_file():
        pytest.skip(f"real validation set not at {REAL}")
    from benchmarks.real import bench_real

    rows = {row["variant"]: row for row in quick_report.report["real"]}
    assert sorted(rows) == sorted(ARTEFACTS)
    markdown = (quick_report.out / "report.md").read_text()
    assert "## Real slices (by-eye reference)" in markdown and "| run-tflite-int8 |" in markdown
    int8 = rows["run-tflite-int8"]
    assert (quick_report.out / int8["contact_sheet"]).read_bytes()[:4] == b"\x89PNG"
    direct = bench_real(setup.art / "run-tflite-int8.tflite", REAL, REAL / "reference.jsonl", threads=1)
    assert int8["summary"] == direct["summary"]


def test_gates_trip_on_the_degraded_variant_only_among_float_conversions(quick_report):
    assert quick_report.code == 1
    rows = {row["label"]: row for row in quick_report.accuracy["variants"]}
    degraded = rows["degraded-tflite-fp32"]
    assert degraded["gate"] == "float" and not degraded["passed"]
    assert any(g["value"] > g["limit"] for g in degraded["gates"])
    for label in ("run-tflite-fp32", "run-onnx-fp32"):
        assert rows[label]["passed"], rows[label]["gates"]
    assert "degraded-tflite-fp32" in {g["variant"] for g in quick_report.accuracy["failed_gates"]}
    assert "**FAIL**" in (quick_report.out / "accuracy.md").read_text()
    assert not quick_report.report["passed"]


def _independent_dice(predict, setup, patients) -> dict[str, float]:
    """Per-class Dice of `predict` on the test patients, from confusion matrices computed here."""
    from edge_runtime.metrics import confusion_matrix, scores_from_confusion
    from edge_runtime.preprocessing import prepare_slice, restore_labels
    from train.data.mendeley import index_dataset, load_pair
    from train.run_dir import RunDir

    spec = RunDir(setup.run).spec()
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for pair in (p for p in index_dataset(setup.data) if p.patient_id in patients):
        image, truth = load_pair(pair, "T2")
        prepared, geometry = prepare_slice(image, spec)
        total += confusion_matrix(restore_labels(predict(prepared[None, ..., None])[0], geometry), truth)
    scores = scores_from_confusion(total)
    return {c.short: scores.dice(c.short) for c in CLASSES[1:]}


# The documented table (README, edge_runtime/tolerances.py), written out rather than read back.
_LIMITS = {"float": {"per_class": 0.002, "mean": None, "two_sided": True},
           "quantized": {"per_class": 0.02, "mean": 0.01, "two_sided": False}}  # fmt: skip


def test_gate_checks_match_deltas_computed_independently(setup, quick_report):
    from edge_runtime.backends import open_backend
    from train.evaluate import keras_predictor
    from train.run_dir import RunDir

    patients = set(quick_report.accuracy["patients"])
    baseline = _independent_dice(keras_predictor(RunDir(setup.run).load_model()), setup, patients)
    rows = {row["label"]: row for row in quick_report.accuracy["variants"]}
    verdicts = {}
    for label, suffix, gate in (("degraded-tflite-fp32", ".tflite", "float"), ("run-tflite-int8", ".tflite", "quantized"),
                                ("run-onnx-fp32", ".onnx", "float")):  # fmt: skip
        backend = open_backend(setup.art / f"{label}{suffix}", threads=1)
        variant = _independent_dice(backend.predict, setup, patients)
        limits = _LIMITS[gate]
        expected = {}
        for short in baseline:
            delta = variant[short] - baseline[short]
            name = f"|dDice {short}|" if limits["two_sided"] else f"Dice drop {short}"
            expected[name] = (abs(delta) if limits["two_sided"] else -delta, limits["per_class"])
        if limits["mean"] is not None:
            expected["mean Dice drop"] = (float(np.mean([baseline[s] - variant[s] for s in baseline])), limits["mean"])
        got = {g["check"]: g for g in rows[label]["gates"]}
        assert rows[label]["gate"] == gate and set(got) == set(expected), label
        for check, (value, limit) in expected.items():
            assert got[check]["value"] == pytest.approx(value, abs=1e-9), (label, check)
            assert got[check]["limit"] == limit and got[check]["passed"] is (value <= limit), (label, check)
        verdicts[label] = all(value <= limit for value, limit in expected.values())
    assert verdicts["degraded-tflite-fp32"] is False  # rotated classes: far outside the float gate
    assert {label: rows[label]["passed"] for label in verdicts} == verdicts


def test_variant_dice_matches_an_independent_evaluation(setup, quick_report):
    from edge_runtime.backends import open_backend
    from edge_runtime.manifest import load_verified_manifest
    from edge_runtime.metrics import confusion_matrix, scores_from_confusion
    from edge_runtime.preprocessing import prepare_slice, restore_labels
    from train.data.mendeley import index_dataset, load_pair

    patients = set(quick_report.accuracy["patients"])
    pairs = [p for p in index_dataset(setup.data) if p.patient_id in patients]
    assert len(pairs) == quick_report.accuracy["n_slices"] > 0
    model_path = setup.art / "run-tflite-int8.tflite"
    spec = load_verified_manifest(model_path).preprocessing
    backend = open_backend(model_path, threads=1)
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for pair in pairs:
        image, truth = load_pair(pair, "T2")
        prepared, geometry = prepare_slice(image, spec)
        scores = backend.predict(prepared[None, ..., None])[0]
        total += confusion_matrix(restore_labels(scores, geometry), truth)
    expected = scores_from_confusion(total)
    row = next(r for r in quick_report.accuracy["variants"] if r["label"] == "run-tflite-int8")
    for short, dice in row["dice"].items():
        assert dice == pytest.approx(expected.dice(short), abs=1e-12)
    assert row["mean_dice"] == pytest.approx(expected.mean_dice, abs=1e-12)


def test_latency_rows_are_consistent_with_files_and_the_seed_reference(setup, quick_report):
    latency = quick_report.latency
    rows = {(r["label"], r["backend"]): r for r in latency["rows"]}
    assert not [r for r in latency["rows"] if r["error"]]
    seed = rows[("seed-unet-keras", "keras-predict")]
    assert seed["macs_per_slice"] == SEED_MACS_BY_HAND and seed["input_size"] == 256
    assert ("keras-float", "keras-predict") in rows
    expected = {
        "run-tflite-fp32": ("litert", ".tflite"),
        "run-tflite-int8": ("litert", ".tflite"),
        "run-onnx-fp32": ("onnxruntime", ".onnx"),
    }
    for label, (backend, suffix) in expected.items():
        row = rows[(label, backend)]
        path = setup.art / f"{label}{suffix}"
        assert row["size_bytes"] == path.stat().st_size
        assert row["gzip_bytes"] == len(gzip.compress(path.read_bytes(), compresslevel=9, mtime=0))
        assert row["threads"] == 1 and row["repeats"] >= 3
        assert 0 < row["min_ms"] <= row["median_ms"] <= row["p95_ms"]
        assert row["peak_rss_bytes"] >= row["rss_before_model_bytes"] > 0
        assert row["speedup_vs_seed"] == pytest.approx(seed["median_ms"] / row["median_ms"])
        assert row["gmacs_per_s"] == pytest.approx(row["macs_per_slice"] / row["median_ms"] / 1e6)
    ceiling = latency["ceiling"]["1"]
    assert ceiling["gflops_best"] >= ceiling["gflops_median"] > 0


def test_a_tampered_artefact_is_refused(setup, tmp_path):
    from benchmarks.variants import discover_variants
    from edge_runtime.manifest import ManifestError

    folder = tmp_path / "art"
    folder.mkdir()
    for name in ("run-tflite-int8.tflite", "run-tflite-int8.tflite.json"):
        shutil.copy(setup.art / name, folder / name)
    assert [v.label for v in discover_variants(folder)] == ["run-tflite-int8"]
    model = folder / "run-tflite-int8.tflite"
    content = bytearray(model.read_bytes())
    content[-100] ^= 0xFF
    model.write_bytes(bytes(content))
    with pytest.raises(ManifestError, match="sha256"):
        discover_variants(folder)


def test_recorded_baseline_without_tensorflow_matches_the_keras_evaluation(setup, quick_report):
    from benchmarks.accuracy import run_accuracy

    report = run_accuracy(setup.run, setup.art, show_progress=False, use_keras=False)
    assert report.baseline.source == "recorded" and report.baseline.backend.endswith("metrics.json")
    assert report.patients == quick_report.accuracy["patients"]  # the quick profile covered every test patient
    evaluated = quick_report.accuracy["baseline"]["dice"]
    for short, dice in report.baseline.dice.items():
        assert dice == pytest.approx(evaluated[short], abs=1e-9)
    verdicts = {row.label: row.passed for row in report.variants}
    assert verdicts == {row["label"]: row["passed"] for row in quick_report.accuracy["variants"]}
    assert any("not re-evaluated" in note for note in report.notes)


def test_cli_bench_accuracy_writes_its_report_and_exits_1_on_a_failed_gate(setup, tmp_path):
    from typer.testing import CliRunner

    from edge_runtime.cli import app

    runner = CliRunner()
    args = ["bench", "accuracy", "--run", str(setup.run), "--artifacts", str(setup.art), "--quick", "--threads", "1"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path)])
    assert result.exit_code == 1, result.output
    data = json.loads((tmp_path / "accuracy.json").read_text())
    assert "degraded-tflite-fp32" in {g["variant"] for g in data["failed_gates"]}
    assert "| degraded-tflite-fp32 |" in (tmp_path / "accuracy.md").read_text()
    missing = runner.invoke(app, ["bench", "accuracy", "--run", str(setup.run), "--artifacts", str(tmp_path / "none")])
    assert missing.exit_code == 2 and "does not exist" in " ".join(missing.output.split())
