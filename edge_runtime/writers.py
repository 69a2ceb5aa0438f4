"""Per-series output writers, one per format: label PNGs, overlays + contact sheet, NPY stack, DICOM SEG.

Each writer says which files it will write (before inference, for the clash check) and writes
them from a `SeriesResult` through `RunOutputs` (staged, atomic). A writer's failure costs the
slice or the file it concerns, reported on the outcome, never the other writers or series. A new
output format (e.g. a DICOM SR) is one more class here and one more entry in `SERIES_WRITERS`.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from edge_runtime.inputs import InputIssue, Series
from edge_runtime.manifest import Manifest
from edge_runtime.outputs import OutputFormat, RunOutputs
from edge_runtime.render import TILE_SIZE, add_legend, contact_sheet, label_image, overlay_image
from edge_runtime.report import SeriesOutcome
from edge_runtime.report_outputs import FindingsCollector, SrWriter
from edge_runtime.research_use import intended_use


@dataclass
class SeriesResult:
    """What one series produced in memory: masks and input images by slice index, and its outcome."""

    series: Series
    folder: Path  # OUT/<series name>
    outcome: SeriesOutcome
    manifest: Manifest
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    images: dict[int, np.ndarray] = field(default_factory=dict)


class SeriesWriter(Protocol):
    """One output format of a series."""

    format: OutputFormat

    def planned(self, series: Series, folder: Path) -> list[Path]:
        """Every file this writer may write for `series` (known before inference)."""
        ...

    def write(self, result: SeriesResult, outputs: RunOutputs) -> None:
        """Write the files; record per-slice failures in `result.outcome.failed_indices`."""
        ...


def _slice_failed(result: SeriesResult, index: int, what: str, exc: Exception) -> None:
    result.outcome.failed_indices.setdefault(index, f"writing {what} failed ({type(exc).__name__}: {exc})")


class LabelPngWriter:
    """labels/<stem>.png in the Mendeley pixel values (50 IVD, 100 PE, 150 TS, 200 AAP, 250 background)."""

    format = OutputFormat.PNG

    def planned(self, series: Series, folder: Path) -> list[Path]:
        return [folder / "labels" / f"{r.stem}.png" for r in series.slices]

    def write(self, result: SeriesResult, outputs: RunOutputs) -> None:
        for i in sorted(result.masks):
            final = result.folder / "labels" / f"{result.series.slices[i].stem}.png"
            try:
                outputs.save_png_later(label_image(result.masks[i]), final, partial(_slice_failed, result, i, "the label PNG"))
            except Exception as exc:  # disk full, permissions: this slice only
                _slice_failed(result, i, "the label PNG", exc)
        result.outcome.outputs["labels"] = str(result.folder / "labels")


def _overlay(
    image: np.ndarray, mask: np.ndarray, areas: dict[str, float], unit: str, title: str, notice: str | None
) -> Image.Image:
    """One slice's overlay with its legend strip below (drawn on a PNG worker thread)."""
    return add_legend(overlay_image(image, mask, legend=False), areas, unit, title, notice=notice)


def _tile(legend: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The contact-sheet thumbnail of an overlay: the picture without its legend strip, shrunk as
    contact_sheet shrinks its tiles (so the sheet is the same), kept instead of the whole overlay."""
    tile = legend.crop((0, 0, *size))
    tile.thumbnail((TILE_SIZE, TILE_SIZE), Image.Resampling.BILINEAR)
    return tile


class OverlayWriter:
    """overlays/<stem>.png with a legend of the areas, and <series>_contact_sheet.png of all of them."""

    format = OutputFormat.OVERLAY

    def planned(self, series: Series, folder: Path) -> list[Path]:
        return [folder / "overlays" / f"{r.stem}.png" for r in series.slices] + [folder / f"{series.name}_contact_sheet.png"]

    def write(self, result: SeriesResult, outputs: RunOutputs) -> None:
        series, outcome = result.series, result.outcome
        measured = {m.index: m for m in (outcome.measurement.slices if outcome.measurement else [])}
        tiles: list[tuple[Future[Any], str]] = []
        notice = intended_use(result.manifest).image_line  # "RESEARCH USE ONLY ..." unless cleared for clinical use
        for i in sorted(result.masks):
            stem = series.slices[i].stem
            try:
                m = measured[i]
                height, width = result.masks[i].shape
                grade = f" {m.ts_grade}" if m.ts_grade else ""
                render = partial(_overlay, result.images[i], result.masks[i], m.areas, m.unit, f"{series.name}/{stem}", notice)
                written = outputs.save_png_later(
                    render,
                    result.folder / "overlays" / f"{stem}.png",
                    partial(_slice_failed, result, i, "the overlay"),
                    keep=partial(_tile, size=(width, height)),
                )
                tiles.append((written, f"{stem} TS {m.ts_area:.0f}{grade}"))
            except Exception as exc:  # a rendering or disk problem: this slice only
                _slice_failed(result, i, "the overlay", exc)
        outcome.outputs["overlays"] = str(result.folder / "overlays")
        if not tiles:
            return
        path = result.folder / f"{series.name}_contact_sheet.png"

        def sheet() -> Image.Image | None:  # on a worker, once the overlays before it are drawn and written
            kept = [(written.result(), caption) for written, caption in tiles if written.exception() is None]
            if not kept:
                return None
            title = f"{series.name}: {len(kept)} slices, {series.description}"[:80]
            return contact_sheet([t for t, _ in kept], [c for _, c in kept], title=title, notice=notice)

        def sheet_failed(exc: Exception) -> None:
            outcome.failed.append(InputIssue(series.folder, f"writing the contact sheet failed ({type(exc).__name__}: {exc})"))

        def sheet_written() -> None:
            outcome.outputs["contact_sheet"] = str(path)

        try:
            outputs.save_png_later(sheet, path, sheet_failed, sheet_written)
        except Exception as exc:
            sheet_failed(exc)


class NpyWriter:
    """<series>_labels.npy: (N, H, W) uint8 class ids of the segmented slices, in anatomical order."""

    format = OutputFormat.NPY

    def planned(self, series: Series, folder: Path) -> list[Path]:
        return [folder / f"{series.name}_labels.npy"]

    def write(self, result: SeriesResult, outputs: RunOutputs) -> None:
        order = sorted(result.masks)
        if not order:
            return
        shapes = {result.masks[i].shape for i in order}
        if len(shapes) > 1:
            result.outcome.notes.append(f"npy stack not written: slices differ in size {sorted(shapes)}")
            return
        path = result.folder / f"{result.series.name}_labels.npy"
        try:
            outputs.save_npy(np.stack([result.masks[i] for i in order]), path)
        except Exception as exc:
            reason = f"writing the npy stack failed ({type(exc).__name__}: {exc})"
            result.outcome.failed.append(InputIssue(result.series.folder, reason))
            return
        result.outcome.outputs["npy"] = str(path)
        result.outcome.outputs["npy_stems"] = [result.series.slices[i].stem for i in order]


class SegWriter:
    """DICOM SEG, one instance per orientation block (edge_runtime.dicom_seg)."""

    format = OutputFormat.SEG

    def planned(self, series: Series, folder: Path) -> list[Path]:
        if series.kind != "dicom":
            return []
        from edge_runtime.dicom_seg import plan_groups

        groups, _ = plan_groups(series.name, series.slices)
        return [folder / g.file_name for g in groups]

    def write(self, result: SeriesResult, outputs: RunOutputs) -> None:
        from edge_runtime.dicom_seg import seg_unavailable_reason, write_series_segs

        series, outcome = result.series, result.outcome
        if series.kind != "dicom":
            outcome.notes.append("DICOM SEG not written: the input slices are not DICOM")
            return
        reason = seg_unavailable_reason()
        if reason:
            outcome.notes.append(reason)
            return
        if not result.masks:
            return
        orientations: dict[int | None, Any] = {b.index: b.orientation for b in series.blocks}
        args = (outputs.staged_dir(result.folder), series.name, series.slices, orientations, result.masks, result.manifest,
                f"edge-seg {series.description}".strip())  # fmt: skip
        outputs.build_later(write_series_segs, args, partial(_seg_written, result, outputs), partial(_seg_failed, result))


def _seg_failed(result: SeriesResult, exc: Exception) -> None:  # highdicom import or disk problems: the SEG only
    result.outcome.failed.append(InputIssue(result.series.folder, f"DICOM SEG not written ({type(exc).__name__}: {exc})"))


def _seg_written(result: SeriesResult, outputs: RunOutputs, written: Any) -> None:
    """Adopt the SEG files the builder staged; slices it left out are reported per slice."""
    outcome = result.outcome
    for path in written.files:
        outputs.adopt(result.folder / path.name)
    for i, why in sorted(written.left_out.items()):
        outcome.failed.append(InputIssue(result.series.slices[i].path, f"segmented, but not in the DICOM SEG: {why}"))
    if written.files:
        outcome.outputs["seg"] = str(result.folder / written.files[0].name)
        outcome.outputs["seg_files"] = [group | {"file": str(result.folder / group["file"])} for group in written.groups]


SERIES_WRITERS: dict[OutputFormat, SeriesWriter] = {
    w.format: w for w in (LabelPngWriter(), OverlayWriter(), NpyWriter(), SegWriter(), SrWriter(), FindingsCollector())
}
