"""Inference backends for exported models: ai-edge-litert, tflite-runtime, OpenVINO and onnxruntime.

Every backend takes normalised float32 slices (N, S, S, 1) and returns float32 per-class scores
(N, S, S, C); int8 quantisation of inputs and outputs happens here, so callers never see it.
The TFLite interpreters read the quantisation parameters from the model itself; OpenVINO does
not expose them, so it takes them from the model's manifest (whose sha256 ties it to the file)
and refuses a model whose tensor types disagree with the manifest.

`open_backend(path)` opens the first installed backend for the format in a fixed preference
order; `open_backend(path, "auto")` chooses by measurement (edge_runtime.backend_choice).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edge_runtime.cpu import usable_cores
from edge_runtime.native_log import native_output_to

if TYPE_CHECKING:
    from edge_runtime.manifest import Manifest, TensorSpec

BACKENDS = ("litert", "tflite-runtime", "openvino", "onnxruntime")
# Which backends can run each model format, in preference order: the first installed one is
# the default; a later one is chosen by `auto` only when it is measurably faster.
FORMAT_BACKENDS: dict[str, tuple[str, ...]] = {
    ".tflite": ("litert", "tflite-runtime", "openvino"),
    ".onnx": ("onnxruntime", "openvino"),
}
MODULES = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
}
DISTRIBUTIONS = {
    "litert": "ai-edge-litert",
    "tflite-runtime": "tflite-runtime",
    "openvino": "openvino",
    "onnxruntime": "onnxruntime",
}
_INSTALL_HINT = {
    "litert": "pip install ai-edge-litert",
    "tflite-runtime": "pip install tflite-runtime (Python <= 3.11, numpy < 2)",
    "openvino": "pip install 'edge-seg[openvino]'",
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
    return usable_cores()


def _quantization(detail: dict) -> Quantization | None:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if np.dtype(detail["dtype"]) in (np.int8, np.uint8, np.int16) and scale > 0:
        return Quantization(float(scale), int(zero_point))
    return None


def _spec_quantization(spec: TensorSpec) -> Quantization | None:
    if spec.quantized and spec.zero_point is not None and spec.scale is not None:
        return Quantization(float(spec.scale), int(spec.zero_point))
    return None


class TFLiteBackend:
    """ai-edge-litert (or legacy tflite-runtime) interpreter with explicit thread count."""

    def __init__(self, model_path: Path, module: str, threads: int) -> None:
        self.name = module
        self.threads = threads
        interpreter_module = _import_backend(module)
        try:  # the interpreter announces its XNNPACK delegate on fd 2; that line tells a user nothing
            with native_output_to(Path(os.devnull)):
                self._interpreter = interpreter_module.Interpreter(model_path=str(model_path), num_threads=threads)
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


def _import_openvino() -> Any:
    """`import openvino` without its model-conversion tool (openvino.tools.ovc, ~70 ms of imports).

    openvino/__init__.py imports ovc inside `try/except ImportError`; a None in sys.modules makes
    that import fail for the moment of our import only, so a later `import openvino.tools.ovc`
    still works.
    """
    if sys.modules.get("openvino") is not None:
        return sys.modules["openvino"]
    blocked = "openvino.tools.ovc" not in sys.modules
    if blocked:
        sys.modules["openvino.tools.ovc"] = None  # type: ignore[assignment]
    try:
        return importlib.import_module("openvino")
    finally:
        if blocked and sys.modules.get("openvino.tools.ovc", "") is None:
            del sys.modules["openvino.tools.ovc"]


@lru_cache(maxsize=1)
def _openvino_core() -> Any:
    """One OpenVINO Core per process: creating it loads the device plugins."""
    try:
        return _import_openvino().Core()
    except ImportError as exc:
        raise BackendError(f"backend 'openvino' is not installed: {_INSTALL_HINT['openvino']}") from exc


def _manifest_if_any(model_path: Path) -> Manifest | None:
    from edge_runtime.manifest import ManifestError, read_manifest

    try:
        return read_manifest(model_path)
    except ManifestError:
        return None


def _openvino_blob_dir(model_path: Path) -> Path | None:
    """Where OpenVINO may cache this model's compiled blobs: one folder per model-file sha256 and
    OpenVINO version, so a changed model or runtime never meets an old blob; None = no caching."""
    from importlib import metadata

    from edge_runtime.manifest import sha256_file
    from edge_runtime.user_cache import cache_dir

    try:
        folder = cache_dir() / f"openvino-{metadata.version('openvino')}" / sha256_file(model_path)[:16]
        folder.mkdir(parents=True, exist_ok=True)
    except (OSError, metadata.PackageNotFoundError):
        return None
    return folder


# f32 inference precision: on CPUs with bf16 (AVX512_BF16, AMX) OpenVINO would otherwise run the
# float parts of a model in bf16 and change fp32 models' masks; int8 layers stay int8 either way.
# No CPU pinning: an edge box shares its cores with a DICOM receiver and other services.
OPENVINO_CONFIG: dict[str, Any] = {
    "PERFORMANCE_HINT": "LATENCY",
    "NUM_STREAMS": 1,
    "INFERENCE_PRECISION_HINT": "f32",
    "ENABLE_CPU_PINNING": False,
}


class OpenVinoBackend:
    """OpenVINO CPU plugin: reads `.tflite` and `.onnx` directly, explicit INFERENCE_NUM_THREADS.

    int8 inputs and outputs are (de)quantised with the manifest's scale and zero point, because
    OpenVINO's converted model hides the TFLite tensor parameters.
    """

    def __init__(self, model_path: Path, threads: int, manifest: Manifest | None = None) -> None:
        self.name = "openvino"
        self.threads = threads
        core = _openvino_core()
        config = {**OPENVINO_CONFIG, "INFERENCE_NUM_THREADS": threads}
        manifest = manifest or _manifest_if_any(model_path)
        blob_dir = _openvino_blob_dir(model_path)
        try:
            # compile from the path, so a cached blob is imported without reading the model at all
            self.compiled = self._compile(core, model_path, config, blob_dir)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own GeneralFailure/OpConversionFailure
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BackendError(f"{model_path}: openvino cannot load this model ({first})") from exc
        inp, out = self.compiled.input(0), self.compiled.output(0)
        self._input_np_dtype = np.dtype(inp.get_element_type().to_dtype())
        output_np_dtype = np.dtype(out.get_element_type().to_dtype())
        self.input_dtype = self._input_np_dtype.name
        self.batch_free = True  # predict takes any batch (see predict)
        batch_dim = inp.get_partial_shape()[0]
        if batch_dim.is_static and batch_dim.get_length() != 1:
            raise BackendError(f"{model_path}: openvino needs batch 1 or a free batch, got {inp.get_partial_shape()}")
        self._input_q = self._output_q = None
        if self._input_np_dtype.kind in "iu" or output_np_dtype.kind in "iu":
            self._input_q, self._output_q = self._manifest_quantization(model_path, manifest, output_np_dtype)
        self._request = self.compiled.create_infer_request()

    @staticmethod
    def _compile(core: Any, model_path: Path, config: dict[str, Any], blob_dir: Path | None) -> Any:
        if blob_dir is not None:
            try:
                return core.compile_model(str(model_path), "CPU", {**config, "CACHE_DIR": str(blob_dir)})
            except Exception:  # an unwritable or damaged blob cache must not stop inference
                pass
        return core.compile_model(str(model_path), "CPU", config)

    def _manifest_quantization(
        self, model_path: Path, manifest: Manifest | None, output_dtype: np.dtype
    ) -> tuple[Quantization | None, Quantization | None]:
        if manifest is None:
            raise BackendError(f"{model_path}: openvino needs the manifest's int8 scale and zero point, and there is no "
                               "readable manifest beside the model")
        if not manifest.inputs or not manifest.outputs:
            raise BackendError(f"{model_path}: the manifest lists no input/output tensors")
        pairs = ((manifest.inputs[0], self._input_np_dtype, "input"), (manifest.outputs[0], output_dtype, "output"))
        for spec, dtype, role in pairs:
            if np.dtype(spec.dtype) != dtype:
                raise BackendError(f"{model_path}: openvino reads the {role} as {dtype.name}, the manifest says {spec.dtype}")
            if dtype.kind in "iu" and not spec.quantized:
                raise BackendError(f"{model_path}: {role} is {dtype.name} but the manifest has no scale/zero point")
        return _spec_quantization(manifest.inputs[0]), _spec_quantization(manifest.outputs[0])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        if self._input_q is not None:
            batch = self._input_q.quantize(batch, self._input_np_dtype)
        else:
            batch = np.ascontiguousarray(batch, dtype=self._input_np_dtype)
        self._request.infer({0: batch})
        raw = self._request.get_output_tensor(0).data  # a view into the request's buffer
        if self._output_q is not None:
            return self._output_q.dequantize(raw)
        return raw.astype(np.float32, copy=True)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Scores for any batch size, run one slice per request: with a dynamic batch OpenVINO
        re-plans at every new batch size (tens of ms), and batch 1 was no slower per slice warm."""
        batch = np.asarray(batch, dtype=np.float32)
        return np.concatenate([self._run(batch[i : i + 1]) for i in range(batch.shape[0])])


def _import_backend(name: str) -> Any:
    try:
        if name == "openvino":
            return _import_openvino()
        return importlib.import_module(MODULES.get(name, name))
    except ImportError as exc:
        raise BackendError(f"backend {name!r} is not installed: {_INSTALL_HINT[name]}") from exc


def is_installed(name: str) -> bool:
    """Whether the backend's module can be found, without importing it (cheap at start-up)."""
    top = MODULES[name].split(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):  # a module blocked as None in sys.modules, or a broken spec
        return False


def available_backends() -> list[str]:
    """Backends importable in this environment, in BACKENDS order."""
    found = []
    for name in BACKENDS:
        try:
            _import_backend(name)
        except BackendError:
            continue
        found.append(name)
    return found


def model_suffix(model_path: Path) -> str:
    suffix = Path(model_path).suffix.lower()
    if suffix not in FORMAT_BACKENDS:
        raise BackendError(f"{model_path}: unknown model format {suffix!r} (expected .tflite or .onnx)")
    return suffix


def install_hint(model_path: Path) -> str:
    """What to install so that some backend can run this model's format."""
    return "; or ".join(_INSTALL_HINT[name] for name in FORMAT_BACKENDS[model_suffix(model_path)])


def candidate_backends(model_path: Path) -> list[str]:
    """Installed backends that can run this model's format, in preference order (nothing imported)."""
    return [name for name in FORMAT_BACKENDS[model_suffix(model_path)] if is_installed(name)]


def open_named(model_path: Path, name: str, threads: int, manifest: Manifest | None = None) -> Backend:
    """Open one named backend; BackendError if it cannot run this format or is not installed."""
    suffix = model_suffix(model_path)
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose auto or one of {', '.join(BACKENDS)}")
    if name not in FORMAT_BACKENDS[suffix]:
        if suffix == ".onnx":
            raise BackendError(f"{model_path}: {name} cannot run an ONNX model; it needs the onnxruntime backend (or openvino)")
        raise BackendError(f"{model_path}: a .tflite model needs litert, tflite-runtime or openvino, not {name}")
    if name == "onnxruntime":
        return OnnxBackend(model_path, threads)
    if name == "openvino":
        return OpenVinoBackend(model_path, threads, manifest)
    return TFLiteBackend(model_path, name, threads)


def check_threads(threads: int | None) -> int:
    threads = threads or default_threads()
    if threads < 1:
        raise BackendError(f"threads must be >= 1, got {threads}")
    return threads


def open_backend(
    model_path: Path, backend: str | None = None, threads: int | None = None, manifest: Manifest | None = None
) -> Backend:
    """Open `model_path` with the named backend, `auto` (measured, see backend_choice), or by default
    the first installed backend for its format: `.tflite` -> ai-edge-litert, tflite-runtime,
    openvino; `.onnx` -> onnxruntime, openvino.
    """
    model_path = Path(model_path)
    threads = check_threads(threads)
    model_suffix(model_path)
    if backend == "auto":
        from edge_runtime.backend_choice import open_auto

        return open_auto(model_path, threads, manifest)[0]
    if backend is not None:
        return open_named(model_path, backend, threads, manifest)
    errors = []
    for name in FORMAT_BACKENDS[model_suffix(model_path)]:
        try:
            return open_named(model_path, name, threads, manifest)
        except BackendError as exc:
            if "is not installed" not in str(exc):
                raise
            errors.append(str(exc))
    raise BackendError("; ".join(errors))
