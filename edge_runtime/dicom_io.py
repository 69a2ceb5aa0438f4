"""Input discovery and slice decoding: DICOM by content, PNG/NPY slices, series grouping, ordering and selection.

Inputs are only ever opened for reading. Every file that is not segmented ends up in
`Study.skipped` (not a target: non-DICOM, SR/SEG/RTSTRUCT/PR/DICOMDIR, colour, multi-frame) or
`Study.failed` (should have been segmented but cannot be read: truncated or corrupt), each with
a reason that names the file.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

SliceKind = Literal["dicom", "png", "npy"]

# SOP classes that never hold a segmentable image, by UID prefix.
_NON_IMAGE_SOP_CLASSES: tuple[tuple[str, str], ...] = (
    ("1.2.840.10008.1.3.10", "DICOMDIR (media directory index)"),
    ("1.2.840.10008.5.1.4.1.1.88.", "structured report (SR)"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RT structure set (RTSTRUCT)"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "segmentation (SEG)"),
    ("1.2.840.10008.5.1.4.1.1.11.", "presentation state (PR)"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data / registration / surface object"),
)
_NON_IMAGE_MODALITIES = {
    "SR": "structured report (SR)",
    "RTSTRUCT": "RT structure set (RTSTRUCT)",
    "SEG": "segmentation (SEG)",
    "PR": "presentation state (PR)",
    "KO": "key object selection (KO)",
    "DOC": "encapsulated document (DOC)",
}
# What to install when a compressed transfer syntax has no working decoder.
_DECODER_HINTS = {
    "JPEG-LS": "pip install pylibjpeg pylibjpeg-libjpeg (or pyjpegls)",
    "JPEG 2000": "pip install pylibjpeg pylibjpeg-openjpeg",
    "JPEG": "pip install pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pydicom decodes RLE itself; or pip install pylibjpeg pylibjpeg-rle",
}
_DICOM_SUFFIXES = {".dcm", ".dicom", ".ima", ".img"}
_PNG_SUFFIXES = {".png"}
_NPY_SUFFIXES = {".npy"}
_DECODER_CHECKED: dict[str, str | None] = {}


class SliceDecodeError(ValueError):
    """One slice cannot be turned into pixels; the message names the file and the cause."""

    def __init__(self, source: str | Path, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = str(source)
        self.reason = reason


@dataclass(frozen=True)
class InputIssue:
    """A file that was not segmented and why."""

    path: Path
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "reason": self.reason}


@dataclass
class SliceRecord:
    """One slice found on disk; pixels are decoded later by `load_pixels`."""

    path: Path
    kind: SliceKind
    stem: str
    dataset: Any = None  # pydicom Dataset (pixel data deferred) for DICOM slices
    frame: int | None = None  # index into a 3-D .npy stack
    instance_number: int | None = None
    position: tuple[float, float, float] | None = None  # ImagePositionPatient
    orientation: tuple[float, ...] | None = None  # ImageOrientationPatient (6 values)
    pixel_spacing: tuple[float, float] | None = None  # (row spacing, column spacing) in mm
    sop_instance_uid: str | None = None
    location: float | None = None  # distance along the series' slice normal (mm)


@dataclass
class Series:
    """Slices that belong together, in anatomical order, with what selection needs to know."""

    uid: str
    name: str
    folder: Path
    kind: SliceKind
    description: str = ""
    modality: str = ""
    orientation: str = "unknown"  # axial, coronal, sagittal or unknown
    ordering: str = "file name"  # how the slices were ordered
    series_number: int | None = None
    slices: list[SliceRecord] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uid": self.uid,
            "description": self.description,
            "modality": self.modality,
            "orientation": self.orientation,
            "ordering": self.ordering,
            "n_slices": len(self.slices),
            "folder": str(self.folder),
        }


@dataclass
class Study:
    """What discovery found under one INPUT."""

    input: Path
    selected: list[Series] = field(default_factory=list)
    excluded: list[tuple[Series, str]] = field(default_factory=list)
    skipped: list[InputIssue] = field(default_factory=list)
    failed: list[InputIssue] = field(default_factory=list)


# --------------------------------------------------------------------------- file classification


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
        dataset = _read_header(path, force=True)
    except Exception:
        return False
    return "SOPClassUID" in dataset or "Rows" in dataset


def _read_header(path: Path, force: bool = False) -> Any:
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(str(path), defer_size=4096, force=force)


def slice_stem(path: Path) -> str:
    """File name without a known image extension (UID-style names keep their dots)."""
    if path.suffix.lower() in _DICOM_SUFFIXES | _PNG_SUFFIXES | _NPY_SUFFIXES:
        return path.stem
    return path.name


def safe_name(text: str) -> str:
    """A string usable as a file or folder name on every platform."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "series"


def _sop_class(dataset: Any) -> str:
    """SOPClassUID, or the file meta's MediaStorageSOPClassUID when the data set lacks it."""
    meta_class = getattr(getattr(dataset, "file_meta", None), "MediaStorageSOPClassUID", "") or ""
    return str(dataset.get("SOPClassUID", "") or meta_class)


def _non_image_reason(dataset: Any) -> str | None:
    sop_class = _sop_class(dataset)
    for prefix, what in _NON_IMAGE_SOP_CLASSES:
        if sop_class.startswith(prefix):
            return f"{what}: not an image"
    if "DirectoryRecordSequence" in dataset:
        return "DICOMDIR (media directory index): not an image"
    modality = str(dataset.get("Modality", "") or "")
    if modality in _NON_IMAGE_MODALITIES:
        return f"{_NON_IMAGE_MODALITIES[modality]}: not an image"
    return None


def _missing_pixels_reason(dataset: Any) -> tuple[str, bool]:
    """Why a data set without pixel data is not segmented, and whether that is a failure (truncation)."""
    meta_class = getattr(getattr(dataset, "file_meta", None), "MediaStorageSOPClassUID", "") or ""
    if dataset.get("Rows") or (meta_class and "SOPClassUID" not in dataset):
        return "truncated or corrupt: the data set ends before its pixel data", True
    return f"no pixel data (SOP class {_sop_class(dataset) or '?'}): not an image", False


def _has_pixel_data(dataset: Any) -> bool:
    return any(k in dataset for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def _unsupported_image_reason(dataset: Any) -> str | None:
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        photometric = dataset.get("PhotometricInterpretation", "?")
        return f"colour image (SamplesPerPixel {samples}, {photometric}); only greyscale slices are segmented"
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return f"multi-frame image ({frames} frames); only single-frame slices are segmented"
    if not dataset.get("Rows") or not dataset.get("Columns"):
        return "image without Rows/Columns"
    return None


def _floats(value: Any, count: int) -> tuple[float, ...] | None:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(np.isfinite(numbers)):
        return None
    return numbers


def _dicom_record(path: Path, dataset: Any) -> SliceRecord:
    spacing = _floats(dataset.get("PixelSpacing"), 2)
    if spacing is not None and min(spacing) <= 0:
        spacing = None
    instance = dataset.get("InstanceNumber")
    try:
        instance_number = int(instance) if instance not in (None, "") else None
    except (TypeError, ValueError):
        instance_number = None
    return SliceRecord(
        path=path,
        kind="dicom",
        stem=slice_stem(path),
        dataset=dataset,
        instance_number=instance_number,
        position=_floats(dataset.get("ImagePositionPatient"), 3),
        orientation=_floats(dataset.get("ImageOrientationPatient"), 6),
        pixel_spacing=spacing,  # type: ignore[arg-type]
        sop_instance_uid=str(dataset.get("SOPInstanceUID", "")) or None,
    )


# --------------------------------------------------------------------------- geometry


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """Unit normal (row cosines x column cosines) of an ImageOrientationPatient."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else normal


def orientation_name(orientation: tuple[float, ...] | None) -> str:
    """axial / coronal / sagittal by the patient axis the slice normal is mostly along."""
    if orientation is None:
        return "unknown"
    normal = np.abs(slice_normal(orientation))
    if not normal.any():
        return "unknown"
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))]


def order_slices(slices: list[SliceRecord]) -> tuple[list[SliceRecord], str]:
    """Sort along the slice normal (ImagePositionPatient . normal); InstanceNumber, then name, as fallback."""
    orientations = {s.orientation for s in slices}
    if len(orientations) == 1 and None not in orientations and all(s.position is not None for s in slices):
        normal = slice_normal(next(iter(orientations)))  # type: ignore[arg-type]
        if normal[2] < 0:  # count along +z (LPS: towards the head) so axial series run caudal -> cranial
            normal = -normal
        if normal.any():
            for record in slices:
                record.location = float(np.dot(np.asarray(record.position), normal))
            locations = [s.location for s in slices]
            if len(set(np.round(locations, 4))) == len(slices):
                ordered = sorted(slices, key=lambda s: (s.location, s.instance_number or 0, s.stem))
                return ordered, "slice position along the normal (ImagePositionPatient)"
    if all(s.instance_number is not None for s in slices) and len({s.instance_number for s in slices}) == len(slices):
        return sorted(slices, key=lambda s: s.instance_number), "InstanceNumber"
    return sorted(slices, key=lambda s: _natural_key(s.stem)), "file name"


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


# --------------------------------------------------------------------------- discovery


def _list_files(input_path: Path) -> list[Path]:
    if input_path.is_file():
        return [input_path]
    files = []
    for path in sorted(input_path.rglob("*")):
        relative = path.relative_to(input_path)
        if any(part.startswith(".") for part in relative.parts):
            continue  # hidden files and folders (.DS_Store, .git, editor temp files)
        if path.is_file():
            files.append(path)
    return files


def _series_name(folder: Path, input_path: Path) -> str:
    return safe_name(folder.name if folder.name else input_path.resolve().name)


def _image_slice_records(path: Path) -> tuple[list[SliceRecord], InputIssue | None]:
    """PNG or NPY file -> slice records (a 3-D .npy is a stack), or why it is skipped."""
    suffix = path.suffix.lower()
    if suffix in _NPY_SUFFIXES:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            return [], InputIssue(path, f"unreadable .npy file ({exc})")
        if array.ndim == 2:
            return [SliceRecord(path, "npy", slice_stem(path))], None
        if array.ndim == 3:
            return [SliceRecord(path, "npy", f"{slice_stem(path)}_{i:03d}", frame=i) for i in range(array.shape[0])], None
        return [], InputIssue(path, f".npy array of shape {array.shape}; expected (H, W) or (N, H, W)")
    return [SliceRecord(path, "png", slice_stem(path))], None


def discover(input_path: Path, series: str | None = None) -> Study:
    """Find, group, order and select the series under `input_path` (a folder tree or one file).

    Default selection: DICOM series with Modality MR and an axial slice normal. `series` picks
    series instead by SeriesDescription substring, SeriesInstanceUID or folder-name substring
    (case-insensitive), whatever their modality and orientation. PNG/NPY slices are used only
    when the input holds no DICOM series (or when `series` names their folder).
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"input {input_path} does not exist")
    study = Study(input=input_path)
    dicom_groups: dict[str, list[SliceRecord]] = {}
    image_groups: dict[Path, list[SliceRecord]] = {}
    seen_sop: dict[str, Path] = {}
    for path in _list_files(input_path):
        suffix = path.suffix.lower()
        if suffix in _PNG_SUFFIXES | _NPY_SUFFIXES:
            if path.parent.name.lower().endswith("_labels"):
                study.skipped.append(InputIssue(path, "label image (folder ends in _labels), not a slice"))
                continue
            records, issue = _image_slice_records(path)
            if issue:
                study.skipped.append(issue)
            image_groups.setdefault(path.parent, []).extend(records)
            continue
        if not is_dicom_file(path):
            study.skipped.append(InputIssue(path, "not a DICOM file (no DICM marker, does not parse as DICOM)"))
            continue
        try:
            dataset = _read_header(path, force=True)
        except Exception as exc:  # pydicom raises many types for damaged files
            study.failed.append(InputIssue(path, f"truncated or corrupt DICOM header ({type(exc).__name__}: {exc})"))
            continue
        reason = _non_image_reason(dataset)
        if reason is None and not _has_pixel_data(dataset):
            reason, broken = _missing_pixels_reason(dataset)
            if broken:
                study.failed.append(InputIssue(path, reason))
                continue
        reason = reason or _unsupported_image_reason(dataset)
        if reason:
            study.skipped.append(InputIssue(path, reason))
            continue
        record = _dicom_record(path, dataset)
        if record.sop_instance_uid and record.sop_instance_uid in seen_sop:
            study.skipped.append(
                InputIssue(path, f"duplicate of {seen_sop[record.sop_instance_uid]} (same SOPInstanceUID)")
            )
            continue
        if record.sop_instance_uid:
            seen_sop[record.sop_instance_uid] = path
        uid = str(dataset.get("SeriesInstanceUID", "") or f"no-uid:{path.parent}")
        dicom_groups.setdefault(uid, []).append(record)

    all_series = [_dicom_series(uid, records, input_path) for uid, records in dicom_groups.items()]
    image_series = [_image_series(folder, records, input_path) for folder, records in image_groups.items() if records]
    _deduplicate_names([*all_series, *image_series])
    if series is not None:
        needle = series.lower()
        for candidate in [*all_series, *image_series]:
            if _matches(candidate, needle):
                study.selected.append(candidate)
            else:
                study.excluded.append((candidate, f"does not match --series {series!r}"))
        return study
    for candidate in all_series:
        reason = _default_exclusion(candidate)
        if reason:
            study.excluded.append((candidate, reason))
        else:
            study.selected.append(candidate)
    for candidate in image_series:
        if all_series:
            study.excluded.append((candidate, "PNG/NPY slices ignored because the input holds DICOM series"))
        else:
            study.selected.append(candidate)
    return study


def _matches(candidate: Series, needle: str) -> bool:
    return (
        needle == candidate.uid.lower()
        or (bool(candidate.description) and needle in candidate.description.lower())
        or needle in candidate.name.lower()
    )


def _default_exclusion(candidate: Series) -> str | None:
    if candidate.modality != "MR":
        return f"Modality {candidate.modality or 'missing'} (default selects MR; use --series to pick it)"
    if candidate.orientation != "axial":
        return f"{candidate.orientation} orientation (default selects axial; use --series to pick it)"
    return None


def _dicom_series(uid: str, records: list[SliceRecord], input_path: Path) -> Series:
    first = records[0].dataset
    ordered, ordering = order_slices(records)
    folder = records[0].path.parent
    number = first.get("SeriesNumber")
    _unique_stems(ordered)
    return Series(
        uid=uid,
        name=_series_name(folder, input_path),
        folder=folder,
        kind="dicom",
        description=str(first.get("SeriesDescription", "") or ""),
        modality=str(first.get("Modality", "") or ""),
        orientation=orientation_name(records[0].orientation),
        ordering=ordering,
        series_number=int(number) if isinstance(number, int | float) or str(number or "").isdigit() else None,
        slices=ordered,
    )


def _image_series(folder: Path, records: list[SliceRecord], input_path: Path) -> Series:
    ordered = sorted(records, key=lambda s: _natural_key(s.stem))
    _unique_stems(ordered)
    return Series(
        uid=f"folder:{folder}",
        name=_series_name(folder, input_path),
        folder=folder,
        kind=records[0].kind,
        description=folder.name,
        ordering="file name",
        slices=ordered,
    )


def _unique_stems(records: list[SliceRecord]) -> None:
    seen: dict[str, int] = {}
    for record in records:
        count = seen.get(record.stem, 0)
        seen[record.stem] = count + 1
        if count:
            record.stem = f"{record.stem}_{count + 1}"


def _deduplicate_names(series_list: list[Series]) -> None:
    """Two series from one folder (or same-named folders) get distinct output names."""
    by_name: dict[str, list[Series]] = {}
    for item in series_list:
        by_name.setdefault(item.name, []).append(item)
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        for index, item in enumerate(group, start=1):
            suffix = f"S{item.series_number}" if item.series_number is not None else str(index)
            item.name = f"{name}_{suffix}"
        if len({item.name for item in group}) < len(group):
            for index, item in enumerate(group, start=1):
                item.name = f"{name}_{index}"


# --------------------------------------------------------------------------- pixel decoding


def _decoder_problem(transfer_syntax: Any) -> str | None:
    """None when pydicom can decode this transfer syntax here, else what to install."""
    key = str(transfer_syntax)
    if key in _DECODER_CHECKED:
        return _DECODER_CHECKED[key]
    problem = None
    if getattr(transfer_syntax, "is_compressed", False):
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(transfer_syntax)
        except NotImplementedError:
            problem = f"no pixel decoder exists for transfer syntax {transfer_syntax.name} ({key})"
        else:
            if not decoder.is_available:
                name = transfer_syntax.name
                hint = next((h for k, h in _DECODER_HINTS.items() if k in name), "install a pydicom pixel-data plugin")
                problem = f"no decoder installed for {name}: {hint}"
    _DECODER_CHECKED[key] = problem
    return problem


def nominal_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest stored value BitsStored/PixelRepresentation allow."""
    if signed:
        return -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    return 0, (1 << bits_stored) - 1


def dicom_pixels(dataset: Any, source: str = "slice") -> np.ndarray:
    """Decoded slice as float32 in rescaled units (RescaleSlope/Intercept applied).

    MONOCHROME1 (high values displayed dark) is inverted within the nominal stored range,
    `lo + hi - stored`, before rescaling, so every slice reaches the model bright-is-bright.
    Signed pixels keep their sign (pydicom honours PixelRepresentation).
    """
    transfer_syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if transfer_syntax is not None:
        problem = _decoder_problem(transfer_syntax)
        if problem:
            raise SliceDecodeError(source, problem)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = dataset.pixel_array
    except Exception as exc:  # pydicom/plugins raise ValueError, RuntimeError, EOFError, ...
        raise SliceDecodeError(source, f"cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if stored.ndim != 2:
        raise SliceDecodeError(source, f"decoded pixel data has shape {stored.shape}, expected a 2-D slice")
    pixels = stored.astype(np.float32)
    if str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip() == "MONOCHROME1":
        bits = int(dataset.get("BitsStored", stored.dtype.itemsize * 8) or stored.dtype.itemsize * 8)
        low, high = nominal_range(bits, int(dataset.get("PixelRepresentation", 0) or 0) == 1)
        pixels = np.float32(low + high) - pixels
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0 or intercept != 0.0:
        pixels = pixels * np.float32(slope) + np.float32(intercept)
    return pixels


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
    except OSError as exc:
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
        pixels = dicom_pixels(record.dataset, source=str(record.path))
        release_pixel_data(record)
        return pixels
    try:
        pixels = _image_pixels(record)
    except (OSError, ValueError) as exc:
        if isinstance(exc, SliceDecodeError):
            raise
        raise SliceDecodeError(record.path, f"unreadable slice ({exc})") from exc
    if pixels.ndim != 2:
        raise SliceDecodeError(record.path, f"slice has shape {pixels.shape}, expected 2-D")
    return pixels


def release_pixel_data(record: SliceRecord) -> None:
    """Drop the decoded bytes from the kept header (the SEG writer needs only the header)."""
    dataset = record.dataset
    if dataset is not None and "PixelData" in dataset:
        del dataset.PixelData
