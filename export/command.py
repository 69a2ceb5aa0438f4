"""`edge-seg export` on the command line: resolve the source, pick calibration and validation slices, report.

Exit status 0 when every artefact passed its gate, 1 when one failed (its numbers are printed,
and no file of its name is left), 2 for bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

from pathlib import Path

from edge_runtime.atomic import atomic_write_json
from edge_runtime.messages import print_error, print_message, print_warning
from export.calibration import calibration_slices
from export.exporter import ExportGateError, ExportResult, check_model, export_model
from export.formats import ExportInputError, parse_formats
from export.model_io import is_qat_model
from export.source import baseline_metrics, data_folder, resolve_source, source_provenance
from export.validate import held_out_validation_set

VALIDATION_SLICES = 64


def export_command(
    model_or_run: Path,
    out: Path,
    formats: str = "all",
    calibration_data: Path | None = None,
    calibration_samples: int | None = None,
    name: str | None = None,
    validation_slices: int = VALIDATION_SLICES,
    threads: int | None = None,
) -> list[ExportResult]:
    """`edge-seg export`: bad input -> one line on stderr, exit 2; a failed gate -> the numbers, exit 1.

    Calibration slices come from the training split of --calibration-data (default: the run's
    data folder): `calibration_samples` of them, or by default 64 or all the split has (at least
    8). Validation uses up to `validation_slices` test-split slices of the same data. A JSON
    summary `<name>-export.json` and the converters' own output `<name>-export.log` land beside
    the artefacts.
    """
    import typer
    from rich.console import Console

    err = Console(stderr=True, soft_wrap=True)
    out = Path(out)
    try:
        source = resolve_source(model_or_run)
        qat = is_qat_model(source.model)
        fmts = parse_formats(formats, qat=qat)
        check_model(source.model, source.spec)
        data = data_folder(source, calibration_data)
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
            if calibration.note:
                print_message(err, "note", calibration.note)
        validation = None
        if data is not None:
            try:
                validation = held_out_validation_set(data, source.spec, validation_slices, modality, source.run, seed)
            except (ValueError, OSError) as exc:
                print_warning(err, f"no held-out validation slices in {data} ({exc})")
        if validation is None:
            print_warning(err, "no data set known: validating on calibration or synthetic slices, not held-out data")
        stem = name or source.name
        results = export_model(
            source.model,
            out,
            [f.name for f in fmts],
            source.spec,
            calibration=calibration,
            validation=validation,
            name=stem,
            provenance=source_provenance(source),
            baseline_metrics=baseline_metrics(source.run),
            macs=source.config.get("macs_per_slice"),
            threads=threads,
            log=out / f"{stem}-export.log",
        )
    except ExportInputError as exc:
        print_error(err, exc)
        raise typer.Exit(2) from None
    except ExportGateError as exc:
        report_results(exc.results, err)
        write_summary(exc.results, out, stem)
        print_error(err, f"export failed its gate: {exc}")
        raise typer.Exit(1) from None
    report_results(results, err)
    write_summary(results, out, stem)
    return results


def report_results(results: list[ExportResult], err) -> None:
    """One line per artefact: verdict, agreement, Dice deltas, gate, size and conversion time."""
    for r in results:
        line = r.validation.summary() if r.validation is not None else f"{r.format}: FAIL"
        if r.error:
            line += f" - {r.error}"
        if r.removed_stale:
            line += f" (removed the earlier {', '.join(r.removed_stale)})"
        sizes = f"{r.size_bytes / 1024:.1f} KiB (gzip {r.gzip_bytes / 1024:.1f} KiB)" if r.size_bytes else ""
        err.print(f"{line} | {sizes} | {r.convert_seconds:.1f}s convert", soft_wrap=True, markup=False)


def write_summary(results: list[ExportResult], out: Path, name: str) -> Path:
    """`<out>/<name>-export.json`: every result, passed or not."""
    path = Path(out) / f"{name}-export.json"
    atomic_write_json(path, [r.to_dict() for r in results])
    return path
