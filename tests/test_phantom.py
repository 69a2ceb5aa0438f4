"""Phantom data set: layout, pixel values, class shares, truth.csv, determinism, DICOM studies."""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from edge_runtime.labels import BY_SHORT
from train.data.phantom import (
    CLASS_OF_TISSUE,
    OVERSAMPLE,
    SPACING_MM,
    TRIANGLE_DEPTH,
    T,
    build_scene,
    render_slice,
    render_tissue,
    sample_patient,
)
from train.data.synth import SynthError, synthesize

REAL_SHARES = {"BG": 0.939, "IVD": 0.036, "PE": 0.016, "TS": 0.003, "AAP": 0.006}
MENDELEY_VALUES = {50, 100, 150, 200, 250}
N_PATIENTS = 10


N_DICOM_PATIENTS = 3


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("phantom") / "set"
    summary = synthesize(out, patients=N_PATIENTS, seed=3, preview=True)
    return out, summary


@pytest.fixture(scope="module")
def dicom_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("phantom") / "dicom"
    summary = synthesize(out, patients=N_DICOM_PATIENTS, seed=3, dicom=True)
    return out, summary


def _label(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "L", path
    return np.asarray(image)


def _image(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode.startswith("I;16"), (path, image.mode)
    return np.asarray(image)


def _truth(out: Path) -> list[dict[str, str]]:
    with (out / "truth.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_layout_names_and_pixel_values(dataset: tuple[Path, object]) -> None:
    out, summary = dataset
    labels = sorted((out / "05_Final_Ground_Truth_Data" / "Label_Images").iterdir())
    assert [p.name for p in labels] == sorted(
        f"L1_{i:04d}_D{d}.png" for i in range(1, N_PATIENTS + 1) for d in (3, 4, 5)
    )
    for path in labels:
        pid_disc = path.name[3:]
        label = _label(path)
        assert label.shape == (320, 320)
        assert set(np.unique(label).tolist()) <= MENDELEY_VALUES
        assert {50, 100, 150, 200, 250} <= set(np.unique(label).tolist()), f"{path}: a class is missing"
        for modality in ("T1", "T2"):
            image = _image(out / "04_Intermediary_Ground_Truth_Data" / f"{modality}_Output" / f"{modality}_{pid_disc}")
            assert image.shape == (320, 320)
            assert image.max() <= 4095 and image.max() > 255  # 12-bit range actually used
    assert summary.n_patients == N_PATIENTS and summary.n_slices == 3 * N_PATIENTS
    assert (out / "preview.png").is_file() and Image.open(out / "preview.png").mode == "RGB"


def test_class_shares_within_factor_two_of_real_data(dataset: tuple[Path, object]) -> None:
    out, summary = dataset
    values = np.concatenate([_label(p).ravel() for p in (out / "05_Final_Ground_Truth_Data" / "Label_Images").iterdir()])
    for short, value in (("BG", 250), ("IVD", 50), ("PE", 100), ("TS", 150), ("AAP", 200)):
        share = float(np.mean(values == value))
        assert summary.class_pixel_share[short] == pytest.approx(share)
        assert REAL_SHARES[short] / 2 <= share <= REAL_SHARES[short] * 2, (short, share)


def test_truth_csv_areas_equal_label_pixel_counts(dataset: tuple[Path, object]) -> None:
    out, _ = dataset
    rows = _truth(out)
    assert len(rows) == 3 * N_PATIENTS
    for row in rows:
        label = _label(out / row["label_png"])
        assert row["label_png"] == f"05_Final_Ground_Truth_Data/Label_Images/L1_{row['patient']}_D{row['disc']}.png"
        for short, value in (("BG", 250), ("IVD", 50), ("PE", 100), ("TS", 150), ("AAP", 200)):
            count = int(np.sum(label == value))
            assert int(row[f"px_{short}"]) == count
            assert float(row[f"area_mm2_{short}"]) == pytest.approx(count * 0.6875**2, abs=1e-9)
        assert float(row["ts_area_mm2"]) == float(row["area_mm2_TS"])
        assert row["stenotic"] == str(int(float(row["ts_area_mm2"]) < 75.0))
    stenotic = np.mean([row["stenotic"] == "1" for row in rows])
    assert 0.05 <= stenotic <= 0.5


def test_anatomy_sizes_match_the_brief(dataset: tuple[Path, object]) -> None:
    """Disc 40-55 mm wide and 28-38 mm deep, measured on the labels along the level's rotation."""
    out, _ = dataset
    for row in _truth(out):
        ivd = _label(out / row["label_png"]) == 50
        rows_, cols = np.nonzero(ivd)
        theta = math.radians(float(row["rotation_deg"]))
        x, y = cols * SPACING_MM, rows_ * SPACING_MM
        u = math.cos(theta) * x + math.sin(theta) * y
        v = -math.sin(theta) * x + math.cos(theta) * y
        width, depth = np.ptp(u) + SPACING_MM, np.ptp(v) + SPACING_MM
        assert 40.0 <= width <= 56.0, (row["label_png"], width)
        assert 27.0 <= depth <= 45.0, (row["label_png"], depth)  # herniations add a few mm
        assert abs(float(row["rotation_deg"])) <= 10.0


def test_t1_t2_contrast_csf_dark_on_t1_bright_on_t2(dataset: tuple[Path, object]) -> None:
    out, _ = dataset
    means: dict[str, list[float]] = {"T1": [], "T2": []}
    for row in _truth(out):
        label = _label(out / row["label_png"])
        for modality in ("T1", "T2"):
            image = _image(out / row[f"{modality.lower()}_png"]).astype(float)
            means[modality].append(image[label == 150].mean() / image[label == 200].mean())
    assert np.median(means["T1"]) < 0.7  # CSF darker than epidural fat on T1
    assert np.median(means["T2"]) > 1.05  # and brighter on T2


def test_same_seed_writes_same_bytes(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for folder, seed, dicom in ((first, 5, True), (second, 5, True), (other, 6, False)):
        synthesize(folder, patients=1, seed=seed, dicom=dicom, preview=True)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert len(files) > 30
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    t2 = Path("04_Intermediary_Ground_Truth_Data/T2_Output/T2_0001_D4.png")
    assert (first / t2).read_bytes() != (other / t2).read_bytes()


def test_patient_draw_does_not_depend_on_patient_count() -> None:
    a = render_slice(sample_patient(7, 1), 5)
    b = render_slice(sample_patient(7, 1), 5)
    assert np.array_equal(a.t2, b.t2) and np.array_equal(a.labels, b.labels)
    t2_only = render_slice(sample_patient(7, 1), 5, with_t1=False)
    assert t2_only.t1 is None and np.array_equal(t2_only.t2, a.t2)


def test_rerun_replaces_own_output_and_refuses_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "set"
    synthesize(out, patients=2, seed=1)
    synthesize(out, patients=1, seed=1)
    names = sorted(p.name for p in (out / "05_Final_Ground_Truth_Data" / "Label_Images").iterdir())
    assert names == ["L1_0001_D3.png", "L1_0001_D4.png", "L1_0001_D5.png"]
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(SynthError, match="photos"):
        synthesize(foreign, patients=1, seed=1)
    assert (foreign / "holiday.jpg").read_bytes() == b"x"
    with pytest.raises(SynthError, match="patients"):
        synthesize(tmp_path / "none", patients=0, seed=1)


def _series(out: Path, pid: str) -> tuple[Path, list[pydicom.Dataset]]:
    (series_dir,) = [p for p in (out / "01_MRI_Data" / pid).iterdir() if not p.name.endswith("_labels")]
    datasets = [pydicom.dcmread(p) for p in sorted(series_dir.glob("*.ima"))]
    return series_dir, sorted(datasets, key=lambda ds: int(ds.InstanceNumber))


def test_dicom_tags_and_slice_geometry(dicom_set: tuple[Path, object]) -> None:
    out, summary = dicom_set
    study_uids, sop_uids, total = set(), set(), 0
    for index in range(1, N_DICOM_PATIENTS + 1):
        pid = f"{index:04d}"
        series_dir, datasets = _series(out, pid)
        assert series_dir.name.startswith("T2_TSE_TRA_")
        assert 12 <= len(datasets) <= 15
        total += len(datasets)
        first = datasets[0]
        normal = np.cross(np.array(first.ImageOrientationPatient[:3], float),
                          np.array(first.ImageOrientationPatient[3:], float))
        spacing = float(first.SpacingBetweenSlices)
        positions = [np.array(ds.ImagePositionPatient, float) @ normal for ds in datasets]
        steps = np.diff(positions)
        assert np.allclose(np.abs(steps), spacing, atol=1e-3) and (np.all(steps < 0) or np.all(steps > 0))
        assert spacing >= float(first.SliceThickness) == 4.0
        for ds in datasets:
            assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
            assert ds.SOPClassUID == pydicom.uid.MRImageStorage == ds.file_meta.MediaStorageSOPClassUID
            assert ds.Modality == "MR" and ds.SeriesDescription == "T2_TSE_TRA"
            assert (ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (320, 320, 16, 12, 11)
            assert [float(v) for v in ds.PixelSpacing] == [0.6875, 0.6875]
            assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert ds.PatientID.endswith(pid) and str(ds.PatientName) == f"Phantom^{pid}"
            assert ds.SeriesInstanceUID == first.SeriesInstanceUID and ds.StudyInstanceUID == first.StudyInstanceUID
            assert ds.pixel_array.max() <= 4095
            sop_uids.add(ds.SOPInstanceUID)
            label = series_dir.with_name(series_dir.name + "_labels") / f"IM_{int(ds.InstanceNumber):04d}.png"
            assert set(np.unique(_label(label)).tolist()) <= MENDELEY_VALUES
        study_uids.add(first.StudyInstanceUID)
    assert len(study_uids) == N_DICOM_PATIENTS and len(sop_uids) == total == summary.n_dicom


def test_disc_level_dicom_slices_equal_the_t2_pngs(dicom_set: tuple[Path, object]) -> None:
    """Exactly three slices per series are the D3/D4/D5 T2 PNGs, five slices apart; their labels too."""
    out, _ = dicom_set
    for index in range(1, N_DICOM_PATIENTS + 1):
        pid = f"{index:04d}"
        series_dir, datasets = _series(out, pid)
        matches = []
        for disc in (3, 4, 5):
            t2 = _image(out / "04_Intermediary_Ground_Truth_Data" / "T2_Output" / f"T2_{pid}_D{disc}.png")
            hits = [int(ds.InstanceNumber) for ds in datasets if np.array_equal(ds.pixel_array, t2)]
            assert len(hits) == 1, (pid, disc, hits)
            matches.append(hits[0])
            label = _label(series_dir.with_name(series_dir.name + "_labels") / f"IM_{hits[0]:04d}.png")
            assert np.array_equal(label, _label(out / "05_Final_Ground_Truth_Data" / "Label_Images" / f"L1_{pid}_D{disc}.png"))
        assert np.diff(matches).tolist() == [5, 5]
        body = datasets[matches[0]]  # one slice below D3: a vertebral body, no disc label
        body_label = _label(series_dir.with_name(series_dir.name + "_labels") / f"IM_{int(body.InstanceNumber):04d}.png")
        assert not (body_label == 50).any() and (body_label == 100).any() and (body_label == 150).any()


@pytest.mark.skipif(shutil.which("dcmdump") is None, reason="dcmtk's dcmdump not installed")
def test_dcmdump_reads_files_without_warnings(dicom_set: tuple[Path, object]) -> None:
    out, _ = dicom_set
    files = sorted((out / "01_MRI_Data").glob("*/T2_TSE_TRA_*[0-9]/*.ima"))[:30]
    assert files
    result = subprocess.run(["dcmdump", "-q", *map(str, files)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "W:" not in result.stderr and "E:" not in result.stderr, result.stderr
    assert result.stdout.count("(0008,0060) CS [MR]") == len(files)


MM_PER_TISSUE_PX = SPACING_MM / OVERSAMPLE
"""Tissue maps are rendered at OVERSAMPLE x the image's resolution."""


def _is_sac(tissue: np.ndarray) -> np.ndarray:
    """Pixels of the tissues that make the TS class (CSF, dura, cauda equina)."""
    return CLASS_OF_TISSUE[tissue] == BY_SHORT["TS"].id


def _render_level(patient, disc: int, **changes) -> np.ndarray:
    """Tissue map of the disc slice at `disc`, with that level's anatomy changed as given."""
    level = replace(patient.levels[disc], **changes)
    scene = build_scene(replace(patient, levels={**patient.levels, disc: level}), disc, "disc")
    return render_tissue(scene, np.random.default_rng(0))


def test_flava_hug_a_triangular_sac_when_the_fat_is_thin() -> None:
    """The flava's inner border follows the sac's shape: a triangular sac leaves no fat-filled
    corners behind it (real low-lumbar sacs fill the V of the flava), an oval one keeps its
    elliptical epidural space."""
    patient = sample_patient(5, 0)
    disc = min(patient.levels)

    def fat_behind_sac(triangle: float) -> float:
        tissue = _render_level(patient, disc, sac_triangle=triangle, lat_fat=0.1, post_fat=0.4)
        sac = _is_sac(tissue)
        rows = np.nonzero(sac.any(axis=1))[0]
        centre = (rows.min() + rows.max()) // 2
        cols = np.nonzero(sac.any(axis=0))[0]
        window = (slice(centre, rows.max() + 1), slice(cols.min(), cols.max() + 1))
        return float((tissue[window] == T.EPIDURAL_FAT).sum() / sac[window].sum())

    assert fat_behind_sac(1.0) < 0.1  # 0.68 while the flava's border was an ellipse
    assert fat_behind_sac(0.0) < 0.1


def test_a_thin_pad_of_fat_and_flava_lies_behind_most_sacs() -> None:
    """Measured down the midline of rendered disc slices: the fat and ligamenta flava between the sac
    and the laminae are a few millimetres on most levels (the sac of a real T2 slice reaches almost
    to the laminae; a 6 mm pad taught the model to call the back of a bright sac epidural space),
    and still thick on some, so the model sees both."""
    pads = []
    for index in range(12):
        patient = sample_patient(21, index)
        for disc in patient.levels:
            tissue = _render_level(patient, disc)
            rows, cols = np.nonzero(_is_sac(tissue))
            if rows.size == 0:  # a rare stenotic level whose sac a central hernia covers whole
                continue
            column = tissue[:, int(np.median(cols))]
            below = column[rows.max() + 1:]
            pad = np.argmax(~np.isin(below, (T.EPIDURAL_FAT, T.FLAVUM)))
            pads.append(pad * MM_PER_TISSUE_PX)
    pads = np.array(pads)
    assert 2.0 < np.median(pads) < 5.0, np.round(pads, 1)  # 5.8 mm before
    assert (pads > 5.0).any(), np.round(pads, 1)


def test_a_triangular_sac_reaches_further_back_than_an_oval_one() -> None:
    """Real low-lumbar sacs are triangles whose apex fills the flava's V: the phantom's triangle
    reaches TRIANGLE_DEPTH of its half-depth further back than an oval of the same size, and the
    canal deepens with it, so the apex is still sac, not bone."""
    patient = sample_patient(5, 0)
    disc = min(patient.levels)

    def back_of_sac(triangle: float) -> tuple[float, float]:
        rows, _ = np.nonzero(_is_sac(_render_level(patient, disc, sac_triangle=triangle)))
        return rows.min() * MM_PER_TISSUE_PX, rows.max() * MM_PER_TISSUE_PX

    front_oval, back_oval = back_of_sac(0.0)
    front_tri, back_tri = back_of_sac(1.0)
    half_depth = patient.levels[disc].ts_ap / 2
    expected = TRIANGLE_DEPTH * half_depth
    assert back_tri - back_oval == pytest.approx(expected, abs=0.6)  # 0.34 mm pixels, a slightly tilted level
    assert front_tri >= front_oval - 0.4  # the front of the sac stays where it was
