"""Saving the DICOM objects the runtime builds (SEG, SR, Secondary Capture): atomically, in one VR pass.

pydicom corrects ambiguous VRs ("US or SS", "OB or OW") of a freshly built data set on every
nesting level it writes: the whole tree at the top, then each sequence item's subtree again
when that item is written, so a deep SR content tree is walked once per level of depth. The
top-level pass already covers every item, so items are marked as encoded before saving and
the file's bytes stay exactly what pydicom would write without the mark.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_path


def _mark_items_encoded(dataset: Any) -> None:
    """Tell pydicom that every nested item is already in the file's encoding (explicit VR little endian).

    Uses pydicom 3's `_character_set` (what the writer compares against); a pydicom without it
    leaves the items unmarked, which only costs the repeated pass.
    """
    for element in dataset.elements():
        if element.VR == "SQ":
            for item in dataset[element.tag].value:
                charset = getattr(item, "_character_set", None)
                if charset is None or not hasattr(item, "set_original_encoding"):
                    return
                item.set_original_encoding(False, True, charset)
                _mark_items_encoded(item)


def save_dicom(dataset: Any, path: Path) -> Path:
    """Write `dataset` (with its file meta) to `path` atomically; returns `path`."""
    _mark_items_encoded(dataset)
    with atomic_path(Path(path)) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return Path(path)
