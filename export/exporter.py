"""Convert a Keras model to TFLite/ONNX artefacts, gate each one, and move only passing ones into place.

`export_model` is the library entry point; `edge-seg export` (export.command) resolves a run
folder, its calibration and validation slices, and calls it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import __version__
from edge_runtime.labels import CLASSES
from edge_runtime.manifest import Manifest, TensorSpec, gzip_size, manifest_path, sha256_file, write_manifest
from edge_runtime.native_log import native_output_to
from edge_runtime.precision import Precision
from edge_runtime.preprocessing import PreprocessSpec
from export.calibration import CalibrationSet, as_calibration
from export.formats import ExportFormat, ExportInputError, parse_formats
from export.graph_ops import OpReport, onnx_ops, tflite_ops
from export.model_io import is_qat_model
from export.validate import ValidationReport, ValidationSet, predict_keras, validate_artefact
from train.provenance import git_state

_SYNTHETIC_SLICES = 4


class ExportGateError(RuntimeError):
    """At least one artefact failed conversion or its validation gate; nothing of it was written."""

    def __init__(self, results: list[ExportResult]) -> None:
        self.results = results
        failed = [r for r in results if not r.passed]
        super().__init__("; ".join(f"{r.format}: {r.error}" if r.error else r.validation.summary() for r in failed))


@dataclass
class ExportResult:
    """One artefact: where it is (None if it failed), its size, ops, validation and timings."""

    format: str
    path: Path | None
    manifest_path: Path | None
    passed: bool
    size_bytes: int = 0
    gzip_bytes: int = 0
    convert_seconds: float = 0.0
    validate_seconds: float = 0.0
    ops: OpReport | None = None
    validation: ValidationReport | None = None
    error: str | None = None
    removed_stale: list[str] = field(default_factory=list)  # older files of this name removed on failure

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": str(self.path) if self.path else None,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "passed": self.passed,
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "convert_seconds": round(self.convert_seconds, 3),
            "validate_seconds": round(self.validate_seconds, 3),
            "ops": self.ops.to_dict() if self.ops else None,
            "validation": self.validation.to_dict() if self.validation else None,
            "error": self.error,
            "removed_stale": self.removed_stale,
        }


def _synthetic_validation(input_size: int) -> ValidationSet:
    rng = np.random.default_rng(0)
    images = rng.random((_SYNTHETIC_SLICES, input_size, input_size, 1), dtype=np.float32)
    return ValidationSet(images, None, "synthetic uniform noise (no held-out data given)", held_out=False)


def check_model(model, spec: PreprocessSpec) -> None:
    """Refuse (ExportInputError) a model whose input is not (None, S, S, 1) for the spec's S."""
    shape = tuple(getattr(model, "input_shape", ()) or ())
    if len(shape) != 4 or shape[1:] != (spec.input_size, spec.input_size, 1):
        raise ExportInputError(
            f"model input shape {shape} does not match the preprocessing spec: expected "
            f"(None, {spec.input_size}, {spec.input_size}, 1)"
        )


def _macs(model, macs: int | dict | None) -> int | None:
    if isinstance(macs, dict):
        return int(macs["total"])
    if macs is not None:
        return int(macs)
    if is_qat_model(model):  # wrapped layers hide their shapes from count_macs
        return None
    from train.models import count_macs

    return int(count_macs(model)["total"])


class _Converter:
    """Writes one format's artefact into a scratch folder; keeps the fp32 ONNX for onnx-int8."""

    def __init__(self, model, scratch: Path, calibration: CalibrationSet | None) -> None:
        self.model = model
        self.scratch = scratch
        self.calibration = calibration
        self._onnx_fp32: Path | None = None
        self._onnx_fp32_seconds = 0.0

    def _float_onnx(self) -> Path:
        from export.onnx_export import convert_onnx

        if self._onnx_fp32 is None:
            start = time.perf_counter()
            path = self.scratch / "float.onnx"
            convert_onnx(self.model, path)
            self._onnx_fp32, self._onnx_fp32_seconds = path, time.perf_counter() - start
        return self._onnx_fp32

    def convert(self, fmt: ExportFormat, target: Path) -> tuple[OpReport, float]:
        """(ops, seconds); ONNX artefacts count the shared float conversion even when it is reused."""
        images = self.calibration.images if self.calibration is not None else None
        start = time.perf_counter()
        if fmt.kind == "tflite":
            from export.tflite import convert_tflite

            target.write_bytes(convert_tflite(self.model, fmt.precision, images))
            return tflite_ops(target), time.perf_counter() - start
        reused = self._onnx_fp32 is not None
        if fmt.precision == Precision.FP32:
            target.write_bytes(self._float_onnx().read_bytes())
        else:
            from export.onnx_export import quantize_onnx

            quantize_onnx(self._float_onnx(), target, images)
        seconds = time.perf_counter() - start + (self._onnx_fp32_seconds if reused else 0.0)
        return onnx_ops(target), seconds


def _tensor_specs(fmt: ExportFormat, path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    if fmt.kind == "tflite":
        from export.tflite import tflite_tensor_specs

        return tflite_tensor_specs(path.read_bytes())
    from export.onnx_export import onnx_tensor_specs

    return onnx_tensor_specs(path)


def export_model(
    model,
    out: Path,
    formats: str | list[str],
    spec: PreprocessSpec,
    calibration: np.ndarray | CalibrationSet | None = None,
    validation: ValidationSet | None = None,
    name: str = "model",
    provenance: dict[str, Any] | None = None,
    baseline_metrics: dict[str, Any] | None = None,
    macs: int | dict | None = None,
    threads: int | None = None,
    log: Path | None = None,
) -> list[ExportResult]:
    """Export `model` to each format as `<out>/<name>-<format>.<tflite|onnx>` plus its manifest.

    Each artefact is converted in a scratch folder, run through the edge runtime on the
    validation slices and compared with the Keras model by its row of the tolerance table
    (edge_runtime.tolerances); only an artefact that passes is moved into `out` (model file, then
    manifest). A format that fails leaves no file of its name: an older artefact and manifest
    from an earlier export are removed, so nothing stale can be mistaken for this export.
    Without `validation`, the calibration slices (or, lacking those, a few synthetic noise
    slices) are used and the manifest says so. `provenance` may carry "pruned": True, which
    selects the pruned gate. Native converter output goes to `log` when given.

    Raises ExportInputError for bad input (before anything is written) and ExportGateError,
    carrying every result, when any artefact failed; the passing ones are in place.
    """
    out = Path(out)
    qat = is_qat_model(model)
    fmts = parse_formats(formats, qat=qat)
    check_model(model, spec)
    if not name or "/" in name or name.startswith("."):
        raise ExportInputError(f"artefact name {name!r} must be a plain file-name stem")
    needs_calibration = [f.name for f in fmts if f.calibrated and not qat]
    cal = as_calibration(calibration, spec.input_size) if calibration is not None else None
    if needs_calibration and cal is None:
        raise ExportInputError(f"{', '.join(needs_calibration)} need calibration slices from the training split")
    if validation is None:
        validation = (
            ValidationSet(cal.images, None, f"calibration slices ({cal.source}); not held out", held_out=False)
            if cal is not None
            else _synthetic_validation(spec.input_size)
        )
    if validation.images.shape[1:] != (spec.input_size, spec.input_size, 1):
        raise ExportInputError(f"validation slices {validation.images.shape} do not fit the model input {spec.input_size}")

    provenance = dict(provenance or {})
    pruned = bool(provenance.get("pruned"))
    common_provenance = {
        **provenance,
        **git_state(),
        "exported_by": f"edge-seg {__version__} export",
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quantization_aware": qat,
    }
    macs_per_slice = _macs(model, macs)
    keras_scores = predict_keras(model, validation.images)

    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out) as scratch_name:
        scratch = Path(scratch_name)
        converter = _Converter(model, scratch, cal)
        for fmt in fmts:
            final = out / f"{name}-{fmt.name}{fmt.suffix}"
            with native_output_to(log) if log is not None else contextlib.nullcontext():
                result = _export_one(
                    fmt, converter, scratch, final, spec, validation, keras_scores,
                    name=name, pruned=pruned, threads=threads,
                    provenance={
                        **common_provenance,
                        "calibration": cal.describe() if (cal is not None and fmt.calibrated and not qat) else None,
                    },
                    baseline_metrics=baseline_metrics or {}, macs=macs_per_slice,
                )  # fmt: skip
            if not result.passed:
                result.removed_stale = remove_artefact(final)
            results.append(result)
    if not all(r.passed for r in results):
        raise ExportGateError(results)
    return results


def _export_one(
    fmt: ExportFormat,
    converter: _Converter,
    scratch: Path,
    final: Path,
    spec: PreprocessSpec,
    validation: ValidationSet,
    keras_scores: np.ndarray,
    *,
    name: str,
    pruned: bool,
    threads: int | None,
    provenance: dict[str, Any],
    baseline_metrics: dict[str, Any],
    macs: int | None,
) -> ExportResult:
    from edge_runtime.backends import BackendError
    from export.onnx_export import OnnxExportError
    from export.tflite import ConversionError

    tmp = scratch / final.name
    start = time.perf_counter()
    try:
        ops, convert_seconds = converter.convert(fmt, tmp)
    except (ConversionError, OnnxExportError, ValueError) as exc:
        return ExportResult(fmt.name, None, None, False, convert_seconds=time.perf_counter() - start, error=str(exc))
    converted = time.perf_counter()
    result = ExportResult(
        fmt.name, None, None, False, size_bytes=tmp.stat().st_size, gzip_bytes=gzip_size(tmp),
        convert_seconds=convert_seconds, ops=ops,
    )  # fmt: skip
    try:
        report = validate_artefact(tmp, fmt, keras_scores, validation, pruned=pruned, threads=threads)
    except (BackendError, ValueError) as exc:
        result.error = f"the edge runtime cannot run it: {exc}"
        return result
    result.validate_seconds = time.perf_counter() - converted
    result.validation = report
    if fmt.kind == "tflite" and fmt.precision == Precision.INT8 and ops.float_ops:
        result.error = f"int8 model still has float compute ops {ops.float_ops}"
        return result
    if not report.passed:
        return result
    inputs, outputs = _tensor_specs(fmt, tmp)
    manifest = Manifest(
        model_file=final.name,
        format=fmt.kind,
        precision=fmt.precision,
        sha256=sha256_file(tmp),
        inputs=inputs,
        outputs=outputs,
        preprocessing=spec,
        name=name,
        variant=fmt.name,
        provenance=provenance,
        baseline_metrics=baseline_metrics,
        metrics={
            "mean_dice": float(np.mean([report.dice_artefact[c.short] for c in CLASSES[1:]])),
            "per_class_dice": report.dice_artefact,
            "reference": report.reference,
            "slices": report.slices,
            "source": report.source,
        },
        validation={**report.to_dict(), "float_ops": ops.float_ops},
        size_bytes=result.size_bytes,
        gzip_bytes=result.gzip_bytes,
        macs_per_slice=macs,
        ops=ops.ops,
    )
    manifest_path(final).unlink(missing_ok=True)  # never an old manifest beside the new model
    os.replace(tmp, final)
    result.path, result.manifest_path, result.passed = final, write_manifest(manifest, final), True
    return result


def remove_artefact(final: Path) -> list[str]:
    """Delete `final` and its manifest if an earlier export left them; returns the names removed."""
    removed = []
    for path in (manifest_path(final), final):
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    return removed


def __getattr__(name: str):
    """`export_command` moved to export.command; importing it from here still works."""
    if name == "export_command":
        from export.command import export_command

        return export_command
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
