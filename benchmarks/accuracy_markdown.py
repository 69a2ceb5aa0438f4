"""The accuracy benchmark's tables (Dice with deltas, IoU, thecal-sac agreement, gate checks) and files."""

from __future__ import annotations

from pathlib import Path

from benchmarks.accuracy_model import AccuracyReport, ModelAccuracy
from benchmarks.markdown import md_cell, number, table
from edge_runtime.atomic import atomic_write_json, atomic_write_text
from edge_runtime.labels import FOREGROUND


def _verdict(row: ModelAccuracy, report: AccuracyReport) -> str:
    if row is report.baseline:
        return "baseline"
    if row.skipped:
        return "skipped (accepted)" if report.allow_skip else "**skipped: not passed**"
    return "pass" if row.passed else "**FAIL**"


def _with_delta(values: dict[str, float], deltas: dict[str, float], short: str) -> str:
    return f"{values[short]:.4f} ({deltas[short]:+.4f})" if deltas else f"{values[short]:.4f}"


def dice_table(report: AccuracyReport) -> list[str]:
    """Per model: recipe, precision, gate, mean Dice and its change, each class's Dice (change), verdict."""
    shorts = [c.short for c in FOREGROUND]
    rows = []
    for r in [report.baseline, *report.variants]:
        head = [r.label, r.recipe, r.precision, r.gate or "-"]
        if r.error or r.skipped or not r.dice:
            rows.append([*head, md_cell(r.error or r.skipped or "not evaluated"), "", *[""] * len(shorts), _verdict(r, report)])
            continue
        cells = [_with_delta(r.dice, r.delta_dice, s) for s in shorts]
        rows.append([*head, number(r.mean_dice), number(r.delta_mean_dice, "+.4f"), *cells, _verdict(r, report)])
    header = ["model", "recipe", "precision", "gate", "mean Dice", "d mean", *[f"{s} Dice (d)" for s in shorts], "verdict"]
    return table(header, "llllrr" + "r" * len(shorts) + "l", rows)


def iou_table(report: AccuracyReport) -> list[str]:
    """Per evaluated model: mean IoU, each class's IoU (change), and the spread of patients' mean Dice."""
    shorts = [c.short for c in FOREGROUND]
    rows = []
    for r in [report.baseline, *report.variants]:
        if not r.iou:
            continue
        spread = r.patient_mean_dice
        spread_text = f"{spread['min']:.3f} / {spread['median']:.3f} / {spread['max']:.3f}" if spread else "-"
        rows.append([r.label, number(r.mean_iou), *[_with_delta(r.iou, r.delta_iou, s) for s in shorts], spread_text])
    header = ["model", "mean IoU", *[f"{s} IoU (d)" for s in shorts], "patients' mean Dice min / median / max"]
    return table(header, "lr" + "r" * len(shorts) + "l", rows)


def thecal_sac_table(report: AccuracyReport) -> list[str]:
    """Per evaluated model: thecal-sac area error and stenosis-grade agreement against the ground truth."""
    relative, absolute = report.thresholds_mm2["relative_mm2"], report.thresholds_mm2["absolute_mm2"]
    rows = []
    for r in [report.baseline, *report.variants]:
        if not r.ts:
            continue
        t = r.ts
        agreement = None if t["grade_agreement"] is None else 100 * t["grade_agreement"]
        rows.append([
            r.label, t["ts_slices"], number(t["area_mae_mm2"], ".1f"), number(t["area_bias_mm2"], "+.1f"),
            number(t["area_max_abs_error_mm2"], ".1f"), number(t["area_mean_abs_percent"], ".1f"),
            f"{number(agreement, '.1f')} %", t["graded_slices"],
        ])  # fmt: skip
    header = ["model", "TS slices", "area MAE mm2", "bias mm2", "max abs error mm2", "mean abs %", "grade agreement",
              "graded slices"]  # fmt: skip
    intro = (
        f"Thecal sac vs ground truth (pixel spacing {report.pixel_spacing_mm[0]} mm; grades: normal >= "
        f"{relative:.0f} mm2, relative, absolute < {absolute:.0f} mm2):"
    )
    return [intro, "", *table(header, "lrrrrrrr", rows)]


def gates_table(report: AccuracyReport) -> list[str]:
    """Every gate check of every variant: value, limit, result."""
    rows = [
        [g.variant, g.gate, md_cell(g.check), f"{g.value:.4f}", f"{g.limit:.4f}", "pass" if g.passed else "**FAIL**"]
        for r in report.variants
        for g in r.gates
    ]
    return table(["model", "gate", "check", "value", "limit", "result"], "lllrrl", rows)


def accuracy_markdown(report: AccuracyReport) -> str:
    """Markdown: main Dice table with deltas, IoU table, clinical agreement, gate checks."""
    lines = [*dice_table(report), "", *iou_table(report), "", *thecal_sac_table(report), "", *gates_table(report)]
    return "\n".join(lines) + "\n"


def write_accuracy(report: AccuracyReport, out: Path) -> None:
    """accuracy.json (everything) and accuracy.md (a header line and the tables) in `out`."""
    out = Path(out)
    atomic_write_json(out / "accuracy.json", report.to_dict())
    header = (
        f"# Accuracy\n\n{len(report.patients)} test patients, {report.n_slices} slices ({report.modality}); "
        f"baseline: {report.baseline.source}.\n\n"
    )
    atomic_write_text(out / "accuracy.md", header + accuracy_markdown(report))
