"""`bench real`: reference parsing, Dice/area/presence scoring against independent sums, end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.real import (
    DISC_PRESENT_MM2,
    IVD,
    TS,
    RealBenchError,
    ReferenceSlice,
    bench_real,
    load_reference,
    rasterize,
    score_slice,
    summarize,
)

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-axial"
SCORER = REAL.parent / "tools" / "real_score.py"
needs_real = pytest.mark.skipif(not (REAL / "reference.jsonl").is_file(), reason=f"real validation set not at {REAL}")


def _rect(x0: int, y0: int, x1: int, y1: int) -> tuple[tuple[float, float], ...]:
    return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_rasterized_rectangle_includes_its_boundary() -> None:
    mask = rasterize(_rect(2, 3, 6, 5), (10, 10))
    expected = np.zeros((10, 10), bool)
    expected[3:6, 2:7] = True  # rows y0..y1, columns x0..x1, both inclusive
    assert np.array_equal(mask, expected)


def test_dice_and_areas_match_an_independent_computation() -> None:
    ref = ReferenceSlice("s", "T2", "disc", "high", _rect(10, 10, 29, 29), _rect(40, 40, 49, 49))
    pred = np.zeros((64, 64), np.uint8)
    pred[14:34, 12:30] = IVD  # shifted disc
    pred[44:52, 40:50] = TS  # shifted sac
    pred[0:5, 0:5] = 2  # PE and AAP have no reference: they must not change IVD/TS scores
    pred[60:64, 60:64] = 4
    ivd_ref = np.zeros((64, 64), bool)
    ivd_ref[10:30, 10:30] = True
    ts_ref = np.zeros((64, 64), bool)
    ts_ref[40:50, 40:50] = True
    row = score_slice(ref, pred, pixel_area_mm2=0.5)
    assert row.ivd_dice == pytest.approx(_dice(pred == IVD, ivd_ref))
    assert row.ts_dice == pytest.approx(_dice(pred == TS, ts_ref))
    assert row.ts_area_ref_mm2 == pytest.approx(100 * 0.5)
    assert row.ts_area_pred_mm2 == pytest.approx(80 * 0.5)
    assert row.ts_area_error == pytest.approx(0.2)
    assert row.disc_ref and row.disc_pred == (DISC_PRESENT_MM2 <= 360 * 0.5)


def test_vertebral_body_slice_scores_presence_not_ivd_dice() -> None:
    ref = ReferenceSlice("b", "T1", "vertebral_body", "medium", None, _rect(5, 5, 9, 9))
    pred = np.zeros((32, 32), np.uint8)
    pred[10:30, 10:30] = IVD  # 400 px * 0.25 mm2 = 100 mm2: a (wrongly) predicted disc
    row = score_slice(ref, pred, pixel_area_mm2=0.25)
    assert row.ivd_dice is None and row.ts_dice == 0.0
    assert not row.disc_ref and row.disc_pred
    summary = summarize([row])
    assert summary["T1"]["disc_accuracy"] == 0.0 and summary["T2"]["slices"] == 0
    assert summary["all"]["ts_area_error_median"] == pytest.approx(1.0)


def test_unsure_slices_are_left_out_of_presence_accuracy() -> None:
    unsure = ReferenceSlice("u", "T2", "unsure", "low", None, _rect(1, 1, 4, 4))
    assert not unsure.counts_for_presence
    row = score_slice(unsure, np.zeros((8, 8), np.uint8), 1.0)
    assert summarize([row])["all"]["disc_accuracy"] is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"ref\.jsonl:2: not JSON"),
        ('{"slice": "a", "ts": [[1, 2], [3, 4]]}', r"ref\.jsonl:2 ts: polygon needs at least 3"),
        ('["a"]', r"ref\.jsonl:2: expected an object"),
    ],
)
def test_bad_reference_lines_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "ref.jsonl"
    path.write_text('{"slice": "ok", "ivd": null, "ts": null}\n' + line + "\n")
    with pytest.raises(RealBenchError, match=message):
        load_reference(path)


@needs_real
def test_missing_image_is_named(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(RealBenchError, match=r"no image for 30 reference slice\(s\), e\.g\. real_00\.png"):
        bench_real(None, tmp_path / "images", REAL / "reference.jsonl")


@needs_real
def test_bench_real_agrees_with_the_independent_scorer(tmp_path: Path) -> None:
    """The bundled model on six real slices: bench real's TS/IVD Dice equal real_score.py's on `edge-seg run` output."""
    images = tmp_path / "images"
    images.mkdir()
    lines = (REAL / "reference.jsonl").read_text().splitlines()[:6]
    for line in lines:
        name = json.loads(line)["slice"]
        shutil.copy(REAL / f"{name}.png", images / f"{name}.png")
    reference = tmp_path / "reference.jsonl"
    reference.write_text("\n".join(lines) + "\n")
    # one backend on both sides: auto may pick another for a short run than for the benchmark
    result = bench_real(None, images, reference, tmp_path / "bench", threads=1, backend="litert")
    summary = result["summary"]["all"]
    assert summary["slices"] == 6 and summary["n_ts"] == 6
    sheet = Image.open(tmp_path / "bench" / "real_contact_sheet.png")
    assert sheet.width == 6 * 240
    saved = json.loads((tmp_path / "bench" / "real.json").read_text())
    assert saved["summary"] == result["summary"]
    if not SCORER.is_file():
        pytest.skip(f"independent scorer not at {SCORER}")
    exe = Path(sys.executable).with_name("edge-seg")
    run = subprocess.run([str(exe), "run", str(images), "-o", str(tmp_path / "run"), "--threads", "1", "--backend", "litert",
                          "--pixel-spacing", "0.6875"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    scored = subprocess.run([sys.executable, str(SCORER), str(images), str(tmp_path / "run"), str(reference)],
                            capture_output=True, text=True, timeout=60)
    line = scored.stdout.strip().splitlines()[-1]
    ts = float(re.search(r"TS Dice mean ([0-9.]+)", line).group(1))
    ivd = float(re.search(r"IVD Dice mean ([0-9.]+)", line).group(1))
    assert ts == pytest.approx(summary["ts_dice"], abs=6e-4)
    assert ivd == pytest.approx(summary["ivd_dice"], abs=6e-4)


def test_cli_bench_real_exits_2_naming_a_missing_folder(tmp_path: Path) -> None:
    reference = tmp_path / "ref.jsonl"
    reference.write_text('{"slice": "a", "ivd": null, "ts": [[1, 1], [5, 1], [5, 5]]}\n')
    exe = Path(sys.executable).with_name("edge-seg")
    result = subprocess.run([str(exe), "bench", "real", "--images", str(tmp_path / "nope"), "--reference", str(reference)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "nope: image folder not found" in result.stderr


@needs_real
def test_cli_bench_real_prints_the_table_and_writes_its_files(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("edge-seg")
    result = subprocess.run([str(exe), "bench", "real", "--images", str(REAL), "--reference", str(REAL / "reference.jsonl"),
                             "-o", str(tmp_path), "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| contrast | slices | TS Dice | IVD Dice |" in result.stdout and "| T1 | 13 |" in result.stdout
    saved = json.loads((tmp_path / "real.json").read_text())
    assert saved["summary"]["all"]["slices"] == 30 and len(saved["slices"]) == 30
    assert (tmp_path / "real.md").read_text().startswith("# Real slices")
