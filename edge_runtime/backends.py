"""Inference backends for exported models: ai-edge-litert, tflite-runtime and onnxruntime.

Every backend takes normalised float32 slices (N, S, S, 1) and returns float32 per-class scores
(N, S, S, C); int8 quantisation of inputs and outputs happens here, from the model's own
tensor parameters, so callers never see it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

BACKENDS = ("litert", "tflite-runtime", "onnxruntime")
_INSTALL_HINT = {
    "litert": "pip install ai-edge-litert",
    "tflite-runtime": "pip install tflite-runtime (Python <= 3.11, numpy < 2)",
    "onnxruntime": "pip install 'edge-seg[onnx]'",
}


class BackendError(RuntimeError):
    """A backend is not installed, cannot load the model, or the model is unusable."""


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int

    def quantize(self, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
        info = np.iinfo(dtype)
        q = np.round(values / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(dtype)

    def dequantize(self, values: np.ndarray) -> np.ndarray:
        return (values.astype(np.float32) - self.zero_point) * np.float32(self.scale)


class Backend(Protocol):
    """What the runtime needs from an interpreter."""

    name: str
    threads: int
    input_dtype: str
    batch_free: bool

    def predict(self, batch: np.ndarray) -> np.ndarray: ...


def default_threads() -> int:
    """Cores this process may use (respects CPU affinity, e.g. in containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _quantization(detail: dict) -> Quantization | None:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]) in (np.int8, np.uint8, np.int16) and scale > 0:
        return Quantization(float(scale), int(zero_point))
    return None


class TFLiteBackend:
    """ai-edge-litert (or legacy tflite-runtime) interpreter with explicit thread count."""

    def __init__(self, model_path: Path, module: str, threads: int) -> None:
        self.name = module
        self.threads = threads
        interpreter_module = _import_backend(module)
        try:
            self._interpreter = interpreter_module.Interpreter(
                model_path=str(model_path), num_threads=threads
            )
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"{model_path}: {module} cannot load this model ({exc})") from exc
        inp = self._interpreter.get_input_details()[0]
        out = self._interpreter.get_output_details()[0]
        self._input_index, self._output_index = inp["index"], out["index"]
        self._input_q, self._output_q = _quantization(inp), _quantization(out)
        self._input_np_dtype = np.dtype(inp["dtype"])
        self.input_dtype = self._input_np_dtype.name
        signature = inp.get("shape_signature", inp["shape"])
        self.batch_free = len(signature) > 0 and int(signature[0]) == -1
        self._batch = int(inp["shape"][0])

    def _prepare_input(self, batch: np.ndarray) -> np.ndarray:
        if self._input_q is not None:
            return self._input_q.quantize(batch, self._input_np_dtype)
        return batch.astype(self._input_np_dtype)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if batch.shape[0] != self._batch:
            self._interpreter.resize_tensor_input(self._input_index, list(batch.shape))
            self._interpreter.allocate_tensors()
            self._batch = batch.shape[0]
        self._interpreter.set_tensor(self._input_index, self._prepare_input(batch))
        self._interpreter.invoke()
        raw = self._interpreter.get_tensor(self._output_index)
        if self._output_q is not None:
            return self._output_q.dequantize(raw)
        return raw.astype(np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if self.batch_free:
            return self._run(batch)
        return np.concatenate([self._run(batch[i : i + 1]) for i in range(batch.shape[0])])


class OnnxBackend:
    """onnxruntime CPU session with explicit intra-op threads."""

    def __init__(self, model_path: Path, threads: int) -> None:
        self.name = "onnxruntime"
        self.threads = threads
        ort = _import_backend("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise BackendError(f"{model_path}: onnxruntime cannot load this model ({exc})") from exc
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self.input_dtype = "float32"
        self.batch_free = not isinstance(inp.shape[0], int)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if self.batch_free:
            return self._session.run(None, {self._input_name: batch})[0].astype(np.float32)
        outs = [self._session.run(None, {self._input_name: batch[i : i + 1]})[0] for i in range(len(batch))]
        return np.concatenate(outs).astype(np.float32)


def _import_backend(name: str):
    module = {"litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter"}.get(
        name, name
    )
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not installed: {_INSTALL_HINT[name]}") from exc


def available_backends() -> list[str]:
    """Backends importable in this environment, in preference order."""
    found = []
    for name in BACKENDS:
        try:
            _import_backend(name)
        except BackendError:
            continue
        found.append(name)
    return found


def open_backend(model_path: Path, backend: str = "auto", threads: int | None = None) -> Backend:
    """Open `model_path` with the named backend, or the first installed one that fits its format.

    `.tflite` -> ai-edge-litert, else tflite-runtime; `.onnx` -> onnxruntime.
    """
    model_path = Path(model_path)
    threads = threads or default_threads()
    if threads < 1:
        raise BackendError(f"threads must be >= 1, got {threads}")
    suffix = model_path.suffix.lower()
    if suffix not in (".tflite", ".onnx"):
        raise BackendError(f"{model_path}: unknown model format {suffix!r} (expected .tflite or .onnx)")
    if backend not in ("auto", *BACKENDS):
        raise BackendError(f"unknown backend {backend!r}; choose auto or one of {', '.join(BACKENDS)}")
    if suffix == ".onnx":
        if backend not in ("auto", "onnxruntime"):
            raise BackendError(f"{model_path}: an ONNX model needs the onnxruntime backend, not {backend}")
        return OnnxBackend(model_path, threads)
    if backend == "onnxruntime":
        raise BackendError(f"{model_path}: a .tflite model needs litert or tflite-runtime, not onnxruntime")
    candidates = [backend] if backend != "auto" else ["litert", "tflite-runtime"]
    errors = []
    for name in candidates:
        try:
            return TFLiteBackend(model_path, name, threads)
        except BackendError as exc:
            if "is not installed" not in str(exc):
                raise
            errors.append(str(exc))
    raise BackendError("; ".join(errors))
