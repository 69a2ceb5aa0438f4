"""Numpy Dice/IoU, checked against a hand-computed example."""

import numpy as np
import pytest

from edge_runtime.metrics import confusion_matrix, segmentation_scores


def test_scores_match_a_hand_computed_example():
    truth = np.array([[0, 1, 1, 1], [0, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 0], [2, 2, 0, 0]])
    scores = segmentation_scores(pred, truth)
    # IVD: TP 2, truth 3, pred 2 -> Dice 4/5, IoU 2/3.
    assert scores.dice("IVD") == pytest.approx(0.8)
    assert scores.iou("IVD") == pytest.approx(2 / 3)
    # PE: TP 1, truth 2, pred 2 -> Dice 1/2, IoU 1/3.
    assert scores.dice("PE") == pytest.approx(0.5)
    assert scores.iou("PE") == pytest.approx(1 / 3)
    # TS and AAP absent from both: empty-vs-empty counts as 1.0 and is flagged.
    ts = next(s for s in scores.per_class if s.short == "TS")
    assert (ts.dice, ts.iou, ts.empty) == (1.0, 1.0, True)
    assert scores.mean_dice == pytest.approx((0.8 + 0.5 + 1 + 1) / 4)
    # Background: TP 2 ((0,0) and (1,3)), truth 3, pred 4 -> Dice 4/7; not part of the mean.
    assert scores.dice("BG") == pytest.approx(4 / 7)


def test_missed_class_scores_zero_not_empty():
    truth = np.array([[3, 3], [0, 0]])
    pred = np.zeros_like(truth)
    scores = segmentation_scores(pred, truth)
    ts = next(s for s in scores.per_class if s.short == "TS")
    assert (ts.dice, ts.iou, ts.empty) == (0.0, 0.0, False)


def test_confusion_matrix_counts_truth_rows_and_prediction_columns():
    conf = confusion_matrix(np.array([1, 1, 2]), np.array([1, 2, 2]))
    assert conf[1, 1] == 1 and conf[2, 1] == 1 and conf[2, 2] == 1 and conf.sum() == 3


def test_shape_mismatch_and_bad_ids_are_errors():
    with pytest.raises(ValueError, match="shape"):
        segmentation_scores(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="outside 0..4"):
        segmentation_scores(np.full((2, 2), 7), np.zeros((2, 2)))
