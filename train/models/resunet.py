"""U-Net with a ResNet-18/34 encoder (He et al. 2016) built flat on the input, for tfmot."""

from __future__ import annotations

import tf_keras as keras
from tf_keras import layers

from edge_runtime.labels import NUM_CLASSES
from train.models.blocks import check_input_size, conv_bn_relu, decoder_block, model_input, segmentation_head

ENCODER_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
TOTAL_STRIDE = 32


def basic_block(x, filters: int, strides: int, name: str):
    """ResNet basic block: two 3x3 Conv-BN, projection shortcut when the shape changes."""
    shortcut = x
    y = conv_bn_relu(x, filters, name=f"{name}_1", strides=strides)
    y = conv_bn_relu(y, filters, name=f"{name}_2", relu=False)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn_relu(x, filters, name=f"{name}_proj", kernel_size=1, strides=strides, relu=False)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resunet(
    input_size: int = 256,
    encoder: str = "resnet18",
    base_filters: int = 64,
    num_classes: int = NUM_CLASSES,
    input_channels: int = 1,
) -> keras.Model:
    """Build a ResNet-encoder U-Net.

    Args:
        input_size: square input side; must be divisible by 32 (stem stride 4, three more
            stride-2 stages).
        encoder: "resnet18" or "resnet34" (basic blocks per stage 2-2-2-2 or 3-4-6-3).
        base_filters: width of the stem and first stage (64 in the original ResNet); stage i
            has base_filters * 2**i; the decoder uses half as many at each resolution.
        num_classes: output classes including background.
        input_channels: image channels.
    """
    if encoder not in ENCODER_BLOCKS:
        raise ValueError(f"resunet: encoder must be one of {sorted(ENCODER_BLOCKS)}, got {encoder!r}")
    if base_filters < 2:
        raise ValueError(f"resunet: base_filters must be >= 2, got {base_filters}")
    check_input_size(input_size, TOTAL_STRIDE, "resunet")
    inputs = model_input(input_size, input_channels)
    stem = conv_bn_relu(inputs, base_filters, name="encoder_stem", kernel_size=7, strides=2)  # /2
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="encoder_stem_pool")(stem)  # /4
    skips = [stem]
    for stage, blocks in enumerate(ENCODER_BLOCKS[encoder], start=1):
        filters = base_filters * 2 ** (stage - 1)
        for block in range(blocks):
            strides = 2 if (block == 0 and stage > 1) else 1
            x = basic_block(x, filters, strides, name=f"encoder_stage{stage}_block{block}")
        skips.append(x)  # stage1 /4, stage2 /8, stage3 /16, stage4 /32
    # Decoder from /32 up to /1: skips at /16, /8, /4, /2, none at full resolution.
    decoder_skips = [skips[3], skips[2], skips[1], skips[0], None]
    for stage, skip in zip(range(4, -1, -1), decoder_skips, strict=False):
        filters = max(base_filters * 2 ** max(stage - 1, 0) // 2, 4)
        x = decoder_block(x, skip, filters, stage)
    return keras.Model(inputs, segmentation_head(x, num_classes), name=f"resunet_{encoder}")
