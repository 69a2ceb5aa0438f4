"""The research-use line on overlays and contact sheets: drawn in yellow when asked for, absent otherwise."""

from __future__ import annotations

import numpy as np

from edge_runtime.render import NOTICE_COLOUR, add_legend, contact_sheet, overlay_image
from edge_runtime.research_use import RESEARCH_LINE


def _yellow(image, rows: tuple[int, int] | None = None) -> int:
    """Pixels of the notice colour, anti-aliased text included (no class colour is yellow)."""
    rgb = np.asarray(image).astype(int)
    if rows is not None:
        rgb = rgb[rows[0] : rows[1]]
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    assert NOTICE_COLOUR == (255, 221, 0)
    return int(((r > 150) & (g > 130) & (b < 60) & (np.abs(r - g) < 60)).sum())


def _slice() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).integers(0, 4000, (64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), np.uint8)
    mask[20:30, 20:40] = 3
    return image, mask


def test_overlay_legend_carries_the_notice_line() -> None:
    image, mask = _slice()
    plain = overlay_image(image, mask, legend=False)
    marked = add_legend(plain, {"IVD": 1.0, "PE": 2.0, "TS": 3.0, "AAP": 4.0}, "mm2", "title", notice=RESEARCH_LINE)
    unmarked = add_legend(plain, {"IVD": 1.0, "PE": 2.0, "TS": 3.0, "AAP": 4.0}, "mm2", "title")
    assert _yellow(marked) > 30 and _yellow(unmarked) == 0
    assert marked.height == unmarked.height + 16


def test_overlay_image_passes_the_notice_through() -> None:
    image, mask = _slice()
    assert _yellow(overlay_image(image, mask, legend=False, notice=RESEARCH_LINE)) > 30
    assert _yellow(overlay_image(image, mask, legend=False)) == 0


def test_contact_sheet_carries_the_notice_line() -> None:
    image, mask = _slice()
    tiles = [overlay_image(image, mask, legend=False)] * 3
    marked = contact_sheet(tiles, ["a", "b", "c"], title="t", notice=RESEARCH_LINE)
    plain = contact_sheet(tiles, ["a", "b", "c"], title="t")
    assert _yellow(marked) > 30 and _yellow(plain) == 0
    assert marked.height == plain.height + 20
