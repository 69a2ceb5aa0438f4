"""Keras -> TFLite: fp32, fp16, dynamic-range and full-integer int8 (calibrated or from a QAT model)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import numpy as np

from edge_runtime.manifest import TensorSpec
from edge_runtime.precision import Precision
from export.model_io import is_qat_model

PRECISIONS = (Precision.FP32, Precision.FP16, Precision.DYNAMIC_INT8, Precision.INT8)


class ConversionError(RuntimeError):
    """The converter failed or produced a model the runtime could not use as intended."""


def _representative(calibration: np.ndarray):
    def generate() -> Iterator[list[np.ndarray]]:
        for i in range(calibration.shape[0]):
            yield [calibration[i : i + 1].astype(np.float32)]

    return generate


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """The converter's C++ quantiser prints progress to fd 1; keep stdout for command output."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def convert_tflite(model, precision: str, calibration: np.ndarray | None = None) -> bytes:
    """Convert a tf_keras model to a TFLite flatbuffer at `precision`.

    int8 is full-integer (int8 input and output tensors, TFLITE_BUILTINS_INT8 only, so the
    converter fails rather than leaving float ops): a QAT model brings its own ranges, any other
    model needs `calibration` (N, S, S, 1) float32 slices from the training split. The batch
    dimension stays free (-1) so the runtime can batch slices.
    """
    import tensorflow as tf

    if precision not in PRECISIONS:
        raise ValueError(f"unknown TFLite precision {precision!r}; choose one of {[str(p) for p in PRECISIONS]}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == Precision.FP16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == Precision.DYNAMIC_INT8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == Precision.INT8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not is_qat_model(model):
            if calibration is None or len(calibration) == 0:
                raise ValueError("full-integer int8 needs calibration slices (or a quantisation-aware-trained model)")
            converter.representative_dataset = _representative(calibration)
            # Builtin int8 kernels only: the converter fails rather than keep a float op. (Setting
            # this for a QAT model trips a TF check that wants representative data; its float-op
            # freedom is verified from the converted graph instead, see graph_ops.)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with _native_stdout_to_stderr():
            content = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
        raise ConversionError(f"TFLite {precision} conversion failed: {exc}") from exc
    inputs, outputs = tflite_tensor_specs(content)
    if inputs[0].shape[0] is not None:
        raise ConversionError(f"TFLite {precision}: batch dimension is fixed to {inputs[0].shape[0]}, expected free (-1)")
    if precision == "int8" and (inputs[0].dtype, outputs[0].dtype) != ("int8", "int8"):
        raise ConversionError(f"TFLite int8: input/output are {inputs[0].dtype}/{outputs[0].dtype}, expected int8/int8")
    return content


def _interpreter(content: bytes):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the XNNPACK delegate, so tensors and ops are reported as stored in the file.
    return Interpreter(model_content=content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def _spec(detail: dict) -> TensorSpec:
    signature = detail.get("shape_signature", detail["shape"])
    shape = [None if int(d) == -1 else int(d) for d in signature]
    dtype = np.dtype(detail["dtype"]).name
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if scale and scale > 0:
        return TensorSpec(detail["name"], shape, dtype, float(scale), int(zero_point))
    return TensorSpec(detail["name"], shape, dtype)


def tflite_tensor_specs(content: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output tensor specs (shape signature, dtype, int8 scale/zero point) of a flatbuffer."""
    interpreter = _interpreter(content)
    return (
        [_spec(d) for d in interpreter.get_input_details()],
        [_spec(d) for d in interpreter.get_output_details()],
    )
