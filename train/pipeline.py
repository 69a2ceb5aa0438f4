"""tf.data input pipeline: split slices prepared once in memory, paired image/mask augmentation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from edge_runtime.preprocessing import PreprocessSpec, prepare_labels, prepare_slice

if TYPE_CHECKING:
    from train.data.mendeley import SlicePair


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation; every geometric change is shared by image and mask.

    rotation_deg: uniform in +-rotation_deg; scale: zoom factor in [1 - scale, 1 + scale];
    shift: translation in +-shift of the side; flip: left-right flip with probability 0.5 (axial
    lumbar anatomy is near-symmetric, classes have no left/right variant); intensity_scale:
    factor in [1 - s, 1 + s]; gamma: exponent log-uniform in [1/(1+g), 1+g]; noise_std: Gaussian
    noise with a standard deviation uniform in [0, noise_std].
    """

    rotation_deg: float = 10.0
    scale: float = 0.1
    shift: float = 0.06
    flip: bool = True
    intensity_scale: float = 0.1
    gamma: float = 0.25
    noise_std: float = 0.03

    @classmethod
    def geometric_only(cls) -> AugmentConfig:
        return cls(intensity_scale=0.0, gamma=0.0, noise_std=0.0)


@dataclass(frozen=True)
class SliceArrays:
    """Prepared slices of one split at model resolution, held in memory."""

    images: np.ndarray  # (N, S, S, 1) float32 in [0, 1]
    masks: np.ndarray  # (N, S, S) uint8 class ids
    keys: tuple[tuple[str, int], ...]  # (patient_id, disc) per slice

    def __len__(self) -> int:
        return len(self.keys)


def prepare_arrays(pairs: Sequence[SlicePair], spec: PreprocessSpec, modality: str = "T2") -> SliceArrays:
    """Load and prepare every slice with the runtime's own preprocessing (prepare_slice/prepare_labels)."""
    from train.data.mendeley import load_pair

    size = spec.input_size
    images = np.zeros((len(pairs), size, size, 1), np.float32)
    masks = np.zeros((len(pairs), size, size), np.uint8)
    for i, pair in enumerate(pairs):
        raw, mask = load_pair(pair, modality)
        images[i, ..., 0] = prepare_slice(raw, spec)[0]
        masks[i] = prepare_labels(mask, spec)
    return SliceArrays(images, masks, tuple((p.patient_id, p.disc) for p in pairs))


def _transform(seed: tf.Tensor, size: int, config: AugmentConfig) -> tf.Tensor:
    """(1, 8) projective transform: output pixel -> input pixel for rotate/scale/shift about the centre."""
    seeds = tf.random.experimental.stateless_split(seed, 3)
    angle = tf.random.stateless_uniform((), seeds[0], -1.0, 1.0) * (config.rotation_deg * math.pi / 180.0)
    zoom = 1.0 + tf.random.stateless_uniform((), seeds[1], -1.0, 1.0) * config.scale
    shift = tf.random.stateless_uniform((2,), seeds[2], -1.0, 1.0) * (config.shift * size)
    centre = (size - 1) / 2.0
    cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
    # input = R(-angle) / zoom @ (output - centre - shift) + centre
    ox, oy = centre + shift[0], centre + shift[1]
    a0, a1, b0, b1 = cos, sin, -sin, cos
    a2 = centre - (a0 * ox + a1 * oy)
    b2 = centre - (b0 * ox + b1 * oy)
    return tf.reshape(tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0]), (1, 8))


def _warp(data: tf.Tensor, transform: tf.Tensor, interpolation: str) -> tf.Tensor:
    size = tf.shape(data)[:2]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=data[None],
        transforms=transform,
        output_shape=size,
        fill_value=tf.constant(0.0),
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )[0]


def augment_pair(
    image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor, config: AugmentConfig = AugmentConfig()
) -> tuple[tf.Tensor, tf.Tensor]:
    """Randomly transform an (S, S, 1) float image and its (S, S) uint8 mask the same way.

    Stateless: the same (image, mask, seed) always gives the same output. The image is sampled
    bilinearly, the mask with nearest neighbour so it keeps exact class ids; pixels moved in
    from outside become intensity 0 / background.
    """
    seed = tf.cast(seed, tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, 6)
    size = image.shape[0]
    mask3 = mask[..., None]
    if config.flip:
        flip = tf.random.stateless_uniform((), seeds[0]) < 0.5
        image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
        mask3 = tf.cond(flip, lambda: tf.reverse(mask3, [1]), lambda: mask3)
    if config.rotation_deg or config.scale or config.shift:
        transform = _transform(seeds[1], size, config)
        image = _warp(image, transform, "BILINEAR")
        mask3 = _warp(mask3, transform, "NEAREST")
    if config.gamma:
        log_g = math.log1p(config.gamma)
        gamma = tf.exp(tf.random.stateless_uniform((), seeds[2], -log_g, log_g))
        image = tf.pow(tf.clip_by_value(image, 0.0, 1.0), gamma)
    if config.intensity_scale:
        image = image * (1.0 + tf.random.stateless_uniform((), seeds[3], -1.0, 1.0) * config.intensity_scale)
    if config.noise_std:
        std = tf.random.stateless_uniform((), seeds[4], 0.0, config.noise_std)
        image = image + std * tf.random.stateless_normal(tf.shape(image), seeds[5])
    if config.gamma or config.intensity_scale or config.noise_std:
        image = tf.clip_by_value(image, 0.0, 1.0)
    return image, mask3[..., 0]


def make_dataset(
    arrays: SliceArrays,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment: AugmentConfig | None = AugmentConfig(),
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Batches of (image (B,S,S,1) float32, mask (B,S,S) uint8).

    training=True: cache -> shuffle (reshuffled every epoch) -> augment -> batch -> prefetch.
    Shuffle order and augmentation are drawn from `seed` (per-element seeds from
    Dataset.random, re-drawn each epoch), so with deterministic=True two runs with the same
    seed see identical batches; deterministic=False lets parallel map return out of order.
    """
    if len(arrays) == 0:
        raise ValueError("no slices to build a dataset from (empty split?)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ds = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.masks)).cache()
    if training:
        ds = ds.shuffle(len(arrays), seed=seed, reshuffle_each_iteration=True)
        if augment is not None:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda pair, s: augment_pair(pair[0], pair[1], s, augment),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic,
            )
    ds = ds.batch(batch_size)
    options = tf.data.Options()
    options.deterministic = deterministic
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
