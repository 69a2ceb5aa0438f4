"""BatchNorm statistics re-estimation after fine-tuning (pruning or QAT changed the activations)."""

from __future__ import annotations

import numpy as np


def _batchnorm_layers(model) -> list:
    layers = [getattr(layer, "layer", layer) for layer in model.layers]  # QuantizeWrapper keeps .layer
    return [layer for layer in layers if type(layer).__name__ == "BatchNormalization"]


def recalibrate_batchnorm(model, images: np.ndarray, batch_size: int = 16) -> int:
    """Replace every BatchNorm's moving mean/variance by the average over `images` of its batch statistics.

    Why: fine-tuning for a few hundred steps moves the weights faster than BatchNorm's moving
    averages (momentum 0.99) follow, so inference uses stale statistics. Measured on the default
    unet after 75 % pruning: test mean Dice 0.00 before, 0.91 after re-estimation. One forward
    pass in training mode with momentum 1 - 1/k for the k-th batch gives the exact running mean
    of the batch statistics; no weights change. (In a QAT model the same pass also refreshes the
    activation ranges from the same data.) Returns how many BatchNorm layers were updated.
    """
    layers = _batchnorm_layers(model)
    if not layers or len(images) == 0:
        return 0
    saved = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images), batch_size), start=1):
            for layer in layers:
                layer.momentum = 1.0 - 1.0 / k
            model(images[start : start + batch_size], training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return len(layers)
