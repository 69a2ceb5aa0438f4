"""Segmenter post-processing: the fast class-plane restore equals restore_labels value for value."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.preprocessing import PreprocessSpec, restore_labels, window_geometry
from edge_runtime.segmenter import labels_at_slice_size


def _scores(kind: str, rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    if kind == "probabilities":
        return rng.random(shape).astype(np.float32)
    if kind == "int8_ties":  # quantised scores: many exact ties
        return rng.integers(-128, 128, shape).astype(np.float32)
    if kind == "coarse_ties":
        return (np.round(rng.random(shape) * 4) / 4).astype(np.float32)
    return rng.normal(0, 3, shape).astype(np.float32)


@pytest.mark.parametrize("kind", ["probabilities", "int8_ties", "coarse_ties", "logits"])
def test_fast_restore_equals_restore_labels_on_every_pixel(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    for trial in range(40):
        height, width = (int(v) for v in rng.integers(5, 400, 2))
        side, classes = int(rng.choice([16, 64, 160, 256])), int(rng.integers(1, 7))
        if trial % 3 == 2:  # a field of view that crops or pads (or both, one axis each)
            spec, spacing = PreprocessSpec(input_size=side, field_of_view_mm=100.0), float(rng.uniform(0.2, 2.0))
        else:
            spec, spacing = PreprocessSpec(input_size=side, pad_to_square=bool(trial % 3)), None
        geometry = window_geometry((height, width), spec, spacing)
        scores = _scores(kind, rng, (side, side, classes))
        expected = restore_labels(scores, geometry)
        found = labels_at_slice_size(scores, geometry)
        assert found.dtype == expected.dtype == np.uint8 and found.shape == expected.shape == (height, width)
        np.testing.assert_array_equal(found, expected)


def test_fast_restore_keeps_argmax_rule_for_nan_scores() -> None:
    scores = np.random.default_rng(3).random((160, 160, 5)).astype(np.float32)
    scores[40:44, 50:60, 3] = np.nan
    geometry = window_geometry((320, 310), PreprocessSpec(input_size=160))
    np.testing.assert_array_equal(labels_at_slice_size(scores, geometry), restore_labels(scores, geometry))
