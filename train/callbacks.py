"""Keras callbacks of `edge-seg train`: epoch records and resume state, best-model saves, time budget, progress.

Imported only inside fit_run (it imports tf_keras at module level), so importing train.fit
does not start TensorFlow.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Sequence
from pathlib import Path

import tf_keras as keras

from edge_runtime.atomic import atomic_path, atomic_write_json
from edge_runtime.progress import is_quiet
from train import run_dir as rd

MONITOR = "val_mean_dice"


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


class EpochRecorder(keras.callbacks.Callback):
    """Adds lr/seconds/slices_per_s to the logs, rewrites history.csv, saves the resume checkpoint."""

    def __init__(self, run: rd.RunDir, manager, schedule, n_train: int, rows: list[dict], best: float, best_epoch: int,
                 chief: bool):  # fmt: skip
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
        atomic_write_json(self.run.state_path, {"epoch": epoch + 1, "best": self.best, "best_epoch": self.best_epoch})


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


def epoch_line(epoch: int, epochs: int, logs: dict) -> str:
    """The one-line summary printed after each epoch."""
    nan = float("nan")
    return (
        f"epoch {epoch + 1:>3}/{epochs}  loss {logs.get('loss', nan):.4f}  "
        f"val_loss {logs.get('val_loss', nan):.4f}  "
        f"val Dice {logs.get(MONITOR, nan):.4f} "
        f"(IVD {logs.get('val_dice_IVD', nan):.3f} PE {logs.get('val_dice_PE', nan):.3f} "
        f"TS {logs.get('val_dice_TS', nan):.3f} AAP {logs.get('val_dice_AAP', nan):.3f})  "
        f"lr {logs.get('lr', nan):.2e}  {logs.get('seconds', nan):.1f} s  "
        f"{logs.get('slices_per_s', nan):.1f} slices/s"
    )


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

        self.quiet = is_quiet()  # `edge-seg --quiet`: the epoch lines only, no bar

    def on_train_begin(self, logs=None):
        if not self.quiet:
            self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.task = self.progress.add_task("train", total=self.steps, epoch=epoch + 1, epochs=self.epochs, loss="-")

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        self.progress.update(self.task, completed=batch + 1, loss=f"{float(loss):.4f}" if loss is not None else "-")

    def on_epoch_end(self, epoch, logs=None):
        self.progress.remove_task(self.task)
        self.console.print(epoch_line(epoch, self.epochs, logs or {}), highlight=False, soft_wrap=True)

    def on_train_end(self, logs=None):
        if not self.quiet:
            self.progress.stop()
