"""Benchmark plots (matplotlib, Agg): Dice per class per variant, latency vs Dice with the Pareto
front, and model size per variant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.atomic import atomic_path
from edge_runtime.labels import FOREGROUND


@dataclass(frozen=True)
class Point:
    """One model on the speed/accuracy plane."""

    label: str
    latency_ms: float
    mean_dice: float


def pareto_front(points: Sequence[Point], dice_tolerance: float = 1e-4) -> list[Point]:
    """Points no other point beats on both axes (lower latency, higher Dice), fastest first.

    A point is dominated when another is at least as fast and at least as accurate, and better
    on one axis. Dice values within `dice_tolerance` count as equal, so a slower copy of the
    same network (Keras vs its exact fp32 conversion) is not kept for a 1e-9 Dice difference.
    """

    def dominates(q: Point, p: Point) -> bool:
        as_good = q.latency_ms <= p.latency_ms and q.mean_dice >= p.mean_dice - dice_tolerance
        better = q.latency_ms < p.latency_ms or q.mean_dice > p.mean_dice + dice_tolerance
        return as_good and better

    front = [p for p in points if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda p: (p.latency_ms, -p.mean_dice))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_dice_per_class(labels: Sequence[str], dice: Sequence[dict[str, float]], baseline: dict[str, float], path: Path) -> Path:
    """Heat maps: Dice per foreground class (and mean) per variant, and its change vs the baseline.

    Differences of 0.001-0.02 vanish in a bar chart, so the right panel shows dDice x 1000 on a
    diverging scale.
    """
    plt = _pyplot()
    columns = [c.short for c in FOREGROUND]
    values = np.array([[d[c] for c in columns] + [float(np.mean([d[c] for c in columns]))] for d in dice])
    base = np.array([baseline[c] for c in columns] + [float(np.mean([baseline[c] for c in columns]))])
    deltas = (values - base) * 1000.0
    height = 0.45 * len(labels) + 1.6
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), sharey=True)
    names = [*columns, "mean"]
    image = left.imshow(values, cmap="viridis", vmin=min(0.5, float(values.min())), vmax=1.0, aspect="auto")
    left.set_title("Dice per class")
    limit = max(2.0, float(np.abs(deltas).max()))
    image_delta = right.imshow(deltas, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    right.set_title("dDice vs float baseline (x 1000)")
    for ax, table, fmt in ((left, values, "{:.3f}"), (right, deltas, "{:+.1f}")):
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(labels)), labels)
        for (i, j), v in np.ndenumerate(table):
            ax.text(
                j,
                i,
                fmt.format(v),
                ha="center",
                va="center",
                fontsize=8,
                color="black",
                bbox={"facecolor": "white", "alpha": 0.6, "pad": 1, "edgecolor": "none"},
            )
    fig.colorbar(image, ax=left, fraction=0.04)
    fig.colorbar(image_delta, ax=right, fraction=0.04)
    return _save(fig, path)


def plot_latency_vs_dice(points: Sequence[Point], path: Path, threads: int, references: dict[str, float] | None = None) -> Path:
    """Median latency per slice (log x) against mean foreground Dice, Pareto front highlighted.

    `references` are models without a Dice of their own (the seed project's untrained-here
    U-Net), drawn as labelled vertical lines at their latency.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    front = pareto_front(points)
    front_labels = {p.label for p in front}
    for i, p in enumerate(sorted(points, key=lambda p: p.latency_ms)):
        on_front = p.label in front_labels
        ax.scatter(p.latency_ms, p.mean_dice, s=60 if on_front else 30, color="C3" if on_front else "C0", zorder=3)
        # staggered offsets keep labels of near-identical points (fp32 TFLite vs ONNX) apart
        ax.annotate(p.label, (p.latency_ms, p.mean_dice), textcoords="offset points", xytext=(5, 4 - 11 * (i % 3)), fontsize=8)
    if front:
        ax.step(
            [p.latency_ms for p in front], [p.mean_dice for p in front], where="post", color="C3", alpha=0.6, label="Pareto front"
        )
    for name, latency in (references or {}).items():
        ax.axvline(latency, color="grey", linestyle="--", linewidth=1)
        ax.annotate(
            name,
            (latency, 0.02),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=8,
            color="grey",
            xytext=(3, 0),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"median latency per slice, batch 1, {threads} thread(s) [ms, log scale]")
    ax.set_ylabel("mean foreground Dice (held-out patients)")
    ax.set_title("Speed vs accuracy")
    ax.grid(True, which="both", alpha=0.3)
    if front:
        ax.legend(loc="lower right")
    return _save(fig, path)


def plot_sizes(labels: Sequence[str], raw_bytes: Sequence[int], gzip_bytes: Sequence[int], path: Path) -> Path:
    """Horizontal bars: file size raw and gzip-compressed per variant (KiB)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5))
    y = np.arange(len(labels))
    ax.barh(y - 0.2, np.asarray(raw_bytes) / 1024, height=0.4, label="raw")
    ax.barh(y + 0.2, np.asarray(gzip_bytes) / 1024, height=0.4, label="gzip -9")
    for i, (raw, packed) in enumerate(zip(raw_bytes, gzip_bytes, strict=True)):
        ax.text(raw / 1024, i - 0.2, f" {raw / 1024:.0f}", va="center", fontsize=7)
        ax.text(packed / 1024, i + 0.2, f" {packed / 1024:.0f}", va="center", fontsize=7)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("size [KiB]")
    ax.set_title("Model size per variant")
    ax.legend(loc="lower right")
    return _save(fig, path)
