"""Pixel-edge outlines: closed, on pixel corners, enclosing exactly the region's pixels."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime import outline


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.indices(shape)
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def test_single_pixel_is_a_unit_square_in_column_row_order() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1, 3] = True  # row 1, column 3: occupies x 3..4, y 1..2
    (points,) = outline.region_outlines(mask)
    assert points.tolist() == [[4.0, 1.0], [4.0, 2.0], [3.0, 2.0], [3.0, 1.0], [4.0, 1.0]]


def test_outline_area_equals_pixel_count_for_hole_free_regions() -> None:
    mask = _disc((64, 64), (30.3, 27.6), 11.2)
    mask[20:25, 10:40] = True  # a bar across it makes a non-convex shape
    points = outline.largest_outline(mask)
    assert points is not None
    assert np.array_equal(points[0], points[-1])
    assert outline.polygon_area(points[:-1]) == pytest.approx(int(mask.sum()))
    assert np.all(points == np.round(points)) and points.min() >= 0


def test_only_corners_are_kept() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:8, 3:6] = True
    (points,) = outline.region_outlines(mask)
    assert len(points) == 5  # four corners of the rectangle, closed


def test_diagonal_neighbours_are_separate_regions() -> None:
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = mask[2, 2] = True
    outlines = outline.region_outlines(mask)
    assert [outline.polygon_area(p[:-1]) for p in outlines] == [1.0, 1.0]


def test_holes_are_not_outlines_and_the_outer_ring_encloses_them() -> None:
    mask = np.zeros((12, 12), bool)
    mask[2:10, 2:10] = True
    mask[4:7, 4:7] = False
    outlines = outline.region_outlines(mask)
    assert len(outlines) == 1
    assert outline.polygon_area(outlines[0][:-1]) == 64.0  # 55 pixels + the 9-pixel hole


def test_largest_region_comes_first() -> None:
    mask = np.zeros((30, 30), bool)
    mask[1:3, 1:3] = True
    mask[10:20, 10:20] = True
    first, second = outline.region_outlines(mask)
    assert outline.polygon_area(first[:-1]) == 100.0 and outline.polygon_area(second[:-1]) == 4.0


def test_signed_loop_areas_sum_to_the_pixel_count_on_random_masks() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        mask = rng.random((25, 31)) < 0.45  # many touching, diagonal and holed regions
        loops = outline._loops(outline._boundary_edges(mask))
        total = sum(outline.polygon_area(np.asarray(loop, float)) for loop in loops)
        assert total == pytest.approx(int(mask.sum()))


def test_region_touching_the_image_border_stays_inside_the_image() -> None:
    mask = np.ones((6, 7), bool)
    (points,) = outline.region_outlines(mask)
    assert points[:, 0].max() == 7 and points[:, 1].max() == 6 and points.min() == 0


def test_empty_mask_has_no_outline_and_3d_masks_are_refused() -> None:
    assert outline.largest_outline(np.zeros((5, 5), bool)) is None
    with pytest.raises(ValueError, match=r"2-D mask, got shape \(2, 5, 5\)"):
        outline.region_outlines(np.zeros((2, 5, 5), bool))
