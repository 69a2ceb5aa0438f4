"""Latency benchmark: every variant x backend x thread count at batch 1, each in a fresh process.

Side by side in the same run: the seed project's U-Net and our float model in Keras (`predict`,
as the seed shipped), so each speed-up is a ratio of two numbers measured minutes apart on the
same machine; and numpy's fp32 matrix-multiply rate as the compute ceiling.

Size (~550 lines): the data model, the per-process orchestration and the markdown of one
benchmark; the markdown is the next part to move into benchmarks/markdown.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.markup import escape

from benchmarks.variants import Variant, discover_variants
from benchmarks.worker import RESULT_PREFIX
from edge_runtime.atomic import atomic_write_json, atomic_write_text
from edge_runtime.backends import FORMAT_BACKENDS, available_backends
from edge_runtime.manifest import gzip_size
from edge_runtime.messages import print_error, print_message
from edge_runtime.precision import Precision
from edge_runtime.progress import progress_bar
from edge_runtime.user_cache import CACHE_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BACKENDS_FOR_FORMAT = {fmt.lstrip("."): names for fmt, names in FORMAT_BACKENDS.items()}
AUTO = "auto"  # a row that times what `--backend auto` picks (measured once, then cached)
SEED_LABEL = "seed-unet-keras"
KERAS_FLOAT_LABEL = "keras-float"


@dataclass(frozen=True)
class LatencyProfile:
    """How hard to measure: thread counts, warm-up, repeats and a time budget per measurement."""

    name: str
    threads: tuple[int, ...]
    warmup: int
    min_repeats: int
    max_repeats: int
    budget_s: float
    keras_warmup: int
    keras_min_repeats: int
    keras_max_repeats: int
    keras_budget_s: float
    matmul_size: int
    runs: int = 1
    timeout_s: float = 900.0
    auto: bool = False  # also time `--backend auto` for artefacts that more than one backend can run

    def replace(self, **changes) -> LatencyProfile:
        """A copy with some fields changed (e.g. threads from the command line)."""
        values = asdict(self) | changes
        if values["runs"] < 1:
            raise ValueError(f"runs must be >= 1, got {values['runs']}")
        return LatencyProfile(**values)


FULL_LATENCY = LatencyProfile(
    name="full",
    threads=(1, 2),
    warmup=10,
    min_repeats=30,
    max_repeats=500,
    budget_s=5.0,
    keras_warmup=3,
    keras_min_repeats=10,
    keras_max_repeats=50,
    keras_budget_s=10.0,
    matmul_size=1024,
    runs=3,
    auto=True,
)
QUICK_LATENCY = LatencyProfile(
    name="quick",
    threads=(1,),
    warmup=1,
    min_repeats=3,
    max_repeats=10,
    budget_s=0.5,
    keras_warmup=1,
    keras_min_repeats=2,
    keras_max_repeats=3,
    keras_budget_s=1.0,
    matmul_size=256,
    timeout_s=300.0,
)


class WorkerError(RuntimeError):
    """A measurement process failed or printed no result."""


@dataclass
class LatencyRow:
    """One (model, backend, threads) measurement; latencies are per slice at batch 1."""

    label: str
    kind: str  # "artifact", "seed" or "keras-float"
    format: str
    precision: str
    recipe: str
    backend: str
    threads: int
    backend_used: str | None = None  # for the auto row: the backend auto chose
    repeats: int = 0
    median_ms: float | None = None
    p95_ms: float | None = None
    min_ms: float | None = None
    mean_ms: float | None = None
    throughput_per_s: float | None = None
    load_ms: float | None = None
    peak_rss_bytes: int | None = None
    rss_before_model_bytes: int | None = None
    size_bytes: int | None = None
    gzip_bytes: int | None = None
    macs_per_slice: int | None = None
    gmacs_per_s: float | None = None
    ceiling_fraction: float | None = None
    speedup_vs_seed: float | None = None
    speedup_vs_keras_float: float | None = None
    vs_fastest_backend: float | None = None  # median / the fastest backend's median, same model and threads
    input_size: int | None = None
    runs: int = 0
    run_medians_ms: list[float] = field(default_factory=list)
    run_spread: float | None = None  # (max - min) / median of the per-run medians
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LatencyReport:
    """All rows plus the compute ceiling per thread count and the profile used."""

    profile: dict
    rows: list[LatencyRow]
    ceiling: dict[int, dict] = field(default_factory=dict)

    @property
    def errors(self) -> list[LatencyRow]:
        return [row for row in self.rows if row.error]

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "ceiling": {str(k): v for k, v in self.ceiling.items()},
            "rows": [row.to_dict() for row in self.rows],
        }


def parse_threads(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """'1,2' -> (1, 2); raises ValueError naming the bad entry."""
    if isinstance(text, tuple | list):
        values = [int(v) for v in text]
    else:
        values = []
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                values.append(int(part))
            except ValueError:
                raise ValueError(f"--threads: {part!r} is not an integer (expected e.g. 1,2)") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--threads: need positive thread counts, got {text!r}")
    return tuple(dict.fromkeys(values))


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        env[name] = str(threads)
    env["TF_NUM_INTEROP_THREADS"] = str(threads)
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""  # an edge benchmark: CPU only, even on a GPU workstation
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_worker(task: dict, threads: int, timeout_s: float, env: dict[str, str] | None = None) -> dict:
    """Run one task in `python -m benchmarks.worker` (with `env` added) and return its parsed result."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", json.dumps(task)],
            env=_child_env(threads) | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise WorkerError(f"measurement did not finish within {timeout_s:.0f} s") from None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    raise WorkerError(f"worker exited with status {proc.returncode}: {tail}")


def _fill_timing(row: LatencyRow, results: list[dict]) -> None:
    """Pool the timed calls of every run; keep each run's median to show the run-to-run spread."""
    per_run = [np.asarray(r["times_s"], dtype=np.float64) * 1000.0 for r in results]
    times_ms = np.concatenate(per_run)
    row.runs = len(per_run)
    row.repeats = int(times_ms.size)
    row.run_medians_ms = [float(np.median(t)) for t in per_run]
    row.median_ms = float(np.median(times_ms))
    row.run_spread = (max(row.run_medians_ms) - min(row.run_medians_ms)) / float(np.median(row.run_medians_ms))
    row.p95_ms = float(np.percentile(times_ms, 95))
    row.min_ms = float(times_ms.min())
    row.mean_ms = float(times_ms.mean())
    row.throughput_per_s = 1000.0 / row.mean_ms
    row.load_ms = float(np.median([r["load_s"] for r in results])) * 1000.0
    row.peak_rss_bytes = max(int(r["peak_rss_bytes"]) for r in results)
    row.rss_before_model_bytes = min(int(r["rss_before_model_bytes"]) for r in results)
    if row.macs_per_slice:
        row.gmacs_per_s = row.macs_per_slice / (row.median_ms / 1000.0) / 1e9


def backends_for(variant: Variant, installed: list[str]) -> list[str]:
    """Installed backends that can run this artefact's format."""
    return [name for name in BACKENDS_FOR_FORMAT.get(variant.format, ()) if name in installed]


def keras_model_file(run_dir: Path) -> Path:
    """The float model of a training run (RunDir.model_path when the training package has it)."""
    try:
        from train.run_dir import RunDir

        path = Path(RunDir(run_dir).model_path)
    except ImportError:
        candidates = sorted(Path(run_dir).glob("*.keras"))
        if not candidates:
            raise FileNotFoundError(f"{run_dir}: no .keras model in the run folder") from None
        path = candidates[0]
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: float model {path} not found")
    return path


def tensorflow_installed() -> bool:
    return importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec("tf_keras") is not None


def _plan(
    variants: list[Variant], profile: LatencyProfile, run_dir: Path | None, include_seed: bool
) -> list[tuple[LatencyRow, dict]]:
    """Every measurement to run, as (row to fill, worker task)."""
    installed = available_backends()
    plan: list[tuple[LatencyRow, dict]] = []
    common = {
        "warmup": profile.warmup,
        "min_repeats": profile.min_repeats,
        "max_repeats": profile.max_repeats,
        "budget_s": profile.budget_s,
    }
    keras_common = {
        "warmup": profile.keras_warmup,
        "min_repeats": profile.keras_min_repeats,
        "max_repeats": profile.keras_max_repeats,
        "budget_s": profile.keras_budget_s,
    }
    for threads in profile.threads:
        if include_seed:
            row = LatencyRow(SEED_LABEL, "seed", "keras", "fp32", "seed", "keras-predict", threads)
            plan.append((row, {"kind": "keras", "source": "seed", "threads": threads, **keras_common}))
        if run_dir is not None:
            model_file = keras_model_file(run_dir)
            row = LatencyRow(KERAS_FLOAT_LABEL, "keras-float", "keras", "fp32", "float", "keras-predict", threads)
            row.gzip_bytes = gzip_size(model_file)
            task = {"kind": "keras", "source": "run", "path": str(model_file), "run_dir": str(run_dir), "threads": threads}
            plan.append((row, {**task, **keras_common}))
        for variant in variants:
            spec = variant.manifest.inputs[0]
            names = backends_for(variant, installed) or [BACKENDS_FOR_FORMAT.get(variant.format, ("none",))[0]]
            if profile.auto and len(names) > 1:
                names = [*names, AUTO]
            for backend in names:
                row = LatencyRow(variant.label, "artifact", variant.format, variant.precision, variant.recipe, backend, threads)
                row.size_bytes = variant.size_bytes
                row.gzip_bytes = variant.gzip_bytes
                row.macs_per_slice = variant.macs_per_slice
                row.input_size = int(spec.shape[1])
                task = {
                    "kind": "backend",
                    "path": str(variant.path),
                    "backend": backend,
                    "threads": threads,
                    "input_size": int(spec.shape[1]),
                    "channels": int(spec.shape[3] or 1),
                    **common,
                }
                plan.append((row, task))
    return plan


def _add_ratios(report: LatencyReport) -> None:
    """Speed-ups against the seed and the Keras float model at the same thread count."""

    def reference(label: str, threads: int) -> float | None:
        for row in report.rows:
            if row.label == label and row.threads == threads and row.median_ms:
                return row.median_ms
        return None

    fastest: dict[tuple[str, int], float] = {}
    for row in report.rows:
        if row.kind == "artifact" and row.median_ms and row.backend != AUTO:
            key = (row.label, row.threads)
            fastest[key] = min(fastest.get(key, row.median_ms), row.median_ms)
    float_macs = next((r.macs_per_slice for r in report.rows if r.kind == "keras-float" and r.macs_per_slice), None)
    float_size = next((r.input_size for r in report.rows if r.kind == "keras-float"), None)
    for row in report.rows:
        if not row.median_ms:
            continue
        if row.macs_per_slice is None and float_macs and row.input_size == float_size:
            # QAT manifests carry no MAC count (wrapped layers); pruned/QAT nets keep the dense shape
            row.macs_per_slice = float_macs
            row.gmacs_per_s = float_macs / (row.median_ms / 1000.0) / 1e9
        seed = reference(SEED_LABEL, row.threads)
        keras_float = reference(KERAS_FLOAT_LABEL, row.threads)
        row.speedup_vs_seed = seed / row.median_ms if seed else None
        row.speedup_vs_keras_float = keras_float / row.median_ms if keras_float else None
        if (row.label, row.threads) in fastest:
            row.vs_fastest_backend = row.median_ms / fastest[(row.label, row.threads)]
        ceiling = report.ceiling.get(row.threads, {}).get("gmacs_best")
        if row.gmacs_per_s and ceiling and _is_float(row.precision):  # the ceiling is an fp32 rate: int8 beats it
            row.ceiling_fraction = row.gmacs_per_s / ceiling


def measure_ceiling(profile: LatencyProfile, threads: int) -> dict:
    """numpy fp32 matmul rate with `threads` BLAS threads (GFLOP/s; GMAC/s is half)."""
    task = {"kind": "matmul", "size": profile.matmul_size, "warmup": 2, "min_repeats": 5, "max_repeats": 50, "budget_s": 2.0}
    result = run_worker(task, threads, profile.timeout_s)
    return {
        "matmul_size": result["size"],
        "gflops_best": result["gflops_best"],
        "gflops_median": result["gflops_median"],
        "gmacs_best": result["gflops_best"] / 2.0,
    }


def measure_latency(
    variants: list[Variant],
    profile: LatencyProfile,
    run_dir: Path | None = None,
    include_seed: bool = True,
    show_progress: bool = True,
) -> LatencyReport:
    """Run every measurement (sequentially: parallel runs would share the cores) and collect rows.

    A failing measurement becomes a row with `error` set; the others still run.
    """
    keras_ok = tensorflow_installed()
    plan = _plan(variants, profile, run_dir if keras_ok else None, include_seed and keras_ok)
    report = LatencyReport(profile=asdict(profile), rows=[])
    if not keras_ok:
        report.profile["note"] = "TensorFlow not installed: seed and Keras float models not measured"
    total = len(plan) * profile.runs + len(profile.threads)
    done = 0
    results: dict[int, list[dict]] = {i: [] for i in range(len(plan))}
    bar = progress_bar("latency", total=total) if show_progress else contextlib.nullcontext(lambda completed: None)
    # The auto rows decide afresh, in this benchmark's conditions (the first run of each measures,
    # the others reuse that choice), not from a choice cached on this machine under other load.
    auto_cache = Path(tempfile.mkdtemp(prefix="edge-seg-bench-auto-"))
    auto_env = {CACHE_ENV: str(auto_cache)}
    if any(row.backend == AUTO for row, _ in plan):
        report.profile["auto_note"] = "auto rows measured their choice afresh (a private backend-choice cache)"
    with bar as advance, contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, auto_cache, True)
        for threads in profile.threads:
            try:
                report.ceiling[threads] = measure_ceiling(profile, threads)
            except WorkerError as exc:
                report.ceiling[threads] = {"error": str(exc)}
            done += 1
            advance(done)
        for _ in range(profile.runs):  # whole passes, so slow drifts in machine load hit every row alike
            for index, (row, task) in enumerate(plan):
                if row.error is None:
                    try:
                        env = auto_env if row.backend == AUTO else None
                        results[index].append(run_worker(task, row.threads, profile.timeout_s, env))
                    except WorkerError as exc:
                        row.error = str(exc)
                done += 1
                advance(done)
    for index, (row, _) in enumerate(plan):
        if row.error is None:
            try:
                first = results[index][0]
                if row.backend == AUTO:
                    used = sorted({r["backend_used"] for r in results[index]})
                    row.backend_used = ", ".join(used)  # more than one only if the cache changed between runs
                if row.kind != "artifact":
                    row.macs_per_slice = first["macs_per_slice"]
                    row.size_bytes = first["size_bytes"]
                    row.input_size = first["input_size"]
                _fill_timing(row, results[index])
            except (KeyError, ValueError, IndexError) as exc:
                row.error = f"unusable worker result: {exc}"
        report.rows.append(row)
    _add_ratios(report)
    return report


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _kib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024:.1f}"


def _is_float(precision: str) -> bool:
    """fp32/fp16 rows are compared with the fp32 matmul ceiling; integer rows have no ceiling here."""
    try:
        return Precision.parse(precision).is_float
    except ValueError:
        return False


def latency_markdown(report: LatencyReport) -> str:
    """Markdown tables: per-measurement latency, and the compute ceiling."""
    lines = [
        "| model | backend | threads | median ms | p95 ms | min ms | run spread | slices/s | size KiB | gzip KiB "
        "| peak RSS MiB | MMAC/slice | GMAC/s | % of fp32 ceiling | x seed | x Keras float |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report.rows:
        if row.error:
            lines.append(f"| {row.label} | {row.backend} | {row.threads} | error: {row.error} |" + " |" * 12)
            continue
        macs = None if row.macs_per_slice is None else row.macs_per_slice / 1e6
        fraction = None if row.ceiling_fraction is None else 100 * row.ceiling_fraction
        spread = f"{100 * row.run_spread:.1f} % ({row.runs} runs)" if row.runs > 1 and row.run_spread is not None else "-"
        lines.append(
            f"| {row.label} | {row.backend}{f' -> {row.backend_used}' if row.backend_used else ''} | {row.threads} "
            f"| {_fmt(row.median_ms, '.2f')} | {_fmt(row.p95_ms, '.2f')} "
            f"| {_fmt(row.min_ms, '.2f')} | {spread} | {_fmt(row.throughput_per_s, '.1f')} | {_kib(row.size_bytes)} "
            f"| {_kib(row.gzip_bytes)} | {_mib(row.peak_rss_bytes)} | {_fmt(macs, '.1f')} | {_fmt(row.gmacs_per_s, '.2f')} "
            f"| {_fmt(fraction, '.0f')} | {_fmt(row.speedup_vs_seed, '.1f')} | {_fmt(row.speedup_vs_keras_float, '.2f')} |"
        )
    lines += ["", "| threads | numpy fp32 matmul GFLOP/s (best) | median | = GMAC/s ceiling |", "|---:|---:|---:|---:|"]
    for threads, ceiling in sorted(report.ceiling.items()):
        if "error" in ceiling:
            lines.append(f"| {threads} | error: {ceiling['error']} | | |")
        else:
            lines.append(
                f"| {threads} | {ceiling['gflops_best']:.1f} | {ceiling['gflops_median']:.1f} | {ceiling['gmacs_best']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def backend_markdown(report: LatencyReport) -> str:
    """Per model and thread count: the fastest backend, and each backend's median as a ratio to it."""
    rows = [r for r in report.rows if r.kind == "artifact" and r.median_ms]
    backends = [name for name in (*dict.fromkeys(n for names in BACKENDS_FOR_FORMAT.values() for n in names), AUTO)
                if any(r.backend == name for r in rows)]
    if not rows:
        return ""
    lines = [
        "| model | threads | fastest backend | median ms | " + " | ".join(f"{b}: ms (x fastest)" for b in backends) + " |",
        "|---|---:|---|---:|" + "---:|" * len(backends),
    ]
    for label, threads in dict.fromkeys((r.label, r.threads) for r in rows):
        group = {r.backend: r for r in rows if r.label == label and r.threads == threads}
        explicit = [r for name, r in group.items() if name != AUTO]
        if not explicit:
            continue
        best = min(explicit, key=lambda r: r.median_ms or float("inf"))
        cells = []
        for name in backends:
            row = group.get(name)
            if row is None:
                cells.append("-")
                continue
            used = f" -> {row.backend_used}" if name == AUTO and row.backend_used else ""
            cells.append(f"{row.median_ms:.2f} (x{row.vs_fastest_backend:.2f}){used}")
        lines.append(f"| {label} | {threads} | {best.backend} | {best.median_ms:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_latency(report: LatencyReport, out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "latency.json", report.to_dict())
    backends = backend_markdown(report)
    text = "# Latency\n\n" + latency_markdown(report)
    if backends:
        text += "\n## Backends: fastest per model and thread count\n\n" + backends
    atomic_write_text(out / "latency.md", text)


def latency_command(
    artifacts: Path,
    threads: str = "1,2",
    out: Path | None = None,
    run_dir: Path | None = None,
    quick: bool = False,
    seed: bool = True,
    runs: int | None = None,
) -> int:
    """CLI body of `edge-seg bench latency`: 0 when every measurement ran, 1 if some failed, 2 on bad input."""
    from rich.console import Console

    err = Console(stderr=True, soft_wrap=True)
    try:
        profile = (QUICK_LATENCY if quick else FULL_LATENCY).replace(threads=parse_threads(threads))
        if runs is not None:
            profile = profile.replace(runs=runs)
        variants = discover_variants(artifacts)
        if run_dir is not None:
            keras_model_file(run_dir)
    except (ValueError, FileNotFoundError) as exc:  # ManifestError is a ValueError
        print_error(err, exc)
        return 2
    report = measure_latency(variants, profile, run_dir=run_dir, include_seed=seed)
    sys.stdout.write(latency_markdown(report))
    if backend_markdown(report):
        sys.stdout.write("\n" + backend_markdown(report))
    if out is not None:
        write_latency(report, out)
        err.print(f"wrote {escape(str(Path(out) / 'latency.json'))} and latency.md")
    for row in report.errors:
        print_message(err, "failed", f"{row.label} ({row.backend}, {row.threads} threads): {row.error}")
    return 1 if report.errors else 0


__all__ = [
    "AUTO",
    "FULL_LATENCY",
    "QUICK_LATENCY",
    "LatencyProfile",
    "LatencyReport",
    "LatencyRow",
    "backend_markdown",
    "latency_command",
    "latency_markdown",
    "measure_latency",
    "parse_threads",
]
