"""Slice preprocessing shared by training and inference: the window the model sees, intensity
normalisation and resizing.

Training (train/) and the edge runtime call exactly these functions, so a model never sees
inputs prepared differently from how it was trained. The spec travels in each model manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

SPEC_VERSION = 1

PixelSpacing = float | tuple[float, float] | list[float] | None  # mm per pixel: one value or (row, column)


@dataclass(frozen=True)
class PreprocessSpec:
    """How a raw slice becomes a model input; stored in every manifest and checked at load.

    field_of_view_mm: the model sees a centred square of this many mm (cropped or padded, then
    resized to input_size), so anatomy spans the same pixels whatever the scanner's field of view;
    slices must then come with their pixel spacing. None: the whole slice, padded to a square.
    """

    input_size: int = 256
    clip_low_percentile: float = 0.5
    clip_high_percentile: float = 99.5
    pad_to_square: bool = True
    field_of_view_mm: float | None = None
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError(f"input_size must be >= 8, got {self.input_size}")
        if not 0.0 <= self.clip_low_percentile < self.clip_high_percentile <= 100.0:
            raise ValueError(
                "need 0 <= clip_low_percentile < clip_high_percentile <= 100, got "
                f"{self.clip_low_percentile}, {self.clip_high_percentile}"
            )
        if self.field_of_view_mm is not None and not (self.field_of_view_mm > 0 and self.pad_to_square):
            raise ValueError(f"field_of_view_mm needs a value > 0 and pad_to_square, got {self.field_of_view_mm}")

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
    """Where the original slice sits in the square window the model sees, to undo prepare_slice.

    side: the window's side in slice pixels (0: no window, the slice is resized as it is);
    pad_top/pad_left: the slice's top-left corner inside the window, negative where the window
    crops the slice.
    """

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


def window_geometry(shape: tuple[int, ...], spec: PreprocessSpec, pixel_spacing: PixelSpacing = None) -> SliceGeometry:
    """Where a slice of `shape` (rows, cols, ...) sits in the window `spec` asks for."""
    height, width = int(shape[0]), int(shape[1])
    if spec.field_of_view_mm is not None:
        side = max(1, round(spec.field_of_view_mm / _square_spacing(pixel_spacing, spec.field_of_view_mm)))
    elif spec.pad_to_square:
        side = max(height, width)
    else:
        return SliceGeometry(height, width, 0, 0, 0)
    return SliceGeometry(height, width, (side - height) // 2, (side - width) // 2, side)


def _square_spacing(pixel_spacing: PixelSpacing, field_of_view_mm: float) -> float:
    """One mm-per-pixel figure (geometric mean of row and column spacing) for the window's side."""
    if pixel_spacing is None:
        raise ValueError(f"this model sees a {field_of_view_mm:g} mm field of view and needs the slice's pixel spacing")
    values = np.atleast_1d(np.asarray(pixel_spacing, dtype=np.float64))
    if values.size not in (1, 2) or not np.all(np.isfinite(values) & (values > 0)):
        raise ValueError(f"pixel spacing must be one or two values > 0 mm, got {pixel_spacing!r}")
    return float(np.sqrt(values.prod())) if values.size == 2 else float(values[0])


def window_overlap(geometry: SliceGeometry) -> tuple[slice, slice, slice, slice]:
    """(window rows, window cols, slice rows, slice cols) of the part of the slice inside the window."""
    top, left = max(0, geometry.pad_top), max(0, geometry.pad_left)
    bottom = min(geometry.side, geometry.pad_top + geometry.height)
    right = min(geometry.side, geometry.pad_left + geometry.width)
    return (
        slice(top, bottom),
        slice(left, right),
        slice(top - geometry.pad_top, bottom - geometry.pad_top),
        slice(left - geometry.pad_left, right - geometry.pad_left),
    )


def _is_identity(geometry: SliceGeometry) -> bool:
    return geometry.side == 0 or (geometry.side == geometry.height == geometry.width)


def visible_part(data: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """The rows and columns of a slice-sized array that fall inside the window."""
    if _is_identity(geometry):
        return data
    _, _, rows, cols = window_overlap(geometry)
    return data[rows, cols]


def place_in_window(visible: np.ndarray, geometry: SliceGeometry, fill) -> np.ndarray:
    """The window-sized array: `visible` (from visible_part) at its place, `fill` around it."""
    if _is_identity(geometry):
        return visible
    out = np.empty((geometry.side, geometry.side, *visible.shape[2:]), dtype=visible.dtype)
    out[...] = fill
    rows, cols, _, _ = window_overlap(geometry)
    out[rows, cols] = visible
    return out


def prepare_slice(
    image: np.ndarray, spec: PreprocessSpec, pixel_spacing: PixelSpacing = None
) -> tuple[np.ndarray, SliceGeometry]:
    """Raw slice -> (input_size, input_size) float32 in [0, 1], and the geometry to undo it.

    The window is the whole slice centre-padded to a square (so anatomy keeps its aspect ratio),
    or with spec.field_of_view_mm a centred square of that many mm. Intensities are normalised
    over the part of the slice inside the window, what the model sees; padding is 0.
    pixel_spacing: mm per pixel, one value or (row, column); needed only with field_of_view_mm.
    """
    data = np.asarray(image)
    if data.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {data.shape}")
    geometry = window_geometry(data.shape, spec, pixel_spacing)
    normalized = normalize_intensity(visible_part(data, geometry), spec)
    size = (spec.input_size, spec.input_size)
    return resize_image(place_in_window(normalized, geometry, 0.0), size), geometry


def prepare_labels(mask: np.ndarray, spec: PreprocessSpec, pixel_spacing: PixelSpacing = None) -> np.ndarray:
    """Label mask -> model resolution through the same window as prepare_slice (nearest; outside is 0)."""
    mask = np.asarray(mask)
    geometry = window_geometry(mask.shape, spec, pixel_spacing)
    window = place_in_window(visible_part(mask, geometry), geometry, 0)
    return resize_labels(window, (spec.input_size, spec.input_size))


def restore_probabilities(scores: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """(S, S, C) per-class scores -> (H, W, C) at the original slice size (bilinear, cropped).

    Works on probabilities, logits or int8-quantised scores alike: bilinear interpolation is
    affine, so the argmax is the same as after dequantisation. Slice pixels outside the window
    get the scores' minimum in every class but background (0), which gets their maximum (so
    background wins there, also in a sum over several windows).
    """
    if not geometry.side:
        return resize_image(np.asarray(scores, dtype=np.float32), (geometry.height, geometry.width))
    resized = resize_image(np.asarray(scores, dtype=np.float32), (geometry.side, geometry.side))
    rows, cols, slice_rows, slice_cols = window_overlap(geometry)
    inside = resized[rows, cols]
    if inside.shape[:2] == (geometry.height, geometry.width):
        return inside
    out = np.empty((geometry.height, geometry.width, resized.shape[-1]), np.float32)
    out[...] = np.nanmin(scores)
    out[..., 0] = np.nanmax(scores)
    out[slice_rows, slice_cols] = inside
    return out


def restore_labels(scores: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """(S, S, C) scores -> (H, W) uint8 class ids at the original slice size (background outside the window)."""
    return restore_probabilities(scores, geometry).argmax(axis=-1).astype(np.uint8)


WINDOW_SCALES = (0.9375, 1.0, 1.0625)
"""Fields of view a fixed-window model sees each slice through, as multiples of its own.

The mean of the three windows' probabilities is the mask. The model was trained with random
zoom, so each window is a view it knows; averaging them takes out part of the error that
depends on exactly where the anatomy falls in its grid. On held-out phantoms it raised mean
Dice from 0.917 to 0.921 (every class gained), and on the 30 real slices TS and IVD Dice by
0.01 and 0.04. It costs three inferences per slice; `--single-window` turns it off.
"""


def window_specs(spec: PreprocessSpec, single_window: bool = False) -> list[PreprocessSpec]:
    """The preprocessing of each window a slice is seen through: WINDOW_SCALES of a fixed field of view."""
    if spec.field_of_view_mm is None or single_window:
        return [spec]
    return [replace(spec, field_of_view_mm=spec.field_of_view_mm * scale) for scale in WINDOW_SCALES]


def format_windows(fields_of_view_mm: Sequence[float]) -> str:
    """'150 / 160 / 170 mm': the windows a slice is seen through, as reports print them."""
    return " / ".join(f"{fov:g}" for fov in fields_of_view_mm) + " mm"
