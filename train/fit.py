"""Fitting for `edge-seg train`: devices, precision, schedule, callbacks, resume, time budget, baseline.

Devices. One process uses every visible GPU: `tf.distribute.MirroredStrategy` with more than one
GPU, the default strategy with one GPU or on CPU. Mixed precision (`mixed_float16`) is switched
on only when a GPU is visible; on CPU everything stays float32. The saved model.keras is always
float32 (the weights are copied into a float32 build of the architecture at each save).

Several machines (MULTI_WORKER below is a snippet for the README): set TF_CONFIG on each worker
and the same command picks `tf.distribute.MultiWorkerMirroredStrategy`; only the chief (worker
0) writes the run folder.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.atomic import atomic_path, atomic_write_json, atomic_write_text
from edge_runtime.preprocessing import PreprocessSpec
from train import run_dir as rd
from train.data.mendeley import MODALITY_CHOICES

MULTI_WORKER = """\
### Training on several machines

`edge-seg train` uses `tf.distribute.MultiWorkerMirroredStrategy` when `TF_CONFIG` names more
than one worker. Start the same command on every machine (same `--data` contents, same `--out`
path on a shared file system or a local path per machine), each with its own index:

```bash
# machine A (chief: writes the run folder)
export TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, "task": {"type": "worker", "index": 0}}'
edge-seg train --data /data/mendeley --out /runs/unet --batch-size 32
# machine B
export TF_CONFIG='{"cluster": {"worker": ["hostA:12345", "hostB:12345"]}, "task": {"type": "worker", "index": 1}}'
edge-seg train --data /data/mendeley --out /runs/unet --batch-size 32
```

`--batch-size` is the global batch (split over all GPUs of all workers); scale `--lr` with it.
Within one machine, all visible GPUs are used through `MirroredStrategy`; restrict them with
`CUDA_VISIBLE_DEVICES`. Mixed precision (`mixed_float16`) is on whenever a GPU is visible.
"""

MONITOR = "val_mean_dice"



class TrainError(ValueError):
    """Bad training input: reported as a one-line error, exit status 2."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (config.json holds these plus derived facts)."""

    arch: str
    encoder: str | None
    image_size: int
    depth: int
    base_filters: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    modality: str
    data: str
    patience: int = 20
    warmup_epochs: int = 2

    def model_kwargs(self) -> dict[str, Any]:
        if self.arch == "unet":
            return {"depth": self.depth, "base_filters": self.base_filters}
        return {"encoder": self.encoder, "base_filters": self.base_filters}

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(input_size=self.image_size)


def build_from_config(config: dict[str, Any] | TrainConfig):
    """Rebuild a run's architecture (untrained) from config.json, e.g. to load weights into."""
    from train.models import build_model

    cfg = config if isinstance(config, TrainConfig) else _config_from_dict(config)
    return build_model(cfg.arch, cfg.image_size, **cfg.model_kwargs())


def _config_from_dict(data: dict[str, Any]) -> TrainConfig:
    known = set(TrainConfig.__dataclass_fields__)
    return TrainConfig(**{k: v for k, v in data.items() if k in known})


# --------------------------------------------------------------------------- validation


def _check_model_args(arch: str, encoder: str, image_size: int, base_filters: int) -> tuple[str | None, int]:
    """(encoder or None, depth) after the same checks the builders make, without building."""
    from train.models import ARCHITECTURES
    from train.models.blocks import check_input_size
    from train.models.resunet import ENCODER_BLOCKS, TOTAL_STRIDE

    if arch not in ARCHITECTURES:
        raise TrainError(f"unknown --arch {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    if base_filters < 1 or (arch == "resunet" and base_filters < 2):
        raise TrainError(f"--base-filters {base_filters} is too small for {arch}")
    try:
        if arch == "unet":
            depth = 4
            check_input_size(image_size, 2**depth, arch)
            return None, depth
        if encoder not in ENCODER_BLOCKS:
            raise TrainError(f"unknown --encoder {encoder!r}; choose one of {', '.join(sorted(ENCODER_BLOCKS))}")
        check_input_size(image_size, TOTAL_STRIDE, arch)
        return encoder, int(math.log2(TOTAL_STRIDE))
    except TrainError:
        raise
    except ValueError as exc:
        raise TrainError(f"--image-size: {exc}") from None


def _check_data(data: Path):
    from train.data.mendeley import index_dataset

    if not data.exists():
        raise TrainError(f"--data {data}: folder not found")
    if not data.is_dir():
        raise TrainError(f"--data {data}: not a folder")
    try:
        pairs = index_dataset(data)
    except (OSError, ValueError) as exc:
        raise TrainError(f"--data {data}: {exc}") from None
    if not pairs:
        raise TrainError(f"--data {data}: no labelled slices found (expected the Mendeley layout; try `edge-seg synth`)")
    return pairs


def prepare_config(
    data: Path,
    out: Path,
    arch: str,
    encoder: str,
    epochs: int,
    batch_size: int,
    image_size: int,
    base_filters: int,
    lr: float,
    seed: int,
    modality: str,
    resume: bool,
    time_budget: float | None,
) -> TrainConfig:
    """Validate every argument (raising TrainError) and return the run's config.

    With resume the saved config wins, except `epochs` (so a finished run can be extended).
    """
    data, out = Path(data).resolve(), Path(out)
    if time_budget is not None and time_budget <= 0:
        raise TrainError(f"--time-budget must be > 0 minutes, got {time_budget}")
    if epochs < 1 or batch_size < 1:
        raise TrainError(f"--epochs and --batch-size must be >= 1, got {epochs}, {batch_size}")
    run = rd.RunDir(out)
    if resume:
        if not run.is_run() or run.state() is None:
            raise TrainError(f"--out {out}: nothing to resume (no {rd.CONFIG} and {rd.CHECKPOINT_DIR}/{rd.STATE})")
        try:
            config = _config_from_dict(run.config())
        except (TypeError, rd.RunDirError) as exc:
            raise TrainError(f"--out {out}: unusable {rd.CONFIG} ({exc})") from None
        config.epochs = epochs
        _check_data(Path(config.data))
        return config
    if run.is_run() or run.model_path.exists():
        raise TrainError(f"--out {out} already holds a training run; use --resume to continue it or choose another --out")
    if modality not in MODALITY_CHOICES:
        raise TrainError(f"unknown --modality {modality!r}; choose one of {', '.join(MODALITY_CHOICES)}")
    if not lr > 0:
        raise TrainError(f"--lr must be > 0, got {lr}")
    encoder_used, depth = _check_model_args(arch, encoder, image_size, base_filters)
    _check_data(data)
    return TrainConfig(
        arch=arch,
        encoder=encoder_used,
        image_size=image_size,
        depth=depth,
        base_filters=base_filters,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        modality=modality,
        data=str(data),
    )


# --------------------------------------------------------------------------- devices


def _strategy():
    """(strategy, uses_gpu, is_chief) for the visible devices and TF_CONFIG."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    workers = tf_config.get("cluster", {}).get("worker", [])
    if len(workers) > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = tf_config.get("task", {})
        return strategy, bool(gpus), task.get("type", "worker") in ("worker", "chief") and task.get("index", 0) == 0
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), True, True
    return tf.distribute.get_strategy(), bool(gpus), True


def _schedule(config: TrainConfig, steps_per_epoch: int):
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


# --------------------------------------------------------------------------- callbacks


def _callbacks_module():
    """Callback classes are defined lazily so importing train.fit does not import TensorFlow."""
    import tf_keras as keras

    class EpochRecorder(keras.callbacks.Callback):
        """Adds lr/seconds/slices_per_s to the logs, rewrites history.csv, saves the resume checkpoint."""

        def __init__(
            self, run: rd.RunDir, manager, schedule, n_train: int, rows: list[dict], best: float, best_epoch: int, chief: bool
        ):
            super().__init__()
            self.run, self.manager, self.schedule, self.n_train = run, manager, schedule, n_train
            self.rows, self.chief = rows, chief
            self.best, self.best_epoch = best, best_epoch
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            seconds = time.perf_counter() - self._start
            logs["lr"] = float(self.schedule(self.model.optimizer.iterations))  # rate of the next step
            logs["seconds"] = seconds
            logs["slices_per_s"] = self.n_train / seconds if seconds > 0 else float("nan")
            value = float(logs.get(MONITOR, float("nan")))
            if value > self.best:
                self.best, self.best_epoch = value, epoch + 1
            self.rows.append({"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})
            if not self.chief:
                return
            write_history(self.run.file(rd.HISTORY), self.rows)
            self.manager.save(checkpoint_number=epoch + 1)
            state = {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch}
            atomic_write_text(self.run.state_path, json.dumps(state, indent=2) + "\n")

    class BestCheckpoint(keras.callbacks.Callback):
        """Save model.keras atomically whenever val mean Dice improves.

        The weights go into `twin`, an uncompiled float32 copy of the architecture, so the file
        holds no optimizer state or training-only objects and runs in float32 even when training
        used mixed precision (the .keras format has no include_optimizer switch).
        """

        def __init__(self, path: Path, best: float, chief: bool, twin):
            super().__init__()
            self.path, self.best, self.chief, self.twin = path, best, chief, twin

        def on_epoch_end(self, epoch, logs=None):
            value = float((logs or {}).get(MONITOR, float("nan")))
            if not value > self.best:
                return
            self.best = value
            if self.chief:
                self.twin.set_weights(self.model.get_weights())
                with atomic_path(self.path) as tmp:
                    self.twin.save(tmp)

    class TimeBudget(keras.callbacks.Callback):
        """Stop cleanly before `seconds` run out: after an epoch when another would not fit, or mid-epoch."""

        def __init__(self, seconds: float | None):
            super().__init__()
            self.seconds = seconds
            self.stopped = False
            self._t0 = time.perf_counter()
            self._epoch_start = self._t0
            self._last_epoch = 0.0

        def _elapsed(self) -> float:
            return time.perf_counter() - self._t0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self.seconds is not None and self._elapsed() > self.seconds:
                self.model.stop_training = self.stopped = True

        def on_epoch_end(self, epoch, logs=None):
            self._last_epoch = time.perf_counter() - self._epoch_start
            if self.seconds is not None and self._elapsed() + self._last_epoch > self.seconds:
                self.model.stop_training = self.stopped = True

    class RichProgress(keras.callbacks.Callback):
        """A rich bar per epoch on stderr and one summary line per epoch (replaces Keras' verbose output)."""

        def __init__(self, epochs: int, steps: int, console):
            super().__init__()
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.epochs, self.steps, self.console = epochs, steps, console
            self.progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = None

        def on_train_begin(self, logs=None):
            self.progress.start()

        def on_epoch_begin(self, epoch, logs=None):
            self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs, loss="-")

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            self.progress.update(self.task, completed=batch + 1, loss=f"{float(loss):.4f}" if loss is not None else "-")

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            self.progress.remove_task(self.task)
            self.console.print(
                f"epoch {epoch + 1:>3}/{self.epochs}  loss {logs.get('loss', float('nan')):.4f}  "
                f"val_loss {logs.get('val_loss', float('nan')):.4f}  "
                f"val Dice {logs.get(MONITOR, float('nan')):.4f} "
                f"(IVD {logs.get('val_dice_IVD', float('nan')):.3f} PE {logs.get('val_dice_PE', float('nan')):.3f} "
                f"TS {logs.get('val_dice_TS', float('nan')):.3f} AAP {logs.get('val_dice_AAP', float('nan')):.3f})  "
                f"lr {logs.get('lr', float('nan')):.2e}  {logs.get('seconds', float('nan')):.1f} s  "
                f"{logs.get('slices_per_s', float('nan')):.1f} slices/s",
                highlight=False,
                soft_wrap=True,
            )

        def on_train_end(self, logs=None):
            self.progress.stop()

    return EpochRecorder, BestCheckpoint, TimeBudget, RichProgress


# --------------------------------------------------------------------------- files


def write_history(path: Path, rows: Sequence[dict[str, float]]) -> None:
    """history.csv: one row per epoch (epoch numbers count from 1), columns in first-seen order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(v) if k == "epoch" else v) for k, v in row.items()})


def _float32_twin(config: TrainConfig):
    """An uncompiled float32 build of the architecture (a mixed_float16 graph would run in float16 on export)."""
    import tf_keras as keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return build_from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --------------------------------------------------------------------------- training


def fit_run(
    config: TrainConfig, out: Path, resume: bool = False, time_budget: float | None = None, console=None
) -> dict[str, Any]:
    """Train `config` into run folder `out`, then write the test baseline; returns metrics.json's content."""
    import tensorflow as tf
    import tf_keras as keras
    from rich.console import Console

    from train.data.mendeley import index_dataset
    from train.data.splits import load_or_create_split, pairs_for
    from train.evaluate import evaluate_predictor, keras_predictor, print_scores
    from train.losses import dice_ce_loss
    from train.metrics_tf import segmentation_metrics
    from train.models import count_macs
    from train.pipeline import make_dataset, prepare_arrays
    from train.plots import plot_curves, plot_predictions
    from train.provenance import provenance

    console = console or Console(stderr=True, soft_wrap=True)
    out = Path(out)
    run = rd.RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    strategy, use_gpu, chief = _strategy()
    previous_policy = keras.mixed_precision.global_policy()
    if use_gpu:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
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
        train_ds = make_dataset(train_arrays, config.batch_size, training=True, seed=config.seed)
        val_ds = make_dataset(val_arrays, config.batch_size, training=False)
        steps = math.ceil(len(train_arrays) / config.batch_size)

        with strategy.scope():
            model = build_from_config(config)
            schedule = _schedule(config, steps)
            optimizer = keras.optimizers.Adam(schedule)
            model.compile(optimizer=optimizer, loss=dice_ce_loss(), metrics=segmentation_metrics())
        macs = count_macs(model)["total"]
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        manager = tf.train.CheckpointManager(checkpoint, str(run.checkpoint_dir), max_to_keep=1)

        rows: list[dict] = []
        initial_epoch, best, best_epoch = 0, -math.inf, 0
        if resume:
            state = run.state() or {}
            if manager.latest_checkpoint is None:
                raise TrainError(f"--out {out}: {rd.CHECKPOINT_DIR}/ holds no checkpoint to resume from")
            checkpoint.restore(manager.latest_checkpoint)
            initial_epoch, best, best_epoch = int(state["epoch"]), float(state["best"]), int(state.get("best_epoch", 0))
            if run.file(rd.HISTORY).is_file():
                from train.plots import read_history

                rows = [r for r in read_history(run.file(rd.HISTORY)) if r["epoch"] <= initial_epoch]
            console.print(f"resuming {out} after epoch {initial_epoch} (best val mean Dice {best:.4f} at epoch {best_epoch})")

        config_dict = {
            **asdict(config),
            "data": str(Path(config.data).resolve()),
            "preprocessing": spec.to_dict(),
            "macs_per_slice": int(macs),
            "params": int(model.count_params()),
            "strategy": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync),
            "mixed_precision": bool(use_gpu),
            "loss": "soft Dice (foreground) + cross-entropy on class fractions resized like the image",
            "provenance": provenance(seed=config.seed),
        }
        if chief:
            atomic_write_json(run.file(rd.CONFIG), config_dict)
            atomic_write_json(run.file(rd.SPLIT), {k: list(v) for k, v in split.items()})
        console.print(
            f"{config.arch}{' ' + config.encoder if config.encoder else ''}: {model.count_params():,} parameters, "
            f"{macs / 1e9:.2f} GMAC/slice, {config_dict['strategy']} x{config_dict['replicas']}, "
            f"{'mixed_float16' if use_gpu else 'float32'}"
        )

        EpochRecorder, BestCheckpoint, TimeBudget, RichProgress = _callbacks_module()
        budget = TimeBudget(time_budget * 60 if time_budget else None)
        recorder = EpochRecorder(run, manager, schedule, len(train_arrays), rows, best, best_epoch, chief)
        callbacks = [
            budget,
            recorder,  # adds lr/seconds/slices_per_s before the loggers see the logs
            BestCheckpoint(run.model_path, best, chief, _float32_twin(config)),
            keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=config.patience, min_delta=1e-4),
            keras.callbacks.CSVLogger(str(run.file(rd.TRAIN_LOG)), append=resume),
            RichProgress(config.epochs, steps, console),
        ]
        if importlib.util.find_spec("tensorboard") is not None:
            callbacks.append(keras.callbacks.TensorBoard(str(run.file(rd.LOGS)), write_graph=False, profile_batch=0))
        else:
            console.print("tensorboard is not installed: no TensorBoard logs (pip install tensorboard)")
        started = time.perf_counter()
        if initial_epoch < config.epochs:
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=callbacks,
                verbose=0,
            )
        else:
            console.print(f"already trained {initial_epoch} of {config.epochs} epochs; evaluating only")
        train_seconds = time.perf_counter() - started
        if not chief:
            return {}
        if not run.model_path.is_file():
            raise RuntimeError(f"{out}: no epoch improved the validation Dice; no model was saved")

        best_model = keras.models.load_model(run.model_path, compile=False)
        result = evaluate_predictor(
            keras_predictor(best_model),
            sets["test"],
            spec,
            config.modality,
            split="test",  # default inference batch, as `edge-seg evaluate` uses: identical numbers
            keep_predictions=True,
        )
        epochs_run = [r for r in recorder.rows if r["epoch"] > initial_epoch]
        metrics = {
            **result.to_dict(),
            "training": {
                "best_epoch": recorder.best_epoch,
                "best_val_mean_dice": recorder.best,
                "epochs_completed": int(recorder.rows[-1]["epoch"]) if recorder.rows else initial_epoch,
                "epochs_this_session": len(epochs_run),
                "stopped_by_time_budget": budget.stopped,
                "train_seconds": train_seconds,
                "train_slices_per_s": float(np.median([r["slices_per_s"] for r in epochs_run])) if epochs_run else None,
                "trained_slices": len(train_arrays) * len(epochs_run),
            },
        }
        atomic_write_json(run.file(rd.METRICS), metrics)
        if recorder.rows:
            plot_curves(recorder.rows, run.file(rd.CURVES))
        plot_predictions(result.predictions or [], run.file(rd.PREDICTIONS))
        print_scores(result, f"{out}: best epoch {recorder.best_epoch}, test patients {len(result.patients)}", console)
        return metrics
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


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
) -> dict[str, Any]:
    """`edge-seg train`: validate (bad input -> one-line error, exit 2), train, write RUN_DIR."""
    import typer
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)
    try:
        config = prepare_config(
            data, out, arch, encoder, epochs, batch_size, image_size, base_filters, lr, seed, modality, resume, time_budget
        )
        return fit_run(config, Path(out), resume=resume, time_budget=time_budget, console=console)
    except TrainError as exc:
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
