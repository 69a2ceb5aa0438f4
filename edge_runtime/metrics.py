"""Per-class Dice and IoU from confusion matrices (numpy; the reference every stage reports)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_runtime.labels import CLASSES, NUM_CLASSES


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows are truth, columns prediction."""
    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    for name, arr in (("prediction", pred), ("truth", truth)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside 0..{num_classes - 1}")
    flat = truth.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class ClassScore:
    """Dice/IoU of one class; `empty` marks empty-truth-and-empty-prediction (scored 1.0)."""

    class_id: int
    short: str
    dice: float
    iou: float
    truth_pixels: int
    pred_pixels: int
    empty: bool


@dataclass(frozen=True)
class Scores:
    """Per-class scores plus foreground means (background excluded, as the literature reports)."""

    per_class: tuple[ClassScore, ...]

    @property
    def foreground(self) -> tuple[ClassScore, ...]:
        return tuple(s for s in self.per_class if s.class_id != 0)

    @property
    def mean_dice(self) -> float:
        return float(np.mean([s.dice for s in self.foreground]))

    @property
    def mean_iou(self) -> float:
        return float(np.mean([s.iou for s in self.foreground]))

    def dice(self, short: str) -> float:
        return next(s.dice for s in self.per_class if s.short == short)

    def iou(self, short: str) -> float:
        return next(s.iou for s in self.per_class if s.short == short)

    def to_dict(self) -> dict:
        return {
            "mean_dice": self.mean_dice,
            "mean_iou": self.mean_iou,
            "per_class": {
                s.short: {
                    "dice": s.dice,
                    "iou": s.iou,
                    "truth_pixels": s.truth_pixels,
                    "pred_pixels": s.pred_pixels,
                    "empty": s.empty,
                }
                for s in self.per_class
            },
        }


def scores_from_confusion(conf: np.ndarray) -> Scores:
    """Dice = 2TP/(2TP+FP+FN), IoU = TP/(TP+FP+FN); empty vs empty counts as 1.0."""
    conf = np.asarray(conf, dtype=np.int64)
    out = []
    for cls in CLASSES[: conf.shape[0]]:
        tp = int(conf[cls.id, cls.id])
        truth_pixels = int(conf[cls.id, :].sum())
        pred_pixels = int(conf[:, cls.id].sum())
        union = truth_pixels + pred_pixels - tp
        if union == 0:
            out.append(ClassScore(cls.id, cls.short, 1.0, 1.0, 0, 0, True))
            continue
        dice = 2 * tp / (truth_pixels + pred_pixels)
        out.append(ClassScore(cls.id, cls.short, dice, tp / union, truth_pixels, pred_pixels, False))
    return Scores(tuple(out))


def segmentation_scores(pred: np.ndarray, truth: np.ndarray) -> Scores:
    """Scores over all pixels of `pred`/`truth` (any matching shape, e.g. a stack of slices)."""
    return scores_from_confusion(confusion_matrix(pred, truth))
