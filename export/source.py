"""What `edge-seg export` exports: a run folder or a model file, with its spec, config, baseline and provenance."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.manifest import sha256_file
from edge_runtime.preprocessing import PreprocessSpec
from export.formats import ExportInputError


@dataclass
class ExportSource:
    """A model to export with everything known about it: spec, run folder, config, float baseline."""

    model: Any
    path: Path
    spec: PreprocessSpec
    run: Any  # train.run_dir.RunDir or None
    config: dict[str, Any]
    name: str


def resolve_source(model_or_run: Path) -> ExportSource:
    """Load a run folder, a run's model file, or a bare .keras/.h5 model, refusing anything else.

    Raises ExportInputError naming the path when it is missing, not a run folder, or not a
    readable Keras model.
    """
    from train.run_dir import KERAS_SUFFIXES, RunDir, RunDirError, resolve_model

    path = Path(model_or_run)
    if not path.exists():
        raise ExportInputError(f"{path}: no such model file or run folder")
    if path.is_dir() and not RunDir(path).is_run():
        raise ExportInputError(f"{path}: not a run folder (no config.json) and not a Keras model")
    if path.is_file() and path.suffix not in KERAS_SUFFIXES:
        raise ExportInputError(f"{path}: not a Keras model (expected a .keras or .h5 file or a run folder)")
    try:
        model, run = resolve_model(path)  # the one resolution of run folders and their model files
        model_path = run.model_path if path.is_dir() else path
        config = run.config() if run is not None else {}
        size = (getattr(model, "input_shape", None) or (None, 0))[1]
        spec = run.spec() if run is not None else PreprocessSpec(input_size=int(size or 0))
    except RunDirError as exc:
        raise ExportInputError(str(exc)) from exc
    name = (run.path.resolve().name if run is not None else model_path.stem) or "model"
    return ExportSource(model, model_path, spec, run, config, name)


def baseline_metrics(run) -> dict[str, Any]:
    """The run's float metrics without the per-patient detail (kept in metrics.json)."""
    if run is None or not (run.path / "metrics.json").is_file():
        return {}
    metrics = run.metrics()
    keep = ("split", "n_slices", "mean_dice", "mean_iou", "per_class")
    return {k: metrics[k] for k in keep if k in metrics} | {"patients": len(metrics.get("patients", []))}


def source_provenance(source: ExportSource) -> dict[str, Any]:
    """Recipe, data, seed, training and optimisation record of the source, for every manifest."""
    config = source.config
    optimization = config.get("optimization") or {}
    return {
        "recipe": {k: config[k] for k in ("arch", "encoder", "image_size", "base_filters", "epochs", "lr") if k in config},
        "data": config.get("data"),
        "modality": config.get("modality"),
        "seed": config.get("seed"),
        "training": config.get("provenance"),
        "optimization": optimization or None,
        "pruned": bool(optimization.get("prune")),
        "source_model": str(source.path.resolve()),
        "source_sha256": sha256_file(source.path),
    }


def data_folder(source: ExportSource, calibration_data: Path | None) -> Path | None:
    """--calibration-data when given, else the run's data folder when it still exists."""
    if calibration_data is not None:
        return Path(calibration_data)
    data = source.config.get("data")
    return Path(data) if data and Path(data).is_dir() else None
