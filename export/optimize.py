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

config.json "optimization" records the plan and, with --recover-epochs, every recovery round's
validation Dice drop and whether the pruned gate was reached.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_path, atomic_write_json
from edge_runtime.messages import print_error
from export.batchnorm import recalibrate_batchnorm
from export.formats import ExportInputError
from export.model_io import is_qat_model, load_keras_model

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


def _check_args(run_dir: Path, out: Path, prune: float | None, qat: bool, epochs: int, recover_epochs: int) -> None:
    if prune is None and not qat:
        raise ExportInputError("nothing to do: pass --prune SPARSITY and/or --qat")
    if prune is not None and not 0.0 < prune < 1.0:
        raise ExportInputError(f"--prune must be a sparsity between 0 and 1 (exclusive), got {prune}")
    if epochs < 1:
        raise ExportInputError(f"--epochs must be >= 1, got {epochs}")
    if recover_epochs < 0:
        raise ExportInputError(f"--recover-epochs must be >= 0, got {recover_epochs}")
    if recover_epochs and prune is None:
        raise ExportInputError("--recover-epochs fine-tunes a pruned model: pass --prune SPARSITY")
    if out.resolve() == run_dir.resolve():
        raise ExportInputError(f"--out {out} is the source run folder; choose a new folder")


@dataclass
class _Source:
    """The run being optimised: its folder, config, spec, model and training/validation/test data."""

    run: Any
    config: dict[str, Any]
    spec: Any
    data: Path
    model: Any
    seed: int
    modality: str
    arrays: Any  # training slices with class-fraction targets (train.fit's)
    val_pairs: list
    test_pairs: list


def _load_source(run_dir: Path, data: Path | None, with_val: bool) -> _Source:
    """Read the run folder and its training and test splits (and the validation split when
    `with_val`), refusing (ExportInputError) what cannot be optimised."""
    from train.evaluate import split_pairs
    from train.pipeline import prepare_arrays
    from train.run_dir import RunDir, RunDirError

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
    model = load_keras_model(source.model_path)
    if is_qat_model(model):
        raise ExportInputError(f"{run_dir}: the model is already quantisation-aware; optimise its float source run")
    seed, modality = int(config.get("seed", 0) or 0), str(config.get("modality", "T2"))
    try:
        train_pairs, _ = split_pairs(data, "train", source, seed=seed)
        val_pairs = split_pairs(data, "val", source, seed=seed)[0] if with_val else []
        test_pairs, _ = split_pairs(data, "test", source, seed=seed)
        # the training targets of train.fit: class fractions resized like the image
        arrays = prepare_arrays(train_pairs, spec, modality, fractions=True)
    except (ValueError, OSError) as exc:
        raise ExportInputError(f"{data}: {exc}") from exc
    return _Source(source, config, spec, data, model, seed, modality, arrays, val_pairs, test_pairs)


def _val_mean_dice(model, src: _Source, batch_size: int) -> float:
    from train.evaluate import evaluate_predictor, keras_predictor

    return evaluate_predictor(keras_predictor(model, batch_size), src.val_pairs, src.spec, src.modality, batch_size,
                              split="val").scores.mean_dice  # fmt: skip


def _prune(src: _Source, dataset, steps: int, target: float, epochs: int, recover_epochs: int, lr: float,
           batch_size: int, console) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Magnitude-prune to `target` over `epochs`, then up to `recover_epochs` more at full sparsity.

    Recovery stops as soon as the validation-split mean Dice drop against the source model is
    within the pruned gate (edge_runtime.tolerances), so a high sparsity is fine-tuned until it
    passes, or the record says by how much it did not. The test split is never looked at here.
    """
    import tf_keras as keras

    from edge_runtime.tolerances import DEFAULT_TOLERANCES, GateKind
    from export.prune import kept_dense, measure_sparsity, prune_wrap, pruning_callbacks, pruning_plan, strip
    from train.losses import dice_ce_loss

    kept = kept_dense(src.model)
    # before wrapping: the wrapped model shares (and trains) the source's BatchNorm layers
    source_dice = _val_mean_dice(src.model, src, batch_size) if recover_epochs else None
    plan = pruning_plan(target, epochs * steps)
    wrapped = prune_wrap(src.model, plan)
    wrapped.compile(optimizer=keras.optimizers.Adam(lr), loss=dice_ce_loss(class_weights=src.config.get("class_weights")))
    wrapped.fit(dataset, epochs=epochs, verbose=0, callbacks=[*pruning_callbacks(), _epoch_logger(console, "prune", epochs)])
    record: dict[str, Any] = {"prune_plan": plan.to_dict(), "prune_lr": lr, "kept_dense": sorted(kept)}
    model = strip(wrapped)  # shares the BatchNorm layers with `wrapped`
    recalibrate_batchnorm(model, src.arrays.images)
    if recover_epochs:
        limit = DEFAULT_TOLERANCES[GateKind.PRUNED].mean
        rounds = []
        for extra in range(recover_epochs + 1):
            if extra:
                wrapped.fit(dataset, epochs=1, verbose=0, callbacks=pruning_callbacks())
                model = strip(wrapped)
                recalibrate_batchnorm(model, src.arrays.images)
            drop = source_dice - _val_mean_dice(model, src, batch_size)
            rounds.append({"extra_epochs": extra, "val_mean_dice_drop": drop})
            console.print(f"prune recovery: {extra} extra epochs, validation mean Dice drop {drop:+.4f} (gate {limit})")
            if drop <= limit:
                break
        record["recovery"] = {"max_epochs": recover_epochs, "gate_mean_drop": limit, "source_val_mean_dice": source_dice,
                              "rounds": rounds, "within_gate": rounds[-1]["val_mean_dice_drop"] <= limit}  # fmt: skip
    measured = measure_sparsity(model, kept)["pruned_overall"]
    if measured < target - SPARSITY_SLACK:
        raise RuntimeError(f"pruning reached sparsity {measured:.3f}, below the target {target}")
    return model, record


def _qat(model, src: _Source, dataset, epochs: int, lr: float, preserve: bool, console) -> tuple[Any, dict[str, Any]]:
    """Quantisation-aware fine-tuning (pruning-preserving when `preserve`)."""
    import tf_keras as keras

    from export.qat import quantize_aware
    from train.losses import dice_ce_loss

    model = quantize_aware(model, preserve_sparsity=preserve)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=dice_ce_loss(class_weights=src.config.get("class_weights")))
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[_epoch_logger(console, "qat", epochs)])
    recalibrate_batchnorm(model, src.arrays.images)
    scheme = "Default8BitPrunePreserveQuantizeScheme" if preserve else "Default8BitQuantizeScheme"
    return model, {"qat": True, "qat_lr": lr, "scheme": scheme}


def _write_run(out: Path, model, src: _Source, metrics: dict[str, Any], sparsity: dict, record: dict[str, Any]) -> None:
    """OUT as the module docstring describes it; a stale model file of the other kind is removed."""
    from export.qat import save_qat_model
    from train.provenance import provenance

    out.mkdir(parents=True, exist_ok=True)
    model_file = "model.h5" if is_qat_model(model) else "model.keras"
    with atomic_path(out / model_file) as tmp:
        if model_file.endswith(".h5"):
            save_qat_model(model, tmp)
        else:
            model.save(tmp)
    (out / ("model.keras" if model_file == "model.h5" else "model.h5")).unlink(missing_ok=True)
    if (src.run.path / "split.json").is_file():
        atomic_write_json(out / "split.json", src.run.split())
    atomic_write_json(out / "sparsity.json", sparsity)
    atomic_write_json(out / "metrics.json", metrics)
    source_run = str(src.run.path.resolve())
    atomic_write_json(
        out / "config.json",
        {
            **src.config,
            "data": str(src.data.resolve()),
            "model_file": model_file,
            "source_run": source_run,
            "optimization": record,
            "provenance": provenance(seed=src.seed, source_run=source_run),
        },
    )


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
    recover_epochs: int = 0,
) -> dict[str, Any]:
    """Prune (then strip) and/or QAT-fine-tune the run's model on its training split; returns metrics.json.

    BatchNorm trains normally and its statistics are re-estimated on the training slices after
    each fine-tuning stage (see export.batchnorm). The first and last Conv2D stay dense.

    With both, pruning runs first (`epochs` epochs) and pruning-preserving QAT follows
    (`epochs` more); --qat alone on an already pruned run also preserves its sparsity.
    `recover_epochs` allows that many more pruning epochs at full sparsity, stopped once the
    validation Dice drop is within the pruned gate (see _prune).
    """
    import tf_keras as keras
    from rich.console import Console

    from export.prune import kept_dense, measure_sparsity
    from train.evaluate import evaluate_predictor, keras_predictor, print_scores
    from train.pipeline import make_dataset

    console = console or Console(stderr=True)
    run_dir, out = Path(run_dir), Path(out)
    _check_args(run_dir, out, prune, qat, epochs, recover_epochs)
    src = _load_source(run_dir, data, with_val=recover_epochs > 0)
    source_opt = dict(src.config.get("optimization") or {})
    batch_size = batch_size or int(src.config.get("batch_size", 8))
    peak_lr = float(src.config.get("lr", 2e-3))
    prune_lr, qat_lr = (lr, lr) if lr else (peak_lr * PRUNE_LR_FACTOR, peak_lr * QAT_LR_FACTOR)
    keras.utils.set_random_seed(src.seed)
    dataset = make_dataset(src.arrays, batch_size, training=True, seed=src.seed)
    steps = math.ceil(len(src.arrays) / batch_size)
    console.print(f"fine-tuning on {len(src.arrays)} training slices ({steps} steps/epoch, batch {batch_size})")

    record: dict[str, Any] = {"epochs": epochs, "batch_size": batch_size, "source_optimization": source_opt or None}
    started = time.perf_counter()
    kept = kept_dense(src.model)
    model = src.model
    if prune is not None:
        model, pruned = _prune(src, dataset, steps, prune, epochs, recover_epochs, prune_lr, batch_size, console)
        record.update(pruned)
    pruned_target = prune if prune is not None else source_opt.get("prune")
    record["prune"] = pruned_target
    if qat:
        model, quantized = _qat(model, src, dataset, epochs, qat_lr, bool(pruned_target), console)
        record.update(quantized)
    else:
        record["qat"] = bool(source_opt.get("qat"))
    record["fine_tune_seconds"] = time.perf_counter() - started

    result = evaluate_predictor(
        keras_predictor(model, batch_size), src.test_pairs, src.spec, src.modality, batch_size, split="test"
    )
    sparsity = measure_sparsity(model, kept if pruned_target else frozenset())
    record["sparsity"] = sparsity["pruned_overall"]
    record["sparsity_all_convs"] = sparsity["overall"]
    source_metrics = _summary(src.run.metrics()) if (src.run.path / "metrics.json").is_file() else None
    metrics = {
        **result.to_dict(),
        "optimization": record,
        "source_run": str(src.run.path.resolve()),
        "source_metrics": source_metrics,
        "delta_mean_dice": (result.scores.mean_dice - source_metrics["mean_dice"]) if source_metrics else None,
    }
    _write_run(out, model, src, metrics, sparsity, record)
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
    run_dir: Path,
    out: Path,
    prune: float | None = None,
    qat: bool = False,
    epochs: int = 4,
    data: Path | None = None,
    recover_epochs: int = 0,
) -> dict[str, Any]:
    """`edge-seg optimize`: bad input -> one line on stderr and exit status 2."""
    import typer
    from rich.console import Console

    err = Console(stderr=True)
    try:
        return optimize_run(
            run_dir, out, prune=prune, qat=qat, epochs=epochs, data=data, console=err, recover_epochs=recover_epochs
        )
    except ExportInputError as exc:
        print_error(err, exc)
        raise typer.Exit(2) from None
