"""The original seed project's U-Net, rebuilt only as a speed reference for the latency benchmark.

The seed notebook shipped a plain Keras U-Net: two 3x3 ReLU convolutions per stage with
64-128-256 filters, two 2x2 max-poolings, transposed-convolution upsampling with skip
concatenations, a softmax head, float32 at 256x256, run with `model.predict`. Its weights do not
matter for timing, so it is built with random initial weights; it is never used for accuracy.
"""

from __future__ import annotations

from edge_runtime.labels import NUM_CLASSES

SEED_INPUT_SIZE = 256
SEED_FILTERS = (64, 128, 256)


def seed_unet(input_size: int = SEED_INPUT_SIZE, num_classes: int = NUM_CLASSES, input_channels: int = 1):
    """Build the seed project's U-Net (tf_keras functional model, float32).

    Args:
        input_size: square input side; must be divisible by 4 (two poolings). 256 as shipped.
        num_classes: output classes including background.
        input_channels: image channels.
    """
    import tf_keras as keras
    from tf_keras import layers

    if input_size <= 0 or input_size % 4:
        raise ValueError(f"seed_unet: input_size {input_size} must be a positive multiple of 4")

    def double_conv(x, filters: int, name: str):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv1")(x)
        return layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"{name}_conv2")(x)

    inputs = keras.Input((input_size, input_size, input_channels), name="image")
    enc1 = double_conv(inputs, SEED_FILTERS[0], "enc1")
    enc2 = double_conv(layers.MaxPooling2D(2, name="pool1")(enc1), SEED_FILTERS[1], "enc2")
    bottom = double_conv(layers.MaxPooling2D(2, name="pool2")(enc2), SEED_FILTERS[2], "bottom")
    up2 = layers.Conv2DTranspose(SEED_FILTERS[1], 2, strides=2, padding="same", name="up2")(bottom)
    dec2 = double_conv(layers.Concatenate(name="cat2")([up2, enc2]), SEED_FILTERS[1], "dec2")
    up1 = layers.Conv2DTranspose(SEED_FILTERS[0], 2, strides=2, padding="same", name="up1")(dec2)
    dec1 = double_conv(layers.Concatenate(name="cat1")([up1, enc1]), SEED_FILTERS[0], "dec1")
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="head")(dec1)
    return keras.Model(inputs, outputs, name="seed_unet")


def seed_macs(model) -> int:
    """Total multiply-accumulates per slice of the seed model (transposed convs included)."""
    from train.models.macs import count_macs

    return count_macs(model)["total"]
