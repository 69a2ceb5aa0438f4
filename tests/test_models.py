"""Model builders: shapes, size checks, layer naming, MAC counts and tfmot compatibility."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")

from edge_runtime.labels import NUM_CLASSES  # noqa: E402
from train.models import build_model, count_macs, resunet, unet  # noqa: E402


@pytest.mark.parametrize("size", [32, 48, 64])
def test_unet_builds_at_several_sizes_and_keeps_resolution(size: int) -> None:
    model = unet(input_size=size, depth=3, base_filters=4)
    assert model.input_shape == (None, size, size, 1)
    assert model.output_shape == (None, size, size, NUM_CLASSES)
    out = model(np.zeros((2, size, size, 1), np.float32), training=False).numpy()
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)  # softmax head


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("encoder", ["resnet18", "resnet34"])
def test_resunet_builds_at_several_sizes(size: int, encoder: str) -> None:
    model = resunet(input_size=size, encoder=encoder, base_filters=4)
    assert model.output_shape == (None, size, size, NUM_CLASSES)
    assert model.name == f"resunet_{encoder}"
    # a real residual encoder: Add layers, one per basic block
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == {"resnet18": 8, "resnet34": 16}[encoder]


@pytest.mark.parametrize(
    ("arch", "size", "kwargs", "message"),
    [
        ("unet", 60, {"depth": 4}, "multiple of 16"),
        ("unet", 40, {"depth": 4}, "input_size 40"),
        ("resunet", 48, {}, "multiple of 32"),
        ("resunet", 64, {"encoder": "resnet50"}, "resnet50"),
    ],
)
def test_builders_reject_bad_sizes_and_encoders(arch: str, size: int, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(arch, size, base_filters=4, **kwargs)


def test_build_model_rejects_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'segnet'"):
        build_model("segnet", 64)


def test_models_are_flat_and_qat_friendly() -> None:
    """No nested models, no Conv2DTranspose, every BN directly after a Conv2D, float32 softmax."""
    for model in (unet(32, depth=2, base_filters=4), resunet(32, base_filters=4)):
        kinds = {type(layer).__name__ for layer in model.layers}
        assert "Functional" not in kinds and "Model" not in kinds
        assert "Conv2DTranspose" not in kinds
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                inbound = layer._inbound_nodes[0].inbound_layers
                assert isinstance(inbound, keras.layers.Conv2D), layer.name
        assert model.get_layer("head_softmax").dtype == "float32"


def test_count_macs_matches_hand_calculation_for_tiny_unet() -> None:
    """unet(8, depth=1, base_filters=2), 1 input channel, 5 classes.

    MACs of a conv = out_h * out_w * out_c * k_h * k_w * in_c:
      encoder_stage0a  8*8*2*3*3*1 = 1152
      encoder_stage0b  8*8*2*3*3*2 = 2304
      (2x2 max pool -> 4x4)
      bottleneck_a     4*4*4*3*3*2 = 1152
      bottleneck_b     4*4*4*3*3*4 = 2304
      (nearest upsample to 8x8x4, concat with the 8x8x2 skip -> 6 channels)
      decoder_stage0a  8*8*2*3*3*6 = 6912
      decoder_stage0b  8*8*2*3*3*2 = 2304
      head (1x1)       8*8*5*1*1*2 =  640
      total                        = 16768
    """
    macs = count_macs(unet(input_size=8, depth=1, base_filters=2))
    assert macs["encoder_stage0a_conv"] == 1152
    assert macs["encoder_stage0b_conv"] == 2304
    assert macs["bottleneck_a_conv"] == 1152
    assert macs["bottleneck_b_conv"] == 2304
    assert macs["decoder_stage0a_conv"] == 6912
    assert macs["decoder_stage0b_conv"] == 2304
    assert macs["head_conv"] == 640
    assert macs["total"] == 16768


def test_count_macs_handles_strided_and_projection_convs() -> None:
    """resunet(32, base 2): stem 7x7/2 -> 16*16*2*49*1; stage2 projection 1x1/2 -> 4*4*4*1*2."""
    macs = count_macs(resunet(input_size=32, base_filters=2))
    assert macs["encoder_stem_conv"] == 16 * 16 * 2 * 49 * 1
    assert macs["encoder_stage2_block0_proj_conv"] == 4 * 4 * 4 * 1 * 2
    assert macs["total"] == sum(v for k, v in macs.items() if k != "total")


def test_mac_count_scales_with_resolution_squared() -> None:
    small = count_macs(unet(64, depth=3, base_filters=4))["total"]
    large = count_macs(unet(128, depth=3, base_filters=4))["total"]
    assert large == 4 * small


@pytest.mark.parametrize("arch", ["unet", "resunet"])
def test_tfmot_prunes_and_quantizes_both_architectures(arch: str) -> None:
    tfmot = pytest.importorskip("tensorflow_model_optimization")
    kwargs = {"depth": 2} if arch == "unet" else {}
    model = build_model(arch, 32, base_filters=4, **kwargs)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    assert any("prune_low_magnitude" in layer.name for layer in pruned.layers)
    quantized = tfmot.quantization.keras.quantize_model(build_model(arch, 32, base_filters=4, **kwargs))
    out = quantized(np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32), training=False)
    assert out.shape == (1, 32, 32, NUM_CLASSES)
