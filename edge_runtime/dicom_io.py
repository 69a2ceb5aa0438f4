"""Input discovery and slice decoding, by their old names: the work lives in the modules re-exported here.

`inputs` (records, series, studies, issues), `dicom_classify` (what a file is), `geometry`
(planes, blocks, order), `discovery` + `selection` (finding and choosing series), `decode`
(pixels). Kept so existing importers (`benchmarks.real`) keep working.
"""

from __future__ import annotations

from edge_runtime.decode import dicom_pixels, load_pixels, nominal_range
from edge_runtime.dicom_classify import is_dicom_file
from edge_runtime.discovery import discover, slice_stem
from edge_runtime.geometry import order_slices, orientation_name, slice_normal
from edge_runtime.inputs import (
    Block,
    InputIssue,
    Series,
    SliceDecodeError,
    SliceKind,
    SliceRecord,
    Study,
    display_path,
    safe_name,
)
from edge_runtime.selection import SelectionRules

__all__ = [
    "Block",
    "InputIssue",
    "SelectionRules",
    "Series",
    "SliceDecodeError",
    "SliceKind",
    "SliceRecord",
    "Study",
    "dicom_pixels",
    "discover",
    "display_path",
    "is_dicom_file",
    "load_pixels",
    "nominal_range",
    "order_slices",
    "orientation_name",
    "safe_name",
    "slice_normal",
    "slice_stem",
]
