"""Names for the disc levels found in a series: anatomical (L4-L5) only when the study says so.

An axial stack alone does not tell L4-L5 from L3-L4: that takes counting vertebrae on a sagittal
localiser, which edge-seg does not do. So a level gets an anatomical name only when every slice
of it carries the same disc-level name in its header (ImageComments, as some protocols label
their angled blocks), the names do not repeat and they run in anatomical order. Every other
level is "level k from caudal" (or "in series order" when the slice geometry is unknown).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from edge_runtime.codes import DISC_LEVELS

_ORDER = list(DISC_LEVELS)  # cranial -> caudal
_LEVEL_TEXT = re.compile(r"\b(T12|L[1-5])(?:\s*[-/]\s*)?(L[1-5]|S1|[1-5])\b", re.IGNORECASE)


@dataclass(frozen=True)
class LevelName:
    """How one disc level is called in the SR and the key-image sheet."""

    label: str  # "L4-L5" or "level 2 from caudal"
    anatomical: str | None  # key of codes.DISC_LEVELS when justified, else None
    basis: str  # why this name: the header text it came from, or why it is only a number


def disc_level_in_text(text: str | None) -> str | None:
    """'L4-L5', 'L4/5', 'l5-s1' ... -> canonical 'L4-L5' / 'L5-S1'; None unless exactly one valid level is named."""
    if not text:
        return None
    found = set()
    for upper, lower in _LEVEL_TEXT.findall(str(text)):
        upper, lower = upper.upper(), lower.upper()
        if lower.isdigit():
            lower = f"L{lower}"
        name = f"{upper}-{lower}"
        if name not in DISC_LEVELS:
            return None  # e.g. "L3-L5": not one disc
        found.add(name)
    return found.pop() if len(found) == 1 else None


def name_levels(
    level_slices: Sequence[Sequence[int]],
    slice_z: Sequence[float | None],
    header_texts: Sequence[str | None],
) -> list[LevelName]:
    """One name per level.

    Parameters
    ----------
    level_slices
        For each level (in series order), the indices of its slices in the series.
    slice_z
        Patient z (ImagePositionPatient[2], +z towards the head) of every slice of the series,
        None when unknown.
    header_texts
        Per slice, the header text that may name its disc level (ImageComments), or None.
    """
    n = len(level_slices)
    if len(slice_z) != len(header_texts):
        raise ValueError(f"{len(slice_z)} slice positions for {len(header_texts)} header texts")
    centres = []
    for indices in level_slices:
        zs = [slice_z[i] for i in indices]
        centres.append(None if not zs or any(z is None for z in zs) else sum(zs) / len(zs))  # type: ignore[arg-type]
    known = [c for c in centres if c is not None]
    if len(known) == n and all(a < b for a, b in pairwise(known)):
        rank, basis = list(range(1, n + 1)), "numbered from the most caudal level found (slice positions)"
    elif len(known) == n and all(a > b for a, b in pairwise(known)):
        rank, basis = list(range(n, 0, -1)), "numbered from the most caudal level found (slice positions)"
    else:
        rank, basis = list(range(1, n + 1)), "numbered in series order: slice positions unknown or not monotonic"
    numbered = "level {k} from caudal" if basis.startswith("numbered from") else "level {k} in series order"
    anatomical = _anatomical_names(level_slices, header_texts, centres)
    names = []
    for k, name in zip(rank, anatomical, strict=True):
        if name is not None:
            names.append(LevelName(name, name, f"every slice of the level is labelled {name} in ImageComments"))
        else:
            names.append(LevelName(numbered.format(k=k), None, basis))
    return names


def _anatomical_names(
    level_slices: Sequence[Sequence[int]], header_texts: Sequence[str | None], centres: Sequence[float | None]
) -> list[str | None]:
    """Header-given names, all dropped when they repeat or contradict the slice positions."""
    names: list[str | None] = []
    for indices in level_slices:
        per_slice = {disc_level_in_text(header_texts[i]) for i in indices}
        names.append(per_slice.pop() if len(per_slice) == 1 and indices else None)
    given = [(c, nm) for c, nm in zip(centres, names, strict=True) if nm is not None]
    if len({nm for _, nm in given}) != len(given):
        return [None] * len(names)
    if any(c is None for c, _ in given):
        return [None] * len(names)
    by_height = sorted(given, key=lambda item: item[0])  # caudal first: anatomical order must descend
    ranks = [_ORDER.index(nm) for _, nm in by_height]
    if any(a <= b for a, b in pairwise(ranks)):
        return [None] * len(names)
    return names
