"""Deterministic PNG encoding: 8-bit labels, 16-bit images holding 12-bit values, RGB previews."""

from __future__ import annotations

import io
import zlib

import numpy as np
from PIL import Image

COMPRESS_LEVEL = 1
"""zlib level for labels (long runs of one value compress ~60x even at level 1)."""
_IMAGE_STRATEGY = zlib.Z_HUFFMAN_ONLY
"""Noisy 16-bit MR images have no repeats worth finding: Huffman-only is ~2x faster and smaller."""


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 (L) or uint16 (I;16) array or an (H, W, 3) uint8 RGB array.

    The same array always gives the same bytes (no time stamps or other metadata).
    """
    grey = array.ndim == 2 and array.dtype in (np.uint8, np.uint16)
    rgb = array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8
    if not (grey or rgb):
        raise ValueError(f"expected a 2-D uint8/uint16 or (H, W, 3) uint8 array, got {array.dtype} {array.shape}")
    buffer = io.BytesIO()
    options = {"compress_type": _IMAGE_STRATEGY} if array.dtype == np.uint16 else {}
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG", compress_level=COMPRESS_LEVEL, **options)
    return buffer.getvalue()
