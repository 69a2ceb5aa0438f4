"""Millimetre-space shapes and a painter that rasterises them onto oversampled pixel grids."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

SIZE = 320
"""Rows and columns of every phantom slice (as in the real data set)."""
SPACING_MM = 0.6875
"""Pixel spacing of the real data set, in millimetres."""
FOV_MM = SIZE * SPACING_MM

Box = tuple[float, float, float, float]
"""(xmin, xmax, ymin, ymax) in millimetres."""


@dataclass(frozen=True)
class Frame:
    """A rotated coordinate frame: local (u, v) -> world (x, y), v pointing posterior when theta=0."""

    cx: float
    cy: float
    theta: float = 0.0

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.theta), math.sin(self.theta)
        dx, dy = x - self.cx, y - self.cy
        return c * dx + s * dy, -s * dx + c * dy

    def world(self, u: float, v: float) -> tuple[float, float]:
        c, s = math.cos(self.theta), math.sin(self.theta)
        return self.cx + c * u - s * v, self.cy + s * u + c * v


class Shape:
    """A region of the plane: a world bounding box plus a vectorised membership test."""

    def bbox(self) -> Box:
        raise NotImplementedError

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Prim(Shape):
    """A primitive defined by a membership function of local (u, v) coordinates."""

    def __init__(self, frame: Frame, local_box: Box, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]):
        self.frame, self.local_box, self.fn = frame, local_box, fn

    def bbox(self) -> Box:
        u0, u1, v0, v1 = self.local_box
        pts = [self.frame.world(u, v) for u in (u0, u1) for v in (v0, v1)]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return min(xs), max(xs), min(ys), max(ys)

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u, v = self.frame.local(x, y)
        return self.fn(u, v)


class Union(Shape):
    def __init__(self, *parts: Shape):
        self.parts = parts

    def bbox(self) -> Box:
        boxes = [p.bbox() for p in self.parts]
        return (min(b[0] for b in boxes), max(b[1] for b in boxes),
                min(b[2] for b in boxes), max(b[3] for b in boxes))

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = self.parts[0].inside(x, y)
        for p in self.parts[1:]:
            out = out | p.inside(x, y)
        return out


class Diff(Shape):
    def __init__(self, keep: Shape, cut: Shape):
        self.keep, self.cut = keep, cut

    def bbox(self) -> Box:
        return self.keep.bbox()

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.keep.inside(x, y) & ~self.cut.inside(x, y)


class Inter(Shape):
    def __init__(self, a: Shape, b: Shape):
        self.a, self.b = a, b

    def bbox(self) -> Box:
        a, b = self.a.bbox(), self.b.bbox()
        return max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3])

    def inside(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.a.inside(x, y) & self.b.inside(x, y)


def ellipse(f: Frame, cu: float, cv: float, ru: float, rv: float, angle: float = 0.0) -> Prim:
    """Ellipse centred at (cu, cv) with radii (ru, rv), rotated by `angle` radians."""
    ca, sa = math.cos(angle), math.sin(angle)

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        du, dv = u - cu, v - cv
        p = (ca * du + sa * dv) / ru
        q = (-sa * du + ca * dv) / rv
        return p * p + q * q <= 1.0

    r = max(ru, rv)
    return Prim(f, (cu - r, cu + r, cv - r, cv + r), fn)


def capsule(f: Frame, p0: tuple[float, float], p1: tuple[float, float], r0: float,
            r1: float | None = None) -> Prim:
    """Segment p0-p1 thickened by a radius that tapers linearly from r0 to r1."""
    r1 = r0 if r1 is None else r1
    (u0, v0), (u1, v1) = p0, p1
    du, dv = u1 - u0, v1 - v0
    length2 = max(du * du + dv * dv, 1e-9)

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = np.clip(((u - u0) * du + (v - v0) * dv) / length2, 0.0, 1.0)
        eu, ev = u - u0 - t * du, v - v0 - t * dv
        r = r0 + t * (r1 - r0)
        return eu * eu + ev * ev <= r * r

    r = max(r0, r1)
    return Prim(f, (min(u0, u1) - r, max(u0, u1) + r, min(v0, v1) - r, max(v0, v1) + r), fn)


def superellipse(f: Frame, cu: float, cv: float, a_neg: float, a_pos: float, b_neg: float,
                 b_pos: float, p: float) -> Prim:
    """|du/a|^p + |dv/b|^p <= 1 with separate half-axes on each side (for asymmetric organs)."""

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        du, dv = u - cu, v - cv
        a = np.where(du < 0, a_neg, a_pos)
        b = np.where(dv < 0, b_neg, b_pos)
        return np.abs(du / a) ** p + np.abs(dv / b) ** p <= 1.0

    return Prim(f, (cu - a_neg, cu + a_pos, cv - b_neg, cv + b_pos), fn)


def polygon(f: Frame, points: Sequence[tuple[float, float]]) -> Prim:
    """Simple polygon (even-odd rule) with vertices in local coordinates."""
    pts = np.asarray(points, dtype=float)
    edges = list(zip(pts, np.roll(pts, -1, axis=0), strict=True))

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
        for (ua, va), (ub, vb) in edges:
            if va == vb:
                continue
            crosses = (va > v) != (vb > v)
            x_at = ua + (v - va) * ((ub - ua) / (vb - va))
            out ^= crosses & (u < x_at)
        return out

    return Prim(f, (pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max()), fn)


def halfplane_curve(f: Frame, v0: float, bend: float, extent: float = 400.0) -> Prim:
    """Everything posterior of the parabola v = v0 - bend * u**2 (bends anteriorly at the flanks)."""

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return v >= v0 - bend * u * u

    return Prim(f, (-extent, extent, v0 - bend * extent * extent, extent), fn)


@dataclass(frozen=True)
class Paint:
    """Fill `shape` with `tissue`, only over pixels whose current tissue is in `over` (None: any)."""

    shape: Shape
    tissue: int
    over: frozenset[int] | None = None


@dataclass(frozen=True)
class RadialLayers:
    """Concentric star-shaped layers around a frame origin; radius tables sampled over angle."""

    frame: Frame
    radii: tuple[np.ndarray, ...]
    tissues: tuple[int, ...]


Op = Paint | RadialLayers


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates (mm) of a square grid covering the field of view."""

    coords: np.ndarray
    step: float

    @classmethod
    def make(cls, oversample: int) -> Grid:
        n = SIZE * oversample
        step = SPACING_MM / oversample
        return cls(((np.arange(n) + 0.5) * step - FOV_MM / 2).astype(np.float32), step)

    @property
    def n(self) -> int:
        return len(self.coords)

    def window(self, box: Box) -> tuple[slice, slice] | None:
        """Row and column slices covering `box` (None when it misses the grid)."""
        x0, x1, y0, y1 = box
        first = self.coords[0]
        j0 = max(0, math.floor((x0 - first) / self.step))
        j1 = min(self.n, math.ceil((x1 - first) / self.step) + 1)
        i0 = max(0, math.floor((y0 - first) / self.step))
        i1 = min(self.n, math.ceil((y1 - first) / self.step) + 1)
        if j0 >= j1 or i0 >= i1:
            return None
        return slice(i0, i1), slice(j0, j1)


def paint(ops: Sequence[Op], grid: Grid, n_tissues: int, canvas: np.ndarray | None = None) -> np.ndarray:
    """Rasterise `ops` in order (painter's algorithm) into a uint8 tissue map (new or `canvas`)."""
    if canvas is None:
        canvas = np.zeros((grid.n, grid.n), dtype=np.uint8)
    for op in ops:
        if isinstance(op, RadialLayers):
            _paint_radial(canvas, op, grid)
            continue
        win = grid.window(op.shape.bbox())
        if win is None:
            continue
        rows, cols = win
        x = grid.coords[cols][None, :]
        y = grid.coords[rows][:, None]
        mask = op.shape.inside(x, y)
        sub = canvas[rows, cols]
        if op.over is not None:
            mask &= _allowed(op.over, n_tissues)[sub]
        sub[mask] = op.tissue
    return canvas


@functools.lru_cache(maxsize=256)
def _allowed(over: frozenset[int], n_tissues: int) -> np.ndarray:
    allowed = np.zeros(n_tissues, dtype=bool)
    allowed[list(over)] = True
    return allowed


def _paint_radial(canvas: np.ndarray, op: RadialLayers, grid: Grid) -> None:
    x = grid.coords[None, :]
    y = grid.coords[:, None]
    u, v = op.frame.local(x, y)
    n_phi = len(op.radii[0])
    idx = ((np.arctan2(v, u) + math.pi) * (n_phi / (2 * math.pi))).astype(np.int32)
    np.minimum(idx, n_phi - 1, out=idx)
    r = np.hypot(u, v)
    for table, tissue in zip(op.radii, op.tissues, strict=True):
        canvas[r <= table.astype(np.float32)[idx]] = tissue
