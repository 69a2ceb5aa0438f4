"""A tiny U-Net trained for seconds on smooth blob images whose classes are intensity bands.

Export gates compare an artefact with its Keras model; an untrained network sits on near-ties
everywhere, so any rounding flips pixels and no honest gate could pass. This model has learnt
real decision boundaries, so a faithful conversion passes its gate and a broken one fails it.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.labels import NUM_CLASSES

SIZE = 32


def blob_images(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    """Smooth blob images in [0, 1], (n, size, size, 1) float32 (closer to MR slices than white noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.zeros((n, size, size, 1), np.float32)
    for i in range(n):
        for _ in range(4):
            cy, cx, r, v = rng.random(4)
            out[i, ..., 0] += v * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (0.02 + 0.05 * r))
    return np.clip(out / out.max(axis=(1, 2, 3), keepdims=True), 0, 1).astype(np.float32)


def band_labels(images: np.ndarray) -> np.ndarray:
    """Class ids (n, S, S): the intensity band of each pixel (5 equal bands over [0, 1])."""
    return np.minimum((images[..., 0] * NUM_CLASSES).astype(np.uint8), NUM_CLASSES - 1)


def trained_unet(size: int = SIZE, epochs: int = 20, seed: int = 0, arch: str = "unet", **kwargs):
    """A 4-filter model (depth-2 U-Net by default) fitted to band_labels (about 10 s on two busy cores)."""
    import tf_keras as keras

    from train.models import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(arch, size, base_filters=4, **({"depth": 2} if arch == "unet" else {}), **kwargs)
    images = blob_images(64, seed=7, size=size)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(images, band_labels(images), batch_size=8, epochs=epochs, verbose=0)
    return model


def rotate_classes(model):
    """A copy of `model` whose head's output channels are rotated by one: every label moves to the next class."""
    import tf_keras as keras

    broken = keras.models.clone_model(model)
    broken.set_weights(model.get_weights())
    head = broken.get_layer("head_conv")
    kernel, bias = head.get_weights()
    order = np.roll(np.arange(NUM_CLASSES), 1)
    head.set_weights([kernel[..., order], bias[order]])
    return broken
