"""`edge-seg optimize`: prune and/or quantisation-aware-train a run's model into a new run-like folder.

OUT/
  model.keras     pruned (stripped) float model; or
  model.h5        QAT / pruning-preserving QAT model (HDF5: tf_keras's .keras format does not
                  reload tfmot's QuantizeLayer; config.json "model_file" names the file, and
                  `edge-seg export` loads it under tfmot's quantize_scope)
  config.json     the source config plus "model_file", "source_run" and "optimization"
  split.json      the source run's patient split (calibration and validation stay consistent)
  metrics.json    Dice/IoU on the held-out test patients (train.evaluate), plus the source's
  sparsity.json   zero share of every Conv2D kernel, counted from the saved weights
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_path, atomic_write_json
from export.batchnorm import recalibrate_batchnorm
from export.formats import ExportInputError
from export.model_io import is_qat_model, load_keras_model, run_model_file

PRUNE_LR_FACTOR = 0.5  # pruning must regrow accuracy: half the run's peak learning rate
QAT_LR_FACTOR = 0.1  # QAT only nudges trained weights: a tenth of the peak
SPARSITY_SLACK = 0.01  # measured overall sparsity may fall this far below the target (rounding)


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    per_class = metrics.get("per_class", {})
    return {
        "mean_dice": metrics.get("mean_dice"),
        "mean_iou": metrics.get("mean_iou"),
        "dice": {k: v.get("dice") for k, v in per_class.items()},
    }


def _epoch_logger(console, label: str, epochs: int):
    import tf_keras as keras

    started = time.perf_counter()

    def log(epoch: int, logs: dict) -> None:
        console.print(
            f"{label} epoch {epoch + 1}/{epochs}: loss {logs.get('loss', float('nan')):.4f} "
            f"({time.perf_counter() - started:.0f} s)"
        )

    return keras.callbacks.LambdaCallback(on_epoch_end=log)


def _check_args(run_dir: Path, out: Path, prune: float | None, qat: bool, epochs: int) -> None:
    if prune is None and not qat:
        raise ExportInputError("nothing to do: pass --prune SPARSITY and/or --qat")
    if prune is not None and not 0.0 < prune < 1.0:
        raise ExportInputError(f"--prune must be a sparsity between 0 and 1 (exclusive), got {prune}")
    if epochs < 1:
        raise ExportInputError(f"--epochs must be >= 1, got {epochs}")
    if out.resolve() == run_dir.resolve():
        raise ExportInputError(f"--out {out} is the source run folder; choose a new folder")


def optimize_run(
    run_dir: Path,
    out: Path,
    prune: float | None = None,
    qat: bool = False,
    epochs: int = 4,
    data: Path | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    console=None,
) -> dict[str, Any]:
    """Prune (then strip) and/or QAT-fine-tune the run's model on its training split; returns metrics.json.

    BatchNorm trains normally and its statistics are re-estimated on the training slices after
    each fine-tuning stage (see export.batchnorm). The first and last Conv2D stay dense.

    With both, pruning runs first (`epochs` epochs) and pruning-preserving QAT follows
    (`epochs` more); --qat alone on an already pruned run also preserves its sparsity.
    """
    import tf_keras as keras
    from rich.console import Console

    from export.prune import kept_dense, measure_sparsity, prune_wrap, pruning_callbacks, pruning_plan, strip
    from export.qat import quantize_aware, save_qat_model
    from train.evaluate import evaluate_predictor, keras_predictor, print_scores, split_pairs
    from train.losses import dice_ce_loss
    from train.pipeline import make_dataset, prepare_arrays
    from train.provenance import provenance
    from train.run_dir import RunDir, RunDirError

    console = console or Console(stderr=True)
    run_dir, out = Path(run_dir), Path(out)
    _check_args(run_dir, out, prune, qat, epochs)
    source = RunDir(run_dir)
    if not source.is_run():
        raise ExportInputError(f"{run_dir}: not a run folder (no config.json)")
    try:
        config = source.config()
        spec = source.spec()
        data = Path(data) if data is not None else source.data_dir()
    except RunDirError as exc:
        raise ExportInputError(str(exc)) from exc
    if not data.is_dir():
        raise ExportInputError(f"{data}: data folder not found (pass --data)")
    model = load_keras_model(run_model_file(source))
    if is_qat_model(model):
        raise ExportInputError(f"{run_dir}: the model is already quantisation-aware; optimise its float source run")
    source_opt = dict(config.get("optimization") or {})
    seed = int(config.get("seed", 0) or 0)
    modality = str(config.get("modality", "T2"))
    batch_size = batch_size or int(config.get("batch_size", 8))
    peak_lr = float(config.get("lr", 2e-3))
    prune_lr, qat_lr = (lr, lr) if lr else (peak_lr * PRUNE_LR_FACTOR, peak_lr * QAT_LR_FACTOR)
    keras.utils.set_random_seed(seed)

    try:
        train_pairs, _ = split_pairs(data, "train", source, seed=seed)
        test_pairs, _ = split_pairs(data, "test", source, seed=seed)
        # the training targets of train.fit: class fractions resized like the image
        arrays = prepare_arrays(train_pairs, spec, modality, fractions=True)
    except (ValueError, OSError) as exc:
        raise ExportInputError(f"{data}: {exc}") from exc
    dataset = make_dataset(arrays, batch_size, training=True, seed=seed)
    steps = math.ceil(len(arrays) / batch_size)
    console.print(f"fine-tuning on {len(arrays)} training slices ({steps} steps/epoch, batch {batch_size})")

    record: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "source_optimization": source_opt or None}
    started = time.perf_counter()
    kept = kept_dense(model)
    if prune is not None:
        plan = pruning_plan(prune, epochs * steps)
        wrapped = prune_wrap(model, plan)
        wrapped.compile(optimizer=keras.optimizers.Adam(prune_lr), loss=dice_ce_loss())
        wrapped.fit(dataset, epochs=epochs, verbose=0, callbacks=[*pruning_callbacks(), _epoch_logger(console, "prune", epochs)])
        model = strip(wrapped)
        recalibrate_batchnorm(model, arrays.images)
        measured = measure_sparsity(model, kept)["pruned_overall"]
        if measured < prune - SPARSITY_SLACK:
            raise RuntimeError(f"pruning reached sparsity {measured:.3f}, below the target {prune}")
        record["prune_plan"] = plan.to_dict()
        record["prune_lr"] = prune_lr
        record["kept_dense"] = sorted(kept)
    pruned_target = prune if prune is not None else source_opt.get("prune")
    record["prune"] = pruned_target
    if qat:
        preserve = bool(pruned_target)
        model = quantize_aware(model, preserve_sparsity=preserve)
        model.compile(optimizer=keras.optimizers.Adam(qat_lr), loss=dice_ce_loss())
        model.fit(dataset, epochs=epochs, verbose=0, callbacks=[_epoch_logger(console, "qat", epochs)])
        recalibrate_batchnorm(model, arrays.images)
        record["qat"] = True
        record["qat_lr"] = qat_lr
        record["scheme"] = "Default8BitPrunePreserveQuantizeScheme" if preserve else "Default8BitQuantizeScheme"
    else:
        record["qat"] = bool(source_opt.get("qat"))
    record["fine_tune_seconds"] = time.perf_counter() - started

    result = evaluate_predictor(keras_predictor(model, batch_size), test_pairs, spec, modality, batch_size, split="test")
    sparsity = measure_sparsity(model, kept if pruned_target else frozenset())
    record["sparsity"] = sparsity["pruned_overall"]
    record["sparsity_all_convs"] = sparsity["overall"]
    source_metrics = _summary(source.metrics()) if (source.path / "metrics.json").is_file() else None
    metrics = {
        **result.to_dict(),
        "optimization": record,
        "source_run": str(source.path.resolve()),
        "source_metrics": source_metrics,
        "delta_mean_dice": (result.scores.mean_dice - source_metrics["mean_dice"]) if source_metrics else None,
    }

    out.mkdir(parents=True, exist_ok=True)
    model_file = "model.h5" if is_qat_model(model) else "model.keras"
    with atomic_path(out / model_file) as tmp:
        if model_file.endswith(".h5"):
            save_qat_model(model, tmp)
        else:
            model.save(tmp)
    stale = out / ("model.keras" if model_file == "model.h5" else "model.h5")
    stale.unlink(missing_ok=True)
    split = source.split() if (source.path / "split.json").is_file() else None
    if split is not None:
        atomic_write_json(out / "split.json", split)
    atomic_write_json(out / "sparsity.json", sparsity)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(
        out / "config.json",
        {
            **config,
            "data": str(data.resolve()),
            "model_file": model_file,
            "source_run": str(source.path.resolve()),
            "optimization": record,
            "provenance": provenance(seed=seed, source_run=str(source.path.resolve())),
        },
    )
    fg = [c for c in result.scores.per_class if c.class_id]
    console.print(
        f"{out}: sparsity {sparsity['pruned_overall']:.3f} of pruned layers ({sparsity['overall']:.3f} of all); "
        f"test mean Dice {result.scores.mean_dice:.4f}"
        + (f" (source {source_metrics['mean_dice']:.4f})" if source_metrics else "")
        + " | "
        + " ".join(f"{c.short} {c.dice:.3f}" for c in fg)
    )
    print_scores(result, f"{out} on test: {len(result.patients)} patients", console)
    return metrics


def optimize_command(
    run_dir: Path, out: Path, prune: float | None = None, qat: bool = False, epochs: int = 4, data: Path | None = None
) -> dict[str, Any]:
    """`edge-seg optimize`: bad input -> one line on stderr and exit status 2."""
    import typer
    from rich.console import Console

    err = Console(stderr=True)
    try:
        return optimize_run(run_dir, out, prune=prune, qat=qat, epochs=epochs, data=data, console=err)
    except ExportInputError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
