"""The run's radiologist-facing outputs: one TID 1500 SR per series, one key-image sheet (PNG + DICOM) per study.

Output formats `sr` and `summary` of `edge-seg run`. Names (OUT is the run's output folder):
    OUT/<series>/<series>_sr.dcm      DICOM SR, TID 1500 (needs highdicom: the dicom-seg extra)
    OUT/key_images.png, .dcm          key-image sheet and its Secondary Capture (one study)
    OUT/key_images_<k>.png, .dcm      the same for the k-th study when the input holds several
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.dicom_sr import ReportContent, thresholds_statement, write_sr
from edge_runtime.findings import SeriesFindings
from edge_runtime.key_images import key_image_sheet, save_png, write_secondary_capture
from edge_runtime.manifest import Manifest
from edge_runtime.measure import StenosisThresholds
from edge_runtime.research_use import IntendedUse

SR_INSTALL_HINT = "DICOM SR and key-image DICOM need highdicom: pip install 'edge-seg[dicom-seg]'"


def highdicom_missing() -> str | None:
    """None when highdicom is importable, else a one-line install hint."""
    return None if importlib.util.find_spec("highdicom") is not None else SR_INSTALL_HINT


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


def write_study_summary(
    paths: Sequence[Path],
    findings: Sequence[SeriesFindings],
    thresholds: StenosisThresholds,
    use: IntendedUse,
    manifest: Manifest,
) -> list[Path]:
    """Key-image sheet of one study: PNG (paths[0]) and, when paths[1] is given, its Secondary Capture."""
    several = len([f for f in findings if f.keys]) > 1
    keys = [replace(key, level=f"{f.series_name}: {key.level}") if several else key for f in findings for key in f.keys]
    if not keys:
        return []
    names = ", ".join(dict.fromkeys(f.series_name for f in findings if f.keys))
    title = f"Thecal sac, narrowest slice per disc level: {names}"
    sheet = key_image_sheet(keys, title, thresholds_statement(thresholds), use, footer(manifest))
    written = [save_png(sheet, paths[0])]
    reference: Any = next((f.reference for f in findings if f.keys and f.reference is not None), None)
    if len(paths) > 1 and reference is not None:
        written.append(write_secondary_capture(paths[1], sheet, reference, use))
    return written
