"""Fitting for `edge-seg train`: data, model, resume, the Keras fit loop, and the test-set baseline.

The run's definition and argument checks are in train.config, devices and precision in
train.distribute, the callbacks in train.callbacks. The saved model.keras is always float32
(the weights are copied into a float32 build of the architecture at each save).
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.atomic import atomic_write_json
from edge_runtime.messages import print_error
from train import run_dir as rd
from train.config import TrainConfig, TrainError, build_from_config, prepare_config
from train.distribute import StrategyPlan

__all__ = ["TrainConfig", "TrainError", "build_from_config", "fit_run", "learning_rate_schedule", "prepare_config",
           "train_command"]  # fmt: skip


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Linear warm-up to `lr` over warmup_epochs, then cosine decay to 1 % over the remaining epochs."""
    import tf_keras as keras

    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(config.warmup_epochs * steps_per_epoch, total // 5)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.lr / 10 if warmup else config.lr,
        decay_steps=max(1, total - warmup),
        alpha=0.01,
        warmup_target=config.lr if warmup else None,
        warmup_steps=warmup,
    )


@dataclass
class _Session:
    """What one fit call works with: the split's slices, the compiled model, and the resume point."""

    sets: dict[str, list]
    train_arrays: Any
    train_ds: Any
    val_ds: Any
    steps: int
    model: Any = None
    schedule: Any = None
    manager: Any = None
    macs: int = 0
    rows: list[dict] = field(default_factory=list)
    initial_epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0


def _load_data(config: TrainConfig, run: rd.RunDir, resume: bool, console) -> tuple[_Session, dict[str, list[str]]]:
    """Split (the run's own when resuming), the slices of each part, and the tf.data pipelines."""
    from train.data.mendeley import index_dataset
    from train.data.splits import load_or_create_split, pairs_for
    from train.pipeline import make_dataset, prepare_arrays

    spec = config.spec()
    pairs = index_dataset(Path(config.data))
    split = run.split() if resume else load_or_create_split(Path(config.data), config.seed)
    sets = {name: pairs_for(pairs, split, name) for name in ("train", "val", "test")}
    for name, chosen in sets.items():
        if not chosen:
            raise TrainError(f"--data {config.data}: the {name} split has no slices ({len(split[name])} patients)")
    console.print(
        f"data {config.data}: train {len(split['train'])} / val {len(split['val'])} / test {len(split['test'])} patients "
        f"({len(sets['train'])} / {len(sets['val'])} / {len(sets['test'])} slices), {config.modality}, {spec.input_size} px"
    )
    # targets are class fractions resized like the image (see train.pipeline.label_fractions)
    train_arrays = prepare_arrays(sets["train"], spec, config.modality, fractions=True)
    val_arrays = prepare_arrays(sets["val"], spec, config.modality, fractions=True)
    session = _Session(
        sets=sets,
        train_arrays=train_arrays,
        train_ds=make_dataset(train_arrays, config.batch_size, training=True, seed=config.seed),
        val_ds=make_dataset(val_arrays, config.batch_size, training=False),
        steps=math.ceil(len(train_arrays) / config.batch_size),
    )
    return session, split


def _build(config: TrainConfig, strategy, session: _Session, run: rd.RunDir) -> Any:
    """Compile the model under the strategy; returns its tf.train.Checkpoint (model + optimizer)."""
    import tensorflow as tf
    import tf_keras as keras

    from train.losses import dice_ce_loss
    from train.metrics_tf import segmentation_metrics
    from train.models import count_macs

    with strategy.scope():
        session.model = build_from_config(config)
        if config.init_from:
            session.model.set_weights(rd.RunDir(Path(config.init_from)).load_model().get_weights())
        session.schedule = learning_rate_schedule(config, session.steps)
        session.model.compile(
            optimizer=keras.optimizers.Adam(session.schedule),
            loss=dice_ce_loss(class_weights=config.class_weights),
            metrics=segmentation_metrics(),
        )
    session.macs = int(count_macs(session.model)["total"])
    checkpoint = tf.train.Checkpoint(model=session.model, optimizer=session.model.optimizer)
    session.manager = tf.train.CheckpointManager(checkpoint, str(run.checkpoint_dir), max_to_keep=1)
    return checkpoint


def _restore(session: _Session, checkpoint, run: rd.RunDir, console) -> None:
    """Continue after the last saved epoch: weights, optimizer step, best score, history rows."""
    from train.plots import read_history

    state = run.state() or {}
    if session.manager.latest_checkpoint is None:
        raise TrainError(f"--out {run.path}: {rd.CHECKPOINT_DIR}/ holds no checkpoint to resume from")
    checkpoint.restore(session.manager.latest_checkpoint)
    session.initial_epoch, session.best = int(state["epoch"]), float(state["best"])
    session.best_epoch = int(state.get("best_epoch", 0))
    if run.file(rd.HISTORY).is_file():
        session.rows = [r for r in read_history(run.file(rd.HISTORY)) if r["epoch"] <= session.initial_epoch]
    console.print(
        f"resuming {run.path} after epoch {session.initial_epoch} "
        f"(best val mean Dice {session.best:.4f} at epoch {session.best_epoch})"
    )


def _config_record(config: TrainConfig, session: _Session, strategy, plan: StrategyPlan) -> dict[str, Any]:
    """config.json: the TrainConfig plus what was derived (preprocessing, MACs, devices, provenance)."""
    from train.provenance import provenance

    return {
        **asdict(config),
        "data": str(Path(config.data).resolve()),
        "preprocessing": config.spec().to_dict(),
        "macs_per_slice": session.macs,
        "params": int(session.model.count_params()),
        "strategy": type(strategy).__name__,
        "replicas": int(strategy.num_replicas_in_sync),
        "mixed_precision": bool(plan.uses_gpu),
        "loss": "soft Dice (foreground) + cross-entropy on class fractions resized like the image",
        "provenance": provenance(seed=config.seed),
    }


def _fit(config: TrainConfig, session: _Session, run: rd.RunDir, plan: StrategyPlan, time_budget: float | None,
         resume: bool, console):  # fmt: skip
    """Run model.fit with the project's callbacks; returns (recorder, budget, seconds)."""
    import tf_keras as keras

    from train.callbacks import MONITOR, BestCheckpoint, EpochRecorder, RichProgress, TimeBudget
    from train.distribute import float32_twin

    budget = TimeBudget(time_budget * 60 if time_budget else None)
    recorder = EpochRecorder(run, session.manager, session.schedule, len(session.train_arrays), session.rows,
                             session.best, session.best_epoch, plan.is_chief)  # fmt: skip
    callbacks = [
        budget,
        recorder,  # adds lr/seconds/slices_per_s before the loggers see the logs
        BestCheckpoint(run.model_path, session.best, plan.is_chief, float32_twin(config)),
        keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience, min_delta=1e-4),
        keras.callbacks.CSVLogger(str(run.file(rd.TRAIN_LOG)), append=resume),
        RichProgress(config.epochs, session.steps, console),
    ]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(run.file(rd.LOGS)), write_graph=False, profile_batch=0))
    else:
        console.print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
    started = time.perf_counter()
    if session.initial_epoch < config.epochs:
        session.model.fit(
            session.train_ds,
            validation_data=session.val_ds,
            epochs=config.epochs,
            initial_epoch=session.initial_epoch,
            callbacks=callbacks,
            verbose=0,
        )
    else:
        console.print(f"already trained {session.initial_epoch} of {config.epochs} epochs; evaluating only")
    return recorder, budget, time.perf_counter() - started


def _baseline(config: TrainConfig, session: _Session, run: rd.RunDir, recorder, budget, train_seconds: float,
              console) -> dict[str, Any]:  # fmt: skip
    """Score the best saved model on the test patients; write metrics.json and the plots."""
    from train.evaluate import evaluate_predictor, keras_predictor, print_scores
    from train.plots import plot_curves, plot_predictions

    if not run.model_path.is_file():
        raise RuntimeError(f"{run.path}: no epoch improved the validation Dice; no model was saved")
    result = evaluate_predictor(
        keras_predictor(run.load_model()),
        session.sets["test"],
        config.spec(),
        config.modality,
        split="test",  # default inference batch, as `edge-seg evaluate` uses: identical numbers
        keep_predictions=True,
    )
    epochs_run = [r for r in recorder.rows if r["epoch"] > session.initial_epoch]
    metrics = {
        **result.to_dict(),
        "training": {
            "best_epoch": recorder.best_epoch,
            "best_val_mean_dice": recorder.best,
            "epochs_completed": int(recorder.rows[-1]["epoch"]) if recorder.rows else session.initial_epoch,
            "epochs_this_session": len(epochs_run),
            "stopped_by_time_budget": budget.stopped,
            "train_seconds": train_seconds,
            "train_slices_per_s": float(np.median([r["slices_per_s"] for r in epochs_run])) if epochs_run else None,
            "trained_slices": len(session.train_arrays) * len(epochs_run),
        },
    }
    atomic_write_json(run.file(rd.METRICS), metrics)
    if recorder.rows:
        plot_curves(recorder.rows, run.file(rd.CURVES))
    plot_predictions(result.predictions or [], run.file(rd.PREDICTIONS))
    print_scores(result, f"{run.path}: best epoch {recorder.best_epoch}, test patients {len(result.patients)}", console)
    return metrics


def fit_run(
    config: TrainConfig, out: Path, resume: bool = False, time_budget: float | None = None, console=None
) -> dict[str, Any]:
    """Train `config` into run folder `out`, then write the test baseline; returns metrics.json's content.

    Only the chief writes the run folder; other workers return an empty dict.
    """
    import tf_keras as keras
    from rich.console import Console

    from train.distribute import precision_policy, strategy_for_this_machine

    console = console or Console(stderr=True, soft_wrap=True)
    out = Path(out)
    run = rd.RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    strategy, plan = strategy_for_this_machine()
    with precision_policy(plan.uses_gpu):
        session, split = _load_data(config, run, resume, console)
        checkpoint = _build(config, strategy, session, run)
        if resume:
            _restore(session, checkpoint, run, console)
        record = _config_record(config, session, strategy, plan)
        if plan.is_chief:
            atomic_write_json(run.file(rd.CONFIG), record)
            atomic_write_json(run.file(rd.SPLIT), {k: list(v) for k, v in split.items()})
        console.print(
            f"{config.arch}{' ' + config.encoder if config.encoder else ''}: {session.model.count_params():,} parameters, "
            f"{session.macs / 1e9:.2f} GMAC/slice, {record['strategy']} x{record['replicas']}, "
            f"{'mixed_float16' if plan.uses_gpu else 'float32'}"
        )
        recorder, budget, seconds = _fit(config, session, run, plan, time_budget, resume, console)
        if not plan.is_chief:
            return {}
        return _baseline(config, session, run, recorder, budget, seconds, console)


def train_command(
    data: Path,
    out: Path,
    arch: str = "unet",
    encoder: str = "resnet18",
    epochs: int = 60,
    batch_size: int = 8,
    image_size: int = 160,
    base_filters: int = 16,
    lr: float = 2e-3,
    seed: int = 0,
    modality: str = "T2",
    resume: bool = False,
    time_budget: float | None = None,
    class_weights: str | None = None,
    field_of_view_mm: float | None = None,
    init_from: Path | None = None,
) -> dict[str, Any]:
    """`edge-seg train`: validate (bad input -> one-line error, exit 2), train, write RUN_DIR."""
    import typer
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    try:
        config = prepare_config(
            data, out, arch, encoder, epochs, batch_size, image_size, base_filters, lr, seed, modality, resume, time_budget,
            class_weights, field_of_view_mm, init_from,
        )
        return fit_run(config, Path(out), resume=resume, time_budget=time_budget, console=console)
    except TrainError as exc:
        print_error(console, exc)
        raise typer.Exit(2) from None
