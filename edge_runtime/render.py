"""Pictures of results with Pillow only: Mendeley-valued label PNGs, colour overlays with a legend, contact sheets."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edge_runtime.labels import FOREGROUND, ids_to_mendeley, palette
from edge_runtime.preprocessing import PreprocessSpec, normalize_intensity

_DISPLAY_SPEC = PreprocessSpec()  # 0.5-99.5 percentile window, as the model sees the slice
_LEGEND_ROW = 16
TILE_SIZE = 192  # contact-sheet cell: tiles are shrunk to fit it (never enlarged)
NOTICE_COLOUR = (255, 221, 0)  # yellow, unlike any class colour: the research-use line on every picture


def label_image(mask: np.ndarray) -> Image.Image:
    """8-bit grey label image in Mendeley pixel values (50 IVD, 100 PE, 150 TS, 200 AAP, 250 background)."""
    return Image.fromarray(ids_to_mendeley(mask), mode="L")


def display_grey(image: np.ndarray) -> np.ndarray:
    """Raw slice -> uint8 grey with a robust percentile window."""
    return np.round(normalize_intensity(image, _DISPLAY_SPEC) * 255).astype(np.uint8)


_FONTS = threading.local()  # one font object per thread: overlays are drawn on the PNG worker threads too


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    fonts = _FONTS.__dict__.setdefault("by_size", {})
    if size not in fonts:
        try:
            fonts[size] = ImageFont.load_default(size=size)
        except (TypeError, OSError):  # Pillow without FreeType: fixed bitmap font
            fonts[size] = ImageFont.load_default()
    return fonts[size]


@lru_cache(maxsize=4)
def _blend_table(alpha: float) -> np.ndarray:
    """(class, grey) -> RGB uint8: round((1 - alpha) * grey + alpha * colour) in float32, grey for background.

    A lookup table of what a per-pixel blend computes, value for value (a 15-slice series: 5 ms, not 75).
    """
    grey = np.arange(256, dtype=np.float32)[None, :, None]
    blended = (1 - alpha) * np.repeat(grey, 3, axis=-1) + alpha * palette().astype(np.float32)[:, None, :]
    table = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    table[0] = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    table.setflags(write=False)
    return table


def _boundaries(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood holds another class (class outlines)."""
    edge = np.zeros(mask.shape, dtype=bool)
    edge[1:, :] |= mask[1:, :] != mask[:-1, :]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return edge & (mask > 0)


def overlay_image(
    image: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.4,
    legend: bool = True,
    areas: dict[str, float] | None = None,
    unit: str = "mm2",
    title: str | None = None,
    notice: str | None = None,
) -> Image.Image:
    """Slice in grey with classes blended in their table colours, outlined, and a legend strip below.

    `areas` (short name -> area) are printed in the legend when given; `notice` (e.g. the
    research-use line) is printed first, in yellow.
    """
    mask = np.asarray(mask)
    if mask.shape != np.asarray(image).shape:
        raise ValueError(f"overlay: mask shape {mask.shape} != image shape {np.asarray(image).shape}")
    classes = mask.astype(np.intp)
    rgb = _blend_table(float(alpha))[classes, display_grey(image)]
    edge = _boundaries(mask)
    rgb[edge] = palette()[classes[edge]]
    picture = Image.fromarray(rgb, mode="RGB")
    if not legend and title is None and notice is None:
        return picture
    return add_legend(picture, areas, unit, title, legend, notice)


def add_legend(
    picture: Image.Image,
    areas: dict[str, float] | None = None,
    unit: str = "mm2",
    title: str | None = None,
    legend: bool = True,
    notice: str | None = None,
) -> Image.Image:
    """`picture` with a strip below: optional notice (yellow), title, then one colour key per class (with its area)."""
    font = _font(11)
    rows = (1 if notice else 0) + (1 if title else 0) + (len(FOREGROUND) if legend else 0)
    canvas = Image.new("RGB", (max(picture.width, 170), picture.height + rows * _LEGEND_ROW + 6), (0, 0, 0))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + 3
    if notice:
        draw.text((4, y), notice, fill=NOTICE_COLOUR, font=font)
        y += _LEGEND_ROW
    if title:
        draw.text((4, y), title, fill=(255, 255, 255), font=font)
        y += _LEGEND_ROW
    if legend:
        for cls in FOREGROUND:
            draw.rectangle((4, y + 2, 14, y + 12), fill=cls.color)
            text = f"{cls.short}  {cls.name}"
            if areas is not None and cls.short in areas:
                text = f"{cls.short}  {areas[cls.short]:.0f} {unit}"
            draw.text((20, y), text, fill=(255, 255, 255), font=font)
            y += _LEGEND_ROW
    return canvas


def contact_sheet(
    tiles: Sequence[Image.Image],
    captions: Sequence[str] | None = None,
    tile_size: int = TILE_SIZE,
    columns: int | None = None,
    title: str | None = None,
    notice: str | None = None,
) -> Image.Image:
    """Grid of thumbnails (aspect kept) with a caption under each, an optional title and legend, and `notice` in yellow."""
    if not tiles:
        raise ValueError("contact sheet needs at least one tile")
    captions = list(captions) if captions is not None else [""] * len(tiles)
    if len(captions) != len(tiles):
        raise ValueError(f"{len(captions)} captions for {len(tiles)} tiles")
    columns = columns or min(len(tiles), max(1, math.ceil(math.sqrt(len(tiles) * 4 / 3))))
    rows = math.ceil(len(tiles) / columns)
    font = _font(11)
    caption_h = 16
    header = (_LEGEND_ROW + 4 if notice else 0) + (_LEGEND_ROW + 4 if title else 0) + _LEGEND_ROW + 4
    sheet = Image.new("RGB", (columns * tile_size, header + rows * (tile_size + caption_h)), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    y = 2
    if notice:
        draw.text((4, y), notice, fill=NOTICE_COLOUR, font=font)
        y += _LEGEND_ROW + 2
    if title:
        draw.text((4, y), title, fill=(255, 255, 255), font=font)
        y += _LEGEND_ROW + 2
    x = 4
    for cls in FOREGROUND:
        draw.rectangle((x, y + 2, x + 10, y + 12), fill=cls.color)
        draw.text((x + 14, y), cls.short, fill=(255, 255, 255), font=font)
        x += 60
    for i, (tile, caption) in enumerate(zip(tiles, captions, strict=True)):
        thumb = tile.copy()
        thumb.thumbnail((tile_size, tile_size), Image.Resampling.BILINEAR)
        col, row = i % columns, i // columns
        left = col * tile_size + (tile_size - thumb.width) // 2
        top = header + row * (tile_size + caption_h)
        sheet.paste(thumb, (left, top + (tile_size - thumb.height) // 2))
        draw.text((col * tile_size + 4, top + tile_size + 1), caption[:28], fill=(230, 230, 230), font=font)
    return sheet
