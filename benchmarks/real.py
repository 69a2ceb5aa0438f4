"""`edge-seg bench real`: an exported model, through the runtime, on real slices with by-eye outlines.

Scores TS and IVD Dice (edge_runtime.metrics), TS area error and disc-vs-body slice accuracy, each
split by contrast, and draws a contact sheet of predictions with the reference outlines. Needs
only the runtime (no TensorFlow). The reference is one JSON object per line (see
`../shared/real-axial/README.md`): `slice`, `contrast`, `level`, `confidence`, and the `ivd`
and `ts` polygons in pixel coordinates (`ivd` null on vertebral-body slices).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from edge_runtime.atomic import atomic_path, atomic_write_json, atomic_write_text
from edge_runtime.labels import BY_SHORT
from edge_runtime.messages import print_error
from edge_runtime.metrics import segmentation_scores
from edge_runtime.preprocessing import format_windows
from edge_runtime.render import contact_sheet, overlay_image

IVD, TS = BY_SHORT["IVD"].id, BY_SHORT["TS"].id
DISC_PRESENT_MM2 = 100.0
"""A slice counts as a disc slice when the predicted IVD covers at least this area."""
CONTRASTS = ("T1", "T2")
RESULT_JSON, RESULT_MD, SHEET_PNG = "real.json", "real.md", "real_contact_sheet.png"


class RealBenchError(ValueError):
    """Unusable images or reference; the message names the file or line."""


@dataclass(frozen=True)
class ReferenceSlice:
    """One real slice with its by-eye outlines (polygons of (x, y) pixel coordinates)."""

    name: str
    contrast: str
    level: str
    confidence: str
    ivd: tuple[tuple[float, float], ...] | None
    ts: tuple[tuple[float, float], ...] | None

    @property
    def counts_for_presence(self) -> bool:
        """Disc-vs-body is scored only where the annotator was sure what the slice cuts."""
        return self.level != "unsure" and self.confidence != "low"


@dataclass(frozen=True)
class SliceScore:
    """Scores of one slice; None where the reference has no outline of that structure."""

    name: str
    contrast: str
    level: str
    ivd_dice: float | None
    ts_dice: float | None
    ts_area_ref_mm2: float | None
    ts_area_pred_mm2: float
    ivd_area_pred_mm2: float
    disc_ref: bool
    disc_pred: bool
    counts_for_presence: bool

    @property
    def ts_area_error(self) -> float | None:
        """|predicted - reference| / reference TS area."""
        if self.ts_area_ref_mm2 is None or self.ts_area_ref_mm2 <= 0:
            return None
        return abs(self.ts_area_pred_mm2 - self.ts_area_ref_mm2) / self.ts_area_ref_mm2


def _polygon(value: Any, where: str) -> tuple[tuple[float, float], ...] | None:
    if value is None:
        return None
    try:
        points = tuple((float(x), float(y)) for x, y in value)
    except (TypeError, ValueError):
        raise RealBenchError(f"{where}: polygon must be a list of [x, y] pairs") from None
    if len(points) < 3:
        raise RealBenchError(f"{where}: polygon needs at least 3 points, got {len(points)}")
    return points


def load_reference(path: Path) -> list[ReferenceSlice]:
    """Parse a reference.jsonl; a later line for the same slice replaces an earlier one."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RealBenchError(f"{path}: cannot read reference ({exc})") from None
    found: dict[str, ReferenceSlice] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RealBenchError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("slice"), str):
            raise RealBenchError(f"{where}: expected an object with a 'slice' name")
        found[row["slice"]] = ReferenceSlice(
            row["slice"], str(row.get("contrast", "unsure")), str(row.get("level", "unsure")),
            str(row.get("confidence", "medium")), _polygon(row.get("ivd"), f"{where} ivd"),
            _polygon(row.get("ts"), f"{where} ts"),
        )
    if not found:
        raise RealBenchError(f"{path}: no reference slices")
    return [found[name] for name in sorted(found)]


def rasterize(points: Sequence[tuple[float, float]] | None, shape: tuple[int, int]) -> np.ndarray:
    """Boolean mask of a closed polygon, boundary included (Pillow, as the reference README says)."""
    canvas = Image.new("L", (shape[1], shape[0]), 0)
    if points:
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def reference_mask(ref: ReferenceSlice, shape: tuple[int, int]) -> np.ndarray:
    """Class ids of the outlined structures (IVD, then TS on top); 0 elsewhere, PE/AAP unknown."""
    mask = np.zeros(shape, np.uint8)
    mask[rasterize(ref.ivd, shape)] = IVD
    mask[rasterize(ref.ts, shape)] = TS
    return mask


def score_slice(ref: ReferenceSlice, pred: np.ndarray, pixel_area_mm2: float) -> SliceScore:
    """Dice of IVD and TS (per-class Dice depends only on those two classes' pixels), areas, presence."""
    truth = reference_mask(ref, pred.shape)
    scores = segmentation_scores(np.where(np.isin(pred, (IVD, TS)), pred, 0), truth)
    ivd_area = float((pred == IVD).sum()) * pixel_area_mm2
    return SliceScore(
        ref.name, ref.contrast, ref.level,
        scores.dice("IVD") if ref.ivd else None,
        scores.dice("TS") if ref.ts else None,
        float((truth == TS).sum()) * pixel_area_mm2 if ref.ts else None,
        float((pred == TS).sum()) * pixel_area_mm2,
        ivd_area,
        ref.ivd is not None,
        ivd_area >= DISC_PRESENT_MM2,
        ref.counts_for_presence,
    )


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def summarize(rows: Sequence[SliceScore]) -> dict[str, Any]:
    """Means over slices with a reference, TS area error median, presence accuracy; overall and per contrast."""
    def block(chosen: Sequence[SliceScore]) -> dict[str, Any]:
        errors = [r.ts_area_error for r in chosen if r.ts_area_error is not None]
        presence = [r for r in chosen if r.counts_for_presence]
        return {
            "slices": len(chosen),
            "ts_dice": _mean([r.ts_dice for r in chosen]),
            "ivd_dice": _mean([r.ivd_dice for r in chosen]),
            "n_ts": sum(r.ts_dice is not None for r in chosen),
            "n_ivd": sum(r.ivd_dice is not None for r in chosen),
            "ts_area_error_median": float(np.median(errors)) if errors else None,
            "disc_accuracy": (sum(r.disc_ref == r.disc_pred for r in presence) / len(presence)) if presence else None,
            "n_presence": len(presence),
        }

    return {"all": block(rows), **{c: block([r for r in rows if r.contrast == c]) for c in CONTRASTS}}


def read_slice(path: Path) -> np.ndarray:
    """Grey intensities of one real slice image (8- or 16-bit PNG)."""
    from edge_runtime.dicom_io import SliceRecord, load_pixels

    return load_pixels(SliceRecord(path, "png", path.stem))


def _find_image(images: Path, name: str) -> Path | None:
    for suffix in (".png", ".PNG"):
        if (images / f"{name}{suffix}").is_file():
            return images / f"{name}{suffix}"
    return None


def _fmt(value: float | None, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def _windows(info: dict[str, Any]) -> str:
    fovs = info.get("fields_of_view_mm")
    if not fovs:
        return ""
    return f", windows {format_windows(fovs)}" + (" (mean probabilities)" if len(fovs) > 1 else "")


def markdown(summary: dict[str, Any], info: dict[str, Any]) -> str:
    """The result table, one row per contrast."""
    lines = [
        f"# Real slices: {info['model']}",
        "",
        f"{info['slices']} slices of {info['images']}, reference {info['reference']} (by-eye outlines), "
        f"pixel spacing {info['pixel_spacing_mm']} mm, backend {info['backend']}{_windows(info)}.",
        "",
        "| contrast | slices | TS Dice | IVD Dice | TS area error (median) | disc-vs-body accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in (("T1", "T1"), ("T2", "T2"), ("all", "all")):
        b = summary[key]
        lines.append(
            f"| {label} | {b['slices']} | {_fmt(b['ts_dice'])} (n={b['n_ts']}) | {_fmt(b['ivd_dice'])} (n={b['n_ivd']}) "
            f"| {_fmt(b['ts_area_error_median'], pct=True)} | {_fmt(b['disc_accuracy'], pct=True)} (n={b['n_presence']}) |"
        )
    lines += ["", f"Disc slice = predicted IVD area >= {DISC_PRESENT_MM2:g} mm2; slices marked unsure or low "
              "confidence are left out of that accuracy.", ""]
    return "\n".join(lines)


def _tile(image: np.ndarray, pred: np.ndarray, ref: ReferenceSlice) -> Image.Image:
    """Prediction overlay with the reference outlines drawn on top (white IVD, yellow TS)."""
    tile = overlay_image(image, pred, legend=False).convert("RGB")
    draw = ImageDraw.Draw(tile)
    for points, colour in ((ref.ivd, (255, 255, 255)), (ref.ts, (255, 255, 0))):
        if points:
            draw.polygon([tuple(p) for p in points], outline=colour)
    return tile


def bench_real(model: Path | None, images: Path, reference: Path, out: Path | None = None,
               pixel_spacing: float = 0.6875, threads: int | None = None, backend: str = "auto",
               single_window: bool = False) -> dict[str, Any]:
    """Score `model` (default: the bundled one) on the slices of `reference` found in `images`, as `edge-seg run`
    segments them (single_window: one window per slice, as `run --single-window` does)."""
    from edge_runtime.run import resolve_model
    from edge_runtime.segmenter import Segmenter

    if pixel_spacing <= 0:
        raise RealBenchError(f"--pixel-spacing must be > 0 mm, got {pixel_spacing}")
    images = Path(images)
    if not images.is_dir():
        raise RealBenchError(f"{images}: image folder not found")
    refs = load_reference(reference)
    found = [(ref, _find_image(images, ref.name)) for ref in refs]
    missing = [ref.name for ref, path in found if path is None]
    if missing:
        raise RealBenchError(f"{images}: no image for {len(missing)} reference slice(s), e.g. {missing[0]}.png")
    model_path = resolve_model(model)
    segmenter = Segmenter(model_path, backend=backend, threads=threads, single_window=single_window)
    pixels = [read_slice(path) for _, path in found]
    results = segmenter.segment(pixels, [(pixel_spacing, pixel_spacing)] * len(pixels))
    failed = [(ref.name, r.error) for (ref, _), r in zip(found, results, strict=True) if r.mask is None]
    if failed:
        raise RealBenchError(f"segmentation failed for {failed[0][0]}: {failed[0][1]}")
    area = pixel_spacing**2
    rows = [score_slice(ref, r.mask, area) for (ref, _), r in zip(found, results, strict=True)]
    summary = summarize(rows)
    info = {"model": model_path.name, "model_sha256": segmenter.manifest.sha256, "images": str(images),
            "reference": str(reference), "slices": len(rows), "pixel_spacing_mm": pixel_spacing,
            "backend": segmenter.backend.name, "threads": segmenter.backend.threads,
            "fields_of_view_mm": segmenter.fields_of_view_mm}
    result = {"info": info, "summary": summary,
              "slices": [asdict(r) | {"ts_area_error": r.ts_area_error} for r in rows]}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / RESULT_JSON, result)
        atomic_write_text(out / RESULT_MD, markdown(summary, info))
        tiles = [_tile(px, r.mask, ref) for (ref, _), px, r in zip(found, pixels, results, strict=True)]
        captions = [f"{s.name} {s.contrast} TS {_fmt(s.ts_dice)} IVD {_fmt(s.ivd_dice)}" for s in rows]
        sheet = contact_sheet(tiles, captions, tile_size=240, columns=6,
                              title=f"{model_path.name} on real slices: fill = prediction, outlines = by-eye reference "
                                    "(white IVD, yellow TS)")
        with atomic_path(out / SHEET_PNG) as tmp:
            sheet.save(tmp, format="PNG")
    return result


@dataclass(frozen=True)
class RealSet:
    """Real slices and their by-eye reference, for `bench all --real-images/--real-reference`."""

    images: Path
    reference: Path
    pixel_spacing: float = 0.6875


def real_by_variant(variants: Sequence[Any], real: RealSet, out: Path) -> list[dict[str, Any]]:
    """`bench real` for every exported variant; the contact sheet of each goes to out/real/<label>/."""
    rows = []
    for variant in variants:
        folder = Path(out) / "real" / variant.label.replace(" ", "_")
        result = bench_real(variant.path, real.images, real.reference, folder, real.pixel_spacing, threads=1)
        rows.append({"variant": variant.label, "summary": result["summary"],
                     "contact_sheet": str((folder / SHEET_PNG).relative_to(out))})
    return rows


def real_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One row per variant: TS and IVD Dice per contrast, TS area error, disc-vs-body accuracy."""
    lines = [
        "## Real slices (by-eye reference)\n",
        "| variant | TS Dice T1 | TS Dice T2 | IVD Dice T1 | IVD Dice T2 | TS area error (median) | disc-vs-body |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        s = row["summary"]
        lines.append(
            f"| {row['variant']} | {_fmt(s['T1']['ts_dice'])} | {_fmt(s['T2']['ts_dice'])} | {_fmt(s['T1']['ivd_dice'])} "
            f"| {_fmt(s['T2']['ivd_dice'])} | {_fmt(s['all']['ts_area_error_median'], pct=True)} "
            f"| {_fmt(s['all']['disc_accuracy'], pct=True)} |"
        )
    return "\n".join(lines) + "\n"


def real_command(images: Path, reference: Path, model: Path | None = None, out: Path | None = None,
                 pixel_spacing: float = 0.6875, threads: int | None = None, single_window: bool = False) -> int:
    """CLI body of `edge-seg bench real`: prints the table; 0 when measured, 2 on unusable input."""
    import sys

    from rich.console import Console
    from rich.markup import escape

    from edge_runtime.backends import BackendError

    err = Console(stderr=True, soft_wrap=True)
    try:
        result = bench_real(model, images, reference, out, pixel_spacing, threads, single_window=single_window)
    except (ValueError, OSError, BackendError) as exc:  # RealBenchError and ManifestError are ValueErrors
        print_error(err, exc)
        return 2
    sys.stdout.write(markdown(result["summary"], result["info"]))
    if out is not None:
        err.print(f"wrote {escape(str(Path(out) / RESULT_JSON))}, {RESULT_MD} and {SHEET_PNG}")
    return 0
