"""Keras metrics for per-class Dice/IoU from a streaming confusion matrix (same maths as edge_runtime.metrics).

Dice and IoU are not averages of per-batch values: each metric sums one confusion matrix over
every pixel it sees and derives the scores at the end, exactly like
`edge_runtime.metrics.segmentation_scores` on the stacked arrays (empty truth and empty
prediction score 1.0, background excluded from the means).
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from edge_runtime.labels import CLASSES, NUM_CLASSES
from train.losses import is_fraction_target

MONITOR = "mean_dice"
"""Name of the foreground mean Dice in the logs; the checkpoint watches `val_` + this."""


def scores_from_confusion_tf(confusion: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(C, C) counts (rows truth, columns prediction) -> per-class (Dice, IoU), float64."""
    confusion = tf.cast(confusion, tf.float64)
    tp = tf.linalg.diag_part(confusion)
    truth = tf.reduce_sum(confusion, axis=1)
    pred = tf.reduce_sum(confusion, axis=0)
    both = truth + pred
    union = both - tp
    dice = tf.where(both > 0, 2.0 * tp / tf.maximum(both, 1.0), tf.ones_like(tp))
    iou = tf.where(union > 0, tp / tf.maximum(union, 1.0), tf.ones_like(tp))
    return dice, iou


class ConfusionMatrixMetric(keras.metrics.Metric):
    """Streaming (C, C) confusion matrix of argmax(y_pred) against integer y_true.

    y_true: class ids (B, H, W) or (B, H, W, 1), or class fractions (B, H, W, C) scored by their
    argmax; y_pred: per-class scores (B, H, W, C).
    The matrix is float64 (exact for counts below 2**53) so it sums across replicas on GPUs.
    `result()` returns every score as a dict; subclasses pick one scalar.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, name: str = "segmentation", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.confusion = self.add_weight(
            name="confusion", shape=(num_classes, num_classes), initializer="zeros", dtype=tf.float64
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        if is_fraction_target(y_true, self.num_classes):  # class fractions: the majority class
            labels = tf.reshape(tf.argmax(y_true, axis=-1, output_type=tf.int32), (-1,))
        else:
            labels = tf.reshape(tf.cast(y_true, tf.int32), (-1,))
        preds = tf.reshape(tf.argmax(y_pred, axis=-1, output_type=tf.int32), (-1,))
        weights = None if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float64), (-1,))
        batch = tf.math.confusion_matrix(labels, preds, self.num_classes, weights=weights, dtype=tf.float64)
        return self.confusion.assign_add(batch)

    def reset_state(self) -> None:
        self.confusion.assign(tf.zeros_like(self.confusion))

    def scores(self) -> tuple[tf.Tensor, tf.Tensor]:
        return scores_from_confusion_tf(self.confusion)

    def result(self):
        dice, iou = self.scores()
        out = {"mean_dice": tf.reduce_mean(dice[1:]), "mean_iou": tf.reduce_mean(iou[1:])}
        for cls in CLASSES[: self.num_classes]:
            out[f"dice_{cls.short}"] = dice[cls.id]
        for cls in CLASSES[: self.num_classes]:
            out[f"iou_{cls.short}"] = iou[cls.id]
        return {key: tf.cast(value, tf.float32) for key, value in out.items()}

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}


class MeanForegroundDice(ConfusionMatrixMetric):
    """Mean Dice over the foreground classes (background excluded): the checkpoint criterion."""

    def __init__(self, num_classes: int = NUM_CLASSES, name: str = MONITOR, **kwargs) -> None:
        super().__init__(num_classes=num_classes, name=name, **kwargs)

    def result(self):
        return tf.cast(tf.reduce_mean(self.scores()[0][1:]), tf.float32)


class MeanForegroundIoU(ConfusionMatrixMetric):
    """Mean IoU over the foreground classes (a correct replacement for MeanIoU on one-hot targets)."""

    def __init__(self, num_classes: int = NUM_CLASSES, name: str = "mean_iou", **kwargs) -> None:
        super().__init__(num_classes=num_classes, name=name, **kwargs)

    def result(self):
        return tf.cast(tf.reduce_mean(self.scores()[1][1:]), tf.float32)


class ClassDice(ConfusionMatrixMetric):
    """Dice of one class."""

    def __init__(self, class_id: int, num_classes: int = NUM_CLASSES, name: str | None = None, **kwargs) -> None:
        if not 0 <= class_id < num_classes:
            raise ValueError(f"class_id must be in 0..{num_classes - 1}, got {class_id}")
        self.class_id = class_id
        super().__init__(num_classes=num_classes, name=name or f"dice_{CLASSES[class_id].short}", **kwargs)

    def result(self):
        return tf.cast(self.scores()[0][self.class_id], tf.float32)

    def get_config(self) -> dict:
        return {**super().get_config(), "class_id": self.class_id}


class ClassIoU(ClassDice):
    """IoU of one class."""

    def __init__(self, class_id: int, num_classes: int = NUM_CLASSES, name: str | None = None, **kwargs) -> None:
        super().__init__(class_id, num_classes=num_classes, name=name or f"iou_{CLASSES[class_id].short}", **kwargs)

    def result(self):
        return tf.cast(self.scores()[1][self.class_id], tf.float32)


def segmentation_metrics(num_classes: int = NUM_CLASSES) -> list[keras.metrics.Metric]:
    """The metrics `fit` compiles with: one confusion matrix reporting mean_dice, mean_iou, dice_*, iou_*."""
    return [ConfusionMatrixMetric(num_classes=num_classes)]
