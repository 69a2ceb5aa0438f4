"""Disc-level names: anatomical only when every slice's header says so, consistently; numbers otherwise."""

from __future__ import annotations

import pytest

from edge_runtime.level_names import disc_level_in_text, name_levels

LEVELS = [[0, 1], [3, 4], [6, 7]]
Z_UP = [10.0 + 5 * k for k in range(8)]  # caudal -> cranial


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("L4-L5", "L4-L5"),
        ("block 2: l4/5", "L4-L5"),
        ("L5 - S1", "L5-S1"),
        ("T12-L1", "T12-L1"),
        ("L3-L5", None),  # spans two discs
        ("L4-L5 and L5-S1", None),  # ambiguous
        ("L1 2 mm", None),  # a number after a space is no level
        ("", None),
        (None, None),
    ],
)
def test_disc_level_in_text(text: str | None, expected: str | None) -> None:
    assert disc_level_in_text(text) == expected


def test_no_header_names_means_levels_numbered_from_caudal() -> None:
    names = name_levels(LEVELS, Z_UP, [None] * 8)
    assert [n.label for n in names] == ["level 1 from caudal", "level 2 from caudal", "level 3 from caudal"]
    assert all(n.anatomical is None and "slice positions" in n.basis for n in names)


def test_cranial_to_caudal_series_is_numbered_from_the_caudal_end() -> None:
    names = name_levels(LEVELS, Z_UP[::-1], [None] * 8)
    assert [n.label for n in names] == ["level 3 from caudal", "level 2 from caudal", "level 1 from caudal"]


def test_unknown_geometry_is_numbered_in_series_order_and_says_so() -> None:
    names = name_levels(LEVELS, [None] * 8, [None] * 8)
    assert [n.label for n in names] == ["level 1 in series order", "level 2 in series order", "level 3 in series order"]
    assert "unknown" in names[0].basis


def test_consistent_header_names_are_used() -> None:
    texts = ["L5-S1", "L5/S1", None, "L4-L5", "L4-5", None, "L3-L4", "L3-L4"]
    names = name_levels(LEVELS, Z_UP, texts)
    assert [n.label for n in names] == ["L5-S1", "L4-L5", "L3-L4"]
    assert [n.anatomical for n in names] == ["L5-S1", "L4-L5", "L3-L4"]
    assert "ImageComments" in names[0].basis


def test_a_level_whose_slices_disagree_or_lack_a_name_is_numbered() -> None:
    texts = ["L5-S1", None, None, "L4-L5", "L4-L5", None, "L3-L4", "L2-L3"]
    names = name_levels(LEVELS, Z_UP, texts)
    assert [n.label for n in names] == ["level 1 from caudal", "L4-L5", "level 3 from caudal"]


def test_names_against_the_slice_order_are_all_dropped() -> None:
    texts = ["L3-L4", "L3-L4", None, "L4-L5", "L4-L5", None, "L5-S1", "L5-S1"]  # L3-L4 below L5-S1: wrong
    names = name_levels(LEVELS, Z_UP, texts)
    assert all(n.anatomical is None for n in names)


def test_repeated_names_are_all_dropped() -> None:
    texts = ["L4-L5"] * 8
    assert all(n.anatomical is None for n in name_levels(LEVELS, Z_UP, texts))


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="8 slice positions for 7 header texts"):
        name_levels(LEVELS, Z_UP, [None] * 7)
