"""`edge-seg run`: a study folder in, masks, overlays, measurements, DICOM SEG and reports out.

Output layout (OUTPUT is never inside INPUT; names follow the input series folder and slice stem):
    OUTPUT/summary.json                          outcome, counts, timings, files (always written)
    OUTPUT/report.json, OUTPUT/report.csv        per slice and class areas, TS grade, disc levels,
                                                 model/backend/threads/timings, skipped and failed inputs
    OUTPUT/<series>/labels/<stem>.png            label mask in Mendeley values (50 IVD, 100 PE,
                                                 150 TS, 200 AAP, 250 background)
    OUTPUT/<series>/<series>_labels.npy          (N, H, W) uint8 class ids of the segmented slices
    OUTPUT/<series>/overlays/<stem>.png          slice with class colours and a legend with areas
    OUTPUT/<series>/<series>_contact_sheet.png   all overlays of the series
    OUTPUT/<series>/<series>_seg.dcm             DICOM SEG (needs highdicom: the dicom-seg extra)

Exit status: 0 every selected slice was segmented and written; 1 some inputs failed (the rest
is still written); 2 usage or model error (nothing written).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_runtime.atomic import atomic_path, atomic_write_text
from edge_runtime.backends import BackendError
from edge_runtime.dicom_io import InputIssue, Series, SliceDecodeError, Study, discover, load_pixels
from edge_runtime.labels import FOREGROUND, mendeley_to_ids
from edge_runtime.manifest import ManifestError
from edge_runtime.measure import StenosisThresholds, measure_series
from edge_runtime.progress import progress_bar
from edge_runtime.render import add_legend, contact_sheet, label_image, overlay_image
from edge_runtime.report import SeriesOutcome, build_report, build_summary, model_info, write_report
from edge_runtime.segmenter import Segmenter

OUTPUT_FORMATS = ("png", "npy", "overlay", "seg", "report")
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.tflite"

err = Console(stderr=True, soft_wrap=True)


class UsageError(ValueError):
    """Bad command-line values: exit status 2."""


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
    written: list[str] = field(default_factory=list)
    stage_s: dict[str, float] = field(default_factory=dict)  # wall time of run stages outside the segmenter

    def clock(self, stage: str, since: float) -> float:
        """Add the time since `since` to `stage`; returns now, to chain stages."""
        now = time.perf_counter()
        self.stage_s[stage] = self.stage_s.get(stage, 0.0) + now - since
        return now


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
            raise UsageError(f"model file {model} not found")
        return Path(model)
    if DEFAULT_MODEL.is_file():
        return DEFAULT_MODEL
    raise UsageError(
        f"no bundled default model ({DEFAULT_MODEL} is missing); pass --model PATH to an exported "
        ".tflite or .onnx file that has its .json manifest beside it"
    )


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or path.is_relative_to(folder)


def planned_outputs(options: RunOptions, selected: list[Series]) -> list[Path]:
    """Every file this run will write, to refuse overwriting and writing inside INPUT up front."""
    paths = [options.output / "summary.json"]
    if "report" in options.formats:
        paths += [options.output / "report.json", options.output / "report.csv"]
    for series in selected:
        folder = options.output / series.name
        for record in series.slices:
            if "png" in options.formats:
                paths.append(folder / "labels" / f"{record.stem}.png")
            if "overlay" in options.formats:
                paths.append(folder / "overlays" / f"{record.stem}.png")
        if "npy" in options.formats:
            paths.append(folder / f"{series.name}_labels.npy")
        if "overlay" in options.formats:
            paths.append(folder / f"{series.name}_contact_sheet.png")
        if "seg" in options.formats and series.kind == "dicom":
            paths.append(folder / f"{series.name}_seg.dcm")
    return paths


def _check_paths(options: RunOptions, selected: list[Series]) -> None:
    if options.input.is_dir() and _inside(options.output, options.input):
        raise UsageError(f"output {options.output} is inside the input {options.input}; choose a folder outside it")
    planned = planned_outputs(options, selected)
    if options.input.is_dir():
        clash = [p for p in planned if _inside(p, options.input)]
        if clash:
            raise UsageError(f"output file {clash[0]} would land inside the input {options.input}; choose another -o")
    if not options.overwrite:
        existing = [p for p in planned if p.exists()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise UsageError(f"output {existing[0]}{more} already exists; use --overwrite to replace")
    if options.output.exists() and not options.output.is_dir():
        raise UsageError(f"output {options.output} exists and is not a folder")


# --------------------------------------------------------------------------- writing


def _save_png(image: Any, path: Path, options: RunOptions) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=1)  # fast zlib: 5-10x quicker, files ~20% larger
    options.written.append(str(path))


def _save_npy(array: np.ndarray, path: Path, options: RunOptions) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    options.written.append(str(path))


_MENDELEY_PREFIX = re.compile(r"^(T1|T2|L1)_")


def _truth_index(truth: Path | None) -> dict[str, list[Path]]:
    """Label PNGs by stem, and by Mendeley key (L1_0001_D3 -> 0001_D3, so T2_0001_D3 finds it)."""
    if truth is None:
        return {}
    index: dict[str, list[Path]] = {}
    for path in sorted(truth.rglob("*.png")) if truth.is_dir() else [truth]:
        index.setdefault(path.stem, []).append(path)
        key = _MENDELEY_PREFIX.sub("", path.stem)
        if key != path.stem:
            index.setdefault(f"mendeley:{key}", []).append(path)
    return index


def _truth_for(series: Series, stem: str, index: dict[str, list[Path]]) -> Path | None:
    candidates = index.get(stem) or index.get(f"mendeley:{_MENDELEY_PREFIX.sub('', stem)}", [])
    if len(candidates) > 1:
        preferred = [p for p in candidates if p.parent.name in (f"{series.folder.name}_labels", series.folder.name)]
        candidates = preferred or candidates
    return candidates[0] if candidates else None


def _score(series: Series, masks: dict[int, np.ndarray], index: dict[str, list[Path]], outcome: SeriesOutcome) -> None:
    """Dice/IoU of this series' masks against label PNGs with matching stems."""
    from PIL import Image

    from edge_runtime.metrics import segmentation_scores

    preds, truths, missing = [], [], []
    for i, record in enumerate(series.slices):
        if i not in masks:
            continue
        path = _truth_for(series, record.stem, index)
        if path is None:
            missing.append(record.stem)
            continue
        try:
            with Image.open(path) as image:
                truth = mendeley_to_ids(np.asarray(image), source=str(path))
        except (OSError, ValueError) as exc:
            outcome.notes.append(f"truth {path}: {exc}")
            continue
        if truth.shape != masks[i].shape:
            outcome.notes.append(f"truth {path}: shape {truth.shape} != slice {masks[i].shape}")
            continue
        preds.append(masks[i])
        truths.append(truth)
    if missing:
        outcome.notes.append(f"no truth label PNG for {len(missing)} slice(s), e.g. {missing[0]}")
    if not preds:
        return
    scores = segmentation_scores(np.stack(preds), np.stack(truths))
    outcome.scores = {"n_slices": len(preds)} | scores.to_dict()


def _process_series(
    series: Series, segmenter: Segmenter, options: RunOptions, advance: Any, truth_index: dict[str, list[Path]]
) -> SeriesOutcome:
    start = time.perf_counter()
    outcome = SeriesOutcome(series=series)
    folder = options.output / series.name
    masks: dict[int, np.ndarray] = {}
    images: dict[int, np.ndarray] = {}
    overlays = []
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
        for i, image, result in zip(chunk, pixels, segmenter.segment(pixels), strict=True):
            if image is None:
                continue
            if result.mask is None:
                outcome.failed_indices[i] = result.error or "segmentation failed"
                continue
            masks[i], images[i] = result.mask, image
            outcome.inference_ms[i] = 1000.0 * result.inference_s
        advance(len(chunk))
    tick = time.perf_counter()
    measurement = measure_series(
        [masks.get(i) for i in range(len(series.slices))],
        [r.pixel_spacing for r in series.slices],
        [r.stem for r in series.slices],
        options.thresholds,
        [r.location for r in series.slices],
        _ap_axis(series),
    )
    outcome.measurement = measurement
    tick = options.clock("measure", tick)
    by_index = {m.index: m for m in measurement.slices}
    for i in sorted(masks):
        record = series.slices[i]
        try:
            if "png" in options.formats:
                _save_png(label_image(masks[i]), folder / "labels" / f"{record.stem}.png", options)
            if "overlay" in options.formats:
                m = by_index[i]
                picture = overlay_image(images[i], masks[i], legend=False)
                title = f"{series.name}/{record.stem}"
                _save_png(add_legend(picture, m.areas, m.unit, title), folder / "overlays" / f"{record.stem}.png", options)
                grade = f" {m.ts_grade}" if m.ts_grade else ""
                overlays.append((picture, f"{record.stem} TS {m.ts_area:.0f}{grade}"))
        except Exception as exc:  # disk full, permissions, a rendering problem: this slice only
            outcome.failed_indices[i] = f"writing outputs failed ({type(exc).__name__}: {exc})"
    for i, reason in sorted(outcome.failed_indices.items()):
        outcome.failed.append(InputIssue(series.slices[i].path, reason))
    _write_series_files(series, masks, overlays, segmenter, options, outcome, tick)
    if truth_index:
        tick = time.perf_counter()
        _score(series, masks, truth_index, outcome)
        options.clock("truth", tick)
    outcome.outputs["folder"] = str(folder)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _write_series_files(
    series: Series,
    masks: dict[int, np.ndarray],
    overlays: list[tuple[Any, str]],
    segmenter: Segmenter,
    options: RunOptions,
    outcome: SeriesOutcome,
    tick: float,
) -> None:
    folder = options.output / series.name
    order = sorted(masks)
    if not order:
        return
    try:
        if "npy" in options.formats:
            shapes = {masks[i].shape for i in order}
            if len(shapes) == 1:
                path = folder / f"{series.name}_labels.npy"
                _save_npy(np.stack([masks[i] for i in order]), path, options)
                outcome.outputs["npy"] = str(path)
                outcome.outputs["npy_stems"] = [series.slices[i].stem for i in order]
            else:
                outcome.notes.append(f"npy stack not written: slices differ in size {sorted(shapes)}")
        if "overlay" in options.formats and overlays:
            path = folder / f"{series.name}_contact_sheet.png"
            title = f"{series.name}: {len(order)} slices, {series.description}"[:80]
            _save_png(contact_sheet([o for o, _ in overlays], [c for _, c in overlays], title=title), path, options)
            outcome.outputs["contact_sheet"] = str(path)
        if "png" in options.formats:
            outcome.outputs["labels"] = str(folder / "labels")
        if "overlay" in options.formats:
            outcome.outputs["overlays"] = str(folder / "overlays")
    except Exception as exc:  # disk full, permissions, mismatched slices: reported, the run goes on
        outcome.failed.append(InputIssue(folder, f"writing series outputs failed ({type(exc).__name__}: {exc})"))
    tick = options.clock("outputs", tick)
    if "seg" in options.formats:
        _write_seg(series, masks, segmenter, options, outcome)
        options.clock("dicom_seg", tick)


def _write_seg(
    series: Series, masks: dict[int, np.ndarray], segmenter: Segmenter, options: RunOptions, outcome: SeriesOutcome
) -> None:
    from edge_runtime.dicom_seg import seg_unavailable_reason, write_dicom_seg

    if series.kind != "dicom":
        outcome.notes.append("DICOM SEG not written: the input slices are not DICOM")
        return
    reason = seg_unavailable_reason()
    if reason:
        outcome.notes.append(reason)
        return
    order = sorted(masks)
    path = options.output / series.name / f"{series.name}_seg.dcm"
    try:
        write_dicom_seg(
            path,
            [series.slices[i].dataset for i in order],
            [masks[i] for i in order],
            segmenter.manifest,
            series_description=f"edge-seg {series.description}".strip(),
        )
    except Exception as exc:  # highdicom validates the sources and raises ValueError/AttributeError/...
        outcome.failed.append(InputIssue(series.folder, f"DICOM SEG not written ({type(exc).__name__}: {exc})"))
        return
    options.written.append(str(path))
    outcome.outputs["seg"] = str(path)


def _ap_axis(series: Series) -> int:
    """Image axis along anterior-posterior: rows (0) unless the row direction runs along patient y."""
    orientation = series.slices[0].orientation if series.slices else None
    if orientation is None:
        return 0
    return 0 if abs(orientation[4]) >= abs(orientation[1]) else 1


# --------------------------------------------------------------------------- console output


def _print_summary(report: dict[str, Any], console: Console) -> None:
    table = Table(title="edge-seg run", title_justify="left")
    table.add_column("series", no_wrap=True)
    for column in ("slices", "failed", "min TS", "worst grade", "disc levels (TS at disc)", "time s"):
        table.add_column(column, justify="right" if column in ("slices", "failed", "min TS", "time s") else "left")
    for s in report["series"]:
        ok = [e for e in s["slices"] if e["status"] == "ok"]
        unit = s["area_unit"] or ""
        min_ts = min((e["ts_area"] for e in ok if e["pixel_counts"]["TS"] > 0), default=None)
        levels = "; ".join(
            f"{lv['number']}: {lv['ts_area']:.0f}{' ' + lv['ts_grade'] if lv['ts_grade'] else ''}" for lv in s["levels"]
        )
        table.add_row(
            s["name"],
            f"{s['n_segmented']}/{s['n_slices']}",
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
                f"truth {s['name']} ({s['scores']['n_slices']} slices): Dice {dice}  "
                f"mean Dice {s['scores']['mean_dice']:.3f}  mean IoU {s['scores']['mean_iou']:.3f}"
            )
        for note in s["notes"]:
            err.print(f"[yellow]note[/] {escape(s['name'])}: {escape(note)}")
    t = report["timings_s"]
    console.print(
        f"model {report['model']['name'] or Path(report['model']['file']).name} ({report['model']['precision']}, "
        f"{report['model']['backend']}, {report['model']['threads']} threads): "
        f"{t.get('inference_ms_per_slice', 0):.1f} ms/slice inference, total {t.get('total', 0):.2f} s"
    )
    for status, colour in (("failed", "red"), ("skipped", "yellow")):
        for issue in report[status][:20]:
            err.print(f"[{colour}]{status}[/] {escape(str(issue['path']))}: {escape(issue['reason'])}")
        if len(report[status]) > 20:
            err.print(f"[{colour}]{status}[/] ... and {len(report[status]) - 20} more (see report.json)")


# --------------------------------------------------------------------------- entry point


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
    ts_relative_mm2: float = 100.0,
    ts_absolute_mm2: float = 75.0,
    json_output: bool = False,
    batch_size: int = 8,
) -> int:
    """Segment every selected series under `input` into `output`; returns the exit status."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    try:
        input_path, output = Path(input), Path(output)
        if not input_path.exists():
            raise UsageError(f"input {input_path} does not exist")
        if truth is not None and not Path(truth).exists():
            raise UsageError(f"truth folder {truth} does not exist")
        options = RunOptions(
            input=input_path,
            output=output,
            model=resolve_model(model),
            formats=parse_formats(formats),
            thresholds=StenosisThresholds(ts_relative_mm2, ts_absolute_mm2),
            overwrite=overwrite,
            truth=Path(truth) if truth is not None else None,
        )
        if threads is not None and threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        segmenter = Segmenter(options.model, backend=backend, threads=threads, batch_size=batch_size)
        t0 = time.perf_counter()
        study = discover(input_path, series)
        timings["discovery"] = time.perf_counter() - t0
        _check_selection(study, series)
        _check_paths(options, study.selected)
    except (UsageError, ManifestError, BackendError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    if "seg" in options.formats and any(s.kind == "dicom" for s in study.selected):
        from edge_runtime.dicom_seg import import_in_background, seg_unavailable_reason

        if seg_unavailable_reason() is None:
            import_in_background()
    total_slices = sum(len(s.slices) for s in study.selected)
    truth_index = _truth_index(options.truth)
    outcomes = []
    with progress_bar("segmenting", total=total_slices) as update:
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            update(done)

        for selected in study.selected:
            try:
                outcomes.append(_process_series(selected, segmenter, options, advance, truth_index))
            except Exception as exc:  # never let one series stop the others; report it as failed
                broken = SeriesOutcome(series=selected)
                broken.failed.append(InputIssue(selected.folder, f"series failed ({type(exc).__name__}: {exc})"))
                broken.failed_indices = {i: "series failed" for i in range(len(selected.slices))}
                outcomes.append(broken)
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
    info["backend_choice"] = segmenter.choice.to_dict()  # which backend ran and why (auto: measured or cached)
    timings["total"] = time.perf_counter() - started
    report = build_report(
        input_path, output, info, options.thresholds, outcomes, study.skipped, study.failed, study.excluded, timings
    )
    try:
        if "report" in options.formats:
            options.written += [str(p) for p in write_report(output, report)]
        summary = build_summary(report, exit_code, options.written)
        atomic_write_text(output / "summary.json", json.dumps(summary, indent=2) + "\n")
    except OSError as exc:
        err.print(f"[red]error:[/] writing the report into {escape(str(output))} failed ({escape(str(exc))})")
        return 1
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(report, Console())
        err.print(f"results in {output} (summary.json, report.json); exit status {exit_code}")
    return exit_code


def _check_selection(study: Study, series: str | None) -> None:
    if study.selected:
        return
    if series is not None:
        available = ", ".join(f"{s.name} ({s.description or s.uid})" for s, _ in study.excluded) or "none"
        raise UsageError(f"no series matches --series {series!r}; available: {available}")
    if study.failed:
        return  # nothing segmentable, but broken files: exit 1 with their reasons
    reasons = [f"{s.name}: {reason}" for s, reason in study.excluded] + [
        f"{issue.path.name}: {issue.reason}" for issue in study.skipped[:5]
    ]
    detail = "; ".join(reasons) if reasons else "the input is empty"
    raise UsageError(f"no segmentable slices found in {study.input} ({detail})")
