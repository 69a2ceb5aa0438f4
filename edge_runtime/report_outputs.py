"""The run's radiologist-facing outputs: one TID 1500 SR per series, one key-image sheet (PNG + DICOM) per study.

Output formats `sr` and `summary` of `edge-seg run`. Names (OUT is the run's output folder):
    OUT/<series>/<series>_sr.dcm      DICOM SR, TID 1500 (needs highdicom: the dicom-seg extra)
    OUT/key_images.png, .dcm          key-image sheet and its Secondary Capture (one study)
    OUT/key_images_<k>.png, .dcm      the same for the k-th study when the input holds several

`SrWriter` and `FindingsCollector` are series writers (edge_runtime.writers); the study-level
sheet is written by `write_run_summaries` once every series is done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from PIL import Image

from edge_runtime import __version__
from edge_runtime.dicom_seg import highdicom_unavailable, plan_groups
from edge_runtime.dicom_sr import ReportContent, thresholds_statement, write_sr
from edge_runtime.findings import SeriesFindings, series_findings
from edge_runtime.inputs import InputIssue
from edge_runtime.key_images import key_image_sheet, save_png, write_secondary_capture
from edge_runtime.manifest import Manifest
from edge_runtime.measure import StenosisThresholds
from edge_runtime.outputs import OutputFormat
from edge_runtime.research_use import IntendedUse, intended_use

SR_INSTALL_HINT = "DICOM SR and key-image DICOM need highdicom: pip install 'edge-seg[dicom-seg]'"


def highdicom_missing() -> str | None:
    """None when highdicom is importable, else the SR's install hint."""
    return highdicom_unavailable(SR_INSTALL_HINT)


def sr_path(output: Path, series_name: str) -> Path:
    return Path(output) / series_name / f"{series_name}_sr.dcm"


def summary_paths(output: Path, study_keys: Sequence[str], dicom: bool = True) -> dict[str, list[Path]]:
    """Study key -> [PNG, DICOM] paths of its key-image sheet (DICOM left out when `dicom` is False)."""
    unique = list(dict.fromkeys(study_keys))
    paths = {}
    for k, key in enumerate(unique, start=1):
        stem = "key_images" if len(unique) == 1 else f"key_images_{k}"
        paths[key] = [Path(output) / f"{stem}.png"] + ([Path(output) / f"{stem}.dcm"] if dicom else [])
    return paths


def write_series_sr(
    path: Path,
    findings: SeriesFindings,
    manifest: Manifest,
    thresholds: StenosisThresholds,
    use: IntendedUse,
    seg_paths: Sequence[Path] = (),
) -> Path | None:
    """Write the SR of one series; None (with a note) when no slice shows a thecal sac in mm2."""
    import pydicom

    if not findings.slices:
        findings.notes.append("DICOM SR not written: no slice with a thecal sac measured in mm2")
        return None
    segmentations = [pydicom.dcmread(p, stop_before_pixels=True) for p in seg_paths]
    content = ReportContent(findings.slices, findings.levels, manifest, thresholds, use, segmentations)
    description = f"edge-seg TS areas {findings.description}".strip()
    return write_sr(path, content, series_description=description)


def footer(manifest: Manifest) -> str:
    """Where the sheet came from: software, model and the first 12 hex digits of its sha256."""
    name = manifest.name or Path(manifest.model_file).name
    variant = manifest.variant or manifest.precision
    return f"edge-seg {__version__}, model {name} ({variant}, sha256 {manifest.sha256[:12]}); draft for review"


def study_sheet(
    findings: Sequence[SeriesFindings], thresholds: StenosisThresholds, use: IntendedUse, manifest: Manifest
) -> tuple[Image.Image | None, Any]:
    """The key-image sheet of one study (None without key images), and the source image whose
    patient and study its Secondary Capture carries (None without a DICOM source)."""
    several = len([f for f in findings if f.keys]) > 1
    keys = [replace(key, level=f"{f.series_name}: {key.level}") if several else key for f in findings for key in f.keys]
    if not keys:
        return None, None
    names = ", ".join(dict.fromkeys(f.series_name for f in findings if f.keys))
    title = f"Thecal sac, narrowest slice per disc level: {names}"
    sheet = key_image_sheet(keys, title, thresholds_statement(thresholds), use, footer(manifest))
    reference: Any = next((f.reference for f in findings if f.keys and f.reference is not None), None)
    return sheet, reference


# --------------------------------------------------------------------------- run pipeline hooks


def ensure_findings(result: Any) -> SeriesFindings:
    """The findings of a series result (edge_runtime.writers.SeriesResult), computed once and kept on its outcome."""
    outcome = result.outcome
    if outcome.findings is None:
        series = result.series
        outcome.findings = series_findings(
            series.name,
            series.description,
            [r.stem for r in series.slices],
            [r.dataset if r.kind == "dicom" else None for r in series.slices],
            result.masks,
            result.images,
            outcome.measurement,
        )
    return outcome.findings


def _study_key(series: Any) -> str:
    first = series.slices[0] if series.slices else None
    uid = first.dataset.get("StudyInstanceUID") if first is not None and first.kind == "dicom" else None
    return str(uid) if uid else f"series:{series.name}"


class SrWriter:
    """<series>_sr.dcm: the TID 1500 SR of one DICOM series, referencing its SEG file(s) when written."""

    format = OutputFormat.SR

    def planned(self, series: Any, folder: Path) -> list[Path]:
        return [folder / f"{series.name}_sr.dcm"] if series.kind == "dicom" else []

    def write(self, result: Any, outputs: Any) -> None:
        series, outcome = result.series, result.outcome
        if series.kind != "dicom":
            outcome.notes.append("DICOM SR not written: the input slices are not DICOM")
            return
        missing = highdicom_missing()
        if missing:
            outcome.notes.append(missing)
            return
        if outcome.measurement is None or not result.masks:
            return
        try:
            findings = ensure_findings(result)
        except Exception as exc:  # an odd slice header: the SR only
            outcome.failed.append(InputIssue(series.folder, f"DICOM SR not written ({type(exc).__name__}: {exc})"))
            return
        outcome.notes.extend(findings.notes)
        if not findings.slices:
            outcome.notes.append("DICOM SR not written: no slice with a thecal sac measured in mm2")
            return
        final = result.folder / f"{series.name}_sr.dcm"
        groups, _ = plan_groups(series.name, series.slices)  # the SEG files this series' SEG job stages, if it runs
        seg_files = [outputs.staged(result.folder / group.file_name) for group in groups]
        args = (outputs.staged(final), findings, result.manifest, outcome.measurement.thresholds,
                intended_use(result.manifest), seg_files)  # fmt: skip

        def written(_: Any) -> None:
            outputs.adopt(final)
            outcome.outputs["sr"] = str(final)

        def failed(exc: Exception) -> None:  # highdicom validation or disk problems: the SR only
            outcome.failed.append(InputIssue(series.folder, f"DICOM SR not written ({type(exc).__name__}: {exc})"))

        outputs.build_later(_build_series_sr, args, written, failed)


def _build_series_sr(path: Path, findings: SeriesFindings, manifest: Manifest, thresholds: StenosisThresholds,
                     use: IntendedUse, seg_files: Sequence[Path]) -> Path | None:  # fmt: skip
    """The SR job (edge_runtime.dicom_builder): it runs after the series' SEG job, so it references
    the SEG files that job staged (none when `seg` was not asked for, or highdicom refused it)."""
    return write_series_sr(path, findings, manifest, thresholds, use, [p for p in seg_files if p.is_file()])


class FindingsCollector:
    """Series part of the `summary` format: keeps the series' key images for the study sheet (writes nothing)."""

    format = OutputFormat.SUMMARY

    def planned(self, series: Any, folder: Path) -> list[Path]:
        return []

    def write(self, result: Any, outputs: Any) -> None:
        if result.outcome.measurement is None or not result.masks:
            return
        try:
            ensure_findings(result)
        except Exception as exc:  # an odd slice header: the sheet only
            result.outcome.notes.append(f"key images not collected ({type(exc).__name__}: {exc})")


def planned_summaries(output: Path, selected: Sequence[Any]) -> list[Path]:
    """Every key-image file the run may write (for the clash check before inference)."""
    dicom = highdicom_missing() is None
    keys = [_study_key(s) for s in selected]
    by_key = summary_paths(output, keys)
    kinds = {k: any(s.kind == "dicom" for s in selected if _study_key(s) == k) for k in by_key}
    return [p for k, paths in by_key.items() for p in (paths if dicom and kinds[k] else paths[:1])]


def write_run_summaries(outcomes: Sequence[Any], outputs: Any, thresholds: StenosisThresholds, manifest: Manifest) -> list[str]:
    """One key-image sheet per study of the run's outcomes, written through `outputs`; returns notes
    (the Secondary Capture's are added when `outputs.wait()` collects it from the DICOM builder)."""
    notes: list[str] = []
    use = intended_use(manifest)
    dicom = highdicom_missing() is None
    selected = [o.series for o in outcomes]
    paths = summary_paths(outputs.output, [_study_key(s) for s in selected])
    for key, (png, dcm) in paths.items():
        group = [o.findings for o in outcomes if _study_key(o.series) == key and o.findings is not None]
        if not any(f.keys for f in group):
            notes.append(f"key images not written for study {key}: no disc level with a thecal sac measured in mm2")
            continue
        try:
            sheet, reference = study_sheet(group, thresholds, use, manifest)
            with outputs.file(png) as png_tmp:
                save_png(sheet, png_tmp)
        except Exception as exc:  # rendering or disk problems: the sheet only
            notes.append(f"key images not written for study {key} ({type(exc).__name__}: {exc})")
            continue
        if dicom and reference is not None:
            outputs.build_later(
                write_secondary_capture,
                (outputs.staged(dcm), sheet, reference, use),
                lambda _, dcm=dcm: outputs.adopt(dcm),
                lambda exc, key=key: notes.append(f"key-image DICOM not written for study {key} ({type(exc).__name__}: {exc})"),
            )
    return notes
