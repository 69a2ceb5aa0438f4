"""Which files are DICOM images worth segmenting: DICM sniffing, SOP classes, header checks and skip reasons.

Every value this module reads goes through a typed getter that raises `HeaderError` naming the
attribute, so a corrupted header costs its own file (with a reason), never the study.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".ima", ".img"})
PNG_SUFFIXES = frozenset({".png"})
NPY_SUFFIXES = frozenset({".npy"})
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # FloatPixelData, DoubleFloatPixelData, PixelData
DEFER_BYTES = 4096  # element values larger than this are read only when needed (pixel data)

# SOP classes that never hold a segmentable image, by UID prefix.
NON_IMAGE_SOP_CLASSES: tuple[tuple[str, str], ...] = (
    ("1.2.840.10008.1.3.10", "DICOMDIR (media directory index)"),
    ("1.2.840.10008.5.1.4.1.1.88.", "structured report (SR)"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RT structure set (RTSTRUCT)"),
    ("1.2.840.10008.5.1.4.1.1.481.", "radiotherapy object (RT)"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "segmentation (SEG)"),
    ("1.2.840.10008.5.1.4.1.1.11.", "presentation state (PR)"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document"),
    ("1.2.840.10008.5.1.4.1.1.9.", "waveform"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data / registration / surface object"),
)
NON_IMAGE_MODALITIES = {
    "SR": "structured report (SR)",
    "RTSTRUCT": "RT structure set (RTSTRUCT)",
    "RTDOSE": "RT dose (RTDOSE)",
    "RTPLAN": "RT plan (RTPLAN)",
    "SEG": "segmentation (SEG)",
    "PR": "presentation state (PR)",
    "KO": "key object selection (KO)",
    "DOC": "encapsulated document (DOC)",
}
MAX_SIDE = 16384  # Rows/Columns beyond this are a corrupt header, not a slice
# A DICOM UID (PS3.5 9.1): digits in dot-separated components, no leading zeros, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
# Identity UIDs a slice's outputs copy or reference: one that is not a UID is corruption, not a new series.
IDENTITY_UIDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID")


class HeaderError(ValueError):
    """An attribute a slice needs is missing, unreadable or implausible; the message names it."""


@dataclass(frozen=True)
class Verdict:
    """What a file is: an image to segment (with its header), or skipped/failed with a reason."""

    status: Literal["image", "skipped", "failed"]
    reason: str = ""
    dataset: Any = None  # the header (pixel data removed) when status is "image"


# --------------------------------------------------------------------------- typed getters


def _value(dataset: Any, keyword: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dataset.get(keyword)
    except Exception as exc:  # pydicom converts on access: bad VR, bad length, bad charset
        raise HeaderError(f"{keyword} is unreadable ({type(exc).__name__}: {exc})") from exc


def text_attr(dataset: Any, keyword: str) -> str:
    """A string attribute ('' when absent); multi-valued ones joined with a backslash."""
    value = _value(dataset, keyword)
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def int_attr(
    dataset: Any, keyword: str, default: int | None = None, low: int | None = None, high: int | None = None
) -> int | None:
    """An integer attribute, `default` when absent or empty; HeaderError when not an integer in [low, high]."""
    value = _value(dataset, keyword)
    if value is None or (isinstance(value, str | bytes) and not str(value).strip()):
        return default
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) == 1 else value
    try:
        number = int(str(value).strip()) if not isinstance(value, int | float) else int(value)
        if isinstance(value, float) and not float(value).is_integer():
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise HeaderError(f"{keyword} {str(value)[:40]!r} is not an integer") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise HeaderError(f"{keyword} {number} is outside {low}..{high}")
    return number


def float_attr(dataset: Any, keyword: str, count: int) -> tuple[float, ...] | None:
    """`count` finite numbers, None when absent or empty; HeaderError when present but not that."""
    value = _value(dataset, keyword)
    if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
        return None
    items = list(value) if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue" else [value]
    try:
        numbers = tuple(float(str(v).strip()) if not isinstance(v, int | float) else float(v) for v in items)
    except (TypeError, ValueError, OverflowError):
        raise HeaderError(f"{keyword} {_short(items)} is not {count} number(s)") from None
    if len(numbers) != count:
        raise HeaderError(f"{keyword} {_short(items)} has {len(numbers)} value(s), expected {count}")
    if not all(np.isfinite(numbers)):
        raise HeaderError(f"{keyword} {_short(items)} is not finite")
    return numbers


def _short(items: list[Any]) -> str:
    return "[" + ", ".join(str(v)[:24] for v in items[:6]) + (", ..." if len(items) > 6 else "") + "]"


def image_type(dataset: Any) -> tuple[str, ...]:
    """ImageType values upper-cased, e.g. ('ORIGINAL', 'PRIMARY', 'M', 'ND')."""
    return tuple(v.strip().upper() for v in text_attr(dataset, "ImageType").split("\\") if v.strip())


def sop_class(dataset: Any) -> str:
    """SOPClassUID, or the file meta's MediaStorageSOPClassUID when the data set lacks it."""
    meta = getattr(dataset, "file_meta", None)
    return text_attr(dataset, "SOPClassUID") or (text_attr(meta, "MediaStorageSOPClassUID") if meta is not None else "")


# --------------------------------------------------------------------------- sniffing and reading


def is_dicom_file(path: Path) -> bool:
    """True when the content looks like DICOM: 'DICM' at byte 128, or a parseable preamble-less stream."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    if len(head) < 8 or int.from_bytes(head[:2], "little") not in (0x0002, 0x0008):
        return False
    # Raw (preamble-less) DICOM starts with a group 0002 or 0008 tag: confirm by parsing.
    try:
        dataset = read_header(path)
        return bool(text_attr(dataset, "SOPClassUID") or _value(dataset, "Rows"))
    except Exception:
        return False


def read_header(path: Path) -> Any:
    """The data set with large values (pixel data) deferred: nothing big is read yet."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path), defer_size=DEFER_BYTES, force=True)


def _elements(dataset: Any, depth: int = 0) -> Iterator[tuple[int, Any]]:
    """(tag, raw element) of every element outside the pixel data, nested sequences included."""
    for tag in list(dataset.keys()):
        if int(tag) in PIXEL_TAGS:
            continue
        yield int(tag), dataset
        if depth < 6:
            element = dataset.get_item(tag, keep_deferred=True)
            if element is not None and getattr(element, "VR", None) == "SQ":
                for item in dataset[tag].value or []:
                    yield from _elements(item, depth + 1)


def unreadable_elements(dataset: Any) -> list[str]:
    """Standard elements whose value cannot be decoded ('(0028,0030) PixelSpacing: ...'); private ones are dropped.

    pydicom decodes values lazily, so a flipped VR or length surfaces only on access; reading
    every value once here turns that into a named failure of this file.
    """
    problems: list[str] = []
    sources = [dataset]
    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        sources.append(meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in sources:
            try:
                for tag, owner in _elements(source):
                    try:
                        _ = owner[tag].value
                    except Exception as exc:
                        if (tag >> 16) % 2 == 1:  # private group: nothing here reads it; drop it
                            del owner[tag]
                            continue
                        problems.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {_keyword(tag)}: {type(exc).__name__}: {exc}")
                        if len(problems) >= 3:
                            return problems
            except Exception as exc:  # the element list itself is broken (e.g. a sequence)
                problems.append(f"element list: {type(exc).__name__}: {exc}")
    return problems


def _keyword(tag: int) -> str:
    from pydicom.datadict import keyword_for_tag

    return keyword_for_tag(tag) or "unknown element"


# --------------------------------------------------------------------------- reasons


def non_image_reason(dataset: Any) -> str | None:
    """Why this object never holds a segmentable image (SR, SEG, RTSTRUCT, ...), or None."""
    uid = sop_class(dataset)
    for prefix, what in NON_IMAGE_SOP_CLASSES:
        if uid.startswith(prefix):
            return f"{what}: not an image"
    if "DirectoryRecordSequence" in dataset:
        return "DICOMDIR (media directory index): not an image"
    modality = text_attr(dataset, "Modality").upper()
    if modality in NON_IMAGE_MODALITIES:
        return f"{NON_IMAGE_MODALITIES[modality]}: not an image"
    return None


def has_pixel_data(dataset: Any) -> bool:
    return any(tag in dataset for tag in PIXEL_TAGS)


def missing_pixels_reason(dataset: Any) -> tuple[str, bool]:
    """Why a data set without pixel data is not segmented, and whether that is a failure (truncation)."""
    meta = getattr(dataset, "file_meta", None)
    meta_class = text_attr(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    if _value(dataset, "Rows") or (meta_class and "SOPClassUID" not in dataset):
        return "truncated or corrupt: the data set ends before its pixel data", True
    return f"no pixel data (SOP class {sop_class(dataset) or '?'}): not an image", False


def unsupported_image_reason(dataset: Any) -> str | None:
    """Why an image is not a single-frame greyscale slice (colour, multi-frame), or None. Raises HeaderError."""
    samples = int_attr(dataset, "SamplesPerPixel", 1, low=1, high=4)
    if samples != 1:
        photometric = text_attr(dataset, "PhotometricInterpretation") or "?"
        return f"colour image (SamplesPerPixel {samples}, {photometric}); only greyscale slices are segmented"
    frames = int_attr(dataset, "NumberOfFrames", 1, low=0)
    if frames is not None and frames > 1:
        return f"multi-frame image ({frames} frames); only single-frame slices are segmented"
    if "FloatPixelData" in dataset or "DoubleFloatPixelData" in dataset:
        return "float pixel data (parametric map); only stored-integer slices are segmented"
    return None


def image_header_problem(dataset: Any) -> str | None:
    """Why the header of a single-frame greyscale image cannot be trusted to decode, or None. Raises HeaderError."""
    rows = int_attr(dataset, "Rows", low=1, high=MAX_SIDE)
    columns = int_attr(dataset, "Columns", low=1, high=MAX_SIDE)
    if rows is None or columns is None:
        return "image without Rows/Columns"
    bits = int_attr(dataset, "BitsAllocated", low=1, high=64)
    stored = int_attr(dataset, "BitsStored", bits, low=1, high=64)
    if bits is None or bits not in (1, 8, 16, 32, 64):
        return f"BitsAllocated {bits} is not 1, 8, 16, 32 or 64"
    if stored is not None and stored > bits:
        return f"BitsStored {stored} exceeds BitsAllocated {bits}"
    int_attr(dataset, "PixelRepresentation", 0, low=0, high=1)
    float_attr(dataset, "RescaleSlope", 1)
    float_attr(dataset, "RescaleIntercept", 1)
    return _pixel_length_problem(dataset, rows, columns, bits)


def _pixel_length_problem(dataset: Any, rows: int, columns: int, bits: int) -> str | None:
    """For native (uncompressed) pixel data: does its byte length match Rows x Columns x BitsAllocated?"""
    meta = getattr(dataset, "file_meta", None)
    syntax = _value(meta, "TransferSyntaxUID") if meta is not None else None
    if syntax is not None and getattr(syntax, "is_compressed", False):
        return None
    element = dataset.get_item(0x7FE00010, keep_deferred=True)
    length = getattr(element, "length", None)
    if length is None and element is not None and getattr(element, "value", None) is not None:
        length = len(element.value)
    if length is None or length == 0xFFFFFFFF:
        return None if length is None else "native pixel data with undefined length (corrupt header)"
    expected = (rows * columns * bits + 7) // 8
    if length in (expected, expected + 1):  # one byte of padding to an even length
        return None
    return (
        f"Rows x Columns ({rows} x {columns}) disagree with the pixel data "
        f"({length} bytes, expected {expected} for {bits}-bit pixels)"
    )


def identity_problem(dataset: Any) -> str | None:
    """Identity UIDs must be UIDs, the character set known, and SOP instance/class match the file meta.

    Outputs (SEG, SR) copy these values; a corrupted one must cost its file, not leave an invalid SEG.
    """
    from pydicom.charset import python_encoding

    for term in text_attr(dataset, "SpecificCharacterSet").split("\\"):
        if term.strip() and term.strip() not in python_encoding:
            return f"SpecificCharacterSet {term.strip()[:40]!r} is not a DICOM character set"
    for keyword in IDENTITY_UIDS:
        value = text_attr(dataset, keyword)
        if value and (len(value) > 64 or not _UID.match(value)):
            return f"{keyword} {value[:70]!r} is not a valid DICOM UID"
    meta = getattr(dataset, "file_meta", None)
    if meta is None:
        return None
    for data_keyword, meta_keyword in (
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ("SOPClassUID", "MediaStorageSOPClassUID"),
    ):
        inside, outside = text_attr(dataset, data_keyword), text_attr(meta, meta_keyword)
        if inside and outside and inside != outside:
            return f"{data_keyword} {inside[:64]} differs from the file meta's {meta_keyword} {outside[:64]}"
    return None


def classify(path: Path) -> Verdict:
    """Read one file's header and decide: image to segment, skipped (not a target) or failed (broken)."""
    if not is_dicom_file(path):
        return Verdict("skipped", "not a DICOM file (no DICM marker, does not parse as DICOM)")
    try:
        dataset = read_header(path)
    except Exception as exc:  # pydicom raises many types for damaged files
        return Verdict("failed", f"truncated or corrupt DICOM header ({type(exc).__name__}: {exc})")
    try:
        reason = non_image_reason(dataset)
        if reason:
            return Verdict("skipped", reason)
        if not has_pixel_data(dataset):
            reason, broken = missing_pixels_reason(dataset)
            return Verdict("failed" if broken else "skipped", reason)
        reason = unsupported_image_reason(dataset)
        if reason:
            return Verdict("skipped", reason)
        problems = unreadable_elements(dataset)
        if problems:
            return Verdict("failed", "corrupt DICOM header: " + "; ".join(problems))
        reason = image_header_problem(dataset) or identity_problem(dataset)
        if reason:
            return Verdict("failed", reason)
    except HeaderError as exc:
        return Verdict("failed", f"corrupt DICOM header: {exc}")
    for tag in PIXEL_TAGS:  # keep the header only: pixels are read again, from the file, when decoded
        if tag in dataset:
            del dataset[tag]
    return Verdict("image", dataset=dataset)
