"""`bench latency` times every installed backend that can run each artefact (OpenVINO for .tflite
and .onnx), plus what `auto` picks, and shows per thread count the fastest and each one's ratio."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks.latency import AUTO, QUICK_LATENCY, backend_markdown, measure_latency
from benchmarks.variants import discover_variants
from edge_runtime.backends import FORMAT_BACKENDS, candidate_backends
from edge_runtime.manifest import manifest_path

MODELS = Path(__file__).resolve().parents[1] / "edge_runtime" / "models"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory):
    """The bundled int8 models (TFLite and ONNX) measured with the quick profile, auto rows on."""
    art = tmp_path_factory.mktemp("art")
    for name, label in (("default.tflite", "default-tflite-int8.tflite"), ("default.onnx", "default-onnx-int8.onnx")):
        shutil.copy(MODELS / name, art / label)
        shutil.copy(manifest_path(MODELS / name), manifest_path(art / label))
    profile = QUICK_LATENCY.replace(auto=True, min_repeats=3, max_repeats=5, budget_s=0.2)
    return measure_latency(discover_variants(art), profile, include_seed=False, show_progress=False)


def test_every_installed_backend_of_each_format_gets_a_row(report) -> None:
    assert not report.errors, [r.error for r in report.errors]
    got = {(r.label, r.backend) for r in report.rows}
    for label, suffix in (("default-tflite-int8", ".tflite"), ("default-onnx-int8", ".onnx")):
        installed = candidate_backends(Path(f"m{suffix}"))
        assert {b for lab, b in got if lab == label} - {AUTO} == set(installed)
        assert set(installed) <= set(FORMAT_BACKENDS[suffix])
        assert ((label, AUTO) in got) == (len(installed) > 1)


def test_ratios_are_to_the_fastest_backend_of_the_same_model_and_thread_count(report) -> None:
    for label in ("default-tflite-int8", "default-onnx-int8"):
        rows = [r for r in report.rows if r.label == label and r.threads == 1]
        explicit = [r for r in rows if r.backend != AUTO]
        fastest = min(r.median_ms for r in explicit)
        assert min(r.vs_fastest_backend for r in explicit) == pytest.approx(1.0)
        for row in rows:
            assert row.vs_fastest_backend == pytest.approx(row.median_ms / fastest)
        auto = next((r for r in rows if r.backend == AUTO), None)
        if auto is not None:
            assert auto.backend_used in {r.backend for r in explicit}


def test_the_backend_table_names_the_fastest_per_model(report) -> None:
    text = backend_markdown(report)
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert set(lines) == {"default-tflite-int8", "default-onnx-int8"}
    for label, line in lines.items():
        rows = [r for r in report.rows if r.label == label and r.backend != AUTO]
        best = min(rows, key=lambda r: r.median_ms)
        assert f"| 1 | {best.backend} | {best.median_ms:.2f} |" in line
        assert "(x1.00)" in line
