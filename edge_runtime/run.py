"""`edge-seg run`: a study folder in, masks, overlays, measurements, DICOM SEG and reports out.

Output layout (OUTPUT is never inside INPUT; names follow the input series folder and slice stem):
    OUTPUT/summary.json                          outcome, counts, timings, files (written last)
    OUTPUT/report.json, OUTPUT/report.csv        per slice and class areas, TS grade, disc levels, orientation
                                                 blocks, model/backend/threads/timings, every excluded,
                                                 skipped and failed input with its reason
    OUTPUT/<series>/labels/<stem>.png            label mask in Mendeley values (50 IVD, 100 PE,
                                                 150 TS, 200 AAP, 250 background)
    OUTPUT/<series>/<series>_labels.npy          (N, H, W) uint8 class ids of the segmented slices
    OUTPUT/<series>/overlays/<stem>.png          slice with class colours and a legend with areas
    OUTPUT/<series>/<series>_contact_sheet.png   all overlays of the series
    OUTPUT/<series>/<series>_seg.dcm             DICOM SEG (needs highdicom: the dicom-seg extra);
                                                 <series>_block<k>_seg.dcm, one per orientation block,
                                                 when the series has angled blocks
    OUTPUT/<series>/<series>_sr.dcm              DICOM SR, TID 1500: thecal-sac areas per slice and level (highdicom)
    OUTPUT/key_images.png, key_images.dcm        per study: narrowest sac per disc level, table of levels,
                                                 as PNG and Secondary Capture (key_images_<k>.* for k studies)

Exit status: 0 every selected slice was segmented and written; 1 some inputs failed (the rest
is written); 2 usage, model or output-folder error, or the folder is locked by another run
(nothing written); 128+N when stopped by signal N (nothing written).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from edge_runtime.backends import BackendError
from edge_runtime.console import err, print_summary
from edge_runtime.cpu import usable_cores
from edge_runtime.cutoffs import ABSOLUTE_STENOSIS_MM2, RELATIVE_STENOSIS_MM2
from edge_runtime.decode import load_pixels
from edge_runtime.dicom_builder import DicomBuilder
from edge_runtime.dicom_seg import seg_unavailable_reason
from edge_runtime.discovery import discover
from edge_runtime.geometry import ap_axis
from edge_runtime.highdicom_tables import import_highdicom
from edge_runtime.inputs import InputIssue, Series, SliceDecodeError, Study, display_path
from edge_runtime.manifest import ManifestError
from edge_runtime.measure import StenosisThresholds, measure_series
from edge_runtime.outputs import (
    OUTPUT_FORMATS,
    REPORT_NAMES,
    SUMMARY_NAME,
    OutputError,
    OutputFormat,
    RunOutputs,
    holder_info,
)
from edge_runtime.progress import progress_bar
from edge_runtime.report import SeriesOutcome, build_report, build_summary, model_info, report_csv, report_json
from edge_runtime.report_outputs import planned_summaries, write_run_summaries
from edge_runtime.segmenter import Segmenter, Timings
from edge_runtime.selection import RulesError, SelectionRules
from edge_runtime.truth import score_series, truth_index
from edge_runtime.writers import SERIES_WRITERS, SeriesResult

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.tflite"


class UsageError(ValueError):
    """Bad command-line values: exit status 2."""


class RunInterrupted(BaseException):
    """SIGTERM/SIGHUP arrived: stop, drop the staged files, release the lock.

    A BaseException, like KeyboardInterrupt, so the per-slice and per-writer guards
    (`except Exception`) never swallow it as one slice's failure.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class RunOptions:
    """Validated options of one run."""

    input: Path
    output: Path
    model: Path
    formats: tuple[str, ...]
    thresholds: StenosisThresholds
    overwrite: bool
    truth: Path | None
    rules: SelectionRules = field(default_factory=SelectionRules)
    single_window: bool = False  # one window per slice instead of WINDOW_SCALES' three (faster, less accurate)
    stage_s: dict[str, float] = field(default_factory=dict)  # wall time of run stages outside the segmenter

    def clock(self, stage: str, since: float) -> float:
        """Add the time since `since` to `stage`; returns now, to chain stages."""
        now = time.perf_counter()
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + now - since
        return now


def _give_spacing(selected: list[Series], pixel_spacing: float | None, segmenter: Segmenter) -> None:
    """Set --pixel-spacing on slices without their own; refuse a run a field-of-view model cannot do."""
    bare = [r for s in selected for r in s.slices if r.pixel_spacing is None and r.kind != "dicom"]
    if pixel_spacing is not None:
        for record in bare:
            record.pixel_spacing = (pixel_spacing, pixel_spacing)
    elif bare and (fov := segmenter.spec.field_of_view_mm) is not None:
        raise UsageError(
            f"the model sees a {fov:g} mm field of view, and {len(bare)} PNG/NPY slice(s) carry no pixel spacing "
            f"(e.g. {display_path(bare[0].path)}); give --pixel-spacing MM"
        )


def parse_formats(formats: str | None) -> tuple[str, ...]:
    """'png,overlay' -> ('png', 'overlay'); 'all' -> every format; unknown names are a usage error."""
    names = [f.strip().lower() for f in (formats or "all").split(",") if f.strip()]
    if not names or names == ["all"]:
        return OUTPUT_FORMATS
    unknown = sorted(set(names) - set(OUTPUT_FORMATS))
    if unknown:
        raise UsageError(f"unknown output format(s) {unknown}; choose from {', '.join(OUTPUT_FORMATS)} or all")
    return tuple(f for f in OUTPUT_FORMATS if f in names)


def resolve_model(model: Path | None) -> Path:
    """The given model, or the bundled default; a clear usage error when neither exists."""
    if model is not None:
        if not Path(model).is_file():
            raise UsageError(f"model file {display_path(model)} not found")
        return Path(model)
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    raise UsageError(
        f"no bundled default model ({DEFAULT_MODEL} is missing); pass --model PATH to an exported "
        ".tflite or .onnx file that has its .json manifest beside it"
    )


def planned_outputs(options: RunOptions, selected: list[Series]) -> list[Path]:
    """Every file this run may write: refused up front when it exists (without --overwrite) or lands in INPUT."""
    paths = [options.output / SUMMARY_NAME]
    if OutputFormat.REPORT in options.formats:
        paths += [options.output / name for name in REPORT_NAMES]
    for series in selected:
        for name, writer in SERIES_WRITERS.items():
            if name in options.formats:
                paths += writer.planned(series, options.output / series.name)
    if OutputFormat.SUMMARY in options.formats:
        paths += planned_summaries(options.output, selected)
    return paths


def _needed_bytes(selected: list[Series], formats: tuple[str, ...]) -> int:
    """A generous estimate of what the run writes: the free-space check before inference."""
    pixels = sum((r.shape[0] * r.shape[1]) if r.shape else 512 * 512 for s in selected for r in s.slices)
    per_pixel = 0.5 * ("png" in formats) + 4 * ("overlay" in formats) + 1 * ("npy" in formats) + 0.6 * ("seg" in formats)
    return int(pixels * per_pixel) + (1 << 20)


def files_under(input_path: Path, limit: int = 100_000) -> int:
    """How many files the input holds (a file: 1), up to `limit`, without reading any: the most
    slices a run can segment, which `--backend auto` weighs against each runtime's start-up."""
    if not input_path.is_dir():
        return 1
    count = 0
    for _, _, names in os.walk(input_path):
        count += len(names)
        if count >= limit:
            return limit
    return count


def _load_model(options: RunOptions, backend: str, threads: int | None, batch_size: int) -> Segmenter:
    try:
        return Segmenter(options.model, backend=backend, threads=threads, batch_size=batch_size,
                         slices=files_under(options.input), single_window=options.single_window)
    except (ManifestError, BackendError, ValueError):
        raise
    except Exception as exc:  # a hostile manifest or model file: name it, exit 2, no traceback
        raise ManifestError(f"{display_path(options.model)}: cannot be loaded ({type(exc).__name__}: {exc})") from exc


def _load_model_in_background(options: RunOptions, backend: str, threads: int | None, batch_size: int) -> Future[Segmenter]:
    """`_load_model` on a thread of its own; `.result()` returns the Segmenter or raises what it raised."""
    future: Future[Segmenter] = Future()

    def load() -> None:
        try:
            future.set_result(_load_model(options, backend, threads, batch_size))
        except BaseException as exc:  # handed to the caller, which raises it
            future.set_exception(exc)

    threading.Thread(target=load, name="edge-seg-model-load", daemon=True).start()
    return future


# --------------------------------------------------------------------------- one series

_STAGES = {OutputFormat.SEG: "dicom_seg", OutputFormat.SR: "dicom_sr", OutputFormat.SUMMARY: "findings"}


def _segment(
    series: Series, segmenter: Segmenter, options: RunOptions, result: SeriesResult, advance: Callable[[int], None]
) -> None:
    """Decode and segment every slice in batches; a slice that fails costs that slice only."""
    outcome = result.outcome
    batch = max(1, segmenter.batch_size)
    for offset in range(0, len(series.slices), batch):
        chunk = list(range(offset, min(offset + batch, len(series.slices))))
        pixels: list[np.ndarray | None] = []
        tick = time.perf_counter()
        for i in chunk:
            try:
                pixels.append(load_pixels(series.slices[i]))
            except SliceDecodeError as exc:
                pixels.append(None)
                outcome.failed_indices[i] = exc.reason
            except Exception as exc:  # an odd header value must cost one slice, not the study
                pixels.append(None)
                outcome.failed_indices[i] = f"cannot read slice ({type(exc).__name__}: {exc})"
        options.clock("decode", tick)
        spacings = [series.slices[i].pixel_spacing for i in chunk]
        for i, image, found in zip(chunk, pixels, segmenter.segment(pixels, spacings), strict=True):
            if image is None:
                continue
            if found.mask is None:
                outcome.failed_indices[i] = found.error or "segmentation failed"
                continue
            result.masks[i], result.images[i] = found.mask, image
            outcome.inference_ms[i] = 1000.0 * found.inference_s
        advance(len(chunk))


def process_series(
    series: Series,
    segmenter: Segmenter,
    options: RunOptions,
    outputs: RunOutputs,
    advance: Callable[[int], None],
    truth: dict[str, list[Path]],
) -> SeriesOutcome:
    """Segment, measure, then hand the result to each requested writer; failures stay per slice or per file."""
    start = time.perf_counter()
    outcome = SeriesOutcome(series=series)
    result = SeriesResult(series, options.output / series.name, outcome, segmenter.manifest)
    _segment(series, segmenter, options, result, advance)
    tick = time.perf_counter()
    outcome.measurement = measure_series(
        [result.masks.get(i) for i in range(len(series.slices))],
        [r.pixel_spacing for r in series.slices],
        [r.stem for r in series.slices],
        options.thresholds,
        [r.location for r in series.slices],
        [ap_axis(r.orientation) for r in series.slices],
        [r.block for r in series.slices],
    )
    tick = options.clock("measure", tick)
    try:
        for name, writer in SERIES_WRITERS.items():
            if name in options.formats:
                writer.write(result, outputs)
                tick = options.clock(_STAGES.get(name, "outputs"), tick)
    finally:  # the PNGs encoded on worker threads meanwhile: their failures are this series' slices'
        tick = time.perf_counter()
        outputs.wait()
        options.clock("outputs", tick)
    named = {issue.path for issue in outcome.failed}
    for i, reason in sorted(outcome.failed_indices.items()):
        if series.slices[i].path not in named:
            outcome.failed.append(InputIssue(series.slices[i].path, reason))
    if truth:
        tick = time.perf_counter()
        score_series(series, result.masks, truth, outcome)
        options.clock("truth", tick)
    outcome.outputs["folder"] = str(result.folder)
    outcome.seconds = time.perf_counter() - start
    return outcome


# --------------------------------------------------------------------------- entry point


# The signals that arrived during this run (main thread only): a library may swallow the
# RunInterrupted raised wherever the signal lands (pydicom turns any exception while it reads a
# sequence item into OSError, which then counts as one writer's failure), so the run checks
# this again before it commits.
_received_signals: list[int] = []


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into RunInterrupted (main thread only), so staged files are removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        _received_signals.append(signum)
        raise RunInterrupted(signum)

    _received_signals.clear()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _received_signals.clear()


def _stop_if_interrupted() -> None:
    """Raise the RunInterrupted of a signal that arrived even if what it interrupted swallowed it."""
    if _received_signals:
        raise RunInterrupted(_received_signals[0])


def run_command(
    input: Path,
    output: Path,
    model: Path | None = None,
    threads: int | None = None,
    backend: str = "auto",
    formats: str | None = "all",
    series: str | None = None,
    truth: Path | None = None,
    overwrite: bool = False,
    ts_relative_mm2: float = RELATIVE_STENOSIS_MM2,
    ts_absolute_mm2: float = ABSOLUTE_STENOSIS_MM2,
    json_output: bool = False,
    batch_size: int = 8,
    rules: Path | None = None,
    loaded: Segmenter | None = None,
    quiet: bool = False,
    fork_builder: bool = False,
    pixel_spacing: float | None = None,
    single_window: bool = False,
) -> int:
    """Segment every selected series under `input` into `output`; returns the exit status.

    `pixel_spacing`: mm per pixel of PNG/NPY slices, which carry none (DICOM keeps its own).
    `single_window`: see each slice through the model's own field of view only, not the three
    windows of preprocessing.WINDOW_SCALES (a third of the inference, slightly less accurate).

    `loaded`: an already-loaded Segmenter (model, backend) to reuse, as the long-lived
    `edge-seg serve` worker does; `model`, `threads`, `backend` and `batch_size` are then
    ignored. `quiet`: print nothing on success (the caller reads OUTPUT/summary.json).
    `fork_builder`: build the DICOM files in a forked process (on two or more cores). Only for
    a caller that knows its process runs no other thread yet, as the console script does: a
    thread holding a lock at the fork (malloc's, the import lock, a library's) leaves the child
    waiting for it forever. A test process saw this: an onnxruntime session it had loaded was
    freed in the child, and its destructor waited on a thread pool that a fork does not copy.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    outputs: RunOutputs | None = None
    try:
        input_path, output = Path(input), Path(output)
        if not input_path.exists():
            raise UsageError(f"input {display_path(input_path)} does not exist")
        if truth is not None and not Path(truth).exists():
            raise UsageError(f"truth folder {display_path(truth)} does not exist")
        if threads is not None and threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        if pixel_spacing is not None and not pixel_spacing > 0:
            raise UsageError(f"--pixel-spacing must be > 0 mm, got {pixel_spacing}")
        base_rules = SelectionRules.load(rules) if rules is not None else None
        options = RunOptions(
            input=input_path,
            output=output,
            model=resolve_model(model) if loaded is None else loaded.model_path,
            formats=parse_formats(formats),
            thresholds=StenosisThresholds(ts_relative_mm2, ts_absolute_mm2),
            overwrite=overwrite,
            truth=Path(truth) if truth is not None else None,
            single_window=single_window,
        )
        outputs = RunOutputs(output, input_path, overwrite)
        outputs.check_location()
        if _builds_dicom(options.formats):  # a one-shot run forks it while this process has no other thread
            second_core = fork_builder and loaded is None and usable_cores() > 1
            outputs.builder = DicomBuilder.fork(import_highdicom) if second_core else DicomBuilder(import_highdicom)
        if loaded is None:  # loads on a thread while discovery reads the headers (a compile is native code)
            loading = _load_model_in_background(options, backend, threads, batch_size)
        else:  # reused across runs: this run's report counts only this run's stage times
            loading, loaded.timings = None, Timings()
        if base_rules is not None:
            options.rules = base_rules.with_series(series)
        elif series is not None:
            options.rules = SelectionRules.for_series(series)
        t0 = time.perf_counter()
        try:
            study = discover(input_path, rules=options.rules)
            timings["discovery"] = time.perf_counter() - t0
        finally:
            segmenter = loaded if loading is None else loading.result()  # its errors first, as when it loaded alone
        _check_selection(study, series)
        _give_spacing(study.selected, pixel_spacing, segmenter)
        outputs.open(planned_outputs(options, study.selected), _needed_bytes(study.selected, options.formats),
                     holder_info(input_path))
    except (UsageError, ManifestError, BackendError, RulesError, OutputError, ValueError, FileNotFoundError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        if outputs is not None:
            outputs.builder.close(kill=True)
        return 2
    try:
        with _interruptible():
            return _run(study, segmenter, options, outputs, timings, started, json_output, quiet)
    except (KeyboardInterrupt, RunInterrupted) as exc:
        signum = exc.signum if isinstance(exc, RunInterrupted) else signal.SIGINT
        err.print(f"[red]error:[/] {escape(str(exc) or 'interrupted')}; nothing written, staged files removed")
        return 128 + int(signum)
    finally:
        outputs.close()


def _run(
    study: Study,
    segmenter: Segmenter,
    options: RunOptions,
    outputs: RunOutputs,
    timings: dict[str, float],
    started: float,
    json_output: bool,
    quiet: bool = False,
) -> int:
    truth = truth_index(options.truth)
    outcomes = []
    with progress_bar("segmenting", total=sum(len(s.slices) for s in study.selected)) as update:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(done)

        for selected in study.selected:
            try:
                outcomes.append(process_series(selected, segmenter, options, outputs, advance, truth))
            except (KeyboardInterrupt, RunInterrupted):
                raise
            except Exception as exc:  # never let one series stop the others; report it as failed
                broken = SeriesOutcome(series=selected)
                broken.failed.append(InputIssue(selected.folder, f"series failed ({type(exc).__name__}: {exc})"))
                broken.failed_indices = {i: "series failed" for i in range(len(selected.slices))}
                outcomes.append(broken)
    summary_notes = []
    if OutputFormat.SUMMARY in options.formats:
        tick = time.perf_counter()
        summary_notes = write_run_summaries(outcomes, outputs, options.thresholds, segmenter.manifest)
        outputs.wait()  # the key-image DICOM, from the DICOM builder
        options.clock("key_images", tick)
    outputs.builder.close()  # every DICOM job is in; its peak memory goes into the report
    seg_t = segmenter.timings
    timings |= {
        "model_load": seg_t.load_s,
        "preprocess": seg_t.preprocess_s,
        "inference": seg_t.inference_s,
        "postprocess": seg_t.postprocess_s,
        "inference_ms_per_slice": seg_t.inference_ms_per_slice,
    } | options.stage_s
    failures = len(study.failed) + sum(len(o.failed) for o in outcomes)
    exit_code = 1 if failures else 0
    info = model_info(segmenter.manifest, options.model, segmenter.backend.name, segmenter.backend.threads)
    info["fields_of_view_mm"] = segmenter.fields_of_view_mm  # the windows each slice was seen through
    info["backend_choice"] = segmenter.choice.to_dict()  # which backend ran and why (auto: measured or cached)
    notes = [f"removed the staging files of an interrupted run: {name}" for name in outputs.swept] + summary_notes
    reports = REPORT_NAMES if OutputFormat.REPORT in options.formats else ()
    stale = outputs.stale_entries(reports)
    notes += [f"--overwrite: removed {name}, written by the previous run, not by this one" for name in stale]
    timings["total"] = time.perf_counter() - started
    report = build_report(study, options.output, info, options.thresholds, outcomes, timings, options.rules.to_dict(), notes)
    if outputs.builder.peak_rss_bytes is not None:  # the forked process that built the DICOM files
        report["dicom_builder"] = {"peak_rss_mb": round(outputs.builder.peak_rss_bytes / 1e6, 1)}
    try:
        if OutputFormat.REPORT in options.formats:
            outputs.write_text(options.output / REPORT_NAMES[0], report_json(report))
            outputs.write_text(options.output / REPORT_NAMES[1], report_csv(report))
        relative = [str(p) for p in outputs.written] + [SUMMARY_NAME]
        final = [*outputs.final_paths(), display_path(options.output / SUMMARY_NAME)]
        summary = build_summary(report, exit_code, final, relative)
        _stop_if_interrupted()
        outputs.commit(json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        err.print(f"[red]error:[/] writing the results into {escape(display_path(options.output))} failed ({escape(str(exc))})")
        return 2
    if quiet:
        return exit_code
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(report, Console())
        err.print(f"results in {escape(display_path(options.output))} (summary.json, report.json); exit status {exit_code}")
    return exit_code


def _builds_dicom(formats: tuple[str, ...]) -> bool:
    """Whether the run may write DICOM files (SEG, SR, key-image Secondary Capture) and highdicom is there."""
    dicom = {OutputFormat.SEG, OutputFormat.SR, OutputFormat.SUMMARY}
    return bool(dicom & set(formats)) and seg_unavailable_reason() is None


def _check_selection(study: Study, series: str | None) -> None:
    if study.selected:
        return
    if series is not None:
        available = ", ".join(f"{s.name} ({s.description or s.uid})" for s, _ in study.excluded) or "none"
        raise UsageError(f"no series matches --series {series!r}; available: {available}")
    if study.failed:
        return  # nothing segmentable, but broken files: a report with their reasons, exit 1
    reasons = [f"{s.name}: {reason}" for s, reason in study.excluded] + [
        f"{display_path(issue.path.name)}: {issue.reason}" for issue in study.skipped[:5]
    ]
    detail = "; ".join(reasons) if reasons else "the input is empty"
    raise UsageError(f"no segmentable slices found in {display_path(study.input)} ({detail})")
