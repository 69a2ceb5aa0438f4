"""Label PNGs in Mendeley values, colour overlays with a legend, contact sheets (Pillow only)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from edge_runtime.labels import BY_SHORT, CLASSES, mendeley_to_ids
from edge_runtime.render import contact_sheet, display_grey, label_image, overlay_image


def _scene() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 50, (60, 52)).astype(np.float32)
    mask = np.zeros((60, 52), dtype=np.uint8)
    mask[5:20, 5:45] = 1
    mask[22:30, 10:40] = 3
    mask[32:50, 8:44] = 2
    mask[20:22, 10:40] = 4
    return image, mask


def test_label_png_round_trips_in_mendeley_values() -> None:
    _, mask = _scene()
    buffer = io.BytesIO()
    label_image(mask).save(buffer, format="PNG")
    reread = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    assert reread.dtype == np.uint8 and reread.shape == mask.shape
    assert set(np.unique(reread)) == {c.mendeley_value for c in CLASSES}
    assert reread[10, 10] == 50 and reread[0, 0] == 250
    np.testing.assert_array_equal(mendeley_to_ids(reread), mask)


def test_overlay_blends_class_colours_outlines_and_keeps_background_grey() -> None:
    image, mask = _scene()
    alpha = 0.4
    picture = np.asarray(overlay_image(image, mask, alpha=alpha, legend=False))
    assert picture.shape == (60, 52, 3)
    grey = display_grey(image).astype(np.float32)
    background = picture[55, 2]
    assert background[0] == background[1] == background[2] == grey[55, 2]
    inside = picture[12, 20].astype(np.float32)  # interior IVD pixel
    expected = (1 - alpha) * grey[12, 20] + alpha * np.array(BY_SHORT["IVD"].color, np.float32)
    assert np.abs(inside - expected).max() <= 1.0
    assert tuple(picture[5, 20]) == BY_SHORT["IVD"].color  # top edge of the disc is outlined in full colour


def test_overlay_legend_strip_shows_every_class_colour() -> None:
    image, mask = _scene()
    picture = overlay_image(image, mask, areas={"IVD": 1.0, "PE": 2.0, "TS": 3.0, "AAP": 4.0}, title="s/IM1")
    assert picture.width >= 52 and picture.height > 60
    strip = np.asarray(picture)[60:].reshape(-1, 3)
    colours = {tuple(int(v) for v in px) for px in strip}
    for cls in CLASSES[1:]:
        assert cls.color in colours


def test_overlay_rejects_a_mask_of_another_shape() -> None:
    image, mask = _scene()
    with pytest.raises(ValueError, match="mask shape"):
        overlay_image(image, mask[:-1])


def test_contact_sheet_grid_size_and_caption_check() -> None:
    tiles = [Image.new("RGB", (40, 30), (k * 20, 0, 0)) for k in range(7)]
    sheet = contact_sheet(tiles, [f"IM{k}" for k in range(7)], tile_size=50, columns=3, title="series")
    assert sheet.width == 150
    rows = 3
    header = sheet.height - rows * (50 + 16)
    assert 0 < header < 60
    pixel = np.asarray(sheet)[header + 25, 75]  # centre of tile 1 (row 0, column 1)
    assert tuple(pixel) == (20, 0, 0)
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(tiles, ["only one"])
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([])
