"""`bench accuracy` with a variant it cannot run here: skipped counts as not passed unless --allow-skip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from band_model import write_band_model
from banded_data import make_banded
from typer.testing import CliRunner

from edge_runtime.cli import app
from edge_runtime.preprocessing import PreprocessSpec

pytest.importorskip("onnxruntime", reason="the band model is an ONNX file; its recorded baseline is computed with onnxruntime")


@pytest.fixture(scope="module")
def bench_inputs(tmp_path_factory) -> tuple[Path, Path]:
    """(run folder, artefacts): banded data, the exact band model, and the run's recorded baseline."""
    from edge_runtime.backends import open_backend
    from train.evaluate import evaluate_predictor, split_pairs
    from train.run_dir import RunDir

    root = tmp_path_factory.mktemp("skip")
    data = make_banded(root / "data")
    model = write_band_model(root / "art", input_size=64, name="bands-onnx-fp32")
    run = root / "run"
    run.mkdir()
    config = {"data": str(data), "modality": "T2", "seed": 0, "preprocessing": PreprocessSpec(input_size=64).to_dict()}
    (run / "config.json").write_text(json.dumps(config))
    (run / "split.json").write_text((data / "split.json").read_text())
    pairs, _ = split_pairs(data, "test", RunDir(run))
    baseline = evaluate_predictor(open_backend(model, threads=1).predict, pairs, PreprocessSpec(input_size=64))
    (run / "metrics.json").write_text(json.dumps(baseline.to_dict()))
    return run, root / "art"


@pytest.fixture()
def edge_box(monkeypatch):
    """No TensorFlow as far as the benchmark knows: the baseline is the run's recorded metrics.json."""
    import benchmarks.accuracy

    monkeypatch.setattr(benchmarks.accuracy, "_tensorflow_installed", lambda: False)


def _bench(run: Path, art: Path, out: Path, *extra: str):
    args = ["bench", "accuracy", "--run", str(run), "--artifacts", str(art), "--threads", "1", "-o", str(out), *extra]
    return CliRunner().invoke(app, args)


def _without_onnxruntime(monkeypatch) -> None:
    import benchmarks.accuracy
    from edge_runtime.backends import BackendError

    def missing(path, threads=None):
        raise BackendError("backend 'onnxruntime' is not installed: pip install 'edge-seg[onnx]'")

    monkeypatch.setattr(benchmarks.accuracy, "open_backend", missing)


def test_an_evaluated_variant_that_holds_its_gate_passes(bench_inputs, edge_box, tmp_path):
    run, art = bench_inputs
    result = _bench(run, art, tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert report["passed"] and report["skipped"] == [] and report["variants"][0]["gates"]


def test_a_skipped_variant_fails_the_benchmark(bench_inputs, edge_box, monkeypatch, tmp_path):
    run, art = bench_inputs
    _without_onnxruntime(monkeypatch)
    result = _bench(run, art, tmp_path)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "skipped: bands-onnx-fp32: backend 'onnxruntime' is not installed: pip install 'edge-seg[onnx]'" in text
    assert "not passed; --allow-skip accepts it" in text and "accuracy gates FAILED" in text
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert report["skipped"] == ["bands-onnx-fp32"] and report["passed"] is False
    assert report["variants"][0]["passed"] is False and report["failed_gates"] == []
    assert "**skipped: not passed**" in (tmp_path / "accuracy.md").read_text()


def test_allow_skip_accepts_it_and_says_so(bench_inputs, edge_box, monkeypatch, tmp_path):
    run, art = bench_inputs
    _without_onnxruntime(monkeypatch)
    result = _bench(run, art, tmp_path, "--allow-skip")
    assert result.exit_code == 0, result.output
    assert "accepted by --allow-skip" in " ".join(result.output.split())
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert report["allow_skip"] is True and report["passed"] is True and report["skipped"] == ["bands-onnx-fp32"]
