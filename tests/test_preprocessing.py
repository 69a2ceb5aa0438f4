"""Shared preprocessing: intensity normalisation, resizing and its inverse."""

import numpy as np
import pytest

from edge_runtime.preprocessing import (
    PreprocessSpec,
    normalize_intensity,
    prepare_labels,
    prepare_slice,
    resize_image,
    resize_labels,
    restore_labels,
)


@pytest.mark.parametrize("dtype,scale,offset", [(np.uint8, 1, 0), (np.uint16, 16, 0), (np.int16, 16, -2048)])
def test_normalisation_is_independent_of_bit_depth_and_sign(dtype, scale, offset):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, size=(64, 64))
    image = (base * scale + offset).astype(dtype)
    spec = PreprocessSpec(input_size=64)
    expected = normalize_intensity(base.astype(np.uint8), spec)
    np.testing.assert_allclose(normalize_intensity(image, spec), expected, atol=1e-6)


def test_normalisation_clips_outliers_to_the_percentiles():
    image = np.arange(1000, dtype=np.float32).reshape(25, 40)
    image[0, 0] = 1e6  # a hot pixel must not squash the rest of the range
    out = normalize_intensity(image, PreprocessSpec(input_size=64, clip_low_percentile=1, clip_high_percentile=99))
    lo, hi = np.percentile(image, [1, 99])
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[12, 20] == pytest.approx((image[12, 20] - lo) / (hi - lo))


def test_constant_image_gives_zeros_not_nan():
    out = normalize_intensity(np.full((8, 8), 7, dtype=np.uint16), PreprocessSpec(input_size=8))
    assert np.array_equal(out, np.zeros((8, 8), dtype=np.float32))


def test_bilinear_resize_matches_hand_computation():
    image = np.array([[0.0, 1.0], [2.0, 3.0]])
    out = resize_image(image, (4, 4))
    # Half-pixel centres: the output pixel 1 maps to source 0.25 along each axis.
    assert out[1, 1] == pytest.approx(0.25 * 1 + 0.25 * 2)
    assert out[0, 0] == pytest.approx(0.0) and out[3, 3] == pytest.approx(3.0)
    assert resize_image(image, (2, 2)).tolist() == image.tolist()


def test_label_resize_keeps_class_ids_exact():
    mask = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    out = resize_labels(mask, (4, 4))
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 1, 2, 3}
    assert out[:2, :2].tolist() == [[0, 0], [0, 0]] and out[2:, 2:].tolist() == [[3, 3], [3, 3]]


def test_non_square_slice_round_trips_to_its_own_geometry():
    spec = PreprocessSpec(input_size=32)
    mask = np.zeros((40, 30), dtype=np.uint8)
    mask[10:30, 5:20] = 2
    image = mask.astype(np.float32) * 100
    prepared, geometry = prepare_slice(image, spec)
    assert prepared.shape == (32, 32) and prepared.dtype == np.float32
    one_hot = np.eye(5, dtype=np.float32)[prepare_labels(mask, spec)]
    restored = restore_labels(one_hot, geometry)
    assert restored.shape == (40, 30)
    assert (restored == mask).mean() > 0.97


def test_spec_round_trips_and_rejects_bad_values():
    spec = PreprocessSpec(input_size=160)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown preprocessing fields"):
        PreprocessSpec.from_dict({**spec.to_dict(), "gamma": 2})
    with pytest.raises(ValueError, match="clip_low_percentile"):
        PreprocessSpec(clip_low_percentile=50, clip_high_percentile=10)


def test_field_of_view_crops_a_centred_square_of_that_many_mm():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 4000, size=(320, 300)).astype(np.uint16)
    spec = PreprocessSpec(input_size=64, field_of_view_mm=160.0)
    prepared, geometry = prepare_slice(image, spec, (0.6875, 0.6875))
    side = round(160 / 0.6875)  # 233 px
    top, left = (320 - side) // 2 + ((320 - side) % 2), (300 - side) // 2 + ((300 - side) % 2)
    assert (geometry.side, -geometry.pad_top, -geometry.pad_left) == (side, top, left)
    window = image[top : top + side, left : left + side]  # intensities normalised over what the model sees
    expected = resize_image(normalize_intensity(window, spec), (64, 64))
    np.testing.assert_allclose(prepared, expected, atol=1e-6)


def test_field_of_view_pads_a_small_slice_and_round_trips_labels():
    spec = PreprocessSpec(input_size=50, field_of_view_mm=200.0)
    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[20:40, 30:50] = 3
    prepared, geometry = prepare_slice(mask.astype(np.float32), spec, 2.0)  # 100 px window around 60 x 80
    assert (geometry.side, geometry.pad_top, geometry.pad_left) == (100, 20, 10)
    assert prepared[:5].max() == 0.0  # padding rows above the slice
    one_hot = np.eye(5, dtype=np.float32)[prepare_labels(mask, spec, 2.0)]
    np.testing.assert_array_equal(restore_labels(one_hot, geometry), mask)


def test_labels_outside_a_cropping_window_are_background():
    spec = PreprocessSpec(input_size=40, field_of_view_mm=40.0)
    mask = np.full((100, 100), 2, dtype=np.uint8)
    one_hot = np.eye(5, dtype=np.float32)[prepare_labels(mask, spec, 1.0)]
    restored = restore_labels(one_hot, prepare_slice(mask, spec, 1.0)[1])
    assert np.all(restored[30:70, 30:70] == 2)
    assert restored[:30].max() == 0 and restored[70:].max() == 0 and restored[:, :30].max() == 0


def test_field_of_view_uses_the_geometric_mean_of_anisotropic_spacing():
    spec = PreprocessSpec(input_size=16, field_of_view_mm=100.0)
    _, geometry = prepare_slice(np.ones((64, 64)), spec, (0.5, 2.0))
    assert geometry.side == 100


@pytest.mark.parametrize("spacing,message", [(None, "needs the slice's pixel spacing"), ((0.0, 1.0), "> 0 mm"),
                                             ((1.0, 1.0, 1.0), "one or two values")])
def test_field_of_view_without_a_usable_pixel_spacing_is_refused(spacing, message):
    with pytest.raises(ValueError, match=message):
        prepare_slice(np.ones((32, 32)), PreprocessSpec(input_size=16, field_of_view_mm=100.0), spacing)


def test_field_of_view_must_be_positive():
    with pytest.raises(ValueError, match="field_of_view_mm needs a value > 0"):
        PreprocessSpec(input_size=16, field_of_view_mm=0.0)
