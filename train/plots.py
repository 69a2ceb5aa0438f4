"""Training-run figures: learning curves and a grid of test predictions vs truth (matplotlib, Agg)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from edge_runtime.atomic import atomic_path
from edge_runtime.labels import CLASSES, FOREGROUND, palette
from train.evaluate import SlicePrediction


def read_history(path: Path) -> list[dict[str, float]]:
    """history.csv rows as floats (empty cells dropped)."""
    with open(path, newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def _save(fig, out: Path, dpi: int = 100) -> Path:
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(out)


def plot_curves(history: Sequence[dict[str, float]], out: Path) -> Path:
    """Loss (train/val), foreground mean Dice and per-class validation Dice against epoch."""
    epochs = [row["epoch"] for row in history]
    colors = palette() / 255.0
    fig, (ax_loss, ax_dice) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if any(key in row for row in history):
            ax_loss.plot(epochs, [row.get(key, np.nan) for row in history], style, label=key)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("Dice + cross-entropy loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for key, style in (("mean_dice", "k-"), ("val_mean_dice", "k--")):
        if any(key in row for row in history):
            ax_dice.plot(epochs, [row.get(key, np.nan) for row in history], style, label=key, linewidth=2)
    for cls in FOREGROUND:
        key = f"val_dice_{cls.short}"
        if any(key in row for row in history):
            ax_dice.plot(epochs, [row.get(key, np.nan) for row in history], color=colors[cls.id], label=key)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("Dice")
    ax_dice.set_ylim(0, 1)
    ax_dice.legend(fontsize=8, loc="lower right")
    ax_dice.grid(alpha=0.3)
    fig.suptitle("training curves (val = held-out validation patients)")
    return _save(fig, out)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Grey image with class colours blended in where the mask is foreground, (H, W, 3) float."""
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)
    colors = palette()[mask.astype(np.intp)] / 255.0
    fg = (mask > 0)[..., None]
    return np.where(fg, (1 - alpha) * grey + alpha * colors, grey)


def crop_box(*masks: np.ndarray, margin: float = 0.25, min_side: int = 48) -> tuple[slice, slice]:
    """A square window around the foreground of `masks` (the spine is small in an axial slice)."""
    fg = np.zeros(masks[0].shape, bool)
    for mask in masks:
        fg |= mask > 0
    height, width = fg.shape
    if not fg.any():
        return slice(0, height), slice(0, width)
    rows, cols = np.nonzero(fg)
    side = max(int(np.ptp(rows)) + 1, int(np.ptp(cols)) + 1, min_side)
    side = min(int(side * (1 + 2 * margin)), height, width)
    top = int(np.clip((rows.min() + rows.max()) // 2 - side // 2, 0, height - side))
    left = int(np.clip((cols.min() + cols.max()) // 2 - side // 2, 0, width - side))
    return slice(top, top + side), slice(left, left + side)


def plot_predictions(predictions: Sequence[SlicePrediction], out: Path, max_slices: int = 6) -> Path:
    """Rows of slices (spread over patients): image | truth overlay | prediction overlay, cropped to the spine."""
    if not predictions:
        raise ValueError("no predictions to plot")
    step = max(1, len(predictions) // max_slices)
    chosen = list(predictions)[::step][:max_slices]
    fig, axes = plt.subplots(len(chosen), 3, figsize=(7.5, 2.5 * len(chosen)), squeeze=False)
    for row, item in zip(axes, chosen, strict=True):
        box = crop_box(item.truth, item.pred)
        image, truth, pred = item.image[box], item.truth[box], item.pred[box]
        panels = (
            (np.clip(image, 0, 1), f"{item.patient_id} D{item.disc}"),
            (overlay(image, truth), "truth"),
            (overlay(image, pred), "prediction"),
        )
        for ax, (data, title) in zip(row, panels, strict=True):
            ax.imshow(data, cmap="gray" if data.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=np.array(cls.color) / 255.0, label=f"{cls.short} {cls.name}") for cls in CLASSES[1:]
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return _save(fig, out, dpi=80)
