"""Intended use from the manifest decides the research marking of every output."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edge_runtime.manifest import Manifest, TensorSpec, read_manifest
from edge_runtime.preprocessing import PreprocessSpec
from edge_runtime.research_use import RESEARCH_LINE, intended_use

BUNDLED = Path(__file__).resolve().parents[1] / "edge_runtime" / "models" / "default.tflite"


def _manifest(statement: str | None) -> Manifest:
    manifest = Manifest(
        model_file="m.tflite",
        format="tflite",
        precision="int8",
        sha256="0" * 64,
        inputs=[TensorSpec("x", [None, 64, 64, 1], "float32")],
        outputs=[TensorSpec("y", [None, 64, 64, 5], "float32")],
        preprocessing=PreprocessSpec(input_size=64),
    )
    return replace(manifest, provenance={} if statement is None else {"intended_use": statement})


def test_bundled_model_is_research_only() -> None:
    use = intended_use(read_manifest(BUNDLED))
    assert use.research_only and use.content_qualification == "RESEARCH"
    assert "research" in use.statement.lower()
    assert use.image_line == RESEARCH_LINE


@pytest.mark.parametrize("statement", [None, "", "Investigational device", "Not for clinical use."])
def test_research_wording_or_no_statement_means_research_only(statement: str | None) -> None:
    assert intended_use(_manifest(statement)).research_only


def test_a_clinical_statement_is_not_marked() -> None:
    use = intended_use(_manifest("Aid to measuring the dural sac area, cleared for clinical use"))
    assert not use.research_only and use.content_qualification == "PRODUCT" and use.image_line is None
    assert use.describe("edge-seg T2") == "edge-seg T2"


def test_describe_prefixes_once_and_keeps_dicom_length() -> None:
    use = intended_use(_manifest(None))
    once = use.describe("edge-seg " + "x" * 80)
    assert once.startswith("RESEARCH USE ONLY: edge-seg ") and len(once) == 64
    assert use.describe(once) == once
    assert use.describe("") == "RESEARCH USE ONLY"
