"""Input pipeline: paired augmentation keeps image and mask aligned; seeded datasets are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

from edge_runtime.preprocessing import PreprocessSpec, prepare_labels, prepare_slice  # noqa: E402
from train.pipeline import AugmentConfig, SliceArrays, augment_pair, label_fractions, make_dataset  # noqa: E402

SIZE = 64
# Intensity encodes the class: background 0 (the fill value), then distinct levels.
LEVELS = np.array([0.0, 0.3, 0.5, 0.7, 0.9], np.float32)


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:30, 8:40] = 1
    mask[34:50, 18:30] = 3
    mask[40:58, 42:60] = 4
    mask[12:20, 46:56] = 2  # asymmetric, so a flip is visible
    return LEVELS[mask][..., None], mask


def _uniform_interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds one class (away from class borders and image edges)."""
    windows = sliding_window_view(np.pad(mask.astype(np.int16), 1, constant_values=-1), (3, 3))
    return (windows == mask[..., None, None]).all(axis=(-1, -2))


def _augment(seed: int, config: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    image, mask = _phantom()
    out_image, out_mask = augment_pair(tf.constant(image), tf.constant(mask), tf.constant([seed, 1]), config)
    return out_image.numpy()[..., 0], out_mask.numpy()


@pytest.mark.parametrize("seed", range(8))
def test_geometric_augmentation_keeps_image_and_mask_aligned(seed: int) -> None:
    image, mask = _augment(seed, AugmentConfig.geometric_only())
    original = _phantom()[1]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= set(range(5))  # nearest: no blended ids
    assert (mask != original).mean() > 0.01  # the transform did something
    interior = _uniform_interior(mask)
    assert interior.mean() > 0.5
    # inside each region the bilinear image still shows exactly that class's level
    np.testing.assert_allclose(image[interior], LEVELS[mask][interior], atol=1e-4)
    # and the check has teeth: a 2-pixel misregistration is caught
    shifted = np.roll(mask, 2, axis=1)
    assert np.abs(image - LEVELS[shifted])[_uniform_interior(shifted)].max() > 0.1


def test_flip_moves_image_and_mask_together() -> None:
    config = AugmentConfig(rotation_deg=0, zoom=(1.0, 1.0), shift=0, flip=True, intensity_scale=0, gamma=0, noise_std=0)
    _, original = _phantom()
    flipped = 0
    for seed in range(12):
        image, mask = _augment(seed, config)
        assert mask.tolist() in (original.tolist(), original[:, ::-1].tolist())
        np.testing.assert_array_equal(image, LEVELS[mask])
        flipped += mask.tolist() != original.tolist()
    assert 0 < flipped < 12


@pytest.mark.parametrize("seed", range(4))
def test_intensity_augmentation_changes_image_only_and_preserves_class_order(seed: int) -> None:
    config = AugmentConfig(noise_std=0.0)  # full geometry + scale + gamma, no noise: levels stay flat
    image, mask = _augment(seed, config)
    assert image.min() >= 0.0 and image.max() <= 1.0
    interior = _uniform_interior(mask)
    means = []
    for class_id in range(5):
        values = image[interior & (mask == class_id)]
        assert values.size > 0
        assert values.std() < 1e-4  # one intensity per class: still aligned
        means.append(values.mean())
    assert means == sorted(means)  # monotone intensity transform
    assert not np.allclose(means[1:], LEVELS[1:], atol=1e-3)  # and it did change intensities


def test_noise_is_added_to_the_image() -> None:
    image, mask = _augment(3, AugmentConfig(rotation_deg=0, zoom=(1.0, 1.0), shift=0, flip=False, intensity_scale=0, gamma=0))
    np.testing.assert_array_equal(mask, _phantom()[1])
    residual = image - LEVELS[mask]
    assert 0 < np.abs(residual).max() < 0.2


def _arrays(n: int = 10) -> SliceArrays:
    image, mask = _phantom()
    rng = np.random.default_rng(0)
    images = np.stack([np.clip(image + 0.01 * rng.normal(size=image.shape), 0, 1) for _ in range(n)]).astype(np.float32)
    masks = np.repeat(mask[None], n, axis=0)
    return SliceArrays(images, masks, tuple((f"P{i}", 3) for i in range(n)))


def _epoch(ds) -> list[np.ndarray]:
    return [images.numpy() for images, _ in ds]


def test_seeded_dataset_is_reproducible_and_varies_between_epochs() -> None:
    arrays = _arrays()
    first = make_dataset(arrays, 4, training=True, seed=5)
    epoch1, epoch2 = _epoch(first), _epoch(first)
    again = _epoch(make_dataset(arrays, 4, training=True, seed=5))
    other = _epoch(make_dataset(arrays, 4, training=True, seed=6))
    assert [b.shape for b in epoch1] == [(4, SIZE, SIZE, 1), (4, SIZE, SIZE, 1), (2, SIZE, SIZE, 1)]
    assert all(np.array_equal(a, b) for a, b in zip(epoch1, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch1, epoch2, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(epoch1, other, strict=True))


def test_validation_dataset_is_unchanged_and_in_order() -> None:
    arrays = _arrays(5)
    batches = list(make_dataset(arrays, 2, training=False))
    images = np.concatenate([b[0].numpy() for b in batches])
    masks = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(images, arrays.images)
    np.testing.assert_array_equal(masks, arrays.masks)


def test_make_dataset_rejects_empty_input() -> None:
    empty = SliceArrays(np.zeros((0, 8, 8, 1), np.float32), np.zeros((0, 8, 8), np.uint8), ())
    with pytest.raises(ValueError, match="empty split"):
        make_dataset(empty, 2, training=True)


def test_label_fractions_are_area_averages_registered_with_the_image() -> None:
    _, mask = _phantom()
    raw = mask.astype(np.float32) * 100 + 7
    spec = PreprocessSpec(input_size=32)
    _, geometry = prepare_slice(raw, spec)
    fractions = label_fractions(mask, geometry, 32)
    # 64 -> 32 px: each model pixel covers a 2x2 block; its fractions are that block's class shares
    blocks = np.eye(5, dtype=np.float32)[mask].reshape(32, 2, 32, 2, 5).mean(axis=(1, 3))
    np.testing.assert_allclose(fractions, blocks, atol=1e-6)


def test_label_fractions_pad_non_square_slices_like_the_image() -> None:
    _, mask = _phantom()
    narrow = mask[:, 4:60]  # 64 x 56: padded 4 columns each side, as prepare_slice does
    spec = PreprocessSpec(input_size=64)
    _, geometry = prepare_slice(narrow.astype(np.float32) + 1, spec)
    fractions = label_fractions(narrow, geometry, 64)
    np.testing.assert_allclose(fractions.sum(-1), 1.0, atol=1e-6)
    assert (fractions[:, :4, 0] == 1).all() and (fractions[:, 60:, 0] == 1).all()
    np.testing.assert_array_equal(fractions.argmax(-1), prepare_labels(narrow, spec))  # same size: exact


@pytest.mark.parametrize("seed", range(4))
def test_augmentation_keeps_class_fractions_aligned_and_normalised(seed: int) -> None:
    image, mask = _phantom()
    fractions = np.eye(5, dtype=np.float32)[mask]
    out_image, out_fractions = augment_pair(
        tf.constant(image), tf.constant(fractions), tf.constant([seed, 2]), AugmentConfig.geometric_only()
    )
    out_image, out_fractions = out_image.numpy()[..., 0], out_fractions.numpy()
    assert out_fractions.shape == (SIZE, SIZE, 5)
    np.testing.assert_allclose(out_fractions.sum(-1), 1.0, atol=1e-5)
    # a bilinear image and bilinear fractions agree everywhere: the image is the fraction-weighted level
    np.testing.assert_allclose(out_image, out_fractions @ LEVELS, atol=1e-5)
    assert np.abs(out_fractions - fractions).max() > 0.5  # it moved


def test_dataset_of_fractions_yields_float_targets() -> None:
    arrays = _arrays(4)
    fractions = np.eye(5, dtype=np.float16)[arrays.masks]
    with_fractions = SliceArrays(arrays.images, arrays.masks, arrays.keys, fractions)
    _, targets = next(iter(make_dataset(with_fractions, 4, training=False)))
    assert targets.dtype == tf.float32 and targets.shape == (4, SIZE, SIZE, 5)
    np.testing.assert_array_equal(targets.numpy().argmax(-1), arrays.masks)
    _, augmented = next(iter(make_dataset(with_fractions, 4, training=True, seed=1)))
    np.testing.assert_allclose(augmented.numpy().sum(-1), 1.0, atol=1e-5)


def test_prepare_arrays_uses_the_runtime_preprocessing(tmp_path) -> None:
    from train.data.mendeley import index_dataset, load_pair
    from train.data.synth import synthesize
    from train.pipeline import prepare_arrays

    synthesize(tmp_path, patients=1, seed=4)
    pairs = index_dataset(tmp_path)
    spec = PreprocessSpec(input_size=64)
    arrays = prepare_arrays(pairs, spec, "T2", fractions=True)
    assert arrays.keys == tuple((p.patient_id, p.disc) for p in pairs)
    raw, mask = load_pair(pairs[1], "T2")
    np.testing.assert_array_equal(arrays.images[1, ..., 0], prepare_slice(raw, spec)[0])
    np.testing.assert_array_equal(arrays.masks[1], prepare_labels(mask, spec))
    assert arrays.fractions.dtype == np.float16
    np.testing.assert_allclose(arrays.fractions.astype(np.float32).sum(-1), 1.0, atol=2e-3)


@pytest.mark.parametrize("zoom", [0.9, 1.25])
def test_zoom_magnifies_by_the_drawn_factor(zoom: float) -> None:
    """A fixed zoom scales every region's area by zoom**2 (the range's ends are reachable exactly)."""
    config = AugmentConfig(rotation_deg=0, zoom=(zoom, zoom), shift=0, flip=False, intensity_scale=0, gamma=0,
                           noise_std=0)
    _, mask = _augment(0, config)
    original = _phantom()[1]
    for class_id in (1, 3):
        ratio = (mask == class_id).sum() / (original == class_id).sum()
        assert ratio == pytest.approx(zoom**2, rel=0.12)
