"""Slice pixels as float32: DICOM (rescaled, MONOCHROME1 inverted, any installed codec), PNG and NPY.

The kept DICOM header is never touched: pixels come from a fresh read of the file, decoded with
pydicom's decoder API (which does not cache on the data set), and the fresh read must still be
the instance discovery saw.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edge_runtime.dicom_classify import HeaderError, float_attr, image_header_problem, int_attr, read_header, text_attr
from edge_runtime.inputs import SliceDecodeError, SliceRecord

# What to install when a compressed transfer syntax has no working decoder.
DECODER_HINTS = {
    "JPEG-LS": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg",
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pydicom decodes RLE itself; or pip install pylibjpeg pylibjpeg-rle",
}
_DECODER_CHECKED: dict[str, str | None] = {}


def _decoder_problem(transfer_syntax: Any) -> str | None:
    """None when pydicom can decode this transfer syntax here, else what to install."""
    key = str(transfer_syntax)
    if key in _DECODER_CHECKED:
        return _DECODER_CHECKED[key]
    from pydicom.pixels import get_decoder

    problem = None
    try:
        decoder = get_decoder(transfer_syntax)
    except NotImplementedError:
        problem = f"no pixel decoder exists for transfer syntax {transfer_syntax.name} ({key})"
    else:
        if not decoder.is_available:
            name = transfer_syntax.name
            hint = next((h for k, h in DECODER_HINTS.items() if k in name), "install a pydicom pixel-data plugin")
            problem = f"no decoder installed for {name}: {hint}"
    _DECODER_CHECKED[key] = problem
    return problem


def _transfer_syntax(dataset: Any) -> Any:
    """The file meta's transfer syntax, or the one a preamble-less stream was read with."""
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(dataset, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax:
        return UID(str(syntax))
    implicit, little = getattr(dataset, "original_encoding", (True, True))
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def nominal_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest stored value BitsStored/PixelRepresentation allow."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def dicom_pixels(dataset: Any, source: str = "slice") -> np.ndarray:
    """Decoded slice as float32 in rescaled units (RescaleSlope/Intercept applied); `dataset` is not modified.

    MONOCHROME1 (high values displayed dark) is inverted within the nominal stored range,
    `lo + hi - stored`, before rescaling, so every slice reaches the model bright-is-bright.
    Signed pixels keep their sign (PixelRepresentation).
    """
    from pydicom.pixels import get_decoder

    try:
        syntax = _transfer_syntax(dataset)
        problem = _decoder_problem(syntax)
        if problem:
            raise SliceDecodeError(source, problem)
        reason = image_header_problem(dataset)
        if reason:
            raise SliceDecodeError(source, reason)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored, _ = get_decoder(syntax).as_array(dataset)
        bits = int_attr(dataset, "BitsStored", stored.dtype.itemsize * 8, low=1, high=64) or stored.dtype.itemsize * 8
        signed = int_attr(dataset, "PixelRepresentation", 0) == 1
        slope = (float_attr(dataset, "RescaleSlope", 1) or (1.0,))[0]
        intercept = (float_attr(dataset, "RescaleIntercept", 1) or (0.0,))[0]
        photometric = text_attr(dataset, "PhotometricInterpretation") or "MONOCHROME2"
    except SliceDecodeError:
        raise
    except HeaderError as exc:
        raise SliceDecodeError(source, f"corrupt DICOM header: {exc}") from exc
    except Exception as exc:  # pydicom/plugins raise ValueError, RuntimeError, EOFError, ...
        raise SliceDecodeError(source, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if stored.ndim != 2:
        raise SliceDecodeError(source, f"decoded pixel data has shape {stored.shape}, expected a 2-D slice")
    pixels = stored.astype(np.float32)
    if photometric == "MONOCHROME1":
        low, high = nominal_range(bits, signed)
        pixels = np.float32(low + high) - pixels
    if slope == 0.0:
        raise SliceDecodeError(source, "RescaleSlope is 0: every pixel would have the same value")
    if slope != 1.0 or intercept != 0.0:
        pixels = pixels * np.float32(slope) + np.float32(intercept)
    if not np.isfinite(pixels).all():
        raise SliceDecodeError(source, "rescaled pixel values are not finite (RescaleSlope/Intercept overflow)")
    return pixels


def _dicom_slice(record: SliceRecord) -> np.ndarray:
    """Read the file again (with pixels) and decode it; the instance must be the one discovery saw."""
    try:
        dataset = read_header(record.path)
        element = dataset.get_item(0x7FE00010, keep_deferred=True)
        declared = getattr(element, "length", None)
        value = dataset.get("PixelData")  # force the deferred read now, inside this guard
    except Exception as exc:
        raise SliceDecodeError(record.path, f"cannot read the file again ({type(exc).__name__}: {exc})") from exc
    if value is None:
        raise SliceDecodeError(record.path, "truncated or corrupt: no pixel data on reading the file again")
    if declared not in (None, 0xFFFFFFFF) and len(value) < declared:
        raise SliceDecodeError(record.path, f"truncated: the pixel data ends after {len(value)} of {declared} bytes")
    seen = record.sop_instance_uid
    now = str(dataset.get("SOPInstanceUID", "") or "").strip() or None
    if seen != now:
        raise SliceDecodeError(record.path, f"file changed during the run (SOPInstanceUID {now} is not {seen})")
    return dicom_pixels(dataset, source=str(record.path))


def _image_pixels(record: SliceRecord) -> np.ndarray:
    if record.kind == "npy":
        array = np.load(record.path, mmap_mode="r", allow_pickle=False)
        data = array[record.frame] if record.frame is not None else array
        return np.asarray(data, dtype=np.float32)
    from PIL import Image

    try:
        with Image.open(record.path) as image:
            image.load()
            mode = image.mode
            array = np.asarray(image.convert("RGB") if mode == "P" else image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SliceDecodeError(record.path, f"unreadable image ({exc})") from exc
    if array.ndim == 3:
        colour = array[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise SliceDecodeError(record.path, f"colour image ({mode}); only greyscale slices are segmented")
        array = colour[..., 0]
    return array.astype(np.float32)


def load_pixels(record: SliceRecord) -> np.ndarray:
    """Decode one slice to a 2-D float32 array; raises SliceDecodeError naming the file."""
    if record.kind == "dicom":
        return _dicom_slice(record)
    try:
        pixels = _image_pixels(record)
    except SliceDecodeError:
        raise
    except (OSError, ValueError, TypeError) as exc:
        raise SliceDecodeError(record.path, f"unreadable slice ({exc})") from exc
    if pixels.ndim != 2:
        raise SliceDecodeError(record.path, f"slice has shape {pixels.shape}, expected 2-D")
    if not np.isfinite(pixels).all():
        raise SliceDecodeError(record.path, "slice holds NaN or infinite values")
    return pixels
