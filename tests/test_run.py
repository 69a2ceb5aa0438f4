"""`edge-seg run` end to end: outputs, reports, exit codes, overwrite rules, untouched inputs, no TensorFlow.

Most tests use a real ONNX "intensity band" model whose answer is known exactly (tests/band_model.py);
the TensorFlow tests export a tiny U-Net and compare the TFLite path with the Keras model.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import band_model
import dicom_factory as f
import numpy as np
import pytest
from PIL import Image

from edge_runtime import run
from edge_runtime.labels import ids_to_mendeley, mendeley_to_ids
from edge_runtime.measure import grade_stenosis
from edge_runtime.preprocessing import PreprocessSpec
from edge_runtime.run import run_command

REPO = Path(__file__).resolve().parents[1]
SPACING = (0.8, 0.75)
SHIFTS = [0, 1, 2, 3, 4, 5]  # TS grows by one row per slice: areas cross the stenosis thresholds


@pytest.fixture(scope="module")
def bands(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return band_model.write_band_model(tmp_path_factory.mktemp("model"))


def _write_study(folder: Path, shifts: list[int] = SHIFTS, spacing: tuple[float, float] | None = SPACING) -> list[np.ndarray]:
    """A banded axial series written in scrambled file order; returns the masks in anatomical order."""
    slices = [band_model.banded_slice(shift=s) for s in shifts]
    datasets = f.mr_series([raw for raw, _ in slices], spacing=spacing)
    for i, k in enumerate(reversed(range(len(datasets)))):
        f.write(datasets[k], folder / "T2_TSE_TRA_0005" / f"IM{i + 1:04d}.ima")
    return [mask for _, mask in slices]


def _stems(n: int) -> list[str]:
    return [f"IM{n - k:04d}" for k in range(n)]  # file IM0001 holds the last slice


def _hashes(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _run(tmp_path: Path, model: Path, *extra: str, inp: str = "in", out: str = "out") -> int:
    args = {"input": tmp_path / inp, "output": tmp_path / out, "model": model}
    options = dict(zip(extra[::2], extra[1::2], strict=True))
    return run_command(**args, **options)


def test_a_study_gives_masks_overlays_report_seg_and_exit_0(tmp_path: Path, bands: Path) -> None:
    masks = _write_study(tmp_path / "in")
    stems = _stems(len(masks))
    assert _run(tmp_path, bands) == 0
    out = tmp_path / "out" / "T2_TSE_TRA_0005"
    for stem, mask in zip(stems, masks, strict=True):
        png = np.asarray(Image.open(out / "labels" / f"{stem}.png"))
        np.testing.assert_array_equal(mendeley_to_ids(png), mask)
        assert Image.open(out / "overlays" / f"{stem}.png").mode == "RGB"
    np.testing.assert_array_equal(np.load(out / "T2_TSE_TRA_0005_labels.npy"), np.stack(masks))
    assert Image.open(out / "T2_TSE_TRA_0005_contact_sheet.png").width > 0

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (series,) = report["series"]
    assert series["ordering"].startswith("slice position") and series["area_unit"] == "mm2"
    pixel_mm2 = SPACING[0] * SPACING[1]
    for entry, mask in zip(series["slices"], masks, strict=True):
        ts_area = float((mask == 3).sum()) * pixel_mm2
        assert entry["areas"]["TS"] == pytest.approx(ts_area)
        assert entry["areas"]["IVD"] == pytest.approx(float((mask == 1).sum()) * pixel_mm2)
        assert entry["ts_grade"] == grade_stenosis(ts_area).value
    assert {e["ts_grade"] for e in series["slices"]} == {"absolute", "relative", "normal"}
    assert report["model"]["name"] == "bands"  # auto: the faster of onnxruntime and (if installed) openvino
    assert report["model"]["backend"] == report["model"]["backend_choice"]["backend"] in ("onnxruntime", "openvino")
    assert report["model"]["threads"] >= 1 and report["timings_s"]["inference"] > 0
    assert report["failed"] == [] and report["skipped"] == []

    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    assert [r["stem"] for r in rows] == stems and {r["status"] for r in rows} == {"ok"}
    assert float(rows[0]["TS"]) == pytest.approx(float((masks[0] == 3).sum()) * pixel_mm2, abs=1e-3)

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["n_slices_segmented"] == len(masks)
    hd = pytest.importorskip("highdicom", reason="the SEG half of this test needs the dicom-seg extra (highdicom)")
    assert "seg" in series["outputs"], "the default formats write a DICOM SEG"
    seg = hd.seg.segread(series["outputs"]["seg"])
    for entry, mask in zip(series["slices"], masks, strict=True):
        decoded = seg.get_pixels_by_source_instance(
            [entry["sop_instance_uid"]], combine_segments=True, assert_missing_frames_are_empty=True
        )
        np.testing.assert_array_equal(decoded[0], mask)


def test_mixed_folder_segments_good_slices_gives_reasons_for_the_rest_and_exit_1(tmp_path: Path, bands: Path) -> None:
    masks = _write_study(tmp_path / "in", shifts=[0, 2, 4, 5])[:3]
    folder = tmp_path / "in" / "T2_TSE_TRA_0005"
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    f.truncate(folder / "IM0001.ima", 0.5)  # the 4th slice of the series, cut mid-transfer
    (folder / "readme.txt").write_text("scanner export notes\n")
    f.write(f.rgb_image(study_uid), folder / "screenshot.dcm")
    f.write(f.structured_report(study_uid), folder / "dose_report")
    before = _hashes(tmp_path / "in")
    assert _run(tmp_path, bands) == 1
    assert _hashes(tmp_path / "in") == before  # inputs untouched

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    ok = [e for s in report["series"] for e in s["slices"] if e["status"] == "ok"]
    assert [e["stem"] for e in ok] == _stems(4)[:3]
    for stem, mask in zip(_stems(4)[:3], masks, strict=True):
        png = np.asarray(Image.open(tmp_path / "out" / "T2_TSE_TRA_0005" / "labels" / f"{stem}.png"))
        np.testing.assert_array_equal(mendeley_to_ids(png), mask)
    failed = {Path(i["path"]).name: i["reason"] for i in report["failed"]}
    skipped = {Path(i["path"]).name: i["reason"] for i in report["skipped"]}
    assert "truncated: the pixel data ends after" in failed["IM0001.ima"]
    assert "not a DICOM file" in skipped["readme.txt"]
    assert "colour image" in skipped["screenshot.dcm"]
    assert "structured report (SR)" in skipped["dose_report"]
    rows = list(csv.DictReader((tmp_path / "out" / "report.csv").open()))
    statuses = {Path(r["source"]).name: r["status"] for r in rows}
    assert statuses["IM0001.ima"] == "failed" and statuses["readme.txt"] == "skipped"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["exit_code"] == 1


def test_a_tampered_model_is_refused_with_exit_2_and_nothing_written(tmp_path: Path, bands: Path) -> None:
    _write_study(tmp_path / "in", shifts=[0])
    tampered = tmp_path / "m" / bands.name
    tampered.parent.mkdir()
    data = bytearray(bands.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    (tmp_path / "m" / f"{bands.name}.json").write_text((bands.parent / f"{bands.name}.json").read_text())
    assert _run(tmp_path, tampered) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("backend", "tensorrt"), "unknown backend"),
        (("backend", "litert"), "needs the onnxruntime backend"),
        (("formats", "png,dicom"), "unknown output format"),
        (("series", "SAG"), "no series matches"),
        (("ts_relative_mm2", 50.0), "absolute"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture, extra: tuple, message: str) -> None:
    _write_study(tmp_path / "in", shifts=[0])
    assert _run(tmp_path, bands, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_manifest_and_missing_default_model_exit_2(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_study(tmp_path / "in", shifts=[0])
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(bands.read_bytes())
    assert _run(tmp_path, lone) == 2
    assert "no manifest found" in capsys.readouterr().err
    monkeypatch.setattr(run, "DEFAULT_MODEL", tmp_path / "models" / "default.tflite")
    assert run_command(input=tmp_path / "in", output=tmp_path / "out", model=None) == 2
    assert "pass --model" in capsys.readouterr().err


def test_output_inside_input_is_refused(tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture) -> None:
    _write_study(tmp_path / "in", shifts=[0])
    assert _run(tmp_path, bands, out="in/results") == 2
    assert "inside the input" in capsys.readouterr().err
    assert not (tmp_path / "in" / "results").exists()


def test_existing_outputs_are_kept_without_overwrite_and_replaced_with_it(tmp_path: Path, bands: Path) -> None:
    masks = _write_study(tmp_path / "in", shifts=[0, 3])
    assert _run(tmp_path, bands, "formats", "png,report") == 0
    label = tmp_path / "out" / "T2_TSE_TRA_0005" / "labels" / f"{_stems(2)[0]}.png"
    Image.fromarray(np.full(masks[0].shape, 250, np.uint8)).save(label)  # someone's edited copy
    edited = label.read_bytes()
    assert _run(tmp_path, bands, "formats", "png,report") == 2
    assert label.read_bytes() == edited
    assert _run(tmp_path, bands, "formats", "png,report", "overwrite", True) == 0
    np.testing.assert_array_equal(mendeley_to_ids(np.asarray(Image.open(label))), masks[0])
    assert not any(p.name.startswith(".") for p in label.parent.iterdir())  # no temp files left behind


def test_truth_scores_dice_against_label_pngs_with_matching_stems(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture
) -> None:
    masks = _write_study(tmp_path / "in", shifts=[0, 2, 4])
    truth = tmp_path / "truth" / "T2_TSE_TRA_0005_labels"
    truth.mkdir(parents=True)
    for stem, mask in zip(_stems(3), masks, strict=True):
        Image.fromarray(ids_to_mendeley(mask)).save(truth / f"{stem}.png")
    assert _run(tmp_path, bands, "formats", "report", "truth", tmp_path / "truth") == 0
    assert "mean Dice 1.000" in capsys.readouterr().out
    wrong = masks[1].copy()
    wrong[wrong == 3] = 0  # truth without thecal sac on one slice
    Image.fromarray(ids_to_mendeley(wrong)).save(truth / f"{_stems(3)[1]}.png")
    assert _run(tmp_path, bands, "formats", "report", "truth", tmp_path / "truth", "overwrite", True) == 0
    scores = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]["scores"]
    pred_ts = sum(int((m == 3).sum()) for m in masks)
    truth_ts = pred_ts - int((masks[1] == 3).sum())
    assert scores["n_slices"] == 3
    assert scores["per_class"]["TS"]["dice"] == pytest.approx(2 * truth_ts / (pred_ts + truth_ts))
    assert scores["per_class"]["IVD"]["dice"] == 1.0


def test_missing_pixel_spacing_reports_flagged_pixel_areas(tmp_path: Path, bands: Path) -> None:
    masks = _write_study(tmp_path / "in", shifts=[1], spacing=None)
    assert _run(tmp_path, bands, "formats", "report") == 0
    (entry,) = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]["slices"]
    assert entry["area_unit"] == "px" and entry["ts_grade"] is None
    assert entry["areas"]["TS"] == float((masks[0] == 3).sum())
    assert "PixelSpacing missing" in entry["flag"]


def test_png_slices_run_without_dicom_seg(tmp_path: Path, bands: Path) -> None:
    folder = tmp_path / "in" / "pngs"
    folder.mkdir(parents=True)
    raw, mask = band_model.banded_slice(shift=2)
    Image.fromarray(raw).save(folder / "slice_01.png")
    assert _run(tmp_path, bands) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "not DICOM" in " ".join(report["series"][0]["notes"])
    png = np.asarray(Image.open(tmp_path / "out" / "pngs" / "labels" / "slice_01.png"))
    np.testing.assert_array_equal(mendeley_to_ids(png), mask)


@pytest.fixture(scope="module")
def bands_fov(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The band model seeing a centred 30 mm square: 39 px of a 64 px slice at 0.8 x 0.75 mm, at 39 px
    input so no resampling blurs the band boundaries."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return band_model.write_band_model(tmp_path_factory.mktemp("fov"), 39, name="bands-fov", field_of_view_mm=30.0)


def test_a_field_of_view_model_segments_inside_its_window_and_background_outside(tmp_path: Path, bands_fov: Path) -> None:
    masks = _write_study(tmp_path / "in", shifts=[0, 3])
    assert _run(tmp_path, bands_fov, "formats", "npy,report", "single_window", True) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["model"]["fields_of_view_mm"] == [30.0]
    side = round(30.0 / np.sqrt(SPACING[0] * SPACING[1]))  # 39 px
    start = (64 - side + 1) // 2  # the window is centred: rows and columns 13-51
    stack = np.load(tmp_path / "out" / "T2_TSE_TRA_0005" / "T2_TSE_TRA_0005_labels.npy")
    for found, mask in zip(stack, masks, strict=True):
        inside = np.zeros_like(mask, dtype=bool)
        inside[start : start + side, start : start + side] = True
        np.testing.assert_array_equal(found[inside], mask[inside])
        assert found[~inside].max() == 0 and mask[~inside].max() > 0  # the window did crop something


def test_a_field_of_view_model_sees_three_windows_by_default(tmp_path: Path, bands_fov: Path) -> None:
    masks = _write_study(tmp_path / "in", shifts=[2])
    assert _run(tmp_path, bands_fov, "formats", "npy,report") == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["model"]["fields_of_view_mm"] == [28.125, 30.0, 31.875]
    (found,) = np.load(tmp_path / "out" / "T2_TSE_TRA_0005" / "T2_TSE_TRA_0005_labels.npy")
    pixel = np.sqrt(SPACING[0] * SPACING[1])
    largest, smallest = round(31.875 / pixel), round(28.125 / pixel)
    outside = np.ones_like(found, dtype=bool)
    lo = (64 - largest + 1) // 2
    outside[lo : lo + largest, lo : lo + largest] = False
    assert found[outside].max() == 0  # beyond every window: background
    lo = (64 - smallest + 1) // 2
    core = (slice(lo + 2, lo + smallest - 2),) * 2  # inside every window, away from its resampled edge
    assert np.mean(found[core] == masks[0][core]) > 0.95


def test_png_slices_need_a_pixel_spacing_for_a_field_of_view_model(
    tmp_path: Path, bands_fov: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in" / "pngs"
    folder.mkdir(parents=True)
    raw, mask = band_model.banded_slice(shift=2)
    Image.fromarray(raw).save(folder / "slice_01.png")
    assert _run(tmp_path, bands_fov) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "sees a 30 mm field of view, and 1 PNG/NPY slice(s) carry no pixel spacing" in err and "--pixel-spacing" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))
    assert _run(tmp_path, bands_fov, "pixel_spacing", 0.5, "formats", "png,report", "single_window", True) == 0  # 60 px
    found = mendeley_to_ids(np.asarray(Image.open(tmp_path / "out" / "pngs" / "labels" / "slice_01.png")))
    spec = PreprocessSpec(input_size=39, field_of_view_mm=30.0)
    np.testing.assert_array_equal(found, band_model.expected_mask(raw, spec, 0.5))
    assert found[:2].max() == 0 and (found == 3).sum() > 0.9 * (mask == 3).sum()
    (entry,) = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]["slices"]
    assert entry["area_unit"] == "mm2" and entry["areas"]["TS"] == pytest.approx(float((found == 3).sum()) * 0.25)


def test_missing_highdicom_skips_seg_with_a_hint_and_still_succeeds(
    tmp_path: Path, bands: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_runtime import dicom_seg

    _write_study(tmp_path / "in", shifts=[0])
    monkeypatch.setattr(dicom_seg, "seg_unavailable_reason", lambda: dicom_seg.SEG_INSTALL_HINT)
    assert _run(tmp_path, bands, "formats", "seg,report") == 0
    series = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]
    assert "seg" not in series["outputs"] and dicom_seg.SEG_INSTALL_HINT in series["notes"]


_KILLED_BUILDER = """
import os, signal, sys
from pathlib import Path
from edge_runtime import dicom_seg
from edge_runtime.run import run_command
def kill_the_builder(*_):  # stands in for the SEG writer: the builder process dies, as if out of memory
    os.kill(os.getpid(), signal.SIGKILL)
dicom_seg.write_series_segs = kill_the_builder  # inherited by the forked builder, where it runs
sys.exit(run_command(input=Path(sys.argv[1]), output=Path(sys.argv[2]), model=Path(sys.argv[3]), quiet=True,
                     fork_builder=True))
"""


@pytest.mark.skipif(not hasattr(os, "fork") or len(os.sched_getaffinity(0)) < 2,
                    reason="the DICOM builder runs in a forked process on POSIX with two or more cores only")
def test_a_dicom_builder_process_that_dies_costs_the_dicom_files_only(tmp_path: Path, bands: Path) -> None:
    pytest.importorskip("highdicom", reason="the DICOM outputs need the dicom-seg extra (highdicom)")
    masks = _write_study(tmp_path / "in")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", _KILLED_BUILDER, str(tmp_path / "in"), str(out), str(bands)],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 1, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    reasons = [issue["reason"] for issue in report["failed"]]
    assert any(r.startswith("DICOM SEG not written (BuilderDied: ") for r in reasons), reasons
    assert any(r.startswith("DICOM SR not written (BuilderDied: ") for r in reasons), reasons
    assert any("key-image DICOM not written" in n and "BuilderDied" in n for n in report["notes"]), report["notes"]
    assert sorted(p.name for p in out.rglob("*.dcm")) == []
    series = out / "T2_TSE_TRA_0005"
    assert len(list((series / "labels").glob("*.png"))) == len(masks) == len(list((series / "overlays").glob("*.png")))
    assert (out / "key_images.png").is_file() and (series / "T2_TSE_TRA_0005_labels.npy").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [], "staging folder left behind"


_ON_CORES = """
import os, sys
from pathlib import Path
os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: int(sys.argv[1])]))
from edge_runtime.run import run_command
sys.exit(run_command(input=Path(sys.argv[2]), output=Path(sys.argv[3]), model=Path(sys.argv[4]), quiet=True,
                     fork_builder=True))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2 or not hasattr(os, "fork"),
                    reason="needs CPU affinity, two cores and fork (Linux)")  # fmt: skip
def test_the_dicom_files_are_built_in_a_second_process_only_where_a_second_core_exists(
    tmp_path: Path, bands: Path
) -> None:
    pytest.importorskip("highdicom", reason="the DICOM outputs need the dicom-seg extra (highdicom)")
    _write_study(tmp_path / "in", shifts=[0, 3])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for cores in (1, 2):
        out = tmp_path / f"out{cores}"
        done = subprocess.run([sys.executable, "-c", _ON_CORES, str(cores), str(tmp_path / "in"), str(out), str(bands)],
                              capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads((out / "report.json").read_text())
        assert ("dicom_builder" in report) == (cores == 2), report.get("dicom_builder")
        assert {"seg", "sr"} <= set(report["series"][0]["outputs"]) and (out / "key_images.dcm").is_file()
    assert report["dicom_builder"]["peak_rss_mb"] > 10


# --------------------------------------------------------------------------- subprocess: no TensorFlow

_PROBE = """
import sys
from edge_runtime.cli import app
try:
    app(args=sys.argv[1:], prog_name="edge-seg")
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in
               ("tensorflow", "tf_keras", "keras", "tensorflow_model_optimization", "tf2onnx", "train", "export", "benchmarks"))
print("HEAVY_MODULES", heavy, file=sys.stderr)
print("PYDANTIC", "pydantic" in sys.modules, file=sys.stderr)  # typer 0.29+ costs ~0.1 s per start with it
sys.exit(code)
"""


def _probe(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def test_run_and_help_never_import_tensorflow(tmp_path: Path, bands: Path) -> None:
    _write_study(tmp_path / "in", shifts=[0, 3])
    done = _probe("run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(bands), "--json")
    assert done.returncode == 0, done.stderr
    assert "HEAVY_MODULES []" in done.stderr
    assert "PYDANTIC False" in done.stderr, "typer must stay below 0.29 (pyproject): pydantic slows every start"
    assert json.loads(done.stdout)["n_slices_segmented"] == 2
    helped = _probe("run", "--help")
    assert helped.returncode == 0 and "--overwrite" in helped.stdout
    assert "HEAVY_MODULES []" in helped.stderr


# --------------------------------------------------------------------------- TFLite vs Keras (needs TensorFlow)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("tensorflow")
    from export.exporter import export_model
    from train.models import unet

    model = unet(input_size=64, depth=2, base_filters=4)
    rng = np.random.default_rng(0)
    calibration = np.stack([_prepared(band_model.banded_slice(shift=int(s))[0]) for s in rng.integers(0, 6, 8)])
    out = tmp_path_factory.mktemp("exported")
    spec = PreprocessSpec(input_size=64)
    # fp32 only: the export gates (edge_runtime.tolerances) rightly refuse an int8 copy of an untrained model
    results = export_model(model, out, ["tflite-fp32"], spec=spec, calibration=calibration, name="tiny")
    return model, {r.format: r.path for r in results}


def _prepared(raw: np.ndarray) -> np.ndarray:
    from edge_runtime.preprocessing import prepare_slice

    return prepare_slice(raw, PreprocessSpec(input_size=64))[0][..., None]


def test_tflite_masks_match_the_keras_model_on_a_dicom_study(tmp_path: Path, exported) -> None:
    from edge_runtime.preprocessing import prepare_slice, restore_labels

    model, paths = exported
    raws = [band_model.banded_slice(shift=s)[0] for s in SHIFTS]
    datasets = f.mr_series(raws)
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "in" / "T2" / f"IM{k}.ima")
    assert run_command(input=tmp_path / "in", output=tmp_path / "out", model=paths["tflite-fp32"], formats="npy,report") == 0
    masks = np.load(tmp_path / "out" / "T2" / "T2_labels.npy")
    spec = PreprocessSpec(input_size=64)
    prepared = [prepare_slice(raw.astype(np.float32), spec) for raw in raws]
    scores = model.predict(np.stack([t for t, _ in prepared])[..., None], verbose=0)
    keras_masks = np.stack([restore_labels(s, g) for s, (_, g) in zip(scores, prepared, strict=True)])
    assert masks.shape == keras_masks.shape
    assert (masks == keras_masks).mean() >= 0.995  # the export gate for float artefacts

    # The int8/litert path: the bundled model on the example study (band slices look like no spine to
    # it), against the same model called directly on slices decoded here with pydicom.
    import pydicom
    from pydicom.pixels import apply_modality_lut

    from edge_runtime.backends import open_backend
    from edge_runtime.manifest import load_verified_manifest

    assert run_command(input=EXAMPLE, output=tmp_path / "out8", formats="npy,report", backend="litert") == 0
    report = json.loads((tmp_path / "out8" / "report.json").read_text())
    assert report["model"]["precision"] == "int8" and report["model"]["backend"] == "litert"
    (series,) = report["series"]
    int8_masks = np.load(tmp_path / "out8" / series["name"] / f"{series['name']}_labels.npy")
    bundled = Path(report["model"]["file"])
    spec8 = load_verified_manifest(bundled).preprocessing
    datasets8 = [pydicom.dcmread(entry["source"]) for entry in series["slices"]]
    prepared8 = [prepare_slice(apply_modality_lut(ds.pixel_array, ds).astype(np.float32), spec8, ds.PixelSpacing)
                 for ds in datasets8]
    scores8 = open_backend(bundled, "litert", 1).predict(np.stack([t for t, _ in prepared8])[..., None])
    expected8 = np.stack([restore_labels(s, g) for s, (_, g) in zip(scores8, prepared8, strict=True)])
    assert int8_masks.shape == expected8.shape and set(np.unique(expected8)) == {0, 1, 2, 3, 4}
    assert (int8_masks == expected8).mean() >= 0.999


def test_a_slice_whose_output_cannot_be_written_fails_alone(
    tmp_path: Path, bands: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_runtime.outputs import RunOutputs

    _write_study(tmp_path / "in", shifts=[0, 1, 2])
    real_save = RunOutputs.stage_png
    doomed = f"{_stems(3)[1]}.png"

    def disk_full_for_one(self: RunOutputs, image, final: Path) -> None:  # injected fault: ENOSPC on one file
        if final.name == doomed:  # on an encoder thread: the failure still lands on this slice
            raise OSError(28, "No space left on device")
        real_save(self, image, final)

    monkeypatch.setattr(RunOutputs, "stage_png", disk_full_for_one)
    assert _run(tmp_path, bands, "formats", "png,report") == 1
    slices = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]["slices"]
    assert [e["status"] for e in slices] == ["ok", "failed", "ok"]
    assert slices[1]["reason"] == "writing the label PNG failed (OSError: [Errno 28] No space left on device)"
    assert slices[1]["areas"]["TS"] > 0  # measured before the write failed, still reported
    labels = tmp_path / "out" / "T2_TSE_TRA_0005" / "labels"
    assert sorted(p.name for p in labels.iterdir()) == sorted(f"{s}.png" for s in (_stems(3)[0], _stems(3)[2]))


def test_truth_pairs_mendeley_png_slices_with_their_l1_labels(tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture) -> None:
    slices = tmp_path / "in" / "T2_Output"
    labels = tmp_path / "truth" / "Label_Images"
    slices.mkdir(parents=True)
    labels.mkdir(parents=True)
    for disc, shift in ((3, 0), (4, 2)):
        raw, mask = band_model.banded_slice(shift=shift)
        Image.fromarray(raw).save(slices / f"T2_0007_D{disc}.png")
        Image.fromarray(ids_to_mendeley(mask)).save(labels / f"L1_0007_D{disc}.png")
    assert _run(tmp_path, bands, "formats", "report", "truth", tmp_path / "truth") == 0
    scores = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]["scores"]
    assert scores["n_slices"] == 2 and scores["mean_dice"] == 1.0


def test_non_square_slices_keep_their_size_through_masks_npy_and_seg(tmp_path: Path, bands: Path) -> None:
    slices = [band_model.banded_slice(shift=s) for s in (0, 3)]
    raws = [raw[:, 2:62] for raw, _ in slices]  # 64 x 60, like the 320 x 310 scans
    masks = [mask[:, 2:62] for _, mask in slices]
    for k, ds in enumerate(f.mr_series(raws)):
        f.write(ds, tmp_path / "in" / "narrow" / f"IM{k}.dcm")
    assert _run(tmp_path, bands) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "narrow" / "narrow_labels.npy"), np.stack(masks))
    series = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]
    hd = pytest.importorskip("highdicom", reason="the SEG half of this test needs the dicom-seg extra (highdicom)")
    assert "seg" in series["outputs"], "the default formats write a DICOM SEG"
    seg = hd.seg.segread(series["outputs"]["seg"])
    assert (seg.Rows, seg.Columns) == (64, 60)
    decoded = seg.get_pixels_by_source_instance(
        [e["sop_instance_uid"] for e in series["slices"]], combine_segments=True, assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(decoded, np.stack(masks))


# --------------------------------------------------------------------------- issue 11: real-world studies


EXAMPLE = REPO / "examples" / "study"


def _tool(name: str, package: str) -> str:
    import shutil

    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (Debian package {package}: apt-get install -y {package})")
    return found


def _dciodvfy_errors(path: Path) -> list[str]:
    done = subprocess.run([_tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def _dcmdump(path: Path) -> str:
    done = subprocess.run([_tool("dcmdump", "dcmtk"), "+L", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _write_angled_example(folder: Path) -> list[str]:
    """The example study re-acquired as three angled blocks, files in scrambled order; returns SOP UIDs caudal -> cranial."""
    blocks = f.angled_blocks(f.read_series(EXAMPLE), angles=(-12.0, 0.0, 14.0))
    flat = [ds for block in blocks for ds in block]
    order = np.random.default_rng(7).permutation(len(flat))
    for name, k in enumerate(order):
        f.write(flat[k], folder / "T2_TSE_TRA" / f"{name:08d}")
    return [ds.SOPInstanceUID for ds in flat]


def test_three_angled_blocks_get_every_mask_in_order_and_one_valid_seg_per_block(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    uids = _write_angled_example(tmp_path / "in")
    assert run_command(input=tmp_path / "in", output=tmp_path / "out") == 0
    assert run_command(input=EXAMPLE, output=tmp_path / "flat", formats="npy,report") == 0  # same pixels, no tilt
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (series,) = report["series"]
    assert [e["sop_instance_uid"] for e in series["slices"]] == uids  # block by block, caudal to cranial
    assert [e["status"] for e in series["slices"]] == ["ok"] * 12 and report["failed"] == []
    assert [(b["n_slices"], b["first_index"]) for b in series["blocks"]] == [(4, 0), (4, 4), (4, 8)]
    assert [e["block"] for e in series["slices"]] == [0] * 4 + [1] * 4 + [2] * 4
    masks = np.load(tmp_path / "out" / "T2_TSE_TRA" / "T2_TSE_TRA_labels.npy")
    np.testing.assert_array_equal(masks, np.load(tmp_path / "flat" / "study" / "study_labels.npy"))
    for entry, mask in zip(series["slices"], masks, strict=True):
        png = np.asarray(Image.open(tmp_path / "out" / "T2_TSE_TRA" / "labels" / f"{entry['stem']}.png"))
        np.testing.assert_array_equal(mendeley_to_ids(png), mask)
    segs = sorted((tmp_path / "out" / "T2_TSE_TRA").glob("*_seg.dcm"))
    assert [p.name for p in segs] == [f"T2_TSE_TRA_block{k}_seg.dcm" for k in (1, 2, 3)]
    covered = []
    for block, path in zip(series["blocks"], segs, strict=True):
        assert _dciodvfy_errors(path) == []
        dump = _dcmdump(path)
        assert "(0008,0016) UI =SegmentationStorage" in dump and "(0028,0008) IS [16]" in dump
        assert "(0062,0002) SQ (Sequence with explicit length #=4)" in dump  # SegmentSequence: IVD, PE, TS, AAP
        seg = hd.seg.segread(path)
        assert int(seg.NumberOfFrames) == 4 * 4  # every slice, every segment: no omitted frames to shift
        orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
        assert [float(v) for v in orientation] == pytest.approx(block["orientation"], abs=1e-6)
        for index in range(block["first_index"], block["last_index"] + 1):
            entry = series["slices"][index]
            decoded = seg.get_pixels_by_source_instance(
                [entry["sop_instance_uid"]], combine_segments=True, assert_missing_frames_are_empty=True
            )
            np.testing.assert_array_equal(decoded[0], masks[index])
            covered.append(entry["sop_instance_uid"])
    assert sorted(covered) == sorted(uids)
    levels = series["levels"]
    assert [lv["block"] for lv in levels] == sorted(lv["block"] for lv in levels)  # levels follow the spine
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [lv["block"] for lv in summary["series"][0]["levels"]] == [lv["block"] for lv in levels]


def test_a_localizer_inside_the_series_is_left_out_by_name_and_the_axial_slices_finish(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture
) -> None:
    slices = [band_model.banded_slice(shift=s) for s in (0, 2, 4, 1, 3)]
    datasets = f.mr_series([raw for raw, _ in slices])
    datasets[0].ImageOrientationPatient = [f"{v}" for v in f.SAGITTAL]  # 3-plane localizer in the same series
    datasets[1].ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    datasets[2].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "in" / "T2" / f"IM{k}.dcm")
    assert _run(tmp_path, bands) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (series,) = report["series"]
    assert [(e["stem"], e["status"]) for e in series["slices"]] == [("IM3", "ok"), ("IM4", "ok")]
    excluded = {Path(e["path"]).name: e["reason"] for e in report["excluded"]}
    assert sorted(excluded) == ["IM0.dcm", "IM1.dcm", "IM2.dcm"] and excluded["IM0.dcm"].startswith("sagittal orientation")
    assert {e["series"] for e in report["excluded"]} == {"T2"}
    err = capsys.readouterr().err
    assert "excluded" in err and "IM2.dcm: ImageType ORIGINAL\\PRIMARY\\LOCALIZER is LOCALIZER" in err
    rows = {Path(r["source"]).name: r["status"] for r in csv.DictReader((tmp_path / "out" / "report.csv").open())}
    assert rows == {"IM3.dcm": "ok", "IM4.dcm": "ok", "IM0.dcm": "excluded", "IM1.dcm": "excluded", "IM2.dcm": "excluded"}


def test_pydicoms_bad_vr_file_beside_a_good_study_costs_only_itself(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture
) -> None:
    from pydicom.data import get_testdata_file

    masks = _write_study(tmp_path / "in", shifts=[0, 2, 4])
    (tmp_path / "in" / "badVR.dcm").write_bytes(Path(get_testdata_file("badVR.dcm")).read_bytes())
    assert _run(tmp_path, bands) in (0, 1)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (series,) = report["series"]
    assert [e["status"] for e in series["slices"]] == ["ok"] * 3
    for stem, mask in zip(_stems(3), masks, strict=True):
        png = np.asarray(Image.open(tmp_path / "out" / "T2_TSE_TRA_0005" / "labels" / f"{stem}.png"))
        np.testing.assert_array_equal(mendeley_to_ids(png), mask)
    named = {Path(i["path"]).name: i["reason"] for i in report["skipped"] + report["failed"]}
    assert named["badVR.dcm"] == "radiotherapy object (RT): not an image"
    assert "badVR.dcm: radiotherapy object (RT): not an image" in capsys.readouterr().err
    assert report["n_input_files"] == 4


def test_every_input_is_accounted_for_in_the_report(tmp_path: Path, bands: Path) -> None:
    _write_study(tmp_path / "in", shifts=[0, 1, 2, 3])
    folder = tmp_path / "in" / "T2_TSE_TRA_0005"
    f.raw_value(f.mr_series([band_model.banded_slice(0)[0]])[0], "NumberOfFrames", "IS", b"abc ").save_as(folder / "frames.dcm")
    (folder / ".DS_Store").write_bytes(b"Bud1")
    f.truncate(folder / "IM0002.ima", 0.4)
    assert _run(tmp_path, bands) == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    named = {e["source"] for s in report["series"] for e in s["slices"]}
    named |= {i["path"] for k in ("excluded", "skipped", "failed") for i in report[k]}
    on_disk = {str(p) for p in (tmp_path / "in").rglob("*") if p.is_file()}
    assert on_disk <= named and report["n_input_files"] == len(on_disk) == 6
    failed = {Path(i["path"]).name: i["reason"] for i in report["failed"]}
    assert failed["frames.dcm"] == "corrupt DICOM header: NumberOfFrames 'abc' is not an integer"
    assert failed["IM0002.ima"].startswith("truncated")
    assert [e["status"] for e in report["series"][0]["slices"]].count("ok") == 3


# --------------------------------------------------------------------------- output ownership


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from edge_runtime.outputs import OutputLock, holder_info
lock = OutputLock(Path(sys.argv[1]))
lock.acquire(holder_info(Path("elsewhere")))
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""


def test_a_second_run_into_a_locked_folder_refuses_with_exit_2_naming_the_holder(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture
) -> None:
    _write_study(tmp_path / "in", shifts=[0, 1])
    (tmp_path / "out").mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path / "out")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _run(tmp_path, bands) == 2
        err = capsys.readouterr().err
        assert f"is in use by edge-seg run pid {holder.pid} on" in err and "(input elsewhere)" in err
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".edge-seg.lock"]  # nothing of ours
    finally:
        holder.communicate("", timeout=30)
    assert _run(tmp_path, bands) == 0  # the lock died with its holder
    assert not (tmp_path / "out" / ".edge-seg.lock").exists()


def test_two_concurrent_runs_into_one_folder_one_refuses_with_exit_2(tmp_path: Path, bands: Path) -> None:
    _write_study(tmp_path / "in", shifts=[0, 1, 2, 3, 4, 5])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "edge_runtime.cli", "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--model", str(bands), "--json"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
            for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in runs]
    assert sorted(code for code, _, _ in results) == [0, 2]
    (winner,) = [out for code, out, _ in results if code == 0]
    (loser,) = [err for code, _, err in results if code == 2]
    assert "is in use by edge-seg run pid" in loser or "already exists; use --overwrite" in loser
    summary = json.loads(winner)
    on_disk = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert on_disk == sorted(summary["relative_files"]) and summary["n_slices_segmented"] == 6


def test_overwrite_leaves_exactly_this_runs_files(tmp_path: Path, bands: Path) -> None:
    _write_study(tmp_path / "in", shifts=[0, 1, 2])
    other = f.mr_series([band_model.banded_slice(shift=3)[0]], description="T1_TSE_TRA")
    f.write(other[0], tmp_path / "in" / "T1_TSE_TRA" / "IM1.dcm")
    assert _run(tmp_path, bands) == 0
    out = tmp_path / "out"
    assert (out / "T1_TSE_TRA").is_dir()
    (out / "my_notes.txt").write_text("not edge-seg's\n")
    import shutil

    shutil.rmtree(tmp_path / "in" / "T1_TSE_TRA")  # the second run no longer sees that series
    f.truncate(tmp_path / "in" / "T2_TSE_TRA_0005" / "IM0002.ima", 0.5)  # and one slice now fails
    assert _run(tmp_path, bands, "overwrite", True) == 1
    summary = json.loads((out / "summary.json").read_text())
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == set(summary["relative_files"]) | {"my_notes.txt"}
    assert not (out / "T1_TSE_TRA").exists()
    assert "--overwrite: removed T1_TSE_TRA, written by the previous run, not by this one" in summary["notes"]
    labels = sorted(p.name for p in (out / "T2_TSE_TRA_0005" / "labels").iterdir())
    assert labels == ["IM0001.png", "IM0003.png"]  # the failed slice's old mask is gone
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_output_problems_are_found_before_inference(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    _write_study(tmp_path / "in", shifts=[0])
    (tmp_path / "file").write_text("x")
    assert _run(tmp_path, bands, out="file") == 2
    err = capsys.readouterr().err
    assert "exists and is not a folder" in err and "segmenting" not in err
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - (1 << 20), 1 << 20))  # 1 MiB left
    assert _run(tmp_path, bands) == 2
    err = capsys.readouterr().err
    assert "only 1 MiB free in" in err and "this run needs about" in err and "segmenting" not in err
    assert not (tmp_path / "out").exists()


_SLOW_STUDY = 120


def _start_slow_run(tmp_path: Path, bands: Path) -> subprocess.Popen:
    import time as clock

    slices = [band_model.banded_slice(shift=k % 6)[0] for k in range(_SLOW_STUDY)]
    for k, ds in enumerate(f.mr_series(slices, thickness=1.0)):
        f.write(ds, tmp_path / "in" / "T2" / f"IM{k:04d}.dcm")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "edge_runtime.cli", "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
               "--model", str(bands)]
    run_process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    deadline = clock.monotonic() + 120
    while clock.monotonic() < deadline:  # wait until it is writing into its staging folder
        staged = list((tmp_path / "out").glob(".edge-seg-staging-*/T2/labels/*.png")) if (tmp_path / "out").exists() else []
        if staged:
            return run_process
        assert run_process.poll() is None, run_process.stderr.read()
        clock.sleep(0.01)
    raise AssertionError("the run never started writing")


def test_a_terminated_run_leaves_no_staging_lock_or_temp_file(tmp_path: Path, bands: Path) -> None:
    import signal

    run_process = _start_slow_run(tmp_path, bands)
    run_process.send_signal(signal.SIGTERM)
    status = run_process.wait(timeout=60)
    stderr = run_process.stderr.read()
    assert status == 128 + signal.SIGTERM, stderr
    assert "stopped by signal SIGTERM; nothing written, staged files removed" in stderr
    assert list((tmp_path / "out").iterdir()) == []


def test_a_signal_that_a_library_swallows_still_stops_the_run_before_it_commits(
    tmp_path: Path, bands: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import signal

    from edge_runtime.outputs import OutputFormat
    from edge_runtime.writers import SERIES_WRITERS

    def swallowing_write(result: object, outputs: object) -> None:
        try:  # the handler raises RunInterrupted here, in the middle of "library" code
            os.kill(os.getpid(), signal.SIGTERM)
            raise AssertionError("the SIGTERM handler did not run")
        except BaseException as exc:  # what pydicom's read_sequence_item does with any exception
            raise OSError("No tag to read at file position 0") from exc

    monkeypatch.setattr(SERIES_WRITERS[OutputFormat.NPY], "write", swallowing_write)
    _write_study(tmp_path / "in")
    assert _run(tmp_path, bands) == 128 + signal.SIGTERM
    assert "stopped by signal SIGTERM; nothing written, staged files removed" in capsys.readouterr().err
    assert list((tmp_path / "out").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(tmp_path: Path, bands: Path) -> None:
    import signal

    run_process = _start_slow_run(tmp_path, bands)
    run_process.send_signal(signal.SIGKILL)  # no handler runs: the staging folder stays behind
    run_process.wait(timeout=60)
    (left,) = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".edge-seg-staging-")]
    assert _run(tmp_path, bands, "formats", "png,report") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert f"removed the staging files of an interrupted run: {left}" in summary["notes"]
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]
    assert len(summary["relative_files"]) == _SLOW_STUDY + 3


def test_any_bytes_in_a_file_name_are_safe_in_every_output(tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture) -> None:
    raw, mask = band_model.banded_slice(shift=2)
    name = os.fsdecode(b"IM\xff\xfe [red]x\n,\"q\".dcm")
    f.write(f.mr_series([raw])[0], tmp_path / "in" / os.fsdecode(b"S\xe9rie") / name)
    assert _run(tmp_path, bands) == 0
    out = tmp_path / "out"
    for path in out.rglob("*"):
        path.name.encode("ascii")  # every output name is plain ASCII
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (entry,) = report["series"][0]["slices"]
    assert entry["source"].endswith("S\\xe9rie/IM\\xff\\xfe [red]x\\x0a,\"q\".dcm")
    rows = list(csv.DictReader((out / "report.csv").open(encoding="utf-8")))
    assert rows[0]["source"] == entry["source"]
    png = np.asarray(Image.open(out / report["series"][0]["name"] / "labels" / f"{entry['stem']}.png"))
    np.testing.assert_array_equal(mendeley_to_ids(png), mask)
    json.loads((out / "summary.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("content", ["[]", "null", '"a string"', "CLASSES"], ids=["list", "null", "string", "classes-string"])
def test_a_hostile_manifest_is_refused_with_exit_2_not_a_traceback(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture, content: str
) -> None:
    _write_study(tmp_path / "in", shifts=[0])
    model = tmp_path / "m" / bands.name
    model.parent.mkdir()
    model.write_bytes(bands.read_bytes())
    manifest = json.loads((bands.parent / f"{bands.name}.json").read_text())
    text = json.dumps(manifest | {"classes": "IVD,PE,TS,AAP"}) if content == "CLASSES" else content
    (tmp_path / "m" / f"{bands.name}.json").write_text(text)
    assert _run(tmp_path, model) == 2
    err = capsys.readouterr().err
    assert "error:" in err and bands.name in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_rules_file_and_series_override_the_default_selection(tmp_path: Path, bands: Path) -> None:
    datasets = f.mr_series([band_model.banded_slice(shift=s)[0] for s in (0, 1, 2)])
    datasets[0].ImageType = ["DERIVED", "PRIMARY"]
    for k, ds in enumerate(datasets):
        f.write(ds, tmp_path / "in" / "T2" / f"IM{k}.dcm")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"exclude_image_types": ["LOCALIZER"]}))
    assert _run(tmp_path, bands, "rules", rules, "formats", "report") == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [e["stem"] for e in report["series"][0]["slices"]] == ["IM0", "IM1", "IM2"] and report["excluded"] == []
    assert report["selection_rules"]["exclude_image_types"] == ["LOCALIZER"]
    rules.write_text('{"planes": "axial"}')
    assert _run(tmp_path, bands, "rules", rules, out="o2") == 2


def test_a_model_that_fails_to_load_during_discovery_exits_2_and_writes_nothing(
    tmp_path: Path, bands: Path, capsys: pytest.CaptureFixture
) -> None:
    """The model loads on a thread while discovery runs: its error still ends the run first (exit 2)."""
    _write_study(tmp_path / "in")
    tampered = tmp_path / "model" / bands.name
    tampered.parent.mkdir()
    tampered.write_bytes(bands.read_bytes() + b"\0")  # the manifest's sha256 no longer matches
    shutil.copy(Path(f"{bands}.json"), Path(f"{tampered}.json"))
    assert _run(tmp_path, tampered) == 2
    assert "sha256" in capsys.readouterr().err.lower()
    assert not (tmp_path / "out").exists()


def test_an_overlay_that_cannot_be_written_fails_its_slice_and_leaves_the_contact_sheet(
    tmp_path: Path, bands: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edge_runtime import writers
    from edge_runtime.outputs import RunOutputs

    _write_study(tmp_path / "in", shifts=[0, 1, 2])
    real_save = RunOutputs.stage_png
    doomed = tmp_path / "out" / "T2_TSE_TRA_0005" / "overlays" / f"{_stems(3)[1]}.png"
    tiles: list[int] = []
    real_sheet = writers.contact_sheet

    def disk_full_for_one(self: RunOutputs, image, final: Path) -> None:  # on an encoder thread
        if final == doomed:
            raise OSError(28, "No space left on device")
        real_save(self, image, final)

    def counted_sheet(pictures, captions, **kwargs):
        tiles.append(len(pictures))
        return real_sheet(pictures, captions, **kwargs)

    monkeypatch.setattr(RunOutputs, "stage_png", disk_full_for_one)
    monkeypatch.setattr(writers, "contact_sheet", counted_sheet)
    assert _run(tmp_path, bands, "formats", "overlay,report") == 1
    series = json.loads((tmp_path / "out" / "report.json").read_text())["series"][0]
    assert [e["status"] for e in series["slices"]] == ["ok", "failed", "ok"]
    assert series["slices"][1]["reason"] == "writing the overlay failed (OSError: [Errno 28] No space left on device)"
    assert tiles == [2]  # the contact sheet shows the two overlays that were written
    assert not doomed.exists() and (doomed.parent.parent / "T2_TSE_TRA_0005_contact_sheet.png").is_file()
    files = json.loads((tmp_path / "out" / "summary.json").read_text())["relative_files"]
    assert f"T2_TSE_TRA_0005/overlays/{doomed.name}" not in files and "T2_TSE_TRA_0005/T2_TSE_TRA_0005_contact_sheet.png" in files
