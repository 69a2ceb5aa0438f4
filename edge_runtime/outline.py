"""Closed outlines of mask regions along pixel edges, in DICOM image coordinates (column, row).

The outline follows the cracks between pixels, so a region without holes encloses exactly its
pixels: the polygon's area equals the pixel count and a viewer that measures the SR's POLYLINE
gets the same area as the mask. Regions are 4-connected (diagonal neighbours are separate).
"""

from __future__ import annotations

import numpy as np

# Edge directions as (dx, dy) in image coordinates (x = column to the right, y = row downwards).
_RIGHT, _DOWN, _LEFT, _UP = (1, 0), (0, 1), (-1, 0), (0, -1)
_TURN_ORDER = {  # prefer a right turn, then straight, then left: keeps diagonal pixels apart
    _RIGHT: (_DOWN, _RIGHT, _UP),
    _DOWN: (_LEFT, _DOWN, _RIGHT),
    _LEFT: (_UP, _LEFT, _DOWN),
    _UP: (_RIGHT, _UP, _LEFT),
}


def _boundary_edges(mask: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Directed unit edges with the region on their right (on screen): start vertex -> directions.

    Works on the mask's bounding box (a thecal sac is ~0.3 % of a 320x320 slice): ~5x faster, same edges.
    """
    mask = mask.astype(bool)
    rows_any, cols_any = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows_any):
        return {}
    top, left = int(rows_any[0]), int(cols_any[0])
    padded = np.pad(mask[top : int(rows_any[-1]) + 1, left : int(cols_any[-1]) + 1], 1)
    inside = padded[1:-1, 1:-1]
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}
    # (neighbour that must be outside, start-vertex offset (dx, dy) from the pixel's top-left, direction)
    sides = (
        (padded[:-2, 1:-1], (0, 0), _RIGHT),  # top side, walked left -> right
        (padded[1:-1, 2:], (1, 0), _DOWN),  # right side, walked top -> bottom
        (padded[2:, 1:-1], (1, 1), _LEFT),  # bottom side, walked right -> left
        (padded[1:-1, :-2], (0, 1), _UP),  # left side, walked bottom -> top
    )
    for neighbour, (ox, oy), direction in sides:
        rows, cols = np.nonzero(inside & ~neighbour)
        for x, y in zip((cols + (ox + left)).tolist(), (rows + (oy + top)).tolist(), strict=True):
            edges.setdefault((x, y), []).append(direction)
    return edges


def _loops(edges: dict[tuple[int, int], list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    """Link the directed edges into closed loops of corner vertices (collinear points dropped)."""
    loops = []
    while edges:
        start = next(iter(edges))
        first = edges[start][0]
        vertex, direction, corners = start, first, []
        while True:
            outgoing = edges[vertex]
            outgoing.remove(direction)
            if not outgoing:
                del edges[vertex]
            vertex = (vertex[0] + direction[0], vertex[1] + direction[1])
            choices = list(edges.get(vertex, ()))
            if vertex == start:
                choices.append(first)
            following = next(d for d in _TURN_ORDER[direction] if d in choices)
            if following != direction:
                corners.append(vertex)
            if vertex == start and following == first:
                break
            direction = following
        loops.append(corners)
    return loops


def polygon_area(points: np.ndarray) -> float:
    """Shoelace area of a polygon given as (x, y) rows; positive when clockwise on screen (y down)."""
    pts = np.asarray(points, dtype=np.float64)
    x, y = pts[:, 0], pts[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) / 2.0


def region_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Outer outlines of every 4-connected region of a boolean mask, largest enclosed area first.

    Each outline is an (N, 2) float array of (column, row) vertices on pixel corners, closed
    (last point equals the first), as a DICOM SCOORD POLYLINE needs. Holes are not returned.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"outline needs a 2-D mask, got shape {mask.shape}")
    outlines = []
    for corners in _loops(_boundary_edges(mask)):
        points = np.asarray([*corners, corners[0]], dtype=np.float64)
        area = polygon_area(points[:-1])
        if area > 0:  # outer boundaries run clockwise on screen; holes run the other way
            outlines.append((area, points))
    outlines.sort(key=lambda item: -item[0])
    return [points for _, points in outlines]


def largest_outline(mask: np.ndarray) -> np.ndarray | None:
    """Outline of the region enclosing the largest area, or None for an empty mask."""
    outlines = region_outlines(mask)
    return outlines[0] if outlines else None
