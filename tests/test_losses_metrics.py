"""Dice+CE loss and the streaming Keras Dice/IoU metrics, checked against independent numpy maths."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")

from edge_runtime.labels import CLASSES, NUM_CLASSES  # noqa: E402
from edge_runtime.metrics import segmentation_scores  # noqa: E402
from train.losses import dice_ce_loss  # noqa: E402
from train.metrics_tf import (  # noqa: E402
    ClassDice,
    ClassIoU,
    ConfusionMatrixMetric,
    MeanForegroundDice,
    MeanForegroundIoU,
)
from train.models import unet  # noqa: E402


def _random_case(seed: int, shape=(3, 16, 16), present=NUM_CLASSES):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, present, size=shape).astype(np.uint8)
    # scores biased towards the truth so Dice is neither 0 nor 1
    logits = rng.normal(size=(*shape, NUM_CLASSES)).astype(np.float32)
    logits += 1.5 * np.eye(NUM_CLASSES, dtype=np.float32)[truth]
    if present < NUM_CLASSES:
        logits[..., present:] -= 100.0  # absent classes never predicted either
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return truth, probs.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tf_metric_equals_numpy_metrics_on_the_same_arrays(seed: int) -> None:
    truth, probs = _random_case(seed)
    reference = segmentation_scores(probs.argmax(-1), truth)
    metric = ConfusionMatrixMetric()
    metric.update_state(truth[..., None], probs)  # (B, H, W, 1) labels are accepted
    result = {k: float(v) for k, v in metric.result().items()}
    assert result["mean_dice"] == pytest.approx(reference.mean_dice, abs=1e-6)
    assert result["mean_iou"] == pytest.approx(reference.mean_iou, abs=1e-6)
    for cls in CLASSES:
        assert result[f"dice_{cls.short}"] == pytest.approx(reference.dice(cls.short), abs=1e-6)
        assert result[f"iou_{cls.short}"] == pytest.approx(reference.iou(cls.short), abs=1e-6)
    assert 0.2 < reference.mean_dice < 0.95  # a non-trivial case


def test_streaming_over_batches_equals_one_shot_on_the_stack() -> None:
    """Dataset-level Dice sums one confusion matrix; it is not the mean of per-batch Dice."""
    truth, probs = _random_case(5, shape=(6, 12, 12))
    reference = segmentation_scores(probs.argmax(-1), truth)
    metrics = [MeanForegroundDice(), MeanForegroundIoU(), ClassDice(3), ClassIoU(4)]
    for start in (0, 2, 4):
        for metric in metrics:
            metric.update_state(truth[start : start + 2], probs[start : start + 2])
    assert float(metrics[0].result()) == pytest.approx(reference.mean_dice, abs=1e-6)
    assert float(metrics[1].result()) == pytest.approx(reference.mean_iou, abs=1e-6)
    assert float(metrics[2].result()) == pytest.approx(reference.dice("TS"), abs=1e-6)
    assert float(metrics[3].result()) == pytest.approx(reference.iou("AAP"), abs=1e-6)
    metrics[0].reset_state()
    assert float(tf.reduce_sum(metrics[0].confusion)) == 0.0


def test_absent_classes_score_one_like_numpy() -> None:
    truth, probs = _random_case(7, present=3)  # classes 3 and 4 in neither truth nor prediction
    reference = segmentation_scores(probs.argmax(-1), truth)
    metric = ConfusionMatrixMetric()
    metric.update_state(truth, probs)
    result = metric.result()
    assert float(result["dice_TS"]) == 1.0 and float(result["iou_AAP"]) == 1.0
    assert float(result["mean_dice"]) == pytest.approx(reference.mean_dice, abs=1e-6)


def test_metrics_reject_bad_class_ids() -> None:
    with pytest.raises(ValueError, match="class_id must be in 0..4"):
        ClassDice(5)


def _numpy_dice_ce(truth, probs, weights=None, smooth=1.0):
    """Independent reference: weighted mean pixel CE + (1 - weighted mean foreground soft Dice)."""
    weights = np.ones(NUM_CLASSES) if weights is None else np.asarray(weights, float)
    p = probs.reshape(-1, NUM_CLASSES).astype(np.float64)
    t = truth.reshape(-1)
    onehot = np.eye(NUM_CLASSES)[t]
    pixel_ce = -np.log(np.clip(p[np.arange(len(t)), t], 1e-7, 1.0))
    ce = (weights[t] * pixel_ce).sum() / weights[t].sum()
    inter = (onehot * p).sum(0)
    denom = onehot.sum(0) + p.sum(0)
    dice = (2 * inter + smooth) / (denom + smooth)
    return ce + 1 - (weights[1:] * dice[1:]).sum() / weights[1:].sum()


@pytest.mark.parametrize("weights", [None, [0.2, 1.0, 2.0, 1.5, 1.0]])
def test_dice_ce_loss_matches_numpy_reference(weights) -> None:
    truth, probs = _random_case(11)
    loss = dice_ce_loss(class_weights=weights)
    value = float(loss(tf.constant(truth), tf.constant(probs)))
    assert value == pytest.approx(_numpy_dice_ce(truth, probs, weights), rel=1e-5)


def test_dice_ce_loss_is_near_zero_for_a_perfect_prediction_and_accepts_float16() -> None:
    truth, _ = _random_case(3)
    perfect = np.eye(NUM_CLASSES, dtype=np.float16)[truth]
    value = float(dice_ce_loss()(tf.constant(truth[..., None]), tf.constant(perfect)))
    assert 0.0 <= value < 1e-3


def test_dice_ce_loss_validates_arguments() -> None:
    with pytest.raises(ValueError, match="class_weights has 3 entries"):
        dice_ce_loss(class_weights=[1, 2, 3])
    with pytest.raises(ValueError, match="not both 0"):
        dice_ce_loss(dice_weight=0, ce_weight=0)


def test_loss_falls_over_a_few_steps_on_a_tiny_batch() -> None:
    keras.utils.set_random_seed(0)
    size = 32
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((4, size, size), np.uint8)
    for i in range(4):
        masks[i][(yy - 10 - i) ** 2 + (xx - 12) ** 2 < 36] = 1 + i % 4
        masks[i][(yy - 22) ** 2 + (xx - 20 - i) ** 2 < 25] = 1 + (i + 1) % 4
    images = (masks[..., None] / 4.0 + 0.05 * np.random.default_rng(0).normal(size=(4, size, size, 1))).astype(np.float32)
    model = unet(size, depth=2, base_filters=4)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=dice_ce_loss(), metrics=[ConfusionMatrixMetric()])
    history = model.fit(images, masks, batch_size=4, epochs=15, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    assert "mean_dice" in history.history and "dice_IVD" in history.history


def _fractions(seed: int, shape=(2, 8, 8)) -> np.ndarray:
    """Random per-pixel class fractions summing to 1 (like labels resized bilinearly)."""
    raw = np.random.default_rng(seed).random((*shape, NUM_CLASSES)) ** 4
    return (raw / raw.sum(-1, keepdims=True)).astype(np.float32)


def _numpy_dice_ce_fractions(target, probs, weights, smooth=1.0):
    t = target.reshape(-1, NUM_CLASSES).astype(np.float64)
    p = probs.reshape(-1, NUM_CLASSES).astype(np.float64)
    pixel_w = t @ np.asarray(weights, float)
    ce = (pixel_w * -(t * np.log(np.clip(p, 1e-7, 1))).sum(-1)).sum() / pixel_w.sum()
    dice = (2 * (t * p).sum(0) + smooth) / (t.sum(0) + p.sum(0) + smooth)
    return ce + 1 - (weights[1:] * dice[1:]).sum() / sum(weights[1:])


def test_dice_ce_loss_on_class_fractions_matches_numpy_and_equals_ids_for_one_hot() -> None:
    _, probs = _random_case(4, shape=(2, 8, 8))
    target = _fractions(4)
    weights = [0.5, 1.0, 2.0, 1.0, 3.0]
    value = float(dice_ce_loss(class_weights=weights)(tf.constant(target), tf.constant(probs)))
    assert value == pytest.approx(_numpy_dice_ce_fractions(target, probs, weights), rel=1e-5)
    truth, _ = _random_case(4, shape=(2, 8, 8))
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[truth]
    from_ids = float(dice_ce_loss(class_weights=weights)(tf.constant(truth), tf.constant(probs)))
    from_one_hot = float(dice_ce_loss(class_weights=weights)(tf.constant(one_hot), tf.constant(probs)))
    assert from_ids == pytest.approx(from_one_hot, rel=1e-6)


def test_metric_scores_class_fractions_by_their_majority_class() -> None:
    target = _fractions(8, shape=(3, 10, 10))
    _, probs = _random_case(8, shape=(3, 10, 10))
    reference = segmentation_scores(probs.argmax(-1), target.argmax(-1))
    metric = ConfusionMatrixMetric()
    metric.update_state(target, probs)
    assert float(metric.result()["mean_dice"]) == pytest.approx(reference.mean_dice, abs=1e-6)
