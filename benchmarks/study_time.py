"""Whole-study time: `edge-seg run` on one 15-slice DICOM study, end to end, in fresh processes.

    python -m benchmarks.study_time [--runs 5] [--threads N] [--backend auto] [--format all] [--single-window]
                                    [--json out.json]

Writes a seeded 15-slice synthetic study (edge-seg synth), runs the CLI once to warm the disk
cache and the backend choice, then `--runs` timed runs. Each run is a new process, as on a
scanner-side box: wall time and peak RSS come from the operating system (os.wait4), the stage
breakdown from the run's own report.json, and "startup_and_exit" is what the process spent
outside the report's total (interpreter, imports, argument parsing, report writing, exit); a
second set of runs with timestamps splits that into phases. `edge-seg --help` and bare
interpreter start are timed the same way. edge_runtime is byte-compiled first, as an installed
package is (`--no-compile` measures a checkout that never wrote its byte-code). Medians are printed; treat them as ratios when the
machine is busy (its load average is printed too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_write_json

PROJECT_ROOT = Path(__file__).resolve().parents[1]
STUDY_SLICES = 15
_SCRIPT = Path(sys.executable).with_name("edge-seg")  # the console script a user types
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "edge_runtime.cli"]


@dataclass
class ProcessRun:
    """One finished child process."""

    wall_s: float
    peak_rss_bytes: int
    returncode: int
    cpu_s: float = 0.0  # user + system CPU time of the child: less sensitive to a busy machine than wall
    stderr_tail: str = ""


@dataclass
class StudyTime:
    """Everything one benchmark measured."""

    command: list[str]
    load_average: list[float]
    warmup: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    help: list[ProcessRun] = field(default_factory=list)
    python: list[ProcessRun] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)
    memory: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_measured(argv: list[str], env: dict[str, str], timeout_s: float = 300.0) -> ProcessRun:
    """Run `argv`: wall time from spawn to reap, and that child's own peak RSS from os.wait4."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        # Linux counts the pre-exec (parent's) memory in a child's ru_maxrss, so a reading is at least
        # this script's own RSS (~20 MB): far below what `edge-seg run` needs, so it does not matter here
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline = start + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise subprocess.TimeoutExpired(argv, timeout_s)
            time.sleep(0.002)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-2000:]
    scale = 1 if sys.platform == "darwin" else 1024
    return ProcessRun(wall, int(usage.ru_maxrss) * scale, proc.returncode, usage.ru_utime + usage.ru_stime, tail)


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc)."""
    found = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                for child in handle.read().split():
                    found += _process_tree(int(child))
    except OSError:  # it ended meanwhile
        pass
    return found


def _pss_rss_kb(pid: int) -> tuple[int, int]:
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1])
    except OSError:
        pass
    return pss, rss


def sample_memory(argv: list[str], env: dict[str, str], every_s: float = 0.005) -> dict[str, float] | None:
    """Peak memory of a run's whole process tree (the CLI and its forked DICOM builder), sampled every
    `every_s`: summed PSS (shared pages counted once, split between the processes that map them) and
    summed RSS (shared pages counted in each). None where /proc/PID/smaps_rollup does not exist.
    Sampling slows the run a little, so these runs are not the timed ones."""
    if not Path(f"/proc/{os.getpid()}/smaps_rollup").exists():
        return None
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak_pss = peak_rss = processes = 0
    while proc.poll() is None:
        tree = _process_tree(proc.pid)
        sizes = [_pss_rss_kb(pid) for pid in tree]
        peak_pss = max(peak_pss, sum(p for p, _ in sizes))
        peak_rss = max(peak_rss, sum(r for _, r in sizes))
        processes = max(processes, len(tree))
        time.sleep(every_s)
    return {"peak_pss_mb": peak_pss * 1024 / 1e6, "peak_rss_mb": peak_rss * 1024 / 1e6, "processes": processes}


# The same CLI run with timestamps at its phase boundaries (printed to stderr at exit).
PHASES = """
import atexit, sys, time
start = time.perf_counter()
marks = {}
import edge_runtime.cli as cli
marks["cli_imported"] = time.perf_counter() - start
import edge_runtime.run as run
command = run.run_command
def timed(**kwargs):
    marks["run_command_entered"] = time.perf_counter() - start
    try:
        return command(**kwargs)
    finally:
        marks["run_command_returned"] = time.perf_counter() - start
run.run_command = timed
atexit.register(lambda: sys.stderr.write("PHASES " + repr(marks | {"atexit": time.perf_counter() - start}) + "\\n"))
sys.argv = ["edge-seg", *sys.argv[1:]]
cli.main()
"""


def measure_phases(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Where a run's wall time goes outside its report: imports, argument parsing, run_command,
    what follows it (reports are timed inside), and interpreter shutdown after atexit."""
    import ast

    done = run_measured([sys.executable, "-c", PHASES, *argv[len(CLI):]], env)
    line = next(text for text in done.stderr_tail.splitlines() if text.startswith("PHASES "))
    marks = ast.literal_eval(line[len("PHASES "):])
    return {
        "interpreter_and_cli_import": marks["cli_imported"],
        "parse_and_import_run": marks["run_command_entered"] - marks["cli_imported"],
        "run_command": marks["run_command_returned"] - marks["run_command_entered"],
        "after_run_command": marks["atexit"] - marks["run_command_returned"],
        "shutdown_after_atexit": done.wall_s - marks["atexit"],
    }


def compile_runtime() -> None:
    """Byte-compile edge_runtime into its __pycache__ folders, as `pip install` does for an installed
    package. A checkout run with PYTHONDONTWRITEBYTECODE=1 (as on this project's box) otherwise
    compiles every runtime module from source in every run: 0.05-0.07 s of CPU."""
    import compileall

    compileall.compile_dir(str(PROJECT_ROOT / "edge_runtime"), quiet=1)


def make_study(folder: Path, env: dict[str, str], seed: int = 0) -> Path:
    """A seeded synthetic DICOM study with exactly STUDY_SLICES axial slices (edge-seg synth)."""
    data = folder / "synth"
    subprocess.run([*CLI, "synth", str(data), "--patients", "8", "--seed", str(seed), "--dicom"], env=env,
                   check=True, capture_output=True)
    for series in sorted((data / "01_MRI_Data").glob("*/*")):
        if series.is_dir() and not series.name.endswith("_labels") and len(list(series.glob("*.ima"))) == STUDY_SLICES:
            study = folder / "study" / series.name
            shutil.copytree(series, study)
            return study
    raise RuntimeError(f"no {STUDY_SLICES}-slice series among 8 synthetic patients (seed {seed})")


def _stage_breakdown(report: dict[str, Any], wall_s: float) -> dict[str, float]:
    timings = {k: float(v) for k, v in report["timings_s"].items() if isinstance(v, int | float)}
    timings.pop("inference_ms_per_slice", None)
    total = timings.get("total", 0.0)
    return {"wall": wall_s, "startup_and_exit": wall_s - total, **timings}


def measure_study(
    study: Path, out: Path, env: dict[str, str], runs: int, threads: int | None, backend: str, formats: str,
    single_window: bool = False,
) -> StudyTime:
    argv = [*CLI, "run", str(study), "-o", str(out), "--overwrite", "--backend", backend, "--format", formats]
    if threads is not None:
        argv += ["--threads", str(threads)]
    if single_window:
        argv.append("--single-window")
    warm = run_measured(argv, env)  # fills the disk cache, the backend choice and OpenVINO's blob cache
    if warm.returncode not in (0, 1):
        raise RuntimeError(f"edge-seg run failed ({warm.returncode}): {warm.stderr_tail}")
    result = StudyTime(argv, [round(v, 2) for v in os.getloadavg()], asdict(warm))
    for _ in range(runs):
        done = run_measured(argv, env)
        report = json.loads((out / "report.json").read_text())
        entry = asdict(done) | {
            "stages_s": _stage_breakdown(report, done.wall_s),
            "backend": report["model"]["backend"],
            "threads": report["model"]["threads"],
            "slices": sum(s["n_slices"] for s in report["series"]),
            "outputs": sorted({k for s in report["series"] for k in s.get("outputs", {})}),
            "dicom_builder_peak_rss_mb": report.get("dicom_builder", {}).get("peak_rss_mb"),
        }
        result.runs.append(entry)
    for _ in range(runs):
        result.phases.append(measure_phases(argv, env))
        sampled = sample_memory(argv, env)
        if sampled is not None:
            result.memory.append(sampled)
    for _ in range(runs):
        result.help.append(run_measured([*CLI, "--help"], env))
        result.python.append(run_measured([sys.executable, "-c", "pass"], env))
    return result


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _memory_rows(result: StudyTime) -> list[str]:
    """The DICOM builder's own peak, and the peak of the whole process tree (sampled runs)."""
    rows = []
    builder = [r["dicom_builder_peak_rss_mb"] for r in result.runs if r.get("dicom_builder_peak_rss_mb") is not None]
    if builder:
        rows.append(f"| peak RSS MB, DICOM builder process | {_median(builder):.0f} | {', '.join(f'{v:.0f}' for v in builder)} |")
    for key, label in (("peak_pss_mb", "summed PSS"), ("peak_rss_mb", "summed RSS")):
        values = [m[key] for m in result.memory]
        if values:
            rows.append(f"| peak memory MB, all processes ({label}, sampled every 5 ms) | {_median(values):.0f} | "
                        f"{', '.join(f'{v:.0f}' for v in values)} |")  # fmt: skip
    return rows


def markdown(result: StudyTime) -> str:
    runs = result.runs
    stages: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run["stages_s"].items():
            stages.setdefault(key, []).append(value)
    first = runs[0] if runs else {}
    walls = [r["wall_s"] for r in runs]
    cpus = [r["cpu_s"] for r in runs]
    rss_mb = [r["peak_rss_bytes"] / 1e6 for r in runs]
    help_s = [r.wall_s for r in result.help]
    lines = [
        f"`{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(result.command))}`",
        "",
        f"{first.get('slices', '?')} slices, backend {first.get('backend', '?')}, {first.get('threads', '?')} threads, "
        f"outputs {', '.join(first.get('outputs', []))}; load average at start {result.load_average}",
        "",
        "| measure | median | runs |",
        "|---|---:|---|",
        f"| wall s | {_median(walls):.3f} | {', '.join(f'{v:.2f}' for v in walls)} |",
        f"| CPU s (user + system) | {_median(cpus):.3f} | {', '.join(f'{v:.2f}' for v in cpus)} |",
        f"| peak RSS MB, main process | {_median(rss_mb):.0f} | {', '.join(f'{v:.0f}' for v in rss_mb)} |",
        *_memory_rows(result),
        f"| `edge-seg --help` s | {_median(help_s):.3f} | {', '.join(f'{v:.2f}' for v in help_s)} |",
        f"| `edge-seg --help` CPU s | {_median([r.cpu_s for r in result.help]):.3f} | |",
        f"| `python -c pass` s | {_median([r.wall_s for r in result.python]):.3f} | |",
        f"| first run (warm-up: backend choice, caches) s | {result.warmup['wall_s']:.3f} | "
        f"peak RSS {result.warmup['peak_rss_bytes'] / 1e6:.0f} MB |",
        "",
        "| stage | median s |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {_median(values):.3f} |" for name, values in stages.items()]
    if result.phases:
        lines += ["", "| phase (same run with timestamps) | median s |", "|---|---:|"]
        lines += [f"| {name} | {_median([p[name] for p in result.phases]):.3f} |" for name in result.phases[0]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--format", default="all", help="edge-seg run --format (default: every output)")
    parser.add_argument("--single-window", action="store_true", help="edge-seg run --single-window (one window per slice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder instead of a temporary one")
    parser.add_argument(
        "--no-compile", action="store_true",
        help="leave edge_runtime without byte-code (by default it is compiled first, as pip install does)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    if not args.no_compile:
        compile_runtime()
    work = Path(tempfile.mkdtemp(prefix="edge-seg-study-time-")) if args.keep is None else args.keep
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "EDGE_SEG_CACHE_DIR": str(work / "cache")}
    try:
        study = make_study(work, env)
        result = measure_study(study, work / "out", env, args.runs, args.threads, args.backend, args.format,
                               args.single_window)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    sys.stdout.write(markdown(result))
    if args.json is not None:
        atomic_write_json(args.json, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
