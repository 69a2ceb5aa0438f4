"""Loader for the Mendeley lumbar-spine layout (real download or `edge-seg synth` output).

Label PNGs in ``05_Final_Ground_Truth_Data/Label_Images/L1_<pid>_D<d>.png`` are paired with
``04_Intermediary_Ground_Truth_Data/{T1,T2}_Output/{T1,T2}_<pid>_D<d>.png`` by the (patient, disc)
key parsed from each file name, never by position in a sorted list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge_runtime.labels import UnknownLabelValueError, mendeley_to_ids

LABEL_DIR = Path("05_Final_Ground_Truth_Data") / "Label_Images"
IMAGE_DIRS = {
    "T1": Path("04_Intermediary_Ground_Truth_Data") / "T1_Output",
    "T2": Path("04_Intermediary_Ground_Truth_Data") / "T2_Output",
}
MODALITIES = tuple(IMAGE_DIRS)
BOTH = "both"
MODALITY_CHOICES = (*MODALITIES, BOTH)
"""What training and scoring may use: one contrast, or both as separate samples of the same label."""
# Optional "-<tag>" after the disc marks an extra slice of that level (e.g. the synthetic set's
# "-endplate"/"-pedicle" vertebral-body slices); the real data set has disc-level slices only.
_SLICE = r"_(?P<pid>.+)_D(?P<disc>\d+)(?:-(?P<tag>[a-z]+))?\.png$"
_LABEL_NAME = re.compile(rf"^L1{_SLICE}", re.IGNORECASE)
_IMAGE_NAME = {m: re.compile(rf"^{m}{_SLICE}", re.IGNORECASE) for m in MODALITIES}


def slice_name(prefix: str, pid: str, disc: int, tag: str = "") -> str:
    """File name of one slice in the layout: `<prefix>_<pid>_D<disc>[-<tag>].png`."""
    return f"{prefix}_{pid}_D{disc}{f'-{tag}' if tag else ''}.png"


SYNTH_FILE = "synth.json"
"""What `edge-seg synth` writes beside the layout (how it was made, its pixel spacing)."""
NOMINAL_PIXEL_SPACING_MM = (0.6875, 0.6875)
"""The Mendeley set's 320 px axial slices (its source series' spacing); a synth.json overrides it."""


def pixel_spacing_of(pair: SlicePair) -> tuple[float, float]:
    """The pair's recorded pixel spacing, else the layout's nominal one."""
    return pair.pixel_spacing or NOMINAL_PIXEL_SPACING_MM


class DatasetError(ValueError):
    """The data set on disk is incomplete or inconsistent; the message names the file."""


@dataclass(frozen=True)
class SlicePair:
    """One labelled slice: its label PNG and the source images that exist for it."""

    patient_id: str
    disc: int
    label_path: Path
    image_paths: dict[str, Path]
    tag: str = ""  # "" for the disc-level slice; else an extra slice of this level
    pixel_spacing: tuple[float, float] | None = None  # mm (row, column) when the data set records it

    @property
    def key(self) -> tuple[str, int, str]:
        return self.patient_id, self.disc, self.tag


def _scan(folder: Path, pattern: re.Pattern[str], expected: str) -> dict[tuple[str, int, str], Path]:
    """Map (pid, disc) -> file for every PNG in `folder`; names that do not parse are errors."""
    found: dict[tuple[str, int], Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() != ".png":
            continue  # temp files of an interrupted write, thumbnails, notes
        match = pattern.match(path.name)
        if match is None:
            raise DatasetError(f"{path}: file name does not match {expected}")
        key = (match["pid"], int(match["disc"]), (match["tag"] or "").lower())
        if key in found:
            raise DatasetError(f"{path}: duplicate of {found[key]} (same patient and disc)")
        found[key] = path
    return found


def index_dataset(root: Path) -> list[SlicePair]:
    """Pair every label PNG under `root` with its T1/T2 images, sorted by (patient, disc).

    Raises DatasetError naming the file when a label has no image at all, or an image has no
    label; a label with only one of T1/T2 is kept with that modality alone.
    """
    root = Path(root)
    label_dir = root / LABEL_DIR
    if not label_dir.is_dir():
        raise DatasetError(f"{root}: missing label folder {LABEL_DIR}")
    labels = _scan(label_dir, _LABEL_NAME, "L1_<pid>_D<d>.png")
    images: dict[str, dict[tuple[str, int, str], Path]] = {}
    for modality, rel in IMAGE_DIRS.items():
        folder = root / rel
        images[modality] = _scan(folder, _IMAGE_NAME[modality], f"{modality}_<pid>_D<d>.png") if folder.is_dir() else {}
    if not any(images.values()) and labels:
        raise DatasetError(f"{root}: no image folder ({', '.join(str(p) for p in IMAGE_DIRS.values())})")
    for modality, found in images.items():
        for key, path in found.items():
            if key not in labels:
                raise DatasetError(f"{path}: {modality} image has no label {label_dir / slice_name('L1', *key)}")
    spacing = _recorded_spacing(root)
    pairs = []
    for key in sorted(labels):
        partners = {m: found[key] for m, found in images.items() if key in found}
        if not partners:
            raise DatasetError(f"{labels[key]}: label has no T1 or T2 image")
        pairs.append(SlicePair(key[0], key[1], labels[key], partners, key[2], spacing))
    return pairs


def _recorded_spacing(root: Path) -> tuple[float, float] | None:
    """pixel_spacing_mm from the synth.json `edge-seg synth` writes beside the layout, if any."""
    path = root / SYNTH_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("pixel_spacing_mm")
    except (OSError, ValueError, AttributeError) as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    if value is None:
        return None
    row, col = (float(value), float(value)) if isinstance(value, int | float) else (float(v) for v in value)
    if not (row > 0 and col > 0):
        raise DatasetError(f"{path}: pixel_spacing_mm must be > 0, got {value!r}")
    return row, col


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DatasetError(f"{path}: cannot read image ({exc})") from None
    return image


def read_image(path: Path) -> np.ndarray:
    """Raw 2-D intensities of a source image: uint8 for 8-bit PNGs, uint16 for 16-bit ones."""
    path = Path(path)
    image = _open(path)
    if image.mode in ("L", "P"):
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image, dtype=np.uint16)
    if image.mode == "I":
        data = np.asarray(image)
        if data.min() < 0 or data.max() > 65535:
            raise DatasetError(f"{path}: 32-bit intensities outside 0-65535")
        return data.astype(np.uint16)
    if image.mode in ("RGB", "RGBA", "LA"):
        data = np.asarray(image)
        channels = data[..., :3] if image.mode != "LA" else data[..., :1]
        if not (channels == channels[..., :1]).all():
            raise DatasetError(f"{path}: colour image; expected greyscale intensities")
        return np.ascontiguousarray(channels[..., 0])
    raise DatasetError(f"{path}: unsupported PNG mode {image.mode!r}")


def read_label(path: Path) -> np.ndarray:
    """Class ids (uint8) of a Mendeley label PNG; unknown pixel values raise, naming the file."""
    path = Path(path)
    data = np.asarray(_open(path))
    if data.ndim not in (2, 3):
        raise DatasetError(f"{path}: expected a 2-D label image, got shape {data.shape}")
    try:
        return mendeley_to_ids(data, source=str(path))
    except UnknownLabelValueError as exc:
        raise DatasetError(str(exc)) from None


def load_pair(pair: SlicePair, modality: str = "T2") -> tuple[np.ndarray, np.ndarray]:
    """(raw image, class-id mask) of one slice; sizes must match."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality not in pair.image_paths:
        raise DatasetError(f"{pair.label_path}: no {modality} image for patient {pair.patient_id} disc {pair.disc}")
    image_path = pair.image_paths[modality]
    image, label = read_image(image_path), read_label(pair.label_path)
    if image.shape != label.shape:
        raise DatasetError(
            f"size mismatch: {image_path} is {image.shape[1]}x{image.shape[0]}, "
            f"{pair.label_path} is {label.shape[1]}x{label.shape[0]}"
        )
    return image, label


def with_modalities(pairs: Sequence[SlicePair], modality: str) -> list[tuple[SlicePair, str]]:
    """(pair, contrast) samples: `modality` alone, or with "both" every contrast a pair has (T1 first)."""
    if modality not in MODALITY_CHOICES:
        raise ValueError(f"modality must be one of {MODALITY_CHOICES}, got {modality!r}")
    if modality != BOTH:
        return [(pair, modality) for pair in pairs]
    return [(pair, m) for pair in pairs for m in MODALITIES if m in pair.image_paths]


def load_arrays(pairs: Sequence[SlicePair], modality: str = "T2") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and masks of many slices, as lists (the real set mixes 320x320 and 320x310)."""
    images, labels = [], []
    for pair in pairs:
        image, label = load_pair(pair, modality)
        images.append(image)
        labels.append(label)
    return images, labels
