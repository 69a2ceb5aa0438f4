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
from edge_runtime.preprocessing import SliceGeometry, prepare_slice, restore_labels


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
    and thread count); `choice` says which one runs and why, for info and report.json.
    """

    def __init__(self, model_path: Path, backend: str = "auto", threads: int | None = None, batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = time.perf_counter()
        self.model_path = Path(model_path)
        self.manifest: Manifest = load_verified_manifest(self.model_path)
        out_shape = self.manifest.outputs[0].shape if self.manifest.outputs else []
        if not out_shape or out_shape[-1] != NUM_CLASSES:
            raise ManifestError(f"{self.model_path}: output shape {out_shape} does not end in {NUM_CLASSES} classes")
        self.spec = self.manifest.preprocessing
        threads = check_threads(threads)
        self.backend: Backend
        self.choice: BackendChoice
        if backend == "auto":
            self.backend, self.choice = open_auto(self.model_path, threads, self.manifest)
        else:
            self.backend = open_backend(self.model_path, backend, threads, self.manifest)
            self.choice = BackendChoice(backend, threads, backend, "explicit", f"--backend {backend} was given")
        self.batch_size = batch_size if self.backend.batch_free else 1
        self.timings = Timings(load_s=time.perf_counter() - start)

    def segment(self, images: Sequence[np.ndarray | None]) -> list[SliceResult]:
        """Masks for `images` in order; a slice that fails (or is None) gets an error, never stops the rest."""
        results: list[SliceResult] = [SliceResult(None, "no pixels") for _ in images]
        prepared: list[tuple[int, np.ndarray, SliceGeometry]] = []
        start = time.perf_counter()
        for index, image in enumerate(images):
            if image is None:
                continue
            try:
                tensor, geometry = prepare_slice(image, self.spec)
            except (ValueError, TypeError) as exc:
                results[index] = SliceResult(None, f"preprocessing failed ({exc})")
                continue
            prepared.append((index, tensor, geometry))
        self.timings.preprocess_s += time.perf_counter() - start
        for offset in range(0, len(prepared), self.batch_size):
            chunk = prepared[offset : offset + self.batch_size]
            for (index, _, _), result in zip(chunk, self._predict_chunk(chunk), strict=True):
                results[index] = result
        return results

    def _predict_chunk(self, chunk: list[tuple[int, np.ndarray, SliceGeometry]]) -> list[SliceResult]:
        batch = np.stack([tensor for _, tensor, _ in chunk])[..., None]
        start = time.perf_counter()
        try:
            scores = self.backend.predict(batch)
        except Exception as exc:  # interpreters raise RuntimeError/ValueError/their own types
            if len(chunk) == 1:
                return [SliceResult(None, f"inference failed ({type(exc).__name__}: {exc})")]
            return [result for item in chunk for result in self._predict_chunk([item])]
        elapsed = time.perf_counter() - start
        self.timings.inference_s += elapsed
        self.timings.slices += len(chunk)
        start = time.perf_counter()
        results = [
            SliceResult(restore_labels(scores[i], geometry), None, elapsed / len(chunk))
            for i, (_, _, geometry) in enumerate(chunk)
        ]
        self.timings.postprocess_s += time.perf_counter() - start
        return results
