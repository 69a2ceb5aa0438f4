"""Run reports: report.json (everything), report.csv (one row per slice or left-out file), summary.json.

Every input file appears in report.json exactly where it ended: a slice of a series (ok or
failed), `excluded` (left out by the selection rules), `skipped` (not a target) or `failed`.
"""

from __future__ import annotations

import csv
import io
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_runtime import __version__
from edge_runtime.atomic import atomic_write_text
from edge_runtime.inputs import InputIssue, Series, Study, display_path
from edge_runtime.labels import FOREGROUND
from edge_runtime.manifest import Manifest
from edge_runtime.measure import SeriesMeasurement, StenosisThresholds

REPORT_SCHEMA = "edge-seg-report/2"
SUMMARY_SCHEMA = "edge-seg-run-summary/2"
CSV_COLUMNS = (
    "series",
    "slice_index",
    "stem",
    "source",
    "status",
    "reason",
    "area_unit",
    *(c.short for c in FOREGROUND),
    "ts_grade",
    "ts_ap_diameter_mm",
    "location_mm",
    "block",
    "disc_level",
    "inference_ms",
)


@dataclass
class SeriesOutcome:
    """What happened to one selected series."""

    series: Series
    measurement: SeriesMeasurement | None = None
    failed: list[InputIssue] = field(default_factory=list)
    failed_indices: dict[int, str] = field(default_factory=dict)  # slice index -> reason
    inference_ms: dict[int, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scores: dict[str, Any] | None = None
    seconds: float = 0.0
    findings: Any = None  # edge_runtime.findings.SeriesFindings, for the SR and the key-image sheet

    @property
    def n_segmented(self) -> int:
        return len(self.measurement.slices) if self.measurement else 0


def model_info(manifest: Manifest, model_path: Path, backend: str, threads: int) -> dict[str, Any]:
    return {
        "file": str(model_path),
        "name": manifest.name,
        "variant": manifest.variant,
        "format": manifest.format,
        "precision": manifest.precision,
        "sha256": manifest.sha256,
        "input_size": manifest.preprocessing.input_size,
        "field_of_view_mm": manifest.preprocessing.field_of_view_mm,  # None: the whole slice
        "provenance": manifest.provenance,
        "backend": backend,
        "threads": threads,
    }


def _series_entry(outcome: SeriesOutcome) -> dict[str, Any]:
    series = outcome.series
    slices = []
    measured = {m.index: m for m in (outcome.measurement.slices if outcome.measurement else [])}
    levels = {lv.disc_index: lv.number for lv in (outcome.measurement.levels if outcome.measurement else [])}
    for index, record in enumerate(series.slices):
        entry: dict[str, Any] = {
            "index": index,
            "stem": record.stem,
            "source": display_path(record.path),
            "sop_instance_uid": record.sop_instance_uid,
            "location_mm": record.location,
            "block": record.block,
            "plane": record.plane,
            "pixel_spacing_mm": list(record.pixel_spacing) if record.pixel_spacing else None,
        }
        if index in measured:
            m = measured[index]
            entry |= {
                "status": "ok",
                "area_unit": m.unit,
                "areas": m.areas,
                "pixel_counts": m.pixel_counts,
                "ts_area": m.ts_area,
                "ts_grade": m.ts_grade,
                "ts_ap_diameter_mm": m.ts_ap_diameter_mm,
                "disc_level": levels.get(index),
                "inference_ms": outcome.inference_ms.get(index),
            }
            if m.unit == "px":
                entry["flag"] = "PixelSpacing missing: areas are pixel counts, not mm2; no stenosis grade"
        if index in outcome.failed_indices or index not in measured:
            entry |= {"status": "failed", "reason": outcome.failed_indices.get(index, "not processed")}
        slices.append(entry)
    return {
        **series.summary(),
        "blocks": [block.summary(series) for block in series.blocks],
        "excluded_slices": [issue.to_dict() for issue in series.excluded_slices],
        "series_number": series.series_number,
        "n_segmented": outcome.n_segmented,
        "n_failed": len(outcome.failed),
        "area_unit": outcome.measurement.unit if outcome.measurement else None,
        "worst_ts_grade": outcome.measurement.worst_grade if outcome.measurement else None,
        "levels": [lv.to_dict() for lv in outcome.measurement.levels] if outcome.measurement else [],
        "levels_note": (
            "level 1 is the most caudal disc found"
            if series.ordering.startswith("slice position")
            else f"levels numbered in {series.ordering} order (no slice geometry)"
        ),
        "slices": slices,
        "outputs": outcome.outputs,
        "notes": outcome.notes,
        "scores": outcome.scores,
        "seconds": round(outcome.seconds, 4),
    }


def build_report(
    study: Study,
    output: Path,
    model: dict[str, Any],
    thresholds: StenosisThresholds,
    outcomes: list[SeriesOutcome],
    timings: dict[str, float],
    rules: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The full machine-readable record of one run."""
    failed = study.failed + [f for o in outcomes for f in o.failed]
    excluded = [{"series": name} | issue.to_dict() for name, issue in study.excluded_files]
    return {
        "schema": REPORT_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "edge_seg_version": __version__,
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "input": display_path(study.input),
        "output": display_path(output),
        "model": model,
        "selection_rules": rules,
        "n_input_files": study.n_files,
        "stenosis_thresholds_mm2": asdict(thresholds),
        "label_png_values": {c.short: c.mendeley_value for c in FOREGROUND} | {"background": 250},
        "series": [_series_entry(o) for o in outcomes],
        "excluded_series": [s.summary() | {"reason": reason} for s, reason in study.excluded],
        "excluded": excluded,
        "skipped": [issue.to_dict() for issue in study.skipped],
        "failed": [issue.to_dict() for issue in failed],
        "notes": list(notes or []),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }


def report_csv(report: dict[str, Any]) -> str:
    """One row per slice (ok or failed), then one per skipped or failed file outside a series."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    in_series = set()
    for series in report["series"]:
        for entry in series["slices"]:
            in_series.add(entry["source"])
            row = {
                "series": series["name"],
                "slice_index": entry["index"],
                "stem": entry["stem"],
                "source": entry["source"],
                "status": entry["status"],
                "reason": entry.get("reason", entry.get("flag", "")),
                "location_mm": _fmt(entry.get("location_mm")),
                "block": _fmt(entry.get("block")),
            }
            if "areas" in entry:
                row |= {c.short: _fmt(entry["areas"][c.short]) for c in FOREGROUND}
                row |= {
                    "area_unit": entry["area_unit"],
                    "ts_grade": entry["ts_grade"] or "",
                    "ts_ap_diameter_mm": _fmt(entry["ts_ap_diameter_mm"]),
                    "disc_level": entry["disc_level"] or "",
                    "inference_ms": _fmt(entry["inference_ms"]),
                }
            writer.writerow(row)
    for issue in report["excluded"]:
        writer.writerow({"series": issue["series"], "source": issue["path"], "status": "excluded", "reason": issue["reason"]})
    for status in ("failed", "skipped"):
        for issue in report[status]:
            if issue["path"] not in in_series:
                writer.writerow({"source": issue["path"], "status": status, "reason": issue["reason"]})
    return buffer.getvalue()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def write_report(output: Path, report: dict[str, Any]) -> list[Path]:
    """Write report.json and report.csv atomically into `output`."""
    json_path, csv_path = output / "report.json", output / "report.csv"
    atomic_write_text(json_path, report_json(report))
    atomic_write_text(csv_path, report_csv(report))
    return [json_path, csv_path]


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2) + "\n"


# summary.json level field -> report.json level field (block: the orientation block the level lies in)
_SUMMARY_LEVEL = {"level": "number", "disc_stem": "disc_stem", "ts_area": "ts_area", "ts_grade": "ts_grade", "block": "block"}


def build_summary(
    report: dict[str, Any], exit_code: int, written: list[str], relative: list[str] | None = None
) -> dict[str, Any]:
    """Small machine-readable outcome of a run (what a script or PACS router checks)."""
    series = report["series"]
    return {
        "schema": SUMMARY_SCHEMA,
        "exit_code": exit_code,
        "status": {0: "ok", 1: "partial"}.get(exit_code, "error"),
        "input": report["input"],
        "output": report["output"],
        "model": {k: report["model"][k] for k in ("file", "name", "variant", "precision", "backend", "threads")},
        "n_series": len(series),
        "n_slices_segmented": sum(s["n_segmented"] for s in series),
        "n_failed": len(report["failed"]),
        "n_skipped": len(report["skipped"]),
        "n_excluded": len(report["excluded"]),
        "series": [
            {
                "name": s["name"],
                "uid": s["uid"],
                "n_slices": s["n_slices"],
                "n_segmented": s["n_segmented"],
                "n_blocks": s["n_blocks"],
                "worst_ts_grade": s["worst_ts_grade"],
                "levels": [
                    {k: lv[key] for k, key in _SUMMARY_LEVEL.items()} for lv in s["levels"]
                ],
                "scores": s["scores"],
            }
            for s in series
        ],
        "failed": report["failed"],
        "skipped": report["skipped"],
        "excluded": report["excluded"],
        "notes": report["notes"],
        "timings_s": report["timings_s"],
        "files": written,
        "relative_files": relative if relative is not None else [],
    }
