"""Layer blocks shared by the architectures: QAT-foldable Conv-BN-ReLU, decoder, head."""

from __future__ import annotations

import tf_keras as keras
from tf_keras import layers


def conv_bn_relu(x, filters: int, name: str, kernel_size: int = 3, strides: int = 1, relu: bool = True):
    """Conv2D (no bias) -> BatchNorm [-> ReLU]; BN directly after Conv2D so QAT can fold it."""
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return x


def decoder_block(x, skip, filters: int, stage: int):
    """Nearest 2x upsampling, concatenate the skip, two Conv-BN-ReLU (no Conv2DTranspose)."""
    x = layers.UpSampling2D(2, interpolation="nearest", name=f"decoder_stage{stage}_upsample")(x)
    if skip is not None:
        x = layers.Concatenate(name=f"decoder_stage{stage}_concat")([x, skip])
    x = conv_bn_relu(x, filters, name=f"decoder_stage{stage}a")
    return conv_bn_relu(x, filters, name=f"decoder_stage{stage}b")


def segmentation_head(x, num_classes: int):
    """1x1 conv to class scores, softmax computed in float32 (safe under mixed precision)."""
    x = layers.Conv2D(num_classes, 1, padding="same", name="head_conv")(x)
    return layers.Activation("softmax", dtype="float32", name="head_softmax")(x)


def check_input_size(input_size: int, factor: int, arch: str) -> None:
    """Raise a clear error unless the input side is divisible by the network's total stride."""
    if input_size <= 0 or input_size % factor:
        raise ValueError(
            f"{arch}: input_size {input_size} must be a positive multiple of {factor} "
            f"(2**depth); try {max(factor, round(input_size / factor) * factor)}"
        )


def model_input(input_size: int, channels: int):
    return keras.Input(shape=(input_size, input_size, channels), name="image")
