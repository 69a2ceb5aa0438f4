"""Keras -> ONNX with tf2onnx (opset 17, free batch), and static int8 QDQ quantisation with onnxruntime."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edge_runtime.manifest import TensorSpec

OPSET = 17
INPUT_NAME = "image"


class OnnxExportError(RuntimeError):
    """tf2onnx, the ONNX checker or the quantiser failed."""


def convert_onnx(model, path: Path, opset: int = OPSET) -> None:
    """Write `model` as ONNX to `path`: explicit input signature (batch free), checked by onnx.checker."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    shape = (None, *model.input_shape[1:])
    signature = [tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)]
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
        replace_deprecated_resize(proto)
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:  # tf2onnx and onnx raise assorted types
        raise OnnxExportError(f"ONNX conversion failed: {exc}") from exc
    onnx.save(proto, str(path))


def replace_deprecated_resize(proto) -> int:
    """Rewrite tf2onnx's nearest Resize from `tf_half_pixel_for_nn` (deprecated since opset 13,
    onnxruntime warns on every session) to the equivalent `asymmetric` mode; returns how many.

    For an integer scale s and nearest_mode floor both map output x = s*k + j (0 <= j < s) to
    input k: floor((x + 0.5) / s) == floor(x / s). Other scales are left untouched.
    """
    from onnx import helper, numpy_helper

    initializers = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    changed = 0
    for node in proto.graph.node:
        if node.op_type != "Resize":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        scales = initializers.get(node.input[2]) if len(node.input) > 2 else None
        if (
            attrs.get("coordinate_transformation_mode") != b"tf_half_pixel_for_nn"
            or attrs.get("mode") != b"nearest"
            or attrs.get("nearest_mode", b"round_prefer_floor") != b"floor"
            or scales is None
            or scales.size == 0
            or not np.all((scales >= 1) & (scales == np.round(scales)))
        ):
            continue
        for attr in node.attribute:
            if attr.name == "coordinate_transformation_mode":
                attr.s = b"asymmetric"
        changed += 1
    return changed


class _SliceReader:
    """onnxruntime CalibrationDataReader over (N, S, S, 1) slices, one slice per call."""

    def __init__(self, input_name: str, slices: np.ndarray) -> None:
        self._input_name = input_name
        self._slices = np.asarray(slices, dtype=np.float32)
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self._slices):
            return None
        item = self._slices[self._next : self._next + 1]
        self._next += 1
        return {self._input_name: item}

    def rewind(self) -> None:
        self._next = 0


def quantize_onnx(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    """Static int8 quantisation in QDQ format, per-channel weights, MinMax-calibrated on `calibration`.

    The float graph is first pre-processed (ONNX shape inference + graph optimisation) as
    onnxruntime recommends; symbolic shape inference is skipped because every dimension except
    the batch is static.
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration is None or len(calibration) == 0:
        raise ValueError("onnx int8 quantisation needs calibration slices")
    reader_type = type("SliceReader", (_SliceReader, CalibrationDataReader), {})
    with tempfile.TemporaryDirectory(prefix="edge-seg-onnx-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            input_name = onnx.load(str(prepared)).graph.input[0].name
            quantize_static(
                str(prepared),
                str(out_path),
                reader_type(input_name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
            )
            onnx.checker.check_model(str(out_path))
        except Exception as exc:  # onnxruntime.quantization raises assorted types
            raise OnnxExportError(f"ONNX int8 quantisation failed: {exc}") from exc


def _dims(value_info) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [int(d.dim_value) if d.HasField("dim_value") else None for d in dims]


def onnx_tensor_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs and outputs (QDQ models keep float32 interfaces: no scale/zero point)."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path)).graph
    initializers = {i.name for i in graph.initializer}

    def spec(value_info) -> TensorSpec:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)).name
        return TensorSpec(value_info.name, _dims(value_info), dtype)

    return [spec(v) for v in graph.input if v.name not in initializers], [spec(v) for v in graph.output]
