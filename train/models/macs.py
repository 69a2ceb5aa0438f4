"""Multiply-accumulate count per slice, from the layer shapes of a built model."""

from __future__ import annotations

import numpy as np
import tf_keras as keras
from tf_keras import layers


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs of one layer for batch 1; 0 for layers without multiplies by weights."""
    if isinstance(layer, layers.DepthwiseConv2D):
        out_h, out_w, out_c = layer.output_shape[1:]
        kh, kw = layer.kernel_size
        return int(out_h * out_w * out_c * kh * kw)
    if isinstance(layer, layers.Conv2DTranspose):  # each input pixel scatters a kernel
        in_h, in_w, in_c = layer.input_shape[1:]
        kh, kw = layer.kernel_size
        return int(in_h * in_w * in_c * kh * kw * layer.filters)
    if isinstance(layer, layers.Conv2D):
        out_h, out_w, out_c = layer.output_shape[1:]
        in_c = layer.input_shape[-1]
        kh, kw = layer.kernel_size
        return int(out_h * out_w * out_c * kh * kw * in_c // layer.groups)
    if isinstance(layer, layers.Dense):
        spatial = int(np.prod(layer.output_shape[1:-1])) if len(layer.output_shape) > 2 else 1
        return int(spatial * layer.input_shape[-1] * layer.units)
    return 0


def count_macs(model: keras.Model) -> dict[str, int]:
    """Per-layer MACs (convolutions and dense layers) plus "total"; batch 1."""
    per_layer = {layer.name: layer_macs(layer) for layer in model.layers}
    per_layer = {name: macs for name, macs in per_layer.items() if macs}
    per_layer["total"] = sum(per_layer.values())
    return per_layer
