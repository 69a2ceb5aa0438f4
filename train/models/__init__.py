"""Segmentation architectures (functional tf_keras graphs, tfmot-compatible)."""

from __future__ import annotations

from train.models.macs import count_macs
from train.models.resunet import resunet
from train.models.unet import unet

ARCHITECTURES = {"unet": unet, "resunet": resunet}


def build_model(arch: str, input_size: int, **kwargs):
    """Build `arch` ("unet" or "resunet") at `input_size`; kwargs go to its constructor."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](input_size=input_size, **kwargs)


__all__ = ["ARCHITECTURES", "build_model", "count_macs", "resunet", "unet"]
