"""`edge-seg bench all`: accuracy and latency of every variant in one report folder.

Writes report.md (tables), report.json (everything, machine-readable), accuracy/latency
JSON+Markdown, and PNG plots, with the machine description. Two profiles: quick (two test
patients, few repeats, one thread: what the test suite runs so the code cannot rot) and full
(every test patient, 1 and 2 threads, long timing runs: what goes into a published report).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from benchmarks.accuracy import (
    AccuracyReport,
    ModelAccuracy,
    accuracy_markdown,
    md_cell,
    print_verdict,
    run_accuracy,
    write_accuracy,
)
from benchmarks.gates import DEFAULT_TOLERANCES, tolerance_table
from benchmarks.latency import (
    FULL_LATENCY,
    KERAS_FLOAT_LABEL,
    QUICK_LATENCY,
    SEED_LABEL,
    LatencyProfile,
    LatencyReport,
    LatencyRow,
    latency_markdown,
    measure_latency,
    parse_threads,
    write_latency,
)
from benchmarks.machine import describe_machine
from benchmarks.plots import Point, pareto_front, plot_dice_per_class, plot_latency_vs_dice, plot_sizes
from benchmarks.real import RealSet, real_by_variant, real_markdown
from benchmarks.variants import discover_variants
from edge_runtime.atomic import atomic_write_json, atomic_write_text
from edge_runtime.labels import FOREGROUND
from edge_runtime.messages import print_error, print_message

SCHEMA = "edge-seg-bench/1"
PLOTS = {"dice": "dice_per_class.png", "pareto": "latency_vs_dice.png", "size": "size_per_variant.png"}
SAME_SPEED = 0.10  # latency ratios within +-10 % are reported as "no speed change"


@dataclass(frozen=True)
class BenchProfile:
    """Accuracy subset and latency effort of one report."""

    name: str
    latency: LatencyProfile
    max_patients: int | None


QUICK = BenchProfile("quick", QUICK_LATENCY, max_patients=2)
FULL = BenchProfile("full", FULL_LATENCY, max_patients=None)


def _best_latency(rows: list[LatencyRow], label: str, threads: int) -> LatencyRow | None:
    """The fastest backend's row for a model at a thread count."""
    candidates = [r for r in rows if r.label == label and r.threads == threads and r.median_ms]
    return min(candidates, key=lambda r: r.median_ms) if candidates else None


def summary_rows(accuracy: AccuracyReport, latency: LatencyReport, threads: int) -> list[dict[str, Any]]:
    """One row per model: size, accuracy, its gate verdict and latency at `threads` (fastest backend)."""
    rows: list[dict[str, Any]] = []
    seed = _best_latency(latency.rows, SEED_LABEL, threads)
    if seed is not None:
        rows.append(_summary(None, seed, label=SEED_LABEL, recipe="seed project", fmt="keras", precision="fp32"))
    models: list[ModelAccuracy] = [accuracy.baseline, *accuracy.variants]
    for model in models:
        timing = _best_latency(latency.rows, model.label, threads)
        rows.append(_summary(model, timing, model.label, model.recipe, model.format, model.precision))
    points = [Point(r["label"], r["median_ms"], r["mean_dice"]) for r in rows if r["median_ms"] and r["mean_dice"]]
    front = {p.label for p in pareto_front(points)}
    for row in rows:
        row["pareto"] = row["label"] in front
    return rows


def _summary(
    model: ModelAccuracy | None, timing: LatencyRow | None, label: str, recipe: str, fmt: str, precision: str
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": label,
        "recipe": recipe,
        "format": fmt,
        "precision": precision,
        "gate": model.gate if model else None,
        "mean_dice": model.mean_dice if model else None,
        "delta_mean_dice": model.delta_mean_dice if model else None,
        "dice": {c.short: model.dice.get(c.short) for c in FOREGROUND} if model and model.dice else {},
        "ts_area_mae_mm2": (model.ts or {}).get("area_mae_mm2") if model else None,
        "grade_agreement": (model.ts or {}).get("grade_agreement") if model else None,
        "passed": (model.passed if model.gates else None) if model and model.source == "artifact" else None,
        "error": (model.error or model.skipped) if model else None,
    }
    timing_fields = ("backend", "threads", "median_ms", "p95_ms", "throughput_per_s", "size_bytes", "gzip_bytes",
                     "peak_rss_bytes", "macs_per_slice", "gmacs_per_s", "speedup_vs_seed", "speedup_vs_keras_float")  # fmt: skip
    for name in timing_fields:
        row[name] = getattr(timing, name) if timing is not None else None
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _pct(ratio: float) -> str:
    return f"{100 * (ratio - 1):+.0f} %"


def findings(summary: list[dict[str, Any]]) -> list[str]:
    """Plain statements of what each compression step bought on this machine, from the numbers.

    Pairs are matched on format and precision (pruned vs its unpruned twin; fp16 and int8 vs
    fp32 of the same recipe and format); nothing is claimed that was not measured here.
    """
    by_key = {(r["recipe"], r["format"], r["precision"]): r for r in summary}
    out: list[str] = []
    for row in summary:
        recipe = row["recipe"]
        if not recipe.startswith("pruned"):
            continue
        twin_recipe = "qat" if recipe.endswith("-qat") else "float"
        twin = by_key.get((twin_recipe, row["format"], row["precision"])) or by_key.get(
            ("float", row["format"], row["precision"])
        )
        if twin is None or not row["gzip_bytes"] or not twin["gzip_bytes"]:
            continue
        gz = _ratio(row["gzip_bytes"], twin["gzip_bytes"])
        raw = _ratio(row["size_bytes"], twin["size_bytes"])
        speed = _ratio(row["median_ms"], twin["median_ms"])
        verdict = (
            "pruning bought compressed size, not speed (the sparse weights still run as dense 3x3 convolutions)"
            if speed is not None and abs(speed - 1) <= SAME_SPEED
            else "latency changed by more than 10 %: check the run-to-run spread before crediting pruning"
        )
        out.append(
            f"{row['label']} vs {twin['label']}: gzip size {_pct(gz)}, raw size {_pct(raw)}, "
            + (f"median latency {_pct(speed)}" if speed else "latency not measured")
            + f"; {verdict}."
        )
    for row in summary:
        if row["format"] not in ("tflite", "onnx") or row["precision"] == "fp32":
            continue
        fp32 = by_key.get((row["recipe"], row["format"], "fp32")) or by_key.get(("float", row["format"], "fp32"))
        if fp32 is None or fp32 is row:
            continue
        size = _ratio(row["size_bytes"], fp32["size_bytes"])
        speed = _ratio(fp32["median_ms"], row["median_ms"])
        if size is None or speed is None:
            continue
        note = ""
        if row["precision"] == "fp16":
            note = " (fp16 weights are upcast to fp32 on CPU: a smaller file, no faster)" if abs(speed - 1) <= SAME_SPEED else ""
        out.append(f"{row['label']} vs {fp32['label']}: {size:.2f}x the size, {speed:.2f}x the speed{note}.")
    seed = next((r for r in summary if r["label"] == SEED_LABEL), None)
    keras_float = next((r for r in summary if r["label"] == KERAS_FLOAT_LABEL), None)
    timed = [r for r in summary if r["format"] in ("tflite", "onnx") and r["median_ms"] and r["passed"]]
    if seed and seed["median_ms"] and timed:
        fastest = min(timed, key=lambda r: r["median_ms"])
        out.append(
            f"Fastest artefact that passed its gate: {fastest['label']} at {fastest['median_ms']:.2f} ms/slice "
            f"({fastest['backend']}, {fastest['threads']} thread(s)), "
            f"{seed['median_ms'] / fastest['median_ms']:.1f}x faster than the seed project's U-Net in Keras "
            f"({seed['median_ms']:.1f} ms)"
            + (
                f" and {keras_float['median_ms'] / fastest['median_ms']:.1f}x faster than our float model in Keras."
                if keras_float and keras_float["median_ms"]
                else "."
            )
        )
    return out


def spread_finding(latency: LatencyReport) -> str | None:
    """How reproducible the medians were across whole repeated passes (None for a single run)."""
    rows = [r for r in latency.rows if r.runs > 1 and r.run_spread is not None]
    if not rows:
        return None
    spreads = sorted(r.run_spread for r in rows)
    worst = max(rows, key=lambda r: r.run_spread)
    within = sum(s <= SAME_SPEED for s in spreads)
    return (
        f"Run-to-run spread of latency medians over {rows[0].runs} runs ((max - min) / median): median "
        f"{100 * spreads[len(spreads) // 2]:.1f} %, worst {100 * worst.run_spread:.1f} % ({worst.label}, {worst.backend}, "
        f"{worst.threads} thread(s)); {within} of {len(rows)} measurements within 10 %."
    )


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_markdown(summary: list[dict[str, Any]]) -> str:
    """The main table: one row per model."""
    shorts = [c.short for c in FOREGROUND]
    lines = [
        "| model | recipe | size KiB | gzip KiB | mean Dice | d mean | "
        + " | ".join(shorts)
        + " | median ms | backend | x seed | x Keras float | gate | Pareto |",
        "|---|---|---:|---:|---:|---:|" + "---:|" * len(shorts) + "---:|---|---:|---:|---|---|",
    ]
    for r in summary:
        verdict = {True: "pass", False: "**FAIL**", None: "-"}[r["passed"]]
        if r["error"]:
            verdict = f"error: {r['error']}"
        dice = [_num(r["dice"].get(s), ".4f") if r["dice"] else "-" for s in shorts]
        lines.append(
            f"| {r['label']} | {r['recipe']} | {_kib(r['size_bytes'])} | {_kib(r['gzip_bytes'])} | {_num(r['mean_dice'], '.4f')} "
            f"| {_num(r['delta_mean_dice'], '+.4f')} | " + " | ".join(dice) + f" | {_num(r['median_ms'], '.2f')} "
            f"| {r['backend'] or '-'} | {_num(r['speedup_vs_seed'], '.1f')} | {_num(r['speedup_vs_keras_float'], '.2f')} "
            f"| {verdict} | {'yes' if r['pareto'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def _machine_markdown(machine: dict[str, Any]) -> str:
    libs = ", ".join(f"{k} {v}" for k, v in machine["libraries"].items() if v)
    flags = ", ".join(machine["cpu_flags"]) or "no SIMD flags read"
    memory = machine["memory_bytes"]
    memory_text = f"{memory / 2**30:.1f} GiB" if memory else "unknown"
    return (
        f"- CPU: {machine['cpu_model']} ({machine['architecture']}; {flags})\n"
        f"- cores: {machine['usable_cores']} usable of {machine['logical_cpus']} logical; memory {memory_text}\n"
        f"- OS: {machine['os']}; Python {machine['python']}; load average (1, 5, 15 min) at start "
        f"{machine['load_average']}, at end {machine.get('load_average_end')}\n"
        f"- libraries: {libs}\n"
    )


def write_plots(
    accuracy: AccuracyReport, latency: LatencyReport, summary: list[dict[str, Any]], out: Path, threads: int
) -> list[str]:
    """The three PNGs; returns their file names (plots lacking data are left out)."""
    written: list[str] = []
    scored = [m for m in [accuracy.baseline, *accuracy.variants] if m.dice]
    if scored and accuracy.baseline.dice:
        plot_dice_per_class([m.label for m in scored], [m.dice for m in scored], accuracy.baseline.dice, out / PLOTS["dice"])
        written.append(PLOTS["dice"])
    points = [Point(r["label"], r["median_ms"], r["mean_dice"]) for r in summary if r["median_ms"] and r["mean_dice"]]
    references = {
        f"{r['label']} ({r['median_ms']:.0f} ms)": r["median_ms"] for r in summary if r["label"] == SEED_LABEL and r["median_ms"]
    }
    if points:
        plot_latency_vs_dice(points, out / PLOTS["pareto"], threads, references)
        written.append(PLOTS["pareto"])
    sized = [r for r in summary if r["size_bytes"] and r["gzip_bytes"]]
    if sized:
        plot_sizes(
            [r["label"] for r in sized], [r["size_bytes"] for r in sized], [r["gzip_bytes"] for r in sized], out / PLOTS["size"]
        )
        written.append(PLOTS["size"])
    return written


def report_markdown(report: dict[str, Any], accuracy: AccuracyReport, latency: LatencyReport) -> str:
    """report.md: summary table, findings, accuracy and latency detail, plots, tolerances, machine."""
    acc = report["accuracy"]
    parts = [
        "# edge-seg benchmark report\n",
        f"Profile **{report['profile']['name']}**, {report['created']}. Run `{report['run_dir']}`, artefacts "
        f"`{report['artifacts']}`, data `{acc['data']}` ({acc['modality']}): {len(acc['patients'])} held-out test "
        f"patients, {acc['n_slices']} slices. Latency: batch 1, {report['headline_threads']} thread(s) in the summary; "
        f"every thread count below. Verdict: **{'all gates passed' if report['passed'] else 'FAILED'}**.\n",
        "## Summary\n",
        summary_markdown(report["summary"]),
        "Dice is foreground per class on the original-resolution label images (background excluded from the mean); "
        "d mean is the change of the mean Dice vs the float Keras baseline. `x seed` is the speed-up over the seed "
        "project's U-Net (64-128-256 filters, 256x256, Keras predict) measured in the same run.\n",
        "## Findings\n",
        "\n".join(f"- {line}" for line in report["findings"]) + "\n" if report["findings"] else "- (none)\n",
        "## Accuracy\n",
        accuracy_markdown(accuracy),
    ]
    if report["notes"]:
        parts.append("\n".join(f"- {note}" for note in report["notes"]) + "\n")
    parts += [
        "## Latency\n",
        "Each measurement ran in its own process (peak RSS is that process's VmHWM: interpreter, runtime and model). "
        "Warm-up calls first, then timed calls until the repeat count or time budget is reached. GMAC/s = MACs per "
        "slice / median latency; % of ceiling compares it with numpy's fp32 matmul rate at the same thread count "
        "(int8 kernels can exceed an fp32 ceiling; a busy machine depresses the multi-thread ceiling most). "
        "slices/s = 1000 / mean latency (batch 1, one stream). Run spread = (max - min) / median of the "
        "per-pass medians when several passes ran.\n",
        latency_markdown(latency),
        *([real_markdown(report["real"])] if report["real"] else []),
        "## Plots\n",
        "\n".join(f"![{name}]({name})" for name in report["plots"]) + "\n",
        "## Tolerance gates\n",
        "| gate | per class | mean | direction |\n|---|---:|---:|---|\n"
        + "\n".join(
            f"| {t['gate']} | {_num(t['per_class'], '.3f')} | {_num(t['mean'], '.3f')} | "
            f"{md_cell('|dDice| (either way)') if t['two_sided'] else 'Dice drop'} |"
            for t in report["tolerances"]
        )
        + "\n",
        "## Machine\n",
        _machine_markdown(report["machine"]),
    ]
    return "\n".join(parts)


def run_bench(
    run_dir: Path,
    artifacts: Path,
    out: Path,
    data: Path | None = None,
    profile: BenchProfile = FULL,
    threads: tuple[int, ...] | None = None,
    show_progress: bool = True,
    runs: int | None = None,
    real: RealSet | None = None,
) -> tuple[dict[str, Any], AccuracyReport, LatencyReport]:
    """Run both benchmarks (and `bench real` per variant when `real` is given) and write the report folder;
    returns (report.json content, accuracy, latency)."""
    out = Path(out)
    machine = describe_machine()  # before the benchmarks: the load average is the background load
    variants = discover_variants(artifacts)
    latency_profile = profile.latency
    if threads:
        latency_profile = latency_profile.replace(threads=threads)
    if runs is not None:
        latency_profile = latency_profile.replace(runs=runs)
    accuracy = run_accuracy(
        run_dir, artifacts, data, max_patients=profile.max_patients, show_progress=show_progress, variants=variants
    )
    latency = measure_latency(variants, latency_profile, run_dir=Path(run_dir), show_progress=show_progress)
    headline = max(latency_profile.threads)
    summary = summary_rows(accuracy, latency, headline)
    out.mkdir(parents=True, exist_ok=True)
    write_accuracy(accuracy, out)
    write_latency(latency, out)
    notes = list(accuracy.notes)
    try:
        plots = write_plots(accuracy, latency, summary, out, headline)
    except ImportError as exc:  # matplotlib is in the 'train' extra; an edge box may lack it
        plots = []
        notes.append(f"plots skipped: {exc.name or exc} is not installed (pip install matplotlib)")
    real_rows = real_by_variant(variants, real, out) if real is not None else []
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    report = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "profile": {"name": profile.name, "max_patients": profile.max_patients, "latency": asdict(latency_profile)},
        "run_dir": str(run_dir),
        "artifacts": str(artifacts),
        "headline_threads": headline,
        "machine": machine,
        "tolerances": tolerance_table(DEFAULT_TOLERANCES),
        "summary": summary,
        "findings": [*findings(summary), *filter(None, [spread_finding(latency)])],
        "accuracy": accuracy.to_dict(),
        "latency": latency.to_dict(),
        "plots": plots,
        "real": real_rows,
        "notes": notes,
        "passed": accuracy.passed and not latency.errors,
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report, accuracy, latency))
    return report, accuracy, latency


def bench_all_command(
    run_dir: Path,
    artifacts: Path,
    out: Path,
    data: Path | None = None,
    quick: bool = False,
    threads: str | None = None,
    runs: int | None = None,
    real_images: Path | None = None,
    real_reference: Path | None = None,
) -> int:
    """CLI body of `edge-seg bench all`: 0 when every gate passed and every measurement ran,
    1 otherwise (the report is still written), 2 for unusable input."""
    import sys

    from rich.console import Console

    from edge_runtime.backends import BackendError

    err = Console(stderr=True, soft_wrap=True)
    try:
        thread_counts = parse_threads(threads) if threads else None
        if (real_images is None) != (real_reference is None):
            raise ValueError("--real-images and --real-reference go together")
        real = RealSet(Path(real_images), Path(real_reference)) if real_images is not None else None
        report, accuracy, latency = run_bench(
            run_dir, artifacts, out, data, QUICK if quick else FULL, thread_counts, runs=runs, real=real
        )
    except (ValueError, FileNotFoundError, BackendError) as exc:  # ManifestError / RunDirError are ValueErrors
        print_error(err, exc)
        return 2
    sys.stdout.write(summary_markdown(report["summary"]))
    print_verdict(accuracy, err)
    for row in latency.errors:
        print_message(err, "latency failed", f"{row.label} ({row.backend}, {row.threads} threads): {row.error}")
    err.print(f"wrote {escape(str(Path(out) / 'report.md'))}, report.json and {len(report['plots'])} plots")
    return 0 if report["passed"] else 1
