"""Run reports: report.json (everything), report.csv (one row per slice or problem file), summary.json."""

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
from edge_runtime.dicom_io import InputIssue, Series
from edge_runtime.labels import FOREGROUND
from edge_runtime.manifest import Manifest
from edge_runtime.measure import SeriesMeasurement, StenosisThresholds

REPORT_SCHEMA = "edge-seg-report/1"
SUMMARY_SCHEMA = "edge-seg-run-summary/1"
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
            "source": str(record.path),
            "sop_instance_uid": record.sop_instance_uid,
            "location_mm": record.location,
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
    input_path: Path,
    output: Path,
    model: dict[str, Any],
    thresholds: StenosisThresholds,
    outcomes: list[SeriesOutcome],
    skipped: list[InputIssue],
    failed: list[InputIssue],
    excluded: list[tuple[Series, str]],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The full machine-readable record of one run."""
    return {
        "schema": REPORT_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "edge_seg_version": __version__,
        "host": {"machine": platform.machine(), "python": platform.python_version()},
        "input": str(input_path),
        "output": str(output),
        "model": model,
        "stenosis_thresholds_mm2": asdict(thresholds),
        "label_png_values": {c.short: c.mendeley_value for c in FOREGROUND} | {"background": 250},
        "series": [_series_entry(o) for o in outcomes],
        "excluded_series": [s.summary() | {"reason": reason} for s, reason in excluded],
        "skipped": [issue.to_dict() for issue in skipped],
        "failed": [issue.to_dict() for issue in failed + [f for o in outcomes for f in o.failed]],
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
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    atomic_write_text(csv_path, report_csv(report))
    return [json_path, csv_path]


def build_summary(report: dict[str, Any], exit_code: int, written: list[str]) -> dict[str, Any]:
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
        "series": [
            {
                "name": s["name"],
                "uid": s["uid"],
                "n_slices": s["n_slices"],
                "n_segmented": s["n_segmented"],
                "worst_ts_grade": s["worst_ts_grade"],
                "levels": [
                    {"level": lv["number"], "disc_stem": lv["disc_stem"], "ts_area": lv["ts_area"], "ts_grade": lv["ts_grade"]}
                    for lv in s["levels"]
                ],
                "scores": s["scores"],
            }
            for s in series
        ],
        "failed": report["failed"],
        "skipped": report["skipped"],
        "timings_s": report["timings_s"],
        "files": written,
    }
