"""Segmenter: the fast class-plane restore equals restore_labels value for value; the windows' mean is exact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge_runtime.preprocessing import (
    PreprocessSpec,
    prepare_slice,
    restore_labels,
    restore_probabilities,
    window_geometry,
    window_specs,
)
from edge_runtime.run import resolve_model
from edge_runtime.segmenter import Segmenter, class_planes_at_slice_size, labels_at_slice_size, labels_from_windows


def _scores(kind: str, rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    if kind == "probabilities":
        return rng.random(shape).astype(np.float32)
    if kind == "int8_ties":  # quantised scores: many exact ties
        return rng.integers(-128, 128, shape).astype(np.float32)
    if kind == "coarse_ties":
        return (np.round(rng.random(shape) * 4) / 4).astype(np.float32)
    return rng.normal(0, 3, shape).astype(np.float32)


@pytest.mark.parametrize("kind", ["probabilities", "int8_ties", "coarse_ties", "logits"])
def test_fast_restore_equals_restore_labels_and_probabilities_on_every_pixel(kind: str) -> None:
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
        planes = class_planes_at_slice_size(scores, geometry)
        assert planes.dtype == np.float32 and planes.shape == (classes, height, width)
        np.testing.assert_array_equal(planes, np.moveaxis(restore_probabilities(scores, geometry), -1, 0))


def test_fast_restore_keeps_argmax_rule_for_nan_scores() -> None:
    scores = np.random.default_rng(3).random((160, 160, 5)).astype(np.float32)
    scores[40:44, 50:60, 3] = np.nan
    geometry = window_geometry((320, 310), PreprocessSpec(input_size=160))
    np.testing.assert_array_equal(labels_at_slice_size(scores, geometry), restore_labels(scores, geometry))


def test_window_specs_scale_a_fixed_field_of_view_only() -> None:
    fixed = PreprocessSpec(input_size=160, field_of_view_mm=160.0)
    assert [s.field_of_view_mm for s in window_specs(fixed)] == [150.0, 160.0, 170.0]
    assert all(s.input_size == 160 and s.clip_high_percentile == fixed.clip_high_percentile for s in window_specs(fixed))
    assert window_specs(fixed, single_window=True) == [fixed]
    whole = PreprocessSpec(input_size=160)  # the whole slice padded to a square: one window
    assert window_specs(whole) == [whole]


def _phantom_slice() -> tuple[np.ndarray, float]:
    from train.data.phantom import SPACING_MM, sample_patient
    from train.data.randomize import render_randomized_slice

    return render_randomized_slice(sample_patient(5, 2), 4, "disc", 3).t2, SPACING_MM


def test_three_windows_give_the_argmax_of_their_summed_probabilities() -> None:
    """The bundled model on a phantom slice: the mask equals an independent sum over the three windows."""
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is the backend this test runs")
    image, spacing = _phantom_slice()
    seg = Segmenter(resolve_model(None), backend="litert", threads=1)
    own = seg.spec.field_of_view_mm
    assert seg.fields_of_view_mm == [own * 0.9375, own, own * 1.0625]
    total = 0
    for fov in seg.fields_of_view_mm:
        tensor, geometry = prepare_slice(image, replace(seg.spec, field_of_view_mm=fov), spacing)
        total = total + restore_probabilities(seg.backend.predict(tensor[None, ..., None])[0], geometry)
    expected = np.argmax(total, axis=-1)
    found = seg.segment([image, None], [spacing, spacing])
    assert found[0].error is None and found[1].error == "no pixels"
    np.testing.assert_array_equal(found[0].mask, expected)
    assert seg.timings.slices == 1  # slices, not windows
    single = Segmenter(resolve_model(None), backend="litert", threads=1, single_window=True)
    assert single.fields_of_view_mm == [own]
    one = single.segment([image], [spacing])[0].mask
    tensor, geometry = prepare_slice(image, seg.spec, spacing)
    np.testing.assert_array_equal(one, restore_labels(seg.backend.predict(tensor[None, ..., None])[0], geometry))
    assert 0 < np.count_nonzero(one != found[0].mask) < 0.05 * one.size  # the windows change the border, not the anatomy


def test_a_slice_without_spacing_fails_alone_in_every_window() -> None:
    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is the backend this test runs")
    image, spacing = _phantom_slice()
    seg = Segmenter(resolve_model(None), backend="litert", threads=1, batch_size=2)  # windows of two slices share batches
    results = seg.segment([image, image, image], [spacing, None, spacing])
    assert results[1].mask is None and "needs the slice's pixel spacing" in results[1].error
    np.testing.assert_array_equal(results[0].mask, results[2].mask)
    assert seg.timings.slices == 2


def test_the_windows_sum_equals_restore_probabilities_summed_on_every_pixel() -> None:
    """Cropping, padding, or both, one axis each: the boxed in-place sum changes no pixel's class."""
    rng = np.random.default_rng(11)
    spec = PreprocessSpec(input_size=48, field_of_view_mm=60.0)
    for _ in range(30):
        shape = tuple(int(v) for v in rng.integers(20, 200, 2))
        spacing = float(rng.uniform(0.2, 1.0))
        views = [(_scores("int8_ties", rng, (48, 48, 5)), window_geometry(shape, s, spacing)) for s in window_specs(spec)]
        expected = np.argmax(sum(restore_probabilities(scores, geometry) for scores, geometry in views), axis=-1)
        np.testing.assert_array_equal(labels_from_windows(views), expected)
