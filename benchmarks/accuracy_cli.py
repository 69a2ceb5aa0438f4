"""`edge-seg bench accuracy` on the command line: tables on stdout, verdict on stderr, exit status."""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks.accuracy_markdown import accuracy_markdown, write_accuracy
from benchmarks.accuracy_model import AccuracyReport
from edge_runtime.messages import print_error, print_message


def print_verdict(report: AccuracyReport, console) -> None:
    """One line per error, skipped variant and failed gate, then the overall verdict, on stderr."""
    for row in report.errors:
        print_error(console, f"{row.label}: {row.error}")
    for row in report.skipped:
        accepted = "accepted by --allow-skip" if report.allow_skip else "not passed; --allow-skip accepts it"
        print_message(console, "skipped", f"{row.label}: {row.skipped} ({accepted})")
    for gate in report.failed_gates:
        print_message(console, "gate failed", gate.describe())
    checks = sum(len(v.gates) for v in report.variants)
    verdict = "[green]all gates passed[/]" if report.passed else "[red]accuracy gates FAILED[/]"
    skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
    console.print(f"{verdict}: {checks} checks on {len(report.variants)} variants{skipped}, {report.n_slices} test slices")


def accuracy_command(
    run_dir: Path,
    artifacts: Path,
    data: Path | None = None,
    out: Path | None = None,
    quick: bool = False,
    threads: int | None = None,
    allow_skip: bool = False,
) -> int:
    """CLI body of `edge-seg bench accuracy`: 0 all gates pass, 1 a gate failed, a variant could not be
    evaluated, or one was skipped (unless `allow_skip`), 2 unusable input."""
    from rich.console import Console

    from benchmarks.accuracy import run_accuracy
    from edge_runtime.backends import BackendError

    err = Console(stderr=True, soft_wrap=True)
    try:
        report = run_accuracy(
            run_dir, artifacts, data, max_patients=2 if quick else None, threads=threads, allow_skip=allow_skip
        )
    except (ValueError, FileNotFoundError, BackendError) as exc:  # ManifestError/RunDirError are ValueErrors
        print_error(err, exc)
        return 2
    sys.stdout.write(accuracy_markdown(report))
    if out is not None:
        write_accuracy(report, out)
        err.print(f"wrote {Path(out) / 'accuracy.json'} and accuracy.md", markup=False)
    print_verdict(report, err)
    return 0 if report.passed else 1
