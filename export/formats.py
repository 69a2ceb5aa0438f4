"""The export format table: name -> file kind, precision, whether calibration data is needed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge_runtime.precision import Precision


class ExportInputError(ValueError):
    """Bad input to an export: unknown format, unusable model, missing or wrong calibration data."""


@dataclass(frozen=True)
class ExportFormat:
    """One artefact kind that `edge-seg export` can write."""

    name: str
    kind: str  # "tflite" | "onnx" (also the file suffix)
    precision: Precision  # manifest precision
    calibrated: bool  # needs representative data (unless the model is quantisation-aware trained)

    @property
    def suffix(self) -> str:
        return f".{self.kind}"

    @property
    def is_float(self) -> bool:
        """Float artefacts must reproduce the Keras model (the float gate)."""
        return self.precision.is_float


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("tflite-fp32", "tflite", Precision.FP32, calibrated=False),
        ExportFormat("tflite-fp16", "tflite", Precision.FP16, calibrated=False),
        ExportFormat("tflite-dynamic", "tflite", Precision.DYNAMIC_INT8, calibrated=False),
        ExportFormat("tflite-int8", "tflite", Precision.INT8, calibrated=True),
        ExportFormat("onnx-fp32", "onnx", Precision.FP32, calibrated=False),
        ExportFormat("onnx-int8", "onnx", Precision.INT8, calibrated=True),
    )
}

# A quantisation-aware-trained model carries its own int8 ranges; TFLite turns them into a full-integer
# model. (tf2onnx keeps its BatchNorm and fake-quant ops unfused, so no ONNX path for QAT models.)
QAT_FORMATS = ("tflite-int8",)


def parse_formats(formats: str | Iterable[str], qat: bool = False) -> list[ExportFormat]:
    """Format names (a comma list, an iterable, or "all") -> ExportFormat list, in order.

    "all" means every format the model supports (for a QAT model: the int8 ones). Raises
    ExportInputError naming an unknown format or one a QAT model cannot produce.
    """
    names = [n.strip() for n in formats.split(",")] if isinstance(formats, str) else [str(n).strip() for n in formats]
    names = [n for n in names if n]
    if not names:
        raise ExportInputError("no export format given; choose 'all' or from: " + ", ".join(FORMATS))
    if names == ["all"]:
        names = list(QAT_FORMATS) if qat else list(FORMATS)
    unknown = [n for n in names if n not in FORMATS]
    if unknown:
        raise ExportInputError(f"unknown export format {unknown[0]!r}; choose 'all' or from: {', '.join(FORMATS)}")
    if qat:
        unsupported = [n for n in names if n not in QAT_FORMATS]
        if unsupported:
            raise ExportInputError(
                f"format {unsupported[0]!r} is not available for a quantisation-aware-trained model; "
                f"it exports to {', '.join(QAT_FORMATS)} only"
            )
    return [FORMATS[n] for n in dict.fromkeys(names)]
