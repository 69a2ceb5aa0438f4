"""Key-image sheet: the narrowest thecal sac of each disc level with its outline and area, and the table of levels.

One picture per study for a person at a workstation (PNG), and the same picture as a DICOM
Secondary Capture image so it reaches PACS beside the SEG and the SR. Pillow draws it; highdicom
builds the Secondary Capture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge_runtime import __version__
from edge_runtime.atomic import atomic_path
from edge_runtime.dicom_save import save_dicom
from edge_runtime.labels import BY_SHORT
from edge_runtime.render import NOTICE_COLOUR
from edge_runtime.research_use import IntendedUse

TILE = 256  # pixels per key image
CROP_MM = 64.0  # field of view around the sac: canal, lateral recesses and the disc
_BG, _FG, _DIM = (16, 16, 16), (235, 235, 235), (170, 170, 170)
_WARN = NOTICE_COLOUR
_GRADE_COLOUR = {"normal": (120, 200, 120), "relative": (255, 176, 0), "absolute": (255, 90, 90)}


@dataclass(frozen=True)
class KeyImage:
    """The narrowest slice of one disc level and what the sheet prints about the level."""

    level: str  # "L4-L5" or "level 2 from caudal"
    slice_label: str  # e.g. the slice's file stem
    grey: np.ndarray  # (rows, columns) uint8 display image of the slice
    outline: np.ndarray  # closed (N, 2) sac outline, (column, row) pixel-corner coordinates
    pixel_spacing: tuple[float, float]  # (row, column) spacing in mm
    min_area_mm2: float
    grade: str
    slices: str  # the level's slices, e.g. "IM_0004-IM_0006 (3)"
    disc_area_mm2: float | None = None  # sac area on the level's disc slice


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels in `font`."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for word in text.split():
        if lines and measure.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def _tile(key: KeyImage) -> Image.Image:
    """Square crop of `CROP_MM` around the sac, scaled to TILE, with the outline drawn in the TS colour."""
    grey = np.asarray(key.grey)
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"key image {key.slice_label}: grey must be 2-D uint8, got {grey.dtype} {grey.shape}")
    points = np.asarray(key.outline, dtype=np.float64)
    centre = points[:-1].mean(axis=0)  # (x, y)
    half = (CROP_MM / 2.0 / key.pixel_spacing[1], CROP_MM / 2.0 / key.pixel_spacing[0])
    x0 = int(np.clip(round(centre[0] - half[0]), 0, max(0, grey.shape[1] - 2 * half[0])))
    y0 = int(np.clip(round(centre[1] - half[1]), 0, max(0, grey.shape[0] - 2 * half[1])))
    x1, y1 = min(grey.shape[1], x0 + round(2 * half[0])), min(grey.shape[0], y0 + round(2 * half[1]))
    crop = Image.fromarray(grey[y0:y1, x0:x1], mode="L").convert("RGB")
    scale = TILE / max(crop.width, crop.height)
    crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (TILE, TILE), (0, 0, 0))
    tile.paste(crop, (0, 0))
    draw = ImageDraw.Draw(tile)
    scaled = [((x - x0) * scale, (y - y0) * scale) for x, y in points]
    draw.line(scaled, fill=BY_SHORT["TS"].color, width=2)
    return tile


def key_image_sheet(
    keys: Sequence[KeyImage], title: str, thresholds_text: str, use: IntendedUse, footer: str = ""
) -> Image.Image:
    """The sheet: header lines, one tile per level (worst slice), then the table of levels."""
    if not keys:
        raise ValueError("key-image sheet needs at least one disc level with a thecal sac")
    columns = min(len(keys), 4)
    rows = -(-len(keys) // columns)
    big, small = _font(15), _font(12)
    line = 18
    width = max(columns * (TILE + 8) + 8, 760)
    header = [(title, _FG, big)]
    if use.image_line:
        header.append((use.image_line, _WARN, big))
    header += [(text, _DIM, small) for text in _wrap(thresholds_text, small, width - 16)]
    caption_h = 3 * 15 + 6
    table_h = (len(keys) + 1) * 16 + 10
    height = len(header) * line + 10 + rows * (TILE + caption_h) + table_h + 2 * line
    sheet = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(sheet)
    y = 6
    for text, colour, font in header:
        draw.text((8, y), text, fill=colour, font=font)
        y += line
    y += 4
    for i, key in enumerate(keys):
        col, row = i % columns, i // columns
        left, top = 8 + col * (TILE + 8), y + row * (TILE + caption_h)
        sheet.paste(_tile(key), (left, top))
        captions = [
            (key.level, _FG),
            (f"min TS {key.min_area_mm2:.0f} mm2  {key.grade}", _GRADE_COLOUR.get(key.grade, _FG)),
            (f"slice {key.slice_label}", _DIM),
        ]
        for k, (text, colour) in enumerate(captions):
            draw.text((left + 2, top + TILE + 3 + 15 * k), text, fill=colour, font=small)
    y += rows * (TILE + caption_h) + 4
    table = [("level", "slices", "min TS mm2", "grade", "narrowest slice", "TS at disc mm2")]
    for key in keys:
        disc = f"{key.disc_area_mm2:.1f}" if key.disc_area_mm2 is not None else "-"
        table.append((key.level, key.slices, f"{key.min_area_mm2:.1f}", key.grade, key.slice_label, disc))
    stops = [8, 170, 330, 420, 500, 640]
    for r, cells in enumerate(table):
        for x, cell in zip(stops, cells, strict=True):
            colour = _GRADE_COLOUR.get(cell, _FG) if r else _DIM
            draw.text((x, y), str(cell), fill=colour, font=small)
        y += 16
    if footer:
        draw.text((8, y + 8), footer, fill=_DIM, font=small)
    return sheet


def save_png(sheet: Image.Image, path: Path) -> Path:
    """Write the sheet atomically as PNG."""
    with atomic_path(Path(path)) as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)  # as outputs.py: 60 -> 17 ms, 13 % larger
    return Path(path)


def _orientation_letter(cosines: Sequence[float]) -> str:
    """Dominant patient direction of a row/column cosine vector (LPS: +x L, +y P, +z H)."""
    axis = int(np.argmax(np.abs(cosines)))
    positive, negative = ("L", "P", "H")[axis], ("R", "A", "F")[axis]
    return positive if cosines[axis] > 0 else negative


def patient_orientation(reference: Any) -> tuple[str, str]:
    """PatientOrientation of the tiles (they are not rotated), from the reference's ImageOrientationPatient."""
    cosines = [float(v) for v in reference.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    return _orientation_letter(cosines[:3]), _orientation_letter(cosines[3:])


def build_secondary_capture(
    sheet: Image.Image,
    reference: Any,
    use: IntendedUse,
    series_number: int = 9903,
    series_description: str = "edge-seg key images",
) -> Any:
    """The sheet as a highdicom Secondary Capture image in the study of `reference` (a source header)."""
    import highdicom as hd
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(sheet.convert("RGB"), dtype=np.uint8)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="edge-seg",
        patient_orientation=patient_orientation(reference),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=use.describe(series_description),
        software_versions=f"edge-seg {__version__}",
    )
    sc.ContentQualification = use.content_qualification
    # An unpaired body part: without it dciodvfy cannot tell that Laterality may be absent.
    sc.BodyPartExamined = str(reference.get("BodyPartExamined") or "LSPINE")
    sc.BurnedInAnnotation = "NO"  # the sheet prints levels and areas, never the patient's name or ID
    sc.ImageComments = use.describe("thecal-sac key images: narrowest slice per disc level", limit=10240)
    return sc


def write_secondary_capture(path: Path, sheet: Image.Image, reference: Any, use: IntendedUse, **kwargs: Any) -> Path:
    """Build the Secondary Capture of `sheet` and save it atomically."""
    sc = build_secondary_capture(sheet, reference, use, **kwargs)
    return save_dicom(sc, path)
