"""Readers nobody here wrote, run as subprocesses: dciodvfy (dicom3tools) and dcmqi's tid1500reader and segimage2itkimage.

Each helper skips the calling test, naming the missing tool and how to install it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

_VENV_BIN = Path(sys.executable).parent


def _tool(name: str, install: str) -> str:
    found = shutil.which(name) or (str(_VENV_BIN / name) if (_VENV_BIN / name).is_file() else None)
    if found is None:
        pytest.skip(f"{name} not found on PATH ({install})")
    return found


def dciodvfy_errors(path: Path) -> list[str]:
    """The 'Error' lines dciodvfy prints for `path` (an empty list means the object is valid)."""
    tool = _tool("dciodvfy", "apt-get install -y dicom3tools")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def tid1500_json(path: Path, workdir: Path) -> dict:
    """dcmqi's reading of a TID 1500 SR, as the JSON it writes."""
    tool = _tool("tid1500reader", "pip install dcmqi (the dev extra)")
    out = workdir / f"{path.stem}_tid1500.json"
    result = subprocess.run(
        [tool, "--inputDICOM", str(path), "--outputMetadata", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and out.is_file(), result.stdout + result.stderr
    return json.loads(out.read_text())


def seg_label_volume(path: Path, workdir: Path) -> tuple[np.ndarray, Path]:
    """dcmqi's segimage2itkimage reading of a SEG with non-overlapping segments, merged into one label volume.

    Returns the (slices, rows, columns) volume whose voxel values are segment numbers (0 elsewhere)
    and the MetaImage header path; the volume is parsed here with numpy and zlib only.
    """
    tool = _tool("segimage2itkimage", "pip install dcmqi (the dev extra)")
    outdir = workdir / f"{path.stem}_itk"
    outdir.mkdir(parents=True, exist_ok=True)
    command = [tool, "--inputDICOM", str(path), "--outputDirectory", str(outdir), "-t", "mhd", "-p", "seg", "--mergeSegments"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    meta = json.loads((outdir / "seg-meta.json").read_text())
    assert len(meta["segmentAttributes"]) == 1, "segments overlap: dcmqi wrote one volume per group"
    header_path = outdir / "seg-1.mhd"
    return _read_mhd(header_path), header_path


def _read_mhd(path: Path) -> np.ndarray:
    header = dict(
        (key.strip(), value.strip())
        for key, value in (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    )
    dims = [int(v) for v in header["DimSize"].split()]
    types = {"MET_UCHAR": np.uint8, "MET_CHAR": np.int8, "MET_USHORT": np.uint16, "MET_SHORT": np.int16}
    raw = (path.parent / header["ElementDataFile"]).read_bytes()
    if header.get("CompressedData", "False").lower() == "true":
        raw = zlib.decompress(raw)
    dtype = np.dtype(types[header["ElementType"]]).newbyteorder(">" if header.get("BinaryDataByteOrderMSB") == "True" else "<")
    return np.frombuffer(raw, dtype=dtype).reshape(dims[::-1])


def mhd_geometry(path: Path) -> dict[str, list[float]]:
    """Offset and spacing of a MetaImage, for checks of where dcmqi placed the volume."""
    text = path.read_text()
    return {
        key: [float(v) for v in re.search(rf"^{key} = (.*)$", text, re.MULTILINE).group(1).split()]  # type: ignore[union-attr]
        for key in ("Offset", "ElementSpacing")
    }


def dsrdump_problems(path: Path) -> list[str]:
    """Lines where dcmtk's dsrdump (an SR reader of its own) warns or errs on `path`, plus its exit status."""
    tool = _tool("dsrdump", "apt-get install -y dcmtk")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    problems = [line for line in lines if line.startswith(("W:", "E:", "F:"))]
    return problems + ([f"exit status {result.returncode}"] if result.returncode else [])
