"""The class table and the Mendeley pixel-value mapping."""

import numpy as np
import pytest

from edge_runtime.labels import CLASSES, NUM_CLASSES, UnknownLabelValueError, ids_to_mendeley, mendeley_to_ids


def test_class_table_matches_the_mendeley_data_set():
    assert [(c.id, c.short, c.mendeley_value) for c in CLASSES] == [
        (0, "BG", 250),
        (1, "IVD", 50),
        (2, "PE", 100),
        (3, "TS", 150),
        (4, "AAP", 200),
    ]
    assert NUM_CLASSES == 5
    assert len({c.color for c in CLASSES}) == NUM_CLASSES


def test_mendeley_values_map_to_ids_and_back():
    png = np.array([[50, 100, 150], [200, 250, 0]], dtype=np.uint8)
    ids = mendeley_to_ids(png)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert ids_to_mendeley(ids).tolist() == [[50, 100, 150], [200, 250, 250]]


def test_unknown_pixel_value_is_rejected_naming_the_source():
    png = np.array([[50, 77], [251, 250]], dtype=np.uint8)
    with pytest.raises(UnknownLabelValueError, match=r"L1_0001_D3\.png.*\[77, 251\]"):
        mendeley_to_ids(png, source="L1_0001_D3.png")


def test_ids_outside_the_table_are_rejected():
    with pytest.raises(ValueError, match="class ids must be in 0..4"):
        ids_to_mendeley(np.array([[5]]))
