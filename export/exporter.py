"""`edge-seg export`: convert a Keras model to TFLite/ONNX artefacts, validate each, write manifests."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import __version__
from edge_runtime.labels import CLASSES
from edge_runtime.manifest import Manifest, TensorSpec, gzip_size, sha256_file, write_manifest
from edge_runtime.preprocessing import PreprocessSpec
from export.calibration import CalibrationSet, as_calibration, calibration_slices
from export.formats import ExportFormat, ExportInputError, parse_formats
from export.graph_ops import OpReport, onnx_ops, tflite_ops
from export.model_io import is_qat_model, load_keras_model, run_model_file
from export.validate import ValidationReport, ValidationSet, held_out_validation_set, predict_keras, validate_artefact
from train.provenance import git_state

_SYNTHETIC_SLICES = 4


class ExportGateError(RuntimeError):
    """At least one artefact failed conversion or its validation gate; nothing of it was written."""

    def __init__(self, results: list[ExportResult]) -> None:
        self.results = results
        failed = [r for r in results if not r.passed]
        super().__init__("; ".join(f"{r.format}: {r.error or r.validation.summary()}" for r in failed))


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
        }


def _synthetic_validation(input_size: int) -> ValidationSet:
    rng = np.random.default_rng(0)
    images = rng.random((_SYNTHETIC_SLICES, input_size, input_size, 1), dtype=np.float32)
    return ValidationSet(images, None, "synthetic uniform noise (no held-out data given)", held_out=False)


def _check_model(model, spec: PreprocessSpec) -> None:
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
        if fmt.precision == "fp32":
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
) -> list[ExportResult]:
    """Export `model` to each format as `<out>/<name>-<format>.<tflite|onnx>` plus its manifest.

    Each artefact is converted in a scratch folder, run through the edge runtime on the
    validation slices and compared with the Keras model; only an artefact that passes its gate
    is moved into `out` (model file, then manifest). Without `validation`, the calibration slices
    (or, lacking those, a few synthetic noise slices) are used and the manifest says so.
    `provenance` may carry "pruned": True, which loosens the int8 mean tolerance to 0.02.

    Raises ExportInputError for bad input (before anything is written) and ExportGateError,
    carrying every result, when any artefact failed; the passing ones are still in place.
    """
    out = Path(out)
    qat = is_qat_model(model)
    fmts = parse_formats(formats, qat=qat)
    _check_model(model, spec)
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
            results.append(
                _export_one(
                    fmt, converter, scratch, out / f"{name}-{fmt.name}{fmt.suffix}", spec, validation, keras_scores,
                    name=name, pruned=pruned, threads=threads,
                    provenance={
                        **common_provenance,
                        "calibration": cal.describe() if (cal is not None and fmt.calibrated and not qat) else None,
                    },
                    baseline_metrics=baseline_metrics or {}, macs=macs_per_slice,
                )
            )  # fmt: skip
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
    if fmt.kind == "tflite" and fmt.precision == "int8" and ops.float_ops:
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
    os.replace(tmp, final)
    result.path, result.manifest_path, result.passed = final, write_manifest(manifest, final), True
    return result


VALIDATION_SLICES = 64


@dataclass
class ExportSource:
    """A model to export with everything known about it: spec, run folder, config, float baseline."""

    model: Any
    path: Path
    spec: PreprocessSpec
    run: Any  # train.run_dir.RunDir or None
    config: dict[str, Any]
    name: str


def resolve_source(model_or_run: Path) -> ExportSource:
    """Load a run folder, a run's model file, or a bare .keras/.h5 model, refusing anything else."""
    from train.run_dir import RunDir, RunDirError

    path = Path(model_or_run)
    if not path.exists():
        raise ExportInputError(f"{path}: no such model file or run folder")
    try:
        if path.is_dir():
            run = RunDir(path)
            if not run.is_run():
                raise ExportInputError(f"{path}: not a run folder (no config.json) and not a Keras model")
            model_path = run_model_file(run)
        else:
            model_path = path
            run = RunDir(path.parent)
            run = run if run.is_run() and run_model_file(run).resolve() == path.resolve() else None
        model = load_keras_model(model_path)
        config = run.config() if run is not None else {}
        size = (getattr(model, "input_shape", None) or (None, 0))[1]
        spec = run.spec() if run is not None else PreprocessSpec(input_size=int(size or 0))
    except RunDirError as exc:
        raise ExportInputError(str(exc)) from exc
    name = (run.path.resolve().name if run is not None else model_path.stem) or "model"
    return ExportSource(model, model_path, spec, run, config, name)


def _baseline(run) -> dict[str, Any]:
    """The run's float metrics without the per-patient detail (kept in metrics.json)."""
    if run is None or not (run.path / "metrics.json").is_file():
        return {}
    metrics = run.metrics()
    keep = ("split", "n_slices", "mean_dice", "mean_iou", "per_class")
    return {k: metrics[k] for k in keep if k in metrics} | {"patients": len(metrics.get("patients", []))}


def _provenance(source: ExportSource) -> dict[str, Any]:
    config = source.config
    optimization = config.get("optimization") or {}
    return {
        "recipe": {k: config[k] for k in ("arch", "encoder", "image_size", "base_filters", "epochs", "lr") if k in config},
        "data": config.get("data"),
        "modality": config.get("modality"),
        "seed": config.get("seed"),
        "training": config.get("provenance"),
        "optimization": optimization or None,
        "pruned": bool(optimization.get("prune")),
        "source_model": str(source.path.resolve()),
        "source_sha256": sha256_file(source.path),
    }


def _data_folder(source: ExportSource, calibration_data: Path | None) -> Path | None:
    if calibration_data is not None:
        return Path(calibration_data)
    data = source.config.get("data")
    return Path(data) if data and Path(data).is_dir() else None


def export_command(
    model_or_run: Path,
    out: Path,
    formats: str = "all",
    calibration_data: Path | None = None,
    calibration_samples: int = 64,
    name: str | None = None,
    validation_slices: int = VALIDATION_SLICES,
    threads: int | None = None,
) -> list[ExportResult]:
    """`edge-seg export`: bad input -> one line on stderr, exit 2; a failed gate -> the numbers, exit 1.

    Calibration slices come from the training split of --calibration-data (default: the run's
    data folder); validation uses up to `validation_slices` test-split slices of the same data.
    A JSON summary `<name>-export.json` lands beside the artefacts.
    """
    import typer
    from rich.console import Console

    err = Console(stderr=True)
    try:
        source = resolve_source(model_or_run)
        qat = is_qat_model(source.model)
        fmts = parse_formats(formats, qat=qat)
        _check_model(source.model, source.spec)
        data = _data_folder(source, calibration_data)
        modality = str(source.config.get("modality", "T2"))
        seed = int(source.config.get("seed", 0) or 0)
        needs = [f.name for f in fmts if f.calibrated and not qat]
        calibration = None
        if needs:
            if data is None:
                raise ExportInputError(
                    f"{', '.join(needs)} need calibration slices: pass --calibration-data DIR (a data set folder)"
                )
            calibration = calibration_slices(data, source.spec, calibration_samples, modality, source.run, seed)
        validation = None
        if data is not None:
            try:
                validation = held_out_validation_set(data, source.spec, validation_slices, modality, source.run, seed)
            except (ValueError, OSError) as exc:
                err.print(f"[yellow]warning:[/] no held-out validation slices in {data} ({exc})")
        if validation is None:
            err.print("[yellow]warning:[/] no data set known: validating on calibration or synthetic slices, not held-out data")
        results = export_model(
            source.model,
            Path(out),
            [f.name for f in fmts],
            source.spec,
            calibration=calibration,
            validation=validation,
            name=name or source.name,
            provenance=_provenance(source),
            baseline_metrics=_baseline(source.run),
            macs=source.config.get("macs_per_slice"),
            threads=threads,
        )
    except ExportInputError as exc:
        err.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    except ExportGateError as exc:
        _report(exc.results, err)
        _write_summary(exc.results, Path(out), name or source.name)
        err.print(f"[red]error:[/] export failed its gate: {exc}", soft_wrap=True)
        raise typer.Exit(1) from None
    _report(results, err)
    _write_summary(results, Path(out), name or source.name)
    return results


def _report(results: list[ExportResult], err) -> None:
    for r in results:
        line = r.validation.summary() if r.validation is not None else f"{r.format}: FAIL"
        if r.error:
            line += f" - {r.error}"
        sizes = f"{r.size_bytes / 1024:.1f} KiB (gzip {r.gzip_bytes / 1024:.1f} KiB)" if r.size_bytes else ""
        err.print(f"{line} | {sizes} | {r.convert_seconds:.1f}s convert", soft_wrap=True, markup=False)


def _write_summary(results: list[ExportResult], out: Path, name: str) -> None:
    from edge_runtime.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}-export.json", json.dumps([r.to_dict() for r in results], indent=2) + "\n")
