"""What `edge-seg run` prints: a table per series on stdout, notes and left-out files on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_runtime.labels import FOREGROUND

err = Console(stderr=True, soft_wrap=True)
_SHOWN = 20  # left-out files listed per kind; the rest are in report.json


def print_summary(report: dict[str, Any], console: Console) -> None:
    """The run table, truth scores, model timing line, then every kind of left-out file with its reason."""
    table = Table(title="edge-seg run", title_justify="left")
    table.add_column("series", no_wrap=True)
    for column in ("slices", "blocks", "failed", "min TS", "worst grade", "disc levels (TS at disc)", "time s"):
        table.add_column(column, justify="left" if column in ("worst grade", "disc levels (TS at disc)") else "right")
    for s in report["series"]:
        ok = [e for e in s["slices"] if e["status"] == "ok"]
        unit = s["area_unit"] or ""
        min_ts = min((e["ts_area"] for e in ok if e["pixel_counts"]["TS"] > 0), default=None)
        levels = "; ".join(
            f"{lv['number']}: {lv['ts_area']:.0f}{' ' + lv['ts_grade'] if lv['ts_grade'] else ''}" for lv in s["levels"]
        )
        table.add_row(
            escape(s["name"]),
            f"{s['n_segmented']}/{s['n_slices']}",
            str(s["n_blocks"]),
            str(s["n_failed"]),
            f"{min_ts:.0f} {unit}" if min_ts is not None else "-",
            s["worst_ts_grade"] or "-",
            levels or "-",
            f"{s['seconds']:.2f}",
        )
    console.print(table)
    for s in report["series"]:
        if s["scores"]:
            per = s["scores"]["per_class"]
            dice = "  ".join(f"{c.short} {per[c.short]['dice']:.3f}" for c in FOREGROUND)
            console.print(
                f"truth {escape(s['name'])} ({s['scores']['n_slices']} slices): Dice {dice}  "
                f"mean Dice {s['scores']['mean_dice']:.3f}  mean IoU {s['scores']['mean_iou']:.3f}"
            )
        for note in s["notes"]:
            err.print(f"[yellow]note[/] {escape(s['name'])}: {escape(note)}")
    for note in report.get("notes", []):
        err.print(f"[yellow]note[/] {escape(note)}")
    t = report["timings_s"]
    console.print(
        f"model {escape(report['model']['name'] or Path(report['model']['file']).name)} ({report['model']['precision']}, "
        f"{report['model']['backend']}, {report['model']['threads']} threads): "
        f"{t.get('inference_ms_per_slice', 0):.1f} ms/slice inference, total {t.get('total', 0):.2f} s"
    )
    print_left_out(report)


def print_left_out(report: dict[str, Any]) -> None:
    """failed, excluded and skipped files, each with its reason (paths are already display-safe)."""
    for status, colour in (("failed", "red"), ("excluded", "cyan"), ("skipped", "yellow")):
        issues = report.get(status, [])
        for issue in issues[:_SHOWN]:
            err.print(f"[{colour}]{status}[/] {escape(issue['path'])}: {escape(issue['reason'])}")
        if len(issues) > _SHOWN:
            err.print(f"[{colour}]{status}[/] ... and {len(issues) - _SHOWN} more (see report.json)")
