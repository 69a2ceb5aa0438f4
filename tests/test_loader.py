"""Mendeley-layout loader and patient-level split: pairing by key, clear errors, no leakage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.data.mendeley import DatasetError, index_dataset, load_arrays, load_pair, read_image, read_label
from train.data.splits import load_or_create_split, make_split, pairs_for

LABELS = Path("05_Final_Ground_Truth_Data/Label_Images")
T1 = Path("04_Intermediary_Ground_Truth_Data/T1_Output")
T2 = Path("04_Intermediary_Ground_Truth_Data/T2_Output")


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _label_for(key: int, shape: tuple[int, int] = (16, 20)) -> np.ndarray:
    """A label whose IVD pixel count encodes `key` (rest background 250)."""
    label = np.full(shape, 250, np.uint8)
    label.flat[:key] = 50
    label[-1, -1] = 150
    return label


def _image_for(key: int, shape: tuple[int, int] = (16, 20), dtype: type = np.uint8) -> np.ndarray:
    return np.full(shape, key, dtype)


def _write_slice(root: Path, pid: str, disc: int, key: int, modalities: tuple[str, ...] = ("T1", "T2")) -> None:
    _png(root / LABELS / f"L1_{pid}_D{disc}.png", _label_for(key))
    for modality in modalities:
        folder = T1 if modality == "T1" else T2
        dtype = np.uint16 if modality == "T2" else np.uint8
        _png(root / folder / f"{modality}_{pid}_D{disc}.png", _image_for(key * (17 if modality == "T2" else 1), dtype=dtype))


@pytest.fixture()
def small_set(tmp_path: Path) -> Path:
    # pids chosen so that string order and numeric order differ, and one patient lacks a T1
    for key, (pid, disc) in enumerate([("9", 3), ("9", 4), ("10", 3), ("10", 5), ("0002", 4)], start=1):
        _write_slice(tmp_path, pid, disc, key, ("T2",) if (pid, disc) == ("10", 5) else ("T1", "T2"))
    return tmp_path


def test_pairs_by_patient_and_disc_not_by_position(small_set: Path) -> None:
    pairs = index_dataset(small_set)
    assert [(p.patient_id, p.disc) for p in pairs] == [("0002", 4), ("10", 3), ("10", 5), ("9", 3), ("9", 4)]
    keys = {("9", 3): 1, ("9", 4): 2, ("10", 3): 3, ("10", 5): 4, ("0002", 4): 5}
    for pair in pairs:
        key = keys[(pair.patient_id, pair.disc)]
        image, mask = load_pair(pair, "T2")
        assert image.dtype == np.uint16 and int(image[0, 0]) == key * 17
        assert int((mask == 1).sum()) == key and mask[-1, -1] == 3 and mask.dtype == np.uint8
        if "T1" in pair.image_paths:
            t1, _ = load_pair(pair, "T1")
            assert t1.dtype == np.uint8 and int(t1[0, 0]) == key
    lone = next(p for p in pairs if (p.patient_id, p.disc) == ("10", 5))
    assert set(lone.image_paths) == {"T2"}
    with pytest.raises(DatasetError, match="L1_10_D5.png.*no T1"):
        load_pair(lone, "T1")
    images, masks = load_arrays(pairs, "T2")
    assert len(images) == len(masks) == 5


def test_label_without_images_is_an_error_naming_it(small_set: Path) -> None:
    _png(small_set / LABELS / "L1_0003_D3.png", _label_for(1))
    with pytest.raises(DatasetError, match="L1_0003_D3.png"):
        index_dataset(small_set)


def test_image_without_label_is_an_error_naming_it(small_set: Path) -> None:
    _png(small_set / T1 / "T1_0003_D5.png", _image_for(1))
    with pytest.raises(DatasetError, match="T1_0003_D5.png"):
        index_dataset(small_set)


def test_unparseable_name_and_missing_folder_are_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Label_Images"):
        index_dataset(tmp_path)
    _write_slice(tmp_path, "0001", 3, 1)
    _png(tmp_path / LABELS / "L1_0001.png", _label_for(1))
    with pytest.raises(DatasetError, match=r"L1_0001\.png.*does not match"):
        index_dataset(tmp_path)


def test_unknown_label_value_is_rejected_naming_the_file(tmp_path: Path) -> None:
    label = _label_for(3)
    label[2, 2] = 77
    path = _png(tmp_path / "L1_0001_D3.png", label)
    with pytest.raises(DatasetError, match=r"L1_0001_D3\.png.*77") as info:
        read_label(path)
    assert isinstance(info.value, ValueError)


def test_label_values_map_to_class_ids(tmp_path: Path) -> None:
    label = np.array([[250, 50, 100], [150, 200, 0]], np.uint8)
    ids = read_label(_png(tmp_path / "l.png", label))
    assert ids.tolist() == [[0, 1, 2], [3, 4, 0]]


def test_size_mismatch_names_both_files(small_set: Path) -> None:
    _png(small_set / T2 / "T2_9_D3.png", _image_for(1, shape=(10, 20), dtype=np.uint16))
    pair = next(p for p in index_dataset(small_set) if (p.patient_id, p.disc) == ("9", 3))
    with pytest.raises(DatasetError, match=r"T2_9_D3\.png.*L1_9_D3\.png"):
        load_pair(pair, "T2")


def test_reads_8_and_16_bit_and_rejects_unreadable(tmp_path: Path) -> None:
    eight = np.arange(200, dtype=np.uint8).reshape(10, 20)
    sixteen = (np.arange(200, dtype=np.uint16) * 20).reshape(10, 20)
    assert np.array_equal(read_image(_png(tmp_path / "a.png", eight)), eight)
    read16 = read_image(_png(tmp_path / "b.png", sixteen))
    assert read16.dtype == np.uint16 and np.array_equal(read16, sixteen)
    broken = tmp_path / "T2_0001_D3.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetError, match="T2_0001_D3.png"):
        read_image(broken)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 20, 101])
def test_make_split_puts_every_patient_in_exactly_one_split(n: int) -> None:
    ids = [f"{i:04d}" for i in range(n)]
    split = make_split(ids, seed=4)
    together = split["train"] + split["val"] + split["test"]
    assert sorted(together) == ids and len(set(together)) == n
    if n >= 3:
        assert all(split[name] for name in ("train", "val", "test"))
    assert split == make_split(list(reversed(ids)), seed=4)  # input order does not matter


def test_make_split_depends_on_seed_and_checks_fractions() -> None:
    ids = [f"{i:04d}" for i in range(40)]
    assert make_split(ids, seed=0) != make_split(ids, seed=1)
    assert len(make_split(ids, 0, (0.5, 0.25, 0.25))["test"]) == 10
    with pytest.raises(ValueError, match="fractions"):
        make_split(ids, 0, (0.5, 0.5, 0.5))


def _patients_set(root: Path, n: int) -> None:
    for i in range(1, n + 1):
        for disc in (3, 4, 5):
            _write_slice(root, f"{i:04d}", disc, i)


def test_split_json_is_written_then_reused(tmp_path: Path) -> None:
    _patients_set(tmp_path, 8)
    split = load_or_create_split(tmp_path, seed=2)
    stored = json.loads((tmp_path / "split.json").read_text())
    assert {k: stored[k] for k in ("train", "val", "test")} == split
    # a hand-edited file wins over any seed: every tool must see the same held-out patients
    moved = split["train"][0]
    stored["train"].remove(moved)
    stored["test"].append(moved)
    (tmp_path / "split.json").write_text(json.dumps(stored))
    again = load_or_create_split(tmp_path, seed=99)
    assert moved in again["test"] and moved not in again["train"]
    pairs = index_dataset(tmp_path)
    chosen = {name: pairs_for(pairs, again, name) for name in ("train", "val", "test")}
    assert sum(len(v) for v in chosen.values()) == len(pairs)
    seen = [{p.patient_id for p in v} for v in chosen.values()]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    with pytest.raises(ValueError, match="split name"):
        pairs_for(pairs, again, "holdout")


def test_split_json_with_unknown_or_duplicated_patient_is_an_error(tmp_path: Path) -> None:
    _patients_set(tmp_path, 4)
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": ["0001", "0002"], "val": ["0003"], "test": ["0099"]}))
    with pytest.raises(DatasetError, match=r"split\.json.*0099"):
        load_or_create_split(tmp_path)
    path.write_text(json.dumps({"train": ["0001", "0002"], "val": ["0003"], "test": ["0003"]}))
    with pytest.raises(DatasetError, match="0003 is in both val and test"):
        load_or_create_split(tmp_path)


@pytest.mark.parametrize(
    "synth, expected",
    [(None, None), ({"pixel_spacing_mm": 0.5}, (0.5, 0.5)), ({"pixel_spacing_mm": [0.4, 0.6]}, (0.4, 0.6)),
     ({"patients": 4}, None)],
)
def test_pixel_spacing_comes_from_synth_json_else_the_nominal_one(tmp_path: Path, synth, expected) -> None:
    from train.data.mendeley import NOMINAL_PIXEL_SPACING_MM, pixel_spacing_of

    _write_slice(tmp_path, "0001", 3, key=5)
    if synth is not None:
        (tmp_path / "synth.json").write_text(json.dumps(synth))
    (pair,) = index_dataset(tmp_path)
    assert pair.pixel_spacing == expected
    assert pixel_spacing_of(pair) == (expected or NOMINAL_PIXEL_SPACING_MM)


@pytest.mark.parametrize("text, message", [("{not json", "unreadable"), ('{"pixel_spacing_mm": 0}', "must be > 0")])
def test_a_bad_synth_json_spacing_is_an_error_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    _write_slice(tmp_path, "0001", 3, key=5)
    (tmp_path / "synth.json").write_text(text)
    with pytest.raises(DatasetError, match=f"synth.json: .*{message}"):
        index_dataset(tmp_path)
