"""Slice preprocessing shared by training and inference: intensity normalisation and resizing.

Training (train/) and the edge runtime call exactly these functions, so a model never sees
inputs prepared differently from how it was trained. The spec travels in each model manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SPEC_VERSION = 1


@dataclass(frozen=True)
class PreprocessSpec:
    """How a raw slice becomes a model input; stored in every manifest and checked at load."""

    input_size: int = 256
    clip_low_percentile: float = 0.5
    clip_high_percentile: float = 99.5
    pad_to_square: bool = True
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8, got {self.input_size}")
        if not 0.0 <= self.clip_low_percentile < self.clip_high_percentile <= 100.0:
            raise ValueError(
                "need 0 <= clip_low_percentile < clip_high_percentile <= 100, got "
                f"{self.clip_low_percentile}, {self.clip_high_percentile}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocessing fields {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class SliceGeometry:
    """Where the original slice sits inside the padded square, to undo prepare_slice."""

    height: int
    width: int
    pad_top: int
    pad_left: int
    side: int


def normalize_intensity(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Clip to robust percentiles and scale to [0, 1] float32.

    Works for 8/12/16-bit, signed and float inputs: only the image's own percentiles matter,
    so scanner bit depth and rescale settings do not change what the model sees.
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {data.shape}")
    if not np.isfinite(data).all():
        data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = np.percentile(data, [spec.clip_low_percentile, spec.clip_high_percentile])
    if high <= low:  # constant image: nothing to see, but do not divide by zero
        return np.zeros_like(data, dtype=np.float32)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _axis_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-pixel-centre linear interpolation indices and weights along one axis."""
    coords = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    coords = np.clip(coords, 0.0, src - 1)
    lo = np.floor(coords).astype(np.intp)
    hi = np.minimum(lo + 1, src - 1)
    frac = (coords - lo).astype(np.float32)
    return lo, hi, frac


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an (H, W) or (H, W, C) array to `shape` (float32)."""
    data = np.asarray(image, dtype=np.float32)
    height, width = data.shape[:2]
    if (height, width) == tuple(shape):
        return data.copy()
    y0, y1, fy = _axis_weights(height, shape[0])
    x0, x1, fx = _axis_weights(width, shape[1])
    if data.ndim == 3:
        fy = fy[:, None, None]
        fx = fx[None, :, None]
    else:
        fy = fy[:, None]
        fx = fx[None, :]
    top = data[y0][:, x0] * (1 - fx) + data[y0][:, x1] * fx
    bottom = data[y1][:, x0] * (1 - fx) + data[y1][:, x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def resize_labels(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize for label masks (keeps class ids exact)."""
    mask = np.asarray(mask)
    height, width = mask.shape[:2]
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * height / shape[0]).astype(np.intp), height - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * width / shape[1]).astype(np.intp), width - 1)
    return mask[rows][:, cols]


def _pad_geometry(height: int, width: int, spec: PreprocessSpec) -> SliceGeometry:
    if not spec.pad_to_square:
        return SliceGeometry(height, width, 0, 0, 0)
    side = max(height, width)
    return SliceGeometry(height, width, (side - height) // 2, (side - width) // 2, side)


def _pad(data: np.ndarray, geometry: SliceGeometry, fill: float) -> np.ndarray:
    if geometry.side == 0 or geometry.height == geometry.width:
        return data
    out = np.full((geometry.side, geometry.side, *data.shape[2:]), fill, dtype=data.dtype)
    out[
        geometry.pad_top : geometry.pad_top + geometry.height,
        geometry.pad_left : geometry.pad_left + geometry.width,
    ] = data
    return out


def prepare_slice(image: np.ndarray, spec: PreprocessSpec) -> tuple[np.ndarray, SliceGeometry]:
    """Raw slice -> (input_size, input_size) float32 in [0, 1], and the geometry to undo it.

    Non-square slices (e.g. 320x310) are centre-padded to a square first so anatomy keeps its
    aspect ratio.
    """
    normalized = normalize_intensity(image, spec)
    geometry = _pad_geometry(*normalized.shape, spec)
    squared = _pad(normalized, geometry, 0.0)
    size = (spec.input_size, spec.input_size)
    return resize_image(squared, size), geometry


def prepare_labels(mask: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Label mask -> model resolution with the same padding as prepare_slice (nearest)."""
    geometry = _pad_geometry(*np.asarray(mask).shape[:2], spec)
    squared = _pad(np.asarray(mask), geometry, 0)
    return resize_labels(squared, (spec.input_size, spec.input_size))


def restore_probabilities(scores: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """(S, S, C) per-class scores -> (H, W, C) at the original slice size (bilinear, cropped).

    Works on probabilities, logits or int8-quantised scores alike: bilinear interpolation is
    affine, so the argmax is the same as after dequantisation.
    """
    side = geometry.side or None
    target = (side, side) if side else (geometry.height, geometry.width)
    resized = resize_image(np.asarray(scores, dtype=np.float32), target)
    return resized[
        geometry.pad_top : geometry.pad_top + geometry.height,
        geometry.pad_left : geometry.pad_left + geometry.width,
    ]


def restore_labels(scores: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """(S, S, C) scores -> (H, W) uint8 class ids at the original slice size."""
    return restore_probabilities(scores, geometry).argmax(axis=-1).astype(np.uint8)
