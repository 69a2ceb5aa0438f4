"""Segmentation loss: soft Dice plus cross-entropy on class-id masks or class-fraction targets."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from edge_runtime.labels import NUM_CLASSES

_EPS = 1e-7


def is_fraction_target(y_true: tf.Tensor, num_classes: int) -> bool:
    """True for (..., C) per-class fractions, False for class ids of shape (B, H, W) or (B, H, W, 1)."""
    shape = tf.TensorShape(y_true.shape)
    return num_classes > 1 and shape.rank == 4 and shape[-1] == num_classes


def flatten_targets(y_true: tf.Tensor, num_classes: int) -> tf.Tensor:
    """(P, C) float32 targets: one-hot of class ids, or the given per-class fractions."""
    if is_fraction_target(y_true, num_classes):
        return tf.reshape(tf.cast(y_true, tf.float32), (-1, num_classes))
    return tf.one_hot(tf.reshape(tf.cast(y_true, tf.int32), (-1,)), num_classes, dtype=tf.float32)


def dice_ce_loss(
    num_classes: int = NUM_CLASSES,
    class_weights: Sequence[float] | None = None,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    include_background_in_dice: bool = False,
    smooth: float = 1.0,
):
    """Return loss(y_true, y_pred) = dice_weight * (1 - soft Dice) + ce_weight * cross-entropy.

    Why both: cross-entropy gives smooth, well-scaled gradients early on; soft Dice counters the
    ~90 % background so small structures (thecal sac, posterior elements) are not ignored.

    Args:
        num_classes: C; y_pred is (B, H, W, C) softmax probabilities (any float dtype).
        class_weights: optional per-class weights (length C) for both terms: the cross-entropy
            weights each pixel by its true class, the Dice mean is weighted per class.
        dice_weight, ce_weight: mixing weights of the two terms (>= 0, not both 0).
        include_background_in_dice: by default the soft Dice averages foreground classes only,
            like the reported metric.
        smooth: additive smoothing of the soft Dice (keeps absent classes from dividing by 0).

    y_true holds integer class ids, shape (B, H, W) or (B, H, W, 1), or per-class fractions
    (B, H, W, C) summing to 1 (labels resized like the image, see train.pipeline.label_fractions).
    The soft Dice is computed over the whole batch per class (not per image), so slices without
    a class do not give 0/0.
    """
    if dice_weight < 0 or ce_weight < 0 or dice_weight + ce_weight == 0:
        raise ValueError(f"need dice_weight, ce_weight >= 0 and not both 0, got {dice_weight}, {ce_weight}")
    if class_weights is not None and len(class_weights) != num_classes:
        raise ValueError(f"class_weights has {len(class_weights)} entries, expected {num_classes}")
    weights = tf.constant(class_weights if class_weights is not None else [1.0] * num_classes, tf.float32)
    first = 0 if include_background_in_dice else 1

    def loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        target = flatten_targets(y_true, num_classes)
        probs = tf.reshape(tf.cast(y_pred, tf.float32), (-1, num_classes))
        total = tf.constant(0.0, tf.float32)
        if ce_weight:
            pixel_ce = -tf.reduce_sum(target * tf.math.log(tf.clip_by_value(probs, _EPS, 1.0)), axis=-1)
            pixel_w = tf.linalg.matvec(target, weights)
            total += ce_weight * tf.reduce_sum(pixel_w * pixel_ce) / tf.maximum(tf.reduce_sum(pixel_w), _EPS)
        if dice_weight:
            intersection = tf.reduce_sum(target * probs, axis=0)[first:]
            denominator = tf.reduce_sum(target, axis=0)[first:] + tf.reduce_sum(probs, axis=0)[first:]
            dice = (2.0 * intersection + smooth) / (denominator + smooth)
            w = weights[first:]
            total += dice_weight * (1.0 - tf.reduce_sum(w * dice) / tf.reduce_sum(w))
        return total

    loss.__name__ = "dice_ce_loss"
    return loss
