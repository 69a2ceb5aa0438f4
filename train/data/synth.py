"""`edge-seg synth`: write a phantom data set in the Mendeley layout, with truth.csv and a preview.

Runs on a runtime-only install (numpy, pydicom, pillow). Patient i of seed s is the same
whatever the number of patients asked for, and a seed always writes the same bytes.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import multiprocessing
import multiprocessing.pool
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from edge_runtime.labels import CLASSES, ids_to_mendeley, palette
from train.data.mendeley import IMAGE_DIRS, LABEL_DIR, SYNTH_FILE, slice_name
from train.data.phantom import DISCS, SPACING_MM, STENOSIS_MM2, SliceImages, render_slice, sample_patient
from train.data.phantom_dicom import MRI_DIR, write_study
from train.data.png_io import encode_png
from train.data.randomize import render_randomized_slice

TRUTH_FILE = "truth.csv"
PREVIEW_FILE = "preview.png"
GENERATOR_VERSION = 1
PREVIEW_SLICES = 12
_OUTPUTS = (MRI_DIR, str(LABEL_DIR.parts[0]), str(IMAGE_DIRS["T1"].parts[0]), TRUTH_FILE, PREVIEW_FILE,
            SYNTH_FILE, "split.json")


class SynthError(ValueError):
    """Bad arguments or an output folder that synth must not touch; the message says which."""


@dataclass(frozen=True)
class SynthSummary:
    """What synthesize wrote and how fast.

    n_slices counts labelled (patient, disc) slices of the PNG layout; n_rendered adds the
    DICOM-only vertebral-body slices; slices_per_second is n_rendered / seconds.
    """

    out: Path
    n_patients: int
    n_slices: int
    n_dicom: int
    n_rendered: int
    seconds: float
    slices_per_second: float
    class_pixel_share: dict[str, float]
    stenotic_share: float

    def to_dict(self) -> dict:
        return asdict(self) | {"out": str(self.out)}


def _prepare_out(out: Path) -> None:
    """Create `out`; clear a previous synth output there; refuse any other non-empty folder."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SYNTH_FILE).is_file():
            raise SynthError(f"{out}: folder is not empty and holds no {SYNTH_FILE}; choose a new or empty folder")
        for name in _OUTPUTS:  # our own earlier output: replace it whole, so no stale patient survives
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


_TRUTH_COLUMNS = (
    ["patient", "disc", "zone", "label_png", "t1_png", "t2_png", "pixel_spacing_mm"]
    + [f"px_{c.short}" for c in CLASSES] + [f"area_mm2_{c.short}" for c in CLASSES]
    + ["ts_area_mm2", "stenotic", "herniation", "rotation_deg", "snr_t1", "snr_t2"]
)


def _names(pid: str, disc: int, tag: str = "") -> dict[str, Path]:
    return {
        "label": LABEL_DIR / slice_name("L1", pid, disc, tag),
        "T1": IMAGE_DIRS["T1"] / slice_name("T1", pid, disc, tag),
        "T2": IMAGE_DIRS["T2"] / slice_name("T2", pid, disc, tag),
    }


# Extra training slices per level with --off-disc: (zone, slice key), the key as the DICOM plan
# numbers them (10 + offset from the disc), so these are the slices a study holds there.
OFF_DISC_SLICES = (("endplate", 11), ("pedicle", 12))
REDRAW_TAG = "redraw"
"""Tag of the second disc-level slice per level with --randomize: a fresh deformation and appearance,
so disc slices are about half the set, as in real studies (about two thirds cut a disc)."""


def slice_plan(off_disc: bool, randomize: bool) -> tuple[tuple[str, int, str], ...]:
    """(zone, slice key, file tag) of every labelled slice per level."""
    plan = [("disc", 0, "")]
    if randomize:
        plan.append(("disc", 1, REDRAW_TAG))
    if off_disc:
        plan += [(zone, key, zone) for zone, key in OFF_DISC_SLICES]
    return tuple(plan)


@dataclass
class _PatientOutput:
    """What writing one patient produced, for the data set's totals (returned from worker processes)."""

    rows: list[dict[str, object]]
    counts: np.ndarray
    n_dicom: int
    n_rendered: int
    shown: list[SliceImages]


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to write one patient."""

    out: Path
    seed: int
    plan: tuple[tuple[str, int, str], ...]
    randomize: bool
    dicom: bool
    keep_preview: int


def _write_patient(job: _Job, index: int) -> _PatientOutput:
    """Render and write every slice of patient `index` (and its DICOM study); independent of other patients."""
    p = sample_patient(job.seed, index)
    px_area = SPACING_MM**2
    rendered: dict[int, SliceImages] = {}
    result = _PatientOutput([], np.zeros(len(CLASSES), dtype=np.int64), 0, len(DISCS) * len(job.plan), [])
    for disc in DISCS:
        for zone, key, tag in job.plan:
            s = render_randomized_slice(p, disc, zone, key) if job.randomize else render_slice(p, disc, zone, key)
            if not tag:  # DICOM studies keep the physical contrast
                rendered[disc] = render_slice(p, disc, zone, key) if job.randomize and job.dicom else s
            names = _names(p.pid, disc, tag)
            atomic_write_bytes(job.out / names["label"], encode_png(ids_to_mendeley(s.labels)))
            atomic_write_bytes(job.out / names["T1"], encode_png(s.t1))
            atomic_write_bytes(job.out / names["T2"], encode_png(s.t2))
            px = np.bincount(s.labels.ravel(), minlength=len(CLASSES))
            result.counts += px
            ts_area = float(px[3]) * px_area
            lv = p.levels[disc]
            result.rows.append({
                "patient": p.pid, "disc": disc, "zone": zone, "label_png": names["label"].as_posix(),
                "t1_png": names["T1"].as_posix(), "t2_png": names["T2"].as_posix(),
                "pixel_spacing_mm": SPACING_MM,
                **{f"px_{c.short}": int(px[c.id]) for c in CLASSES},
                **{f"area_mm2_{c.short}": f"{px[c.id] * px_area:.8f}" for c in CLASSES},
                "ts_area_mm2": f"{ts_area:.8f}", "stenotic": int(ts_area < STENOSIS_MM2),
                "herniation": int(lv.hernia is not None),
                "rotation_deg": f"{np.degrees(lv.frame.theta):.3f}",
                "snr_t1": f"{p.snr[0]:.2f}", "snr_t2": f"{p.snr[1]:.2f}",
            })
            if not tag and len(result.shown) < job.keep_preview:
                result.shown.append(s)
    if job.dicom:
        written = write_study(job.out, p, rendered)
        result.n_dicom = written
        result.n_rendered += written - len(DISCS)
    return result


def synthesize(out: Path, patients: int, seed: int, dicom: bool = False, preview: bool = False,
               progress: Callable[[int, int], None] | None = None, off_disc: bool = False,
               randomize: bool = False, workers: int = 1) -> SynthSummary:
    """Write `patients` phantom patients (3 disc levels each) of data set `seed` into `out`.

    progress(done, total) is called after each patient. Files: label and T1/T2 PNGs in the
    Mendeley layout, truth.csv (exact per-class areas), synth.json; with `dicom` one T2 series
    per patient under 01_MRI_Data; with `preview` a contact sheet preview.png; with `off_disc`
    also an end-plate and a pedicle slice per level (`L1_<pid>_D<d>-endplate.png`, ...), so a model
    learns the vertebral-body slices every real study holds (the real labels cover discs only);
    with `randomize` the PNG images get domain-randomised appearances (train.data.randomize: T1-like,
    T2-like or fully random tissue intensities, deformation, bias, blur, noise) instead of the
    physical T1/T2 contrast, for models that must work on real scans. `workers` processes render
    patients in parallel; the bytes written do not depend on it.
    """
    if patients < 1:
        raise SynthError(f"--patients must be >= 1, got {patients}")
    if seed < 0:
        raise SynthError(f"--seed must be >= 0, got {seed}")
    if workers < 1:
        raise SynthError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    _prepare_out(out)
    start = time.perf_counter()
    job = _Job(out, seed, slice_plan(off_disc, randomize), randomize, dicom, PREVIEW_SLICES if preview else 0)
    counts = np.zeros(len(CLASSES), dtype=np.int64)
    rows: list[dict[str, object]] = []
    shown: list[SliceImages] = []
    n_dicom = n_rendered = 0
    with _pool(workers) as pool:
        results = pool.imap(functools.partial(_write_patient, job), range(patients)) if pool else (
            _write_patient(job, index) for index in range(patients))
        for index, result in enumerate(results):
            rows += result.rows
            counts += result.counts
            n_dicom += result.n_dicom
            n_rendered += result.n_rendered
            shown += result.shown[: PREVIEW_SLICES - len(shown)] if preview else []
            if progress is not None:
                progress(index + 1, patients)
    _write_truth(out / TRUTH_FILE, rows)
    share = {c.short: float(counts[c.id] / counts.sum()) for c in CLASSES}
    n_stenotic = sum(int(row["stenotic"]) for row in rows)
    if preview:
        atomic_write_bytes(out / PREVIEW_FILE, encode_png(contact_sheet(shown)))
    record = {"generator": "edge-seg phantom", "version": GENERATOR_VERSION, "seed": seed, "patients": patients,
              "dicom": dicom, "off_disc": off_disc,
              "appearance": "randomized" if randomize else "physical", "pixel_spacing_mm": SPACING_MM, "class_pixel_share": share,
              "stenotic_share": n_stenotic / len(rows), "stenosis_threshold_mm2": STENOSIS_MM2}
    atomic_write_json(out / SYNTH_FILE, record)
    seconds = time.perf_counter() - start
    return SynthSummary(out, patients, len(rows), n_dicom, n_rendered, seconds, n_rendered / max(seconds, 1e-9),
                        share, n_stenotic / len(rows))


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[multiprocessing.pool.Pool | None]:
    """A process pool for `workers` > 1 (fork: no re-import), else None (render in this process)."""
    if workers == 1:
        yield None
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield pool


def _write_truth(path: Path, rows: list[dict[str, object]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_TRUTH_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _grey(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [0.5, 99.5])
    scaled = np.clip((image.astype(np.float32) - low) / max(float(high - low), 1.0), 0.0, 1.0)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=2)


def contact_sheet(slices: list[SliceImages], per_row: int = 2, alpha: float = 0.45) -> np.ndarray:
    """RGB sheet: per slice T1 | T2 | T2 with class-colour overlay; `per_row` slices per row."""
    if not slices:
        raise ValueError("no slices for the contact sheet")
    colours = palette().astype(np.float32)
    tiles = []
    for s in slices:
        t2 = _grey(s.t2)
        overlay = t2.astype(np.float32)
        fg = s.labels > 0
        overlay[fg] = (1 - alpha) * overlay[fg] + alpha * colours[s.labels[fg]]
        t1 = _grey(s.t1) if s.t1 is not None else np.zeros_like(t2)
        tiles.append(np.concatenate([t1, t2, overlay.astype(np.uint8)], axis=1))
    while len(tiles) % per_row:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i:i + per_row], axis=1) for i in range(0, len(tiles), per_row)]
    return np.concatenate(rows, axis=0)

