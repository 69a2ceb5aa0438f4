"""A sample of the hostile-input fuzz benchmark (benchmarks/fuzz.py): each variant costs only its bad file.

The full benchmark (>= 500 variants) is `python -m benchmarks.fuzz --variants 500`; here ~50 of
them, every kind represented, run through the real runtime in a worker process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

fuzz = pytest.importorskip("benchmarks.fuzz")

SAMPLE = 50


def test_a_sample_of_hostile_variants_never_crashes_hangs_loses_good_slices_or_leaves_junk(tmp_path: Path) -> None:
    variants = fuzz.sample(fuzz.all_variants(500), SAMPLE, seed=11)
    assert len(variants) == SAMPLE and {v.kind for v in variants} >= {"testfile", "header-flip", "geometry", "names"}
    outcomes = fuzz.run_all(variants, tmp_path, timeout=60)
    problems = [f"{o.name}: {p}" for o in outcomes for p in o.problems]
    assert problems == []
    totals = fuzz.totals(outcomes)
    assert totals["variants"] == SAMPLE and set(totals["exit_codes"]) <= {"0", "1"}


def test_the_checks_catch_what_they_look_for(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "s").mkdir(parents=True)
    (out / "s" / ".x.png.abc.tmp.png").write_bytes(b"")
    (out / "s" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (out / "report.json").write_text("{")
    found = fuzz.check_outputs(out, validate=False)
    assert any(p.startswith("leftover s/.x.png.abc.tmp.png") for p in found)
    assert any(p.startswith("corrupt s/broken.png") for p in found) and any(p.startswith("corrupt report.json") for p in found)

    inp = tmp_path / "in"
    (inp / "T2_TSE_TRA").mkdir(parents=True)
    (inp / "T2_TSE_TRA" / "IM_0002.ima").write_bytes(b"x")
    (inp / "unlisted.dcm").write_bytes(b"y")
    before = fuzz.tree_digest(inp)
    (inp / "unlisted.dcm").write_bytes(b"z")
    assert fuzz.tree_digest(inp) != before
    good = out / "good"
    good.mkdir()
    slice_path = str(inp / "T2_TSE_TRA" / "IM_0002.ima")
    report = {"series": [{"slices": [{"source": slice_path, "status": "failed"}]}], "excluded": [], "skipped": [], "failed": []}
    (good / "report.json").write_text(json.dumps(report))
    (good / "summary.json").write_text(json.dumps({"relative_files": ["report.json", "summary.json"]}))
    found = fuzz.check_accounting(inp, good, 1, hostile=set())
    assert "not named: unlisted.dcm" in found and "good slice lost: T2_TSE_TRA/IM_0002.ima (failed)" in found
    assert fuzz.check_accounting(inp, good, 2, hostile=set()) == ["exit 2 on a study with good slices"]
