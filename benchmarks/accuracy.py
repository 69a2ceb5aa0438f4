"""Accuracy benchmark: every exported variant vs the float baseline on the held-out test patients.

One evaluation path (train.evaluate.evaluate_predictor: the runtime's preprocessing, numpy
Dice/IoU at original resolution) for the Keras baseline and every artefact run through
edge_runtime.backends; per class Dice, IoU and their change vs the baseline; thecal-sac area
error and stenosis-grade agreement against the ground truth (edge_runtime.measure); and the
tolerance gates of edge_runtime.tolerances. Without TensorFlow (an edge box) the baseline is
the recorded metrics.json of the run, or the float-baseline metrics in the manifests.

This module holds the orchestration; the rows and report are in benchmarks.accuracy_model, the
tables in benchmarks.accuracy_markdown and the command line in benchmarks.accuracy_cli (their
public names are importable from here too).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy_cli import accuracy_command, print_verdict
from benchmarks.accuracy_markdown import accuracy_markdown, write_accuracy
from benchmarks.accuracy_model import BASELINE_LABEL, AccuracyReport, ModelAccuracy
from benchmarks.markdown import md_cell
from benchmarks.variants import Variant, discover_variants
from edge_runtime.backends import BackendError, default_threads, open_backend
from edge_runtime.labels import CLASSES, FOREGROUND
from edge_runtime.measure import StenosisThresholds, measure_slice
from edge_runtime.progress import progress_bar
from edge_runtime.tolerances import check_gates
from train.data.mendeley import NOMINAL_PIXEL_SPACING_MM

__all__ = [
    "BASELINE_LABEL",
    "NOMINAL_PIXEL_SPACING_MM",
    "AccuracyReport",
    "ModelAccuracy",
    "accuracy_command",
    "accuracy_markdown",
    "baseline_accuracy",
    "clinical_agreement",
    "evaluate_variant",
    "md_cell",
    "print_verdict",
    "recorded_scores",
    "run_accuracy",
    "write_accuracy",
]

def clinical_agreement(
    predictions: Sequence[Any],
    spacing: Sequence[float] = NOMINAL_PIXEL_SPACING_MM,
    thresholds: StenosisThresholds = StenosisThresholds(),
) -> dict[str, Any]:
    """Thecal-sac area error (mm2) and stenosis-grade agreement of predicted vs true masks.

    `predictions` are train.evaluate.SlicePrediction (truth and pred masks at original size).
    Area errors are taken over slices where either mask shows thecal sac; grades are compared
    on slices whose truth shows thecal sac, a prediction without any counting as "none".
    """
    errors: list[float] = []
    truth_areas: list[float] = []
    confusion: dict[str, dict[str, int]] = {}
    agree = graded = 0
    for item in predictions:
        truth = measure_slice(item.truth, spacing, thresholds=thresholds)
        pred = measure_slice(item.pred, spacing, thresholds=thresholds)
        if truth.pixel_counts["TS"] or pred.pixel_counts["TS"]:
            errors.append(pred.ts_area - truth.ts_area)
            truth_areas.append(truth.ts_area)
        if truth.ts_grade is None:
            continue
        predicted = pred.ts_grade or "none"
        confusion.setdefault(truth.ts_grade, {}).setdefault(predicted, 0)
        confusion[truth.ts_grade][predicted] += 1
        graded += 1
        agree += int(predicted == truth.ts_grade)
    err = np.asarray(errors, dtype=np.float64)
    truth_arr = np.asarray(truth_areas, dtype=np.float64)
    nonzero = truth_arr > 0
    return {
        "slices": len(predictions),
        "ts_slices": int(err.size),
        "area_mae_mm2": float(np.abs(err).mean()) if err.size else None,
        "area_bias_mm2": float(err.mean()) if err.size else None,
        "area_max_abs_error_mm2": float(np.abs(err).max()) if err.size else None,
        "area_mean_abs_percent": float(100 * np.mean(np.abs(err[nonzero]) / truth_arr[nonzero])) if nonzero.any() else None,
        "graded_slices": graded,
        "grade_agreement": agree / graded if graded else None,
        "grade_confusion": confusion,
    }


def recorded_scores(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, float]] | None:
    """(dice, iou) per class from a metrics.json-shaped dict (top level or under test/scores/metrics)."""
    for candidate in (metrics, metrics.get("test"), metrics.get("scores"), metrics.get("metrics")):
        if isinstance(candidate, dict) and isinstance(candidate.get("per_class"), dict):
            per_class = candidate["per_class"]
            try:
                dice = {c.short: float(per_class[c.short]["dice"]) for c in CLASSES}
                iou = {c.short: float(per_class[c.short].get("iou", float("nan"))) for c in CLASSES}
            except (KeyError, TypeError, ValueError):
                continue
            return dice, iou
    return None


def _fill_scores(row: ModelAccuracy, result) -> None:
    """Copy an EvaluationResult's scores into a row."""
    scores = result.scores
    row.dice = {c.short: scores.dice(c.short) for c in CLASSES}
    row.iou = {c.short: scores.iou(c.short) for c in CLASSES}
    row.mean_dice, row.mean_iou = scores.mean_dice, scores.mean_iou
    per_patient = [s.mean_dice for s in result.per_patient.values()]
    if per_patient:
        row.patient_mean_dice = {
            "min": float(np.min(per_patient)),
            "median": float(np.median(per_patient)),
            "max": float(np.max(per_patient)),
        }


def _compare(row: ModelAccuracy, baseline: ModelAccuracy) -> None:
    """Per-class and mean deltas vs the baseline."""
    row.delta_dice = {c.short: row.dice[c.short] - baseline.dice[c.short] for c in CLASSES}
    row.delta_iou = {c.short: row.iou[c.short] - baseline.iou[c.short] for c in CLASSES}
    row.delta_mean_dice = float(row.mean_dice - baseline.mean_dice)


def _foreground_mean(values: dict[str, float]) -> float:
    return float(np.mean([values[c.short] for c in FOREGROUND]))


def _evaluate(predict, pairs, spec, modality: str, label: str, show_progress: bool):
    from train.data.mendeley import with_modalities
    from train.evaluate import evaluate_predictor

    if not show_progress:
        return evaluate_predictor(predict, pairs, spec, modality, keep_predictions=True)
    with progress_bar(f"accuracy {label}", total=len(with_modalities(pairs, modality))) as advance:
        return evaluate_predictor(
            predict, pairs, spec, modality, keep_predictions=True, progress=lambda done, total: advance(done)
        )


def evaluate_variant(
    variant: Variant, pairs, modality: str, threads: int, spacing: Sequence[float], show_progress: bool = True
) -> ModelAccuracy:
    """Run one artefact through its edge backend on the test slices (errors land in the row)."""
    row = ModelAccuracy(variant.label, variant.format, variant.precision, variant.recipe, "artifact", variant.gate.value)
    try:
        backend = open_backend(variant.path, threads=threads)
    except BackendError as exc:
        if "is not installed" in str(exc):
            row.skipped = str(exc)
        else:
            row.error = str(exc)
        return row
    row.backend = backend.name
    start = time.perf_counter()
    try:
        result = _evaluate(backend.predict, pairs, variant.manifest.preprocessing, modality, variant.label, show_progress)
    except (ValueError, RuntimeError, OSError) as exc:
        row.error = f"evaluation failed: {exc}"
        return row
    row.eval_seconds = time.perf_counter() - start
    _fill_scores(row, result)
    row.ts = clinical_agreement(result.predictions or [], spacing)
    return row


def _tensorflow_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("tf_keras") is not None


def baseline_accuracy(
    run,
    pairs,
    modality: str,
    spacing: Sequence[float],
    variants: Sequence[Variant],
    show_progress: bool = True,
    use_keras: bool | None = None,
) -> ModelAccuracy:
    """The float baseline: the run's Keras model evaluated here when TensorFlow is installed,
    else the recorded metrics.json of the run, else the manifests' float-baseline metrics."""
    row = ModelAccuracy(BASELINE_LABEL, "keras", "fp32", "float", "keras")
    if use_keras is None:
        use_keras = _tensorflow_installed()
    if use_keras:
        from train.evaluate import keras_predictor

        model = run.load_model()
        start = time.perf_counter()
        result = _evaluate(keras_predictor(model), pairs, run.spec(), modality, BASELINE_LABEL, show_progress)
        row.eval_seconds = time.perf_counter() - start
        _fill_scores(row, result)
        row.ts = clinical_agreement(result.predictions or [], spacing)
        return row
    row.source = "recorded"
    sources: list[tuple[str, dict]] = []
    if (run.path / "metrics.json").is_file():
        sources.append((str(run.path / "metrics.json"), run.metrics()))
    sources += [(f"{v.path.name} manifest", v.manifest.baseline_metrics) for v in variants if v.manifest.baseline_metrics]
    for source, metrics in sources:
        found = recorded_scores(metrics)
        if found is not None:
            row.dice, row.iou = found
            row.mean_dice, row.mean_iou = _foreground_mean(row.dice), _foreground_mean(row.iou)
            row.backend = source
            return row
    row.error = (
        f"no float baseline: TensorFlow is not installed and neither {run.path / 'metrics.json'} nor any manifest records one"
    )
    return row


def _spacing_for(pairs) -> tuple[list[float], str]:
    spacings = {p.pixel_spacing for p in pairs}
    if len(spacings) == 1 and (only := spacings.pop()):
        return [float(v) for v in only], "data"
    return list(NOMINAL_PIXEL_SPACING_MM), "nominal"


def run_accuracy(
    run_dir: Path,
    artifacts: Path,
    data: Path | None = None,
    max_patients: int | None = None,
    threads: int | None = None,
    show_progress: bool = True,
    use_keras: bool | None = None,
    variants: Sequence[Variant] | None = None,
    allow_skip: bool = False,
) -> AccuracyReport:
    """Evaluate the baseline and every artefact in `artifacts` on the run's test patients.

    `max_patients` keeps only the first N test patients (the quick profile); it is ignored when
    the baseline is a recorded one, which was computed on all of them. A variant whose backend
    is not installed is skipped, which fails the report unless `allow_skip`. Raises
    FileNotFoundError / ValueError (ManifestError, RunDirError) for unusable inputs.
    """
    from train.evaluate import split_pairs
    from train.run_dir import RunDir

    run = RunDir(Path(run_dir))
    if not run.is_run():
        raise FileNotFoundError(f"{run_dir}: not a training run folder (no config.json)")
    config = run.config()
    data = Path(data) if data is not None else run.data_dir()
    if not data.is_dir():
        raise FileNotFoundError(f"data folder {data} not found (pass --data)")
    modality = str(config.get("modality", "T2"))
    variants = list(variants) if variants is not None else discover_variants(artifacts)
    pairs, patients = split_pairs(data, "test", run, seed=int(config.get("seed", 0) or 0))
    if use_keras is None:
        use_keras = _tensorflow_installed()
    notes: list[str] = []
    if max_patients is not None and use_keras:
        keep = sorted({p.patient_id for p in pairs})[:max_patients]
        pairs = [p for p in pairs if p.patient_id in keep]
        notes.append(f"quick profile: first {len(keep)} of {len(patients)} test patients")
        patients = keep
    spacing, spacing_source = _spacing_for(pairs)
    if spacing_source == "nominal":
        notes.append(f"label images carry no pixel spacing: areas use the nominal {spacing[0]} mm")
    threads = threads or default_threads()
    baseline = baseline_accuracy(run, pairs, modality, spacing, variants, show_progress, use_keras)
    if baseline.source == "recorded":
        notes.append(f"baseline recorded ({baseline.backend}), not re-evaluated: TensorFlow is not installed")
    rows = []
    for variant in variants:
        row = evaluate_variant(variant, pairs, modality, threads, spacing, show_progress)
        if row.dice and baseline.dice:
            _compare(row, baseline)
            row.gates = check_gates(row.label, variant.gate, row.dice, baseline.dice)
        rows.append(row)
    return AccuracyReport(
        run_dir=str(run.path),
        data=str(data),
        modality=modality,
        patients=list(patients),
        n_slices=len(pairs),
        baseline=baseline,
        variants=rows,
        thresholds_mm2=asdict(StenosisThresholds()),
        pixel_spacing_mm=spacing,
        notes=notes,
        allow_skip=allow_skip,
    )
