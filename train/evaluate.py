"""The one evaluation path: any predictor -> per-class Dice/IoU at original resolution, per patient.

Used by `edge-seg train` (float baseline), `edge-seg evaluate` and the benchmarks (exported
TFLite/ONNX models on an edge box), so this module never imports TensorFlow at module level.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.atomic import atomic_write_json
from edge_runtime.labels import CLASSES, NUM_CLASSES
from edge_runtime.metrics import Scores, confusion_matrix, scores_from_confusion
from edge_runtime.preprocessing import PreprocessSpec, format_windows, normalize_intensity, prepare_slice, window_specs
from edge_runtime.segmenter import labels_from_windows
from train.data.mendeley import MODALITY_CHOICES, SlicePair, load_pair, pixel_spacing_of, with_modalities

SPLITS = ("train", "val", "test")
Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SlicePrediction:
    """One evaluated slice at original resolution, kept for prediction plots."""

    patient_id: str
    disc: int
    image: np.ndarray  # normalised [0, 1] float32, original size
    truth: np.ndarray  # uint8 class ids
    pred: np.ndarray  # uint8 class ids


def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"min": float(arr.min()), "median": float(np.median(arr)), "max": float(arr.max())}


@dataclass
class EvaluationResult:
    """Dataset-level scores (one confusion matrix over all slices) plus per-patient scores."""

    scores: Scores
    per_patient: dict[str, Scores]
    n_slices: int
    split: str = "test"
    slices_per_patient: dict[str, int] = field(default_factory=dict)
    predictions: list[SlicePrediction] | None = None

    @property
    def patients(self) -> list[str]:
        return sorted(self.per_patient)

    def spread(self) -> dict[str, Any]:
        """Min / median / max over patients of the means and of each class's Dice and IoU."""
        if not self.per_patient:
            return {}
        scores = [self.per_patient[p] for p in self.patients]
        return {
            "mean_dice": _stats([s.mean_dice for s in scores]),
            "mean_iou": _stats([s.mean_iou for s in scores]),
            "per_class": {
                cls.short: {
                    "dice": _stats([s.dice(cls.short) for s in scores]),
                    "iou": _stats([s.iou(cls.short) for s in scores]),
                }
                for cls in CLASSES
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json shape: split, patients, n_slices, means, per_class, per_patient, spread."""
        return {
            "split": self.split,
            "patients": self.patients,
            "n_slices": self.n_slices,
            **self.scores.to_dict(),
            "per_patient": {
                pid: {"n_slices": self.slices_per_patient.get(pid, 0), **self.per_patient[pid].to_dict()}
                for pid in self.patients
            },
            "spread": self.spread(),
        }


def _predict_window(predict: Predictor, images: list[np.ndarray], spacings: list, spec: PreprocessSpec) -> list:
    """(scores, geometry) of each image seen through one window."""
    prepared = [prepare_slice(raw, spec, spacing) for raw, spacing in zip(images, spacings, strict=True)]
    batch = np.stack([image for image, _ in prepared])[..., None].astype(np.float32)
    scores = np.asarray(predict(batch))
    size = spec.input_size
    if scores.shape != (len(images), size, size, NUM_CLASSES):
        raise ValueError(f"predictor returned shape {scores.shape}, expected {(len(images), size, size, NUM_CLASSES)}")
    return [(slice_scores, geometry) for slice_scores, (_, geometry) in zip(scores, prepared, strict=True)]


def evaluate_predictor(
    predict: Predictor,
    pairs: Sequence[SlicePair],
    spec: PreprocessSpec,
    modality: str = "T2",
    batch_size: int = 8,
    *,
    split: str = "test",
    keep_predictions: bool = False,
    progress: Callable[[int, int], None] | None = None,
    single_window: bool = True,
) -> EvaluationResult:
    """Score `predict` on `pairs` with the runtime's preprocessing and the numpy metrics.

    predict: (N, S, S, 1) float32 normalised slices -> (N, S, S, C) per-class scores (any
    backend: Keras, TFLite, ONNX). Each prediction is resized back to the slice's original
    size (restore_labels) and compared with the original label image, so numbers do not
    depend on the model's input size. progress(done, total) is called after each batch.
    single_window=False scores what `edge-seg run` does: a fixed-window model's class
    probabilities averaged over the windows of preprocessing.window_specs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not pairs:
        raise ValueError("no slices to evaluate (empty split?)")
    samples = with_modalities(pairs, modality)
    windows = window_specs(spec, single_window)
    confusion: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    kept: list[SlicePrediction] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        loaded = [load_pair(pair, contrast) for pair, contrast in chunk]
        spacings = [pixel_spacing_of(pair) for pair, _ in chunk]
        views = [_predict_window(predict, [raw for raw, _ in loaded], spacings, window) for window in windows]
        for i, ((pair, _), (raw, truth)) in enumerate(zip(chunk, loaded, strict=True)):
            pred = labels_from_windows([view[i] for view in views])
            pid = pair.patient_id
            confusion[pid] = confusion.get(pid, 0) + confusion_matrix(pred, truth)
            counts[pid] = counts.get(pid, 0) + 1
            if keep_predictions:
                kept.append(SlicePrediction(pid, pair.disc, normalize_intensity(raw, spec), truth, pred))
        if progress is not None:
            progress(min(start + batch_size, len(samples)), len(samples))
    total = sum(confusion.values())
    return EvaluationResult(
        scores=scores_from_confusion(total),
        per_patient={pid: scores_from_confusion(conf) for pid, conf in confusion.items()},
        n_slices=len(pairs),
        split=split,
        slices_per_patient=counts,
        predictions=kept if keep_predictions else None,
    )


def keras_predictor(model, batch_size: int = 8) -> Predictor:
    """Wrap a Keras model as a numpy predictor (inference mode, float32 out)."""

    def predict(batch: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(batch), dtype=np.float32)

    return predict


def print_scores(result: EvaluationResult, title: str, console=None) -> None:
    """A rich table: Dice and IoU per class, foreground mean, and the spread over patients."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    spread = result.spread()
    table = Table(
        title=title,
        title_justify="left",
        caption=", ".join(f"{c.short} {c.name}" for c in CLASSES[1:]),
        caption_justify="left",
    )
    table.add_column("class")
    table.add_column("Dice", justify="right")
    table.add_column("IoU", justify="right")
    table.add_column("Dice per patient: min / median / max", justify="right")
    for cls in CLASSES:
        s = spread["per_class"][cls.short]["dice"]
        table.add_row(
            cls.short,
            f"{result.scores.dice(cls.short):.4f}",
            f"{result.scores.iou(cls.short):.4f}",
            f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}",
        )
    s = spread["mean_dice"]
    table.add_section()
    table.add_row(
        "mean (foreground)",
        f"{result.scores.mean_dice:.4f}",
        f"{result.scores.mean_iou:.4f}",
        f"{s['min']:.3f} / {s['median']:.3f} / {s['max']:.3f}",
        style="bold",
    )
    console.print(table)


def write_result_json(result: EvaluationResult, path: Path, **extra: Any) -> None:
    """Write `result.to_dict()` (plus `extra` keys) atomically."""
    atomic_write_json(Path(path), {**result.to_dict(), **extra})


def _load_predictor(model: Path, threads: int | None) -> tuple[Predictor, PreprocessSpec, Any, dict[str, Any]]:
    """(predict, spec, RunDir or None, provenance) for a .keras / run folder / .tflite / .onnx."""
    suffix = model.suffix.lower()
    if suffix in (".tflite", ".onnx"):
        from edge_runtime.backends import open_backend
        from edge_runtime.manifest import load_verified_manifest

        manifest = load_verified_manifest(model)
        backend = open_backend(model, threads=threads)
        return backend.predict, manifest.preprocessing, None, dict(manifest.provenance)
    from edge_runtime.user_cache import cache_dir
    from train.quiet_tf import import_tensorflow_quietly

    import_tensorflow_quietly(cache_dir() / "tensorflow.log")  # its start-up lines stay off the console
    if threads:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already started in this process (e.g. right after training)
            pass
    from train.run_dir import resolve_model

    keras_model, run = resolve_model(model)
    size = keras_model.input_shape[1]
    spec = run.spec() if run is not None else PreprocessSpec(input_size=size)
    if spec.input_size != size:
        raise ValueError(f"{model}: model input {size} px does not match its config's preprocessing ({spec.input_size} px)")
    return keras_predictor(keras_model), spec, run, (run.config().get("provenance", {}) if run else {})


def split_pairs(data: Path, split: str, run=None, seed: int = 0) -> tuple[list[SlicePair], list[str]]:
    """Pairs of `split`: from the run's split.json when known, else the data set's own split."""
    from train.data.mendeley import index_dataset
    from train.data.splits import load_or_create_split, pairs_for

    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    pairs = index_dataset(data)
    if not pairs:
        raise ValueError(f"{data}: no labelled slices found")
    splits = run.split() if run is not None and (run.path / "split.json").is_file() else load_or_create_split(data, seed)
    chosen = pairs_for(pairs, splits, split)
    if not chosen:
        raise ValueError(f"{data}: no slices of the {split} patients {splits[split][:5]} found")
    return chosen, list(splits[split])


def evaluate_command(
    model: Path,
    data: Path,
    split: str = "test",
    output: Path | None = None,
    modality: str = "T2",
    threads: int | None = None,
    json_output: bool = False,
    single_window: bool = False,
) -> EvaluationResult:
    """`edge-seg evaluate`: a table on stdout (or, with `json_output`, the scores as JSON); `output`
    also writes the JSON to a file. Bad input exits 2 with a one-line error. A fixed-window model
    is scored as `edge-seg run` uses it (the windows' mean) unless `single_window`."""
    import sys

    import typer
    from rich.console import Console

    from edge_runtime.backends import BackendError
    from edge_runtime.messages import print_error
    from edge_runtime.progress import progress_bar

    err = Console(stderr=True, soft_wrap=True)
    model, data = Path(model), Path(data)
    try:
        if modality not in MODALITY_CHOICES:
            raise ValueError(f"unknown modality {modality!r}; choose one of {', '.join(MODALITY_CHOICES)}")
        if not data.is_dir():
            raise ValueError(f"{data}: data folder not found")
        predict, spec, run, prov = _load_predictor(model, threads)
        pairs, _ = split_pairs(data, split, run, seed=int(prov.get("seed", 0) or 0))
        with progress_bar(f"evaluating {split}", total=len(with_modalities(pairs, modality))) as advance:
            result = evaluate_predictor(predict, pairs, spec, modality, split=split, single_window=single_window,
                                        progress=lambda done, total: advance(done))
    except (ValueError, OSError, BackendError) as exc:
        print_error(err, exc)
        raise typer.Exit(2) from None
    windows = [w.field_of_view_mm for w in window_specs(spec, single_window)] if spec.field_of_view_mm else None
    extra = {"model": str(model), "data": str(data.resolve()), "modality": modality, "fields_of_view_mm": windows}
    title = f"{model} on {split}: {len(result.patients)} patients, {result.n_slices} slices"
    if windows:
        title += f", windows {format_windows(windows)}"
    if json_output:
        sys.stdout.write(json.dumps({**result.to_dict(), **extra}, indent=2) + "\n")
    else:
        print_scores(result, title)
    if output is not None:
        write_result_json(result, output, **extra)
        err.print(f"wrote {output}", markup=False)
    return result
