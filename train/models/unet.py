"""Plain U-Net (Ronneberger et al. 2015) with Conv-BN-ReLU blocks, sized for CPUs and QAT."""

from __future__ import annotations

import tf_keras as keras
from tf_keras import layers

from edge_runtime.labels import NUM_CLASSES
from train.models.blocks import check_input_size, conv_bn_relu, decoder_block, model_input, segmentation_head


def unet(
    input_size: int = 256,
    depth: int = 4,
    base_filters: int = 16,
    num_classes: int = NUM_CLASSES,
    input_channels: int = 1,
) -> keras.Model:
    """Build a U-Net.

    Args:
        input_size: square input side in pixels; must be divisible by 2**depth.
        depth: number of 2x poolings (1-6); the bottleneck runs at input_size / 2**depth.
        base_filters: filters of the first stage; stage i has base_filters * 2**i (>= 1).
        num_classes: output classes including background.
        input_channels: image channels (1 for a single MR contrast).
    """
    if not 1 <= depth <= 6:
        raise ValueError(f"unet: depth must be 1..6, got {depth}")
    if base_filters < 1:
        raise ValueError(f"unet: base_filters must be >= 1, got {base_filters}")
    check_input_size(input_size, 2**depth, "unet")
    inputs = model_input(input_size, input_channels)
    x = inputs
    skips = []
    for stage in range(depth):
        filters = base_filters * 2**stage
        x = conv_bn_relu(x, filters, name=f"encoder_stage{stage}a")
        x = conv_bn_relu(x, filters, name=f"encoder_stage{stage}b")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"encoder_stage{stage}_pool")(x)
    bottleneck = base_filters * 2**depth
    x = conv_bn_relu(x, bottleneck, name="bottleneck_a")
    x = conv_bn_relu(x, bottleneck, name="bottleneck_b")
    for stage in reversed(range(depth)):
        x = decoder_block(x, skips[stage], base_filters * 2**stage, stage)
    return keras.Model(inputs, segmentation_head(x, num_classes), name="unet")
