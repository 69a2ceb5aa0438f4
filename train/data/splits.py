"""Deterministic patient-level train/val/test split, stored as split.json in the data folder.

Training, export calibration and the benchmarks all read the same file, so the held-out
patients are the same everywhere and no patient's slices leak across splits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from edge_runtime.atomic import atomic_write_json
from train.data.mendeley import DatasetError, SlicePair, index_dataset

SPLIT_FILE = "split.json"
SPLIT_NAMES = ("train", "val", "test")


def make_split(patient_ids: Iterable[str], seed: int = 0,
               fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> dict[str, list[str]]:
    """Shuffle unique patients with `seed` and cut them into train/val/test (lists sorted).

    With at least 3 patients every split gets at least one; fewer patients all go to train.
    """
    ids = sorted(set(patient_ids))
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    if n < 3:
        n_val = n_test = 0
    else:
        n_val = max(1, round(n * fractions[1]))
        n_test = max(1, round(n * fractions[2]))
        while n - n_val - n_test < 1:  # keep at least one training patient
            if n_val >= n_test:
                n_val -= 1
            else:
                n_test -= 1
    n_train = n - n_val - n_test
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train:n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val:]),
    }


def _check_split(split: dict, source: Path, known: set[str]) -> dict[str, list[str]]:
    if not isinstance(split, dict) or any(not isinstance(split.get(k), list) for k in SPLIT_NAMES):
        raise DatasetError(f"{source}: expected lists {', '.join(SPLIT_NAMES)}")
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for pid in split[name]:
            if not isinstance(pid, str):
                raise DatasetError(f"{source}: patient id {pid!r} in {name} is not a string")
            if pid in seen:
                raise DatasetError(f"{source}: patient {pid} is in both {seen[pid]} and {name}")
            seen[pid] = name
    missing = sorted(set(seen) - known)
    if missing:
        raise DatasetError(
            f"{source}: {len(missing)} patient(s) not in the data set, e.g. {missing[:5]}; "
            f"delete {SPLIT_FILE} to make a new split"
        )
    return {name: list(split[name]) for name in SPLIT_NAMES}


def load_or_create_split(root: Path, seed: int = 0) -> dict[str, list[str]]:
    """Read `root/split.json`, or make one from the patients under `root` and write it atomically.

    An existing file wins over `seed` (so every tool sees the same split); its patients must all
    exist in the data set and none may be in two splits.
    """
    root = Path(root)
    path = root / SPLIT_FILE
    known = {pair.patient_id for pair in index_dataset(root)}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{path}: cannot read split file ({exc})") from None
        return _check_split(data, path, known)
    if not known:
        raise DatasetError(f"{root}: no labelled slices to split")
    split = make_split(known, seed)
    record = {"seed": seed, "unit": "patient", **split}
    atomic_write_json(path, record)
    return split


def pairs_for(pairs: Sequence[SlicePair], split: dict[str, list[str]], name: str) -> list[SlicePair]:
    """The slices of the patients in split `name` (train, val or test)."""
    if name not in SPLIT_NAMES:
        raise ValueError(f"split name must be one of {SPLIT_NAMES}, got {name!r}")
    chosen = set(split[name])
    return [pair for pair in pairs if pair.patient_id in chosen]
