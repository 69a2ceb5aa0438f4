"""A Mendeley-layout data set of painted intensity bands (tests/band_model.py segments it exactly)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from band_model import banded_slice

from edge_runtime.labels import ids_to_mendeley
from train.data.png_io import encode_png

SPLIT = {"train": ["B0"], "val": ["B1"], "test": ["B2", "B3", "B4"]}
SHIFTS = {"B0": 0, "B1": 0, "B2": 0, "B3": 2, "B4": 5}  # image bands moved by this many rows vs the label


def make_banded(root: Path) -> Path:
    """Write the set (one slice per patient 60 px wide, to exercise padding) and its split.json."""
    for pid, shift in SHIFTS.items():
        for disc in (3, 4, 5):
            image, _ = banded_slice(64, shift=shift)
            _, label = banded_slice(64, shift=0)
            if disc == 5:
                image, label = image[:, 2:62], label[:, 2:62]
            for rel, data in (
                (f"05_Final_Ground_Truth_Data/Label_Images/L1_{pid}_D{disc}.png", ids_to_mendeley(label)),
                (f"04_Intermediary_Ground_Truth_Data/T2_Output/T2_{pid}_D{disc}.png", image.astype(np.uint16)),
            ):
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(encode_png(data))
    (root / "split.json").write_text(json.dumps(SPLIT))
    return root
