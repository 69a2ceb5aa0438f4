"""highdicom's standard table read per module: the same values, and the same SEG and SR, for a
fraction of the modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("highdicom", reason="highdicom is not installed (pip install 'edge-seg[dicom-seg]')")

from edge_runtime import highdicom_tables

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "examples" / "study"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    """One cache folder for the module: the index is built once (a full parse of the table)."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGE_SEG_CACHE_DIR", str(folder))
        yield folder


def test_the_lazy_map_holds_exactly_highdicom_s_table(cache: Path) -> None:
    source = highdicom_tables._source()
    assert source is not None
    table = json.loads(source.read_bytes())
    lazy = highdicom_tables.lazy_module_map()
    assert lazy is not None and lazy.loaded == []
    assert len(lazy) == len(table) and set(lazy) == set(table) and "segmentation-image" in lazy
    assert lazy["segmentation-image"] == table["segmentation-image"] and lazy.loaded == ["segmentation-image"]
    with pytest.raises(KeyError):
        lazy["no-such-module"]
    assert all(lazy[key] == value for key, value in table.items())

    index_path, _ = highdicom_tables._cache_files()
    built = index_path.stat().st_mtime_ns
    assert highdicom_tables.lazy_module_map() is not None
    assert index_path.stat().st_mtime_ns == built  # the second time the index is only read


def test_a_stale_index_is_rebuilt(cache: Path) -> None:
    assert highdicom_tables.lazy_module_map() is not None  # built here, or read if already built
    index_path, _ = highdicom_tables._cache_files()
    index = json.loads(index_path.read_text())
    index["source_size"] += 1  # as if highdicom's file had changed
    index_path.write_text(json.dumps(index))
    lazy = highdicom_tables.lazy_module_map()
    assert lazy is not None and json.loads(index_path.read_text())["source_size"] == index["source_size"] - 1


RUN = """
import json, sys
from pathlib import Path
lean = sys.argv[1] == "lean"
import highdicom
if not lean:  # load the full table first: install() then leaves highdicom alone
    highdicom._standard_utils.get_module_attribute_map()
from edge_runtime import dicom_builder, highdicom_tables
from edge_runtime.run import run_command
# the DICOM jobs in this process (as `serve` runs them), so that the table installed here is theirs
dicom_builder.DicomBuilder.fork = classmethod(lambda cls, prepare=None: cls(prepare))
code = run_command(input=Path(sys.argv[2]), output=Path(sys.argv[3]), threads=1, backend="litert", formats="seg,sr")
mapping = highdicom_tables._installed
print("RESULT " + json.dumps({"code": code, "lean": mapping is not None, "loaded": len(mapping.loaded) if mapping else None}))
"""


def _content(dataset, skip_vrs=("UI", "DA", "TM", "DT")) -> list:
    """Every element except UIDs, dates and times (new per run), sequences flattened in order."""
    items = []
    for element in dataset:
        if element.VR in skip_vrs:
            continue
        if element.VR == "SQ":
            items.append((element.tag, [_content(item, skip_vrs) for item in element.value]))
        else:
            items.append((element.tag, element.value))
    return items


def _run(mode: str, study: Path, out: Path, cache: Path) -> dict:
    import os

    proc = subprocess.run(
        [sys.executable, "-c", RUN, mode, str(study), str(out)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), "EDGE_SEG_CACHE_DIR": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_the_seg_and_sr_are_the_same_with_the_lazy_table(tmp_path: Path, cache: Path) -> None:
    import pydicom

    study = tmp_path / "in"
    study.mkdir()
    for path in sorted(STUDY.glob("*.ima"))[:2]:
        (study / path.name).write_bytes(path.read_bytes())
    lean = _run("lean", study, tmp_path / "lean", cache)
    full = _run("full", study, tmp_path / "full", cache)
    assert lean["code"] == full["code"] == 0
    assert lean["lean"] is True and full["lean"] is False
    assert 0 < lean["loaded"] < 100  # of 436 modules
    lean_files = sorted(p.relative_to(tmp_path / "lean") for p in (tmp_path / "lean").rglob("*.dcm"))
    full_files = sorted(p.relative_to(tmp_path / "full") for p in (tmp_path / "full").rglob("*.dcm"))
    assert lean_files == full_files and len(lean_files) >= 2  # at least one SEG and one SR
    for name in lean_files:
        a, b = pydicom.dcmread(tmp_path / "lean" / name), pydicom.dcmread(tmp_path / "full" / name)
        assert _content(a) == _content(b), name
