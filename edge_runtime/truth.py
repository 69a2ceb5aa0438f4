"""Dice/IoU of a run's masks against label PNGs with matching stems (`edge-seg run --truth`)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edge_runtime.discovery import slice_stem
from edge_runtime.inputs import Series, display_path
from edge_runtime.labels import mendeley_to_ids
from edge_runtime.report import SeriesOutcome

_MENDELEY_PREFIX = re.compile(r"^(T1|T2|L1)_")


def truth_index(truth: Path | None) -> dict[str, list[Path]]:
    """Label PNGs by stem, and by Mendeley key (L1_0001_D3 -> 0001_D3, so T2_0001_D3 finds it)."""
    if truth is None:
        return {}
    index: dict[str, list[Path]] = {}
    for path in sorted(truth.rglob("*.png")) if truth.is_dir() else [truth]:
        stem = slice_stem(path)
        index.setdefault(stem, []).append(path)
        key = _MENDELEY_PREFIX.sub("", stem)
        if key != stem:
            index.setdefault(f"mendeley:{key}", []).append(path)
    return index


def truth_for(series: Series, stem: str, index: dict[str, list[Path]]) -> Path | None:
    candidates = index.get(stem) or index.get(f"mendeley:{_MENDELEY_PREFIX.sub('', stem)}", [])
    if len(candidates) > 1:
        preferred = [p for p in candidates if p.parent.name in (f"{series.folder.name}_labels", series.folder.name)]
        candidates = preferred or candidates
    return candidates[0] if candidates else None


def score_series(series: Series, masks: dict[int, np.ndarray], index: dict[str, list[Path]], outcome: SeriesOutcome) -> None:
    """Set `outcome.scores` from the label PNGs that match this series' stems; problems become notes."""
    from PIL import Image

    from edge_runtime.metrics import segmentation_scores

    preds, truths, missing = [], [], []
    for i, record in enumerate(series.slices):
        if i not in masks:
            continue
        path = truth_for(series, record.stem, index)
        if path is None:
            missing.append(record.stem)
            continue
        try:
            with Image.open(path) as image:
                truth = mendeley_to_ids(np.asarray(image), source=display_path(path))
        except (OSError, ValueError) as exc:
            outcome.notes.append(f"truth {display_path(path)}: {exc}")
            continue
        if truth.shape != masks[i].shape:
            outcome.notes.append(f"truth {display_path(path)}: shape {truth.shape} != slice {masks[i].shape}")
            continue
        preds.append(masks[i])
        truths.append(truth)
    if missing:
        outcome.notes.append(f"no truth label PNG for {len(missing)} slice(s), e.g. {missing[0]}")
    if not preds:
        return
    scores = segmentation_scores(np.stack(preds), np.stack(truths))
    outcome.scores = {"n_slices": len(preds)} | scores.to_dict()
