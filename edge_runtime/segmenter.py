"""Slice segmentation with a verified exported model: prepare -> backend.predict (batched) -> restore."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.backend_choice import BackendChoice, open_auto
from edge_runtime.backends import Backend, check_threads, open_backend
from edge_runtime.labels import NUM_CLASSES
from edge_runtime.manifest import Manifest, ManifestError, load_verified_manifest
from edge_runtime.preprocessing import (
    PixelSpacing,
    SliceGeometry,
    _axis_weights,
    prepare_slice,
    restore_labels,
    restore_probabilities,
    window_overlap,
    window_specs,
)


@dataclass
class SliceResult:
    """Class-id mask at the slice's own size, or the reason it could not be segmented."""

    mask: np.ndarray | None
    error: str | None
    inference_s: float = 0.0


@dataclass
class Timings:
    """Wall time spent in each stage, summed over every call to `Segmenter.segment`."""

    load_s: float = 0.0
    preprocess_s: float = 0.0
    inference_s: float = 0.0
    postprocess_s: float = 0.0
    slices: int = 0

    @property
    def inference_ms_per_slice(self) -> float:
        return 1000.0 * self.inference_s / self.slices if self.slices else 0.0


class Segmenter:
    """Loads a model only after its manifest checks out; then turns raw slices into masks.

    `backend="auto"` picks the fastest installed backend by measurement (cached per model, CPU
    and thread count); `choice` says which one runs and why, for info and report.json. A model
    with a fixed field of view sees each slice through the windows of WINDOW_SCALES unless
    `single_window`.
    """

    def __init__(self, model_path: Path, backend: str = "auto", threads: int | None = None, batch_size: int = 8,
                 slices: int | None = None, single_window: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = time.perf_counter()
        self.model_path = Path(model_path)
        self.manifest: Manifest = load_verified_manifest(self.model_path)
        out_shape = self.manifest.outputs[0].shape if self.manifest.outputs else []
        if not out_shape or out_shape[-1] != NUM_CLASSES:
            raise ManifestError(f"{self.model_path}: output shape {out_shape} does not end in {NUM_CLASSES} classes")
        self.spec = self.manifest.preprocessing
        self.windows = window_specs(self.spec, single_window)
        threads = check_threads(threads)
        self.backend: Backend
        self.choice: BackendChoice
        if backend == "auto":
            calls = slices * len(self.windows) if slices is not None else None
            self.backend, self.choice = open_auto(self.model_path, threads, self.manifest, calls)
        else:
            self.backend = open_backend(self.model_path, backend, threads, self.manifest)
            self.choice = BackendChoice(backend, threads, backend, "explicit", f"--backend {backend} was given")
        self.batch_size = batch_size if self.backend.batch_free else 1
        self.timings = Timings(load_s=time.perf_counter() - start)

    @property
    def fields_of_view_mm(self) -> list[float] | None:
        """The windows each slice is seen through, in mm (None: the whole slice, one window)."""
        if self.spec.field_of_view_mm is None:
            return None
        return [spec.field_of_view_mm for spec in self.windows]

    def segment(self, images: Sequence[np.ndarray | None], spacings: Sequence[PixelSpacing] | None = None) -> list[SliceResult]:
        """Masks for `images` in order; a slice that fails (or is None) gets an error, never stops the rest.

        spacings: each slice's pixel spacing in mm (row, column), needed by models that see a
        fixed field of view (manifest preprocessing.field_of_view_mm).
        """
        results: list[SliceResult] = [SliceResult(None, "no pixels") for _ in images]
        prepared: list[tuple[int, np.ndarray, SliceGeometry]] = []  # one entry per slice and window
        spacings = list(spacings) if spacings is not None else [None] * len(images)
        start = time.perf_counter()
        for index, (image, spacing) in enumerate(zip(images, spacings, strict=True)):
            if image is None:
                continue
            try:
                inputs = [prepare_slice(image, spec, spacing) for spec in self.windows]
            except (ValueError, TypeError) as exc:
                results[index] = SliceResult(None, f"preprocessing failed ({exc})")
                continue
            prepared += [(index, tensor, geometry) for tensor, geometry in inputs]
        self.timings.preprocess_s += time.perf_counter() - start
        pending: dict[int, list[tuple[np.ndarray, SliceGeometry, float]]] = {}
        failed: set[int] = set()
        for offset in range(0, len(prepared), self.batch_size):
            chunk = prepared[offset : offset + self.batch_size]
            for (index, _, geometry), (scores, error, seconds) in zip(chunk, self._predict_chunk(chunk), strict=True):
                if index in failed:
                    continue
                if error is not None:  # one window failed: the slice fails, whatever the others gave
                    failed.add(index)
                    pending.pop(index, None)
                    results[index] = SliceResult(None, error)
                    continue
                seen = pending.setdefault(index, [])
                seen.append((scores, geometry, seconds))
                if len(seen) == len(self.windows):  # combined at once: the chunk's scores are not all kept
                    start = time.perf_counter()
                    mask = labels_from_windows([(scores, geometry) for scores, geometry, _ in pending.pop(index)])
                    results[index] = SliceResult(mask, None, sum(t for _, _, t in seen))
                    self.timings.postprocess_s += time.perf_counter() - start
                    self.timings.slices += 1
        return results

    def _predict_chunk(
        self, chunk: list[tuple[int, np.ndarray, SliceGeometry]]
    ) -> list[tuple[np.ndarray | None, str | None, float]]:
        """(scores, error, inference seconds) per entry; a failed batch is retried one entry at a time."""
        batch = np.stack([tensor for _, tensor, _ in chunk])[..., None]
        start = time.perf_counter()
        try:
            scores = np.asarray(self.backend.predict(batch))
        except Exception as exc:  # interpreters raise RuntimeError/ValueError/their own types
            if len(chunk) == 1:
                return [(None, f"inference failed ({type(exc).__name__}: {exc})", 0.0)]
            return [result for item in chunk for result in self._predict_chunk([item])]
        elapsed = time.perf_counter() - start
        self.timings.inference_s += elapsed
        return [(scores[i], None, elapsed / len(chunk)) for i in range(len(chunk))]


def labels_from_windows(views: Sequence[tuple[np.ndarray, SliceGeometry]]) -> np.ndarray:
    """Class ids at the slice's size from one window's (scores, geometry), or from the sum of several
    windows' probabilities: the one rule `edge-seg run` and `edge-seg evaluate` share.

    Several windows are summed only over the rows and columns that some window covers (beyond them
    every window says background), in place.
    """
    if len(views) == 1:
        return labels_at_slice_size(*views[0])
    height, width = views[0][1].height, views[0][1].width
    covered = [_covered(geometry) for _, geometry in views]
    box = (slice(min(r.start for r, _ in covered), max(r.stop for r, _ in covered)),
           slice(min(c.start for _, c in covered), max(c.stop for _, c in covered)))
    total = class_planes_at_slice_size(views[0][0], views[0][1], box)
    for scores, geometry in views[1:]:
        total += class_planes_at_slice_size(scores, geometry, box)
    labels = np.zeros((height, width), np.uint8)
    labels[box] = _argmax_planes(iter(total))
    return labels


def _covered(geometry: SliceGeometry) -> tuple[slice, slice]:
    """The slice rows and columns inside the window (all of them without a window)."""
    if not geometry.side:
        return slice(0, geometry.height), slice(0, geometry.width)
    return window_overlap(geometry)[2:]


def _argmax_planes(planes) -> np.ndarray:
    """argmax over class planes as a running maximum (ties keep the lower class id, as argmax does)."""
    best = np.array(next(planes))
    labels = np.zeros(best.shape, dtype=np.uint8)
    for cls, value in enumerate(planes, start=1):
        higher = value > best
        labels[higher] = cls
        np.maximum(best, value, out=best)
    return labels


def _resampled_planes(data: np.ndarray, geometry: SliceGeometry):
    """(each class plane resampled over the slice's part of the window, slice rows, slice cols), or None
    where restore_probabilities must do the work (scores not all finite, or nothing to resample).

    The same float32 bilinear arithmetic as restore_probabilities, but one class plane at a time
    (contiguous 2-D arrays), each output row interpolated from the source rows once, and only the
    rows and columns of the slice's part of the window computed.
    """
    if data.ndim != 3 or not np.isfinite(data).all():
        return None
    src_h, src_w = data.shape[:2]
    side = geometry.side or None
    out_h, out_w = (side, side) if side else (geometry.height, geometry.width)
    if (src_h, src_w) == (out_h, out_w):
        return None
    if side:
        rows, cols, slice_rows, slice_cols = window_overlap(geometry)
    else:
        rows = slice_rows = slice(0, geometry.height)
        cols = slice_cols = slice(0, geometry.width)
    y0, y1, fy = (a[rows] for a in _axis_weights(src_h, out_h))
    x0, x1, fx = (a[cols] for a in _axis_weights(src_w, out_w))
    fy, gy, gx = fy[:, None], 1 - fy[:, None], 1 - fx
    planes = np.ascontiguousarray(np.moveaxis(data, -1, 0))

    def resampled():
        for plane in planes:
            across = plane[:, x0] * gx + plane[:, x1] * fx
            yield across[y0] * gy + across[y1] * fy

    return resampled(), slice_rows, slice_cols


def class_planes_at_slice_size(scores: np.ndarray, geometry: SliceGeometry,
                               box: tuple[slice, slice] | None = None) -> np.ndarray:
    """`restore_probabilities(scores, geometry)` as (C, H, W) class planes, value for value, in a fraction of the
    time; with `box` (slice rows, slice cols) only that part of the slice."""
    data = np.asarray(scores, dtype=np.float32)
    rows_box, cols_box = box or (slice(0, geometry.height), slice(0, geometry.width))
    found = _resampled_planes(data, geometry)
    if found is None:
        return np.moveaxis(restore_probabilities(data, geometry)[rows_box, cols_box], -1, 0).copy()
    values, slice_rows, slice_cols = found
    out = np.empty((data.shape[-1], rows_box.stop - rows_box.start, cols_box.stop - cols_box.start), np.float32)
    rows = slice(slice_rows.start - rows_box.start, slice_rows.stop - rows_box.start)
    cols = slice(slice_cols.start - cols_box.start, slice_cols.stop - cols_box.start)
    if (rows.stop - rows.start, cols.stop - cols.start) != out.shape[1:]:  # outside the window: background wins
        out[...] = data.min()
        out[0] = data.max()
    for cls, value in enumerate(values):
        out[cls, rows, cols] = value
    return out


def labels_at_slice_size(scores: np.ndarray, geometry: SliceGeometry) -> np.ndarray:
    """`restore_labels(scores, geometry)`, value for value, in a third of the time: the class planes of
    `_resampled_planes` with the argmax kept as a running maximum (ties keep the lower class id, as
    argmax does). Scores that are not all finite take `restore_labels` itself (argmax's NaN rule).
    """
    data = np.asarray(scores, dtype=np.float32)
    found = _resampled_planes(data, geometry)
    if found is None:
        return restore_labels(data, geometry)
    values, slice_rows, slice_cols = found
    labels = _argmax_planes(values)
    if labels.shape == (geometry.height, geometry.width):
        return labels
    full = np.zeros((geometry.height, geometry.width), np.uint8)  # outside the window: background
    full[slice_rows, slice_cols] = labels
    return full
