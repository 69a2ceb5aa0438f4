"""Hostile-input fuzz benchmark of `edge-seg run`: hundreds of broken studies, none may cost more than its bad file.

Each variant is a small good study (slices of the bundled example) plus one hostile thing:
pydicom's own test files (and the `pydicom-data` set when installed) beside it, byte flips in
a slice's header or pixel data, truncations, bad VRs, NaN/zero/absurd geometry, duplicated or
conflicting UIDs, slices of other series, studies, planes and image types, odd file names
(undecodable bytes, newlines, hidden files, FIFOs, link loops), angled blocks. Every variant
runs through the real runtime (`edge_runtime.run.run_command`, bundled model, every output
format) in a worker process that the harness kills after `--timeout` seconds, and is checked:

    exit status 0, 1 or 2 and no traceback; no hang; the input tree byte-identical afterwards;
    no temp, staging or lock file left; every output file parses (JSON, CSV as UTF-8, PNG,
    NPY, DICOM); every input file named in report.json (a slice, excluded, skipped or failed);
    every good slice of the base study segmented (status ok).

    python -m benchmarks.fuzz --variants 500 --out fuzz-out       # prints the totals, writes fuzz.json

Size: most of the module is the table of variant builders, a few lines each, kept beside the
checks they must pass so a new hostile case is one function and one table row.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "study"
BASE_STEMS = ("IM_0002", "IM_0005", "IM_0008", "IM_0011")  # four slices of the example: disc and body levels
SERIES = "T2_TSE_TRA"
LEFTOVER_MARKERS = (".edge-seg", ".tmp")

# --------------------------------------------------------------------------- variants


@dataclass
class Variant:
    """One hostile input: `build(folder)` writes it and returns the relative paths allowed to fail."""

    name: str
    kind: str
    build: Callable[[Path], set[str]] = field(repr=False)


def _base_bytes() -> dict[str, bytes]:
    return {stem: (EXAMPLE / f"{stem}.ima").read_bytes() for stem in BASE_STEMS}


def _write_base(folder: Path, base: dict[str, bytes], skip: str | None = None) -> Path:
    series = folder / SERIES
    series.mkdir(parents=True, exist_ok=True)
    for stem, data in base.items():
        if stem != skip:
            (series / f"{stem}.ima").write_bytes(data)
    return series


def _pixel_offset(data: bytes) -> int:
    """Byte offset of the (7FE0,0010) OW element in an explicit-VR little-endian file."""
    return data.rfind(b"\xe0\x7f\x10\x00OW")


def _elements(data: bytes) -> list[tuple[int, int, bytes]]:
    """(offset, tag, VR) of the top-level elements of an explicit-VR little-endian file, meta included."""
    out, pos = [], 132
    while pos + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, pos)
        vr = data[pos + 4 : pos + 6]
        tag = (group << 16) | element
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = struct.unpack_from("<I", data, pos + 8)[0]
            header = 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            header = 8
        out.append((pos, tag, vr))
        if tag == 0x7FE00010 or length == 0xFFFFFFFF:
            break
        pos += header + length
    return out


def _dataset_edit(data: bytes, edit: Callable[[Any], None]) -> bytes:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    edit(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def _with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """The same body under a file meta that claims another transfer syntax (pydicom would refuse to write it)."""
    import pydicom
    from pydicom.filewriter import write_file_meta_info

    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    end = 132 + 12 + struct.unpack_from("<I", data, 132 + 8)[0]
    meta.TransferSyntaxUID = uid
    buffer = io.BytesIO()
    write_file_meta_info(buffer, meta, enforce_standard=True)
    return data[:128] + b"DICM" + buffer.getvalue() + data[end:]


def _flip(data: bytes, rng: random.Random, low: int, high: int, count: int) -> bytes:
    raw = bytearray(data)
    for _ in range(count):
        pos = rng.randrange(low, high)
        raw[pos] ^= 1 << rng.randrange(8) if rng.random() < 0.6 else rng.randrange(1, 256)
    return bytes(raw)


def _one_slice(name: str, kind: str, base: dict[str, bytes], stem: str, make: Callable[[bytes], bytes],
               file_name: str | None = None) -> Variant:
    def build(folder: Path) -> set[str]:
        series = _write_base(folder, base, skip=stem)
        target = file_name or f"{stem}.ima"
        (series / target).write_bytes(make(base[stem]))
        return {f"{SERIES}/{target}"}

    return Variant(name, kind, build)


def _extra_file(name: str, kind: str, base: dict[str, bytes], source: Path) -> Variant:
    def build(folder: Path) -> set[str]:
        _write_base(folder, base)
        target = folder / "extra" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return {f"extra/{source.name}"}

    return Variant(name, kind, build)


def _set(keyword: str, value: Any) -> Callable[[Any], None]:
    def edit(ds: Any) -> None:
        setattr(ds, keyword, value)

    return edit


def _raw_value(keyword: str, vr: str, value: bytes) -> Callable[[Any], None]:
    """Store bytes as the element's value, bypassing pydicom's validation (a hostile writer's file)."""

    def edit(ds: Any) -> None:
        from pydicom.datadict import tag_for_keyword
        from pydicom.dataelem import RawDataElement

        tag = tag_for_keyword(keyword)
        ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)

    return edit


def _structured(base: dict[str, bytes]) -> list[Variant]:
    """Hand-made hostile cases: geometry, identity, series membership, planes, image types, names."""
    import numpy as np

    stems = list(base)
    s0, s1 = stems[0], stems[1]
    out: list[Variant] = []
    spacing = {
        "nan": b"NaN\\NaN ", "zero": b"0\\0 ", "negative": b"-0.6875\\-0.6875 ", "tiny": b"1e-12\\1e-12 ",
        "huge": b"6.0\\6.0 ", "text": b"abc\\def ", "single": b"0.6875", "empty": b"",
    }
    for name, value in spacing.items():
        out.append(_one_slice(f"spacing-{name}", "geometry", base, s1,
                              lambda d, v=value: _dataset_edit(d, _raw_value("PixelSpacing", "DS", v))))
    geometry = {
        "position-nan": ("ImagePositionPatient", b"NaN\\0\\0 "),
        "position-missing-value": ("ImagePositionPatient", b"1\\2 "),
        "position-huge": ("ImagePositionPatient", b"1e30\\0\\0 "),
        "orientation-zero": ("ImageOrientationPatient", b"0\\0\\0\\0\\0\\0 "),
        "orientation-skew": ("ImageOrientationPatient", b"1\\0\\0\\1\\0\\0 "),
        "orientation-text": ("ImageOrientationPatient", b"x\\y "),
        "rows-text": ("Rows", b"\x00"),
    }
    for name, (keyword, value) in geometry.items():
        vr = "US" if keyword == "Rows" else "DS"
        out.append(_one_slice(name, "geometry", base, s1,
                              lambda d, k=keyword, v=value, r=vr: _dataset_edit(d, _raw_value(k, r, v))))
    edits: dict[str, tuple[str, Callable[[Any], None]]] = {
        "rows-wrong": ("header", _set("Rows", 300)),
        "columns-wrong": ("header", _set("Columns", 64)),
        "rows-zero": ("header", _set("Rows", 0)),
        "frames-abc": ("header", _raw_value("NumberOfFrames", "IS", b"abc ")),
        "frames-two": ("header", _raw_value("NumberOfFrames", "IS", b"2 ")),
        "instance-1A": ("header", _raw_value("InstanceNumber", "IS", b"1A")),
        "bits-allocated-7": ("header", _set("BitsAllocated", 7)),
        "bits-stored-40": ("header", _set("BitsStored", 40)),
        "slope-zero": ("header", _raw_value("RescaleSlope", "DS", b"0 ")),
        "slope-huge": ("header", _raw_value("RescaleSlope", "DS", b"1e308 ")),
        "samples-3": ("header", _set("SamplesPerPixel", 3)),
        "monochrome1": ("header", _set("PhotometricInterpretation", "MONOCHROME1")),
        "charset-garbage": ("header", _set("SpecificCharacterSet", "ISO_IR 999")),
        "modality-ct": ("selection", _set("Modality", "CT")),
        "modality-missing": ("selection", lambda ds: delattr(ds, "Modality")),
        "sagittal-slice": ("selection", _set("ImageOrientationPatient", [0, 1, 0, 0, 0, -1])),
        "coronal-slice": ("selection", _set("ImageOrientationPatient", [1, 0, 0, 0, 0, -1])),
        "localizer-type": ("selection", _set("ImageType", ["ORIGINAL", "PRIMARY", "LOCALIZER"])),
        "derived-type": ("selection", _set("ImageType", ["DERIVED", "SECONDARY"])),
        "other-series": ("identity", _set("SeriesInstanceUID", "1.2.826.0.1.3680043.8.498.1")),
        "other-study": ("identity", _set("StudyInstanceUID", "1.2.826.0.1.3680043.8.498.2")),
        "other-frame-of-reference": ("identity", _set("FrameOfReferenceUID", "1.2.826.0.1.3680043.8.498.3")),
        "other-patient": ("identity", _set("PatientID", "SOMEONE-ELSE")),
        "no-sop-uid": ("identity", lambda ds: delattr(ds, "SOPInstanceUID")),
        "no-series-uid": ("identity", lambda ds: delattr(ds, "SeriesInstanceUID")),
        "no-frame-of-reference": ("identity", lambda ds: delattr(ds, "FrameOfReferenceUID")),
        "no-position": ("geometry", lambda ds: delattr(ds, "ImagePositionPatient")),
        "no-orientation": ("geometry", lambda ds: delattr(ds, "ImageOrientationPatient")),
        "no-spacing": ("geometry", lambda ds: delattr(ds, "PixelSpacing")),
        "no-thickness": ("geometry", lambda ds: delattr(ds, "SliceThickness")),
    }
    for name, (kind, edit) in edits.items():
        out.append(_one_slice(name, kind, base, s1, lambda d, e=edit: _dataset_edit(d, e)))

    for name, uid in (("syntax-garbage", "1.2.3.4.5.6"), ("syntax-jpeg-claimed", "1.2.840.10008.1.2.4.50")):
        out.append(_one_slice(name, "header", base, s1, lambda d, u=uid: _with_transfer_syntax(d, u)))

    import pydicom

    first = pydicom.dcmread(io.BytesIO(base[s0]))

    def same_position(ds: Any) -> None:
        ds.ImagePositionPatient = first.ImagePositionPatient

    out.append(_one_slice("same-position", "geometry", base, s1, lambda d: _dataset_edit(d, same_position)))

    def conflicting_sop(ds: Any) -> None:  # another slice's identity, meta and all: truly ambiguous
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID

    def forged_sop(ds: Any) -> None:  # the data set claims another slice's UID, the file meta does not
        ds.SOPInstanceUID = first.SOPInstanceUID

    out.append(_one_slice("sop-conflict", "identity", base, s1, lambda d: _dataset_edit(d, conflicting_sop)))
    out[-1].build = _with_partner(out[-1].build, f"{SERIES}/{s0}.ima")
    out.append(_one_slice("sop-forged", "identity", base, s1, lambda d: _dataset_edit(d, forged_sop)))

    def identical_copy(folder: Path) -> set[str]:
        _write_base(folder, base)
        (folder / "copy").mkdir()
        (folder / "copy" / f"{s0}.ima").write_bytes(base[s0])
        return {f"copy/{s0}.ima"}

    out.append(Variant("identical-copy", "identity", identical_copy))

    def names(kind: str, make: Callable[[Path], set[str]]) -> None:
        out.append(Variant(kind, "names", make))

    def undecodable(folder: Path) -> set[str]:
        series = _write_base(folder, base, skip=s1)
        name = os.fsdecode(b"IM_\xff\xfe_0005.ima")
        (series / name).write_bytes(base[s1])
        return set()  # a good slice under a hostile name: it must be segmented

    def newline(folder: Path) -> set[str]:
        series = _write_base(folder, base, skip=s1)
        (series / "IM\n[red]0005,\"x\".ima").write_bytes(base[s1])
        return set()

    def hidden(folder: Path) -> set[str]:
        series = _write_base(folder, base)
        (series / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (series / f".{s0}.ima").write_bytes(base[s0])
        (folder / ".git").mkdir()
        (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
        return {f"{SERIES}/.DS_Store", f"{SERIES}/.{s0}.ima", ".git/HEAD"}

    def fifo(folder: Path) -> set[str]:
        series = _write_base(folder, base)
        os.mkfifo(series / "pipe.ima")
        return {f"{SERIES}/pipe.ima"}

    def link_loop(folder: Path) -> set[str]:
        series = _write_base(folder, base)
        os.symlink(".", series / "loop")
        os.symlink("missing.ima", series / "dangling.ima")
        return {f"{SERIES}/loop", f"{SERIES}/dangling.ima"}

    def empty_and_tiny(folder: Path) -> set[str]:
        series = _write_base(folder, base)
        (series / "empty.ima").write_bytes(b"")
        (series / "tiny.dcm").write_bytes(b"\x08\x00\x05\x00")
        (series / "preamble_only.dcm").write_bytes(b"\x00" * 128 + b"DICM")
        return {f"{SERIES}/empty.ima", f"{SERIES}/tiny.dcm", f"{SERIES}/preamble_only.dcm"}

    def dir_named_dcm(folder: Path) -> set[str]:
        series = _write_base(folder, base)
        (series / "IM_9999.ima").mkdir()
        return set()

    def reserved_name(folder: Path) -> set[str]:
        target = folder / "report.json"
        target.mkdir(parents=True)
        for stem, data in base.items():
            (target / f"{stem}.ima").write_bytes(data)
        return set()

    def png_and_npy_beside(folder: Path) -> set[str]:
        _write_base(folder, base)
        np.save(folder / "volume.npy", np.zeros((2, 8, 8), np.float32))
        (folder / "broken.npy").write_bytes(b"\x93NUMPY garbage")
        (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        return {"volume.npy", "broken.npy", "broken.png"}

    for kind, make in (
        ("name-undecodable-bytes", undecodable), ("name-newline-markup", newline), ("hidden-files", hidden),
        ("fifo", fifo), ("symlink-loop-and-dangling", link_loop), ("empty-and-tiny-files", empty_and_tiny),
        ("folder-named-like-a-slice", dir_named_dcm), ("series-folder-named-report.json", reserved_name),
        ("png-npy-beside-dicom", png_and_npy_beside),
    ):
        names(kind, make)

    def angled(folder: Path) -> set[str]:
        _write_angled(folder, base, (-10.0, 12.0))
        return set()

    out.append(Variant("angled-two-blocks", "geometry", angled))
    return out


def _with_partner(build: Callable[[Path], set[str]], partner: str) -> Callable[[Path], set[str]]:
    """A conflict costs the partner its SEG reference too (both are named): allow both to be reported."""

    def wrapped(folder: Path) -> set[str]:
        return build(folder) | {partner}

    return wrapped


def _write_angled(folder: Path, base: dict[str, bytes], angles: tuple[float, ...]) -> None:
    import numpy as np
    import pydicom

    series = folder / SERIES
    series.mkdir(parents=True)
    for k, (stem, data) in enumerate(base.items()):
        a = np.radians(angles[k * len(angles) // len(base)])

        def edit(ds: Any, a: float = a, k: int = k) -> None:
            ds.ImageOrientationPatient = [1, 0, 0, 0, f"{np.cos(a):.6f}", f"{np.sin(a):.6f}"]
            ds.ImagePositionPatient = [-109.6562, -109.6562, 10.0 * k]

        (series / f"{stem}.ima").write_bytes(_dataset_edit(data, edit))
    del pydicom


def _random(base: dict[str, bytes], rng: random.Random, n: int) -> list[Variant]:
    """Byte flips in header and pixel data, truncations and bad VRs at random places of one slice."""
    stems = list(base)
    out: list[Variant] = []
    kinds = ["header-flip"] * 4 + ["pixel-flip"] * 2 + ["truncate"] * 2 + ["bad-vr"] * 2
    for i in range(n):
        kind = kinds[i % len(kinds)]
        stem = stems[rng.randrange(len(stems))]
        data = base[stem]
        pixels = _pixel_offset(data)
        seed = rng.randrange(1 << 30)
        if kind == "header-flip":
            count = rng.randint(1, 3)

            def make(d: bytes, s: int = seed, c: int = count, p: int = pixels) -> bytes:
                return _flip(d, random.Random(s), 128, p + 12, c)
        elif kind == "pixel-flip":
            def make(d: bytes, s: int = seed, p: int = pixels) -> bytes:
                return _flip(d, random.Random(s), p + 12, len(d), random.Random(s).randint(1, 64))
        elif kind == "truncate":
            def make(d: bytes, s: int = seed) -> bytes:
                return d[: random.Random(s).randrange(1, len(d))]
        else:
            def make(d: bytes, s: int = seed) -> bytes:
                r = random.Random(s)
                elements = [e for e in _elements(d) if e[1] != 0x7FE00010]
                offset, _, _ = elements[r.randrange(len(elements))]
                raw = bytearray(d)
                raw[offset + 4 : offset + 6] = bytes(r.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\x00\xff") for _ in range(2))
                return bytes(raw)
        out.append(_one_slice(f"{kind}-{i:04d}-{stem}", kind, base, stem, make))
    return out


def pydicom_test_files() -> list[Path]:
    """pydicom's own test files, plus the pydicom-data set when it is installed."""
    from pydicom.data import get_testdata_files

    with contextlib.redirect_stderr(io.StringIO()):
        return sorted({Path(p) for p in get_testdata_files() if Path(p).is_file()})


def all_variants(n: int, seed: int = 0) -> list[Variant]:
    """At least `n` variants: every structured case, every pydicom test file, then random byte-level damage."""
    base = _base_bytes()
    variants = _structured(base)
    variants += [_extra_file(f"testfile-{p.name}", "testfile", base, p) for p in pydicom_test_files()]
    if len(variants) < n:
        variants += _random(base, random.Random(seed), n - len(variants))
    return variants


def sample(variants: list[Variant], n: int, seed: int = 0) -> list[Variant]:
    """A deterministic sample that keeps every kind represented (for the test suite)."""
    by_kind: dict[str, list[Variant]] = {}
    for v in variants:
        by_kind.setdefault(v.kind, []).append(v)
    rng = random.Random(seed)
    picked = [rng.choice(group) for group in by_kind.values()]
    rest = [v for v in variants if v not in picked]
    rng.shuffle(rest)
    return picked + rest[: max(0, n - len(picked))]


# --------------------------------------------------------------------------- checks


def tree_digest(folder: Path) -> dict[str, str]:
    """Name -> content hash (or link target / file type) of every entry: proves the input was not touched."""
    out = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            key = os.fsencode(path.relative_to(folder)).hex()
            info = os.lstat(path)
            if os.path.islink(path):
                out[key] = "link:" + os.readlink(path)
            elif os.path.isfile(path):
                out[key] = hashlib.sha256(path.read_bytes()).hexdigest() + f":{info.st_mtime_ns}"
            else:
                out[key] = f"mode:{info.st_mode:o}"
    return out


def _display(path: Path) -> str:
    from edge_runtime.inputs import display_path

    return display_path(path)


def dciodvfy_errors(path: Path) -> list[str] | None:
    """dciodvfy's 'Error' lines for a DICOM file (dicom3tools), or None when dciodvfy is not installed."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        return None
    done = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120, errors="replace")
    return [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("Error")]


def check_outputs(out: Path, validate: bool = True) -> list[str]:
    """Leftover temp/staging/lock files, output files that do not parse, DICOM outputs dciodvfy rejects."""
    problems: list[str] = []
    if not out.exists():
        return problems
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # outputs copy hostile values (odd charsets): parse them, quietly
        for path in sorted(p for p in out.rglob("*")):
            problems += _check_output(out, path, validate)
    return problems


def _check_output(out: Path, path: Path, validate: bool) -> list[str]:
    """One output entry: a leftover by its name, else a file that must parse as its type."""
    import numpy as np
    import pydicom
    from PIL import Image

    name = path.relative_to(out)
    if any(m in path.name for m in LEFTOVER_MARKERS):
        return [f"leftover {name}"]
    if not path.is_file():
        return []
    try:
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".csv":
            list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
        elif path.suffix == ".dcm":
            for element in pydicom.dcmread(path).iterall():  # every value decodes
                _ = element.value
            errors = dciodvfy_errors(path) if validate else None
            if errors:
                return [f"invalid DICOM {name} (dciodvfy: {errors[0][:160]})"]
        else:
            return [f"unexpected output {name}"]
    except Exception as exc:
        return [f"corrupt {name} ({type(exc).__name__}: {exc})"]
    return []


def check_accounting(inp: Path, out: Path, code: int, hostile: set[str]) -> list[str]:
    """Every input entry named in report.json; every good slice of the base study segmented."""
    problems = []
    if code == 2:
        return ["exit 2 on a study with good slices"]
    try:
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"no report ({exc})"]
    listed = set(summary.get("relative_files", []))
    present = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    if listed != present:
        problems.append(f"summary files != files on disk: {sorted(listed ^ present)[:3]}")
    named: dict[str, str] = {}
    for series in report["series"]:
        for entry in series["slices"]:
            named[entry["source"]] = entry["status"]
    for status in ("excluded", "skipped", "failed"):
        for issue in report[status]:
            named.setdefault(issue["path"], status)
    entries = []
    for root, dirs, files in os.walk(inp, followlinks=False):
        for name in files + [d for d in dirs if os.path.islink(Path(root) / d)]:
            entries.append(Path(root) / name)
    for path in entries:
        if _display(path) not in named:
            problems.append(f"not named: {_display(path.relative_to(inp))}")
    for path in entries:
        relative = str(path.relative_to(inp))
        if relative in hostile or not path.is_file() or path.suffix != ".ima" or path.is_symlink():
            continue
        if named.get(_display(path)) != "ok":
            problems.append(f"good slice lost: {_display(path.relative_to(inp))} ({named.get(_display(path))})")
    return problems


# --------------------------------------------------------------------------- worker


def _worker() -> None:
    """Run requests from stdin, one JSON line each; stdout/stderr of each run go to files."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edge_runtime.run import run_command

    replies = os.fdopen(os.dup(1), "w", buffering=1)
    for line in sys.stdin:
        request = json.loads(line)
        start = time.perf_counter()
        code: int | None = None
        crashed = False
        with open(request["stdout"], "wb") as out, open(request["stderr"], "wb") as err:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                code = run_command(input=Path(request["input"]), output=Path(request["output"]), threads=1,
                                   json_output=True)
            except BaseException:
                crashed = True
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        replies.write(json.dumps({"code": code, "traceback": crashed, "seconds": time.perf_counter() - start}) + "\n")


class Worker:
    """A long-lived worker process (the runtime imported once); killed and restarted after a hang."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fuzz", "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            cwd=REPO, env=env, text=True, start_new_session=True,
        )

    def run(self, request: dict[str, str], timeout: float) -> dict[str, Any] | None:
        """The worker's reply, or None after `timeout` seconds (the worker is killed)."""
        if self.process is None or self.process.poll() is not None:
            self.process = self._start()
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.kill()
            return None
        return json.loads(line)

    def kill(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, 9)
            self.process.wait()
            self.process = None

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None


@dataclass
class Outcome:
    """The verdict on one variant."""

    name: str
    kind: str
    code: int | None
    seconds: float
    problems: list[str]


def run_variant(variant: Variant, work: Path, worker: Worker, timeout: float, keep: bool = False) -> Outcome:
    folder = work / variant.name
    shutil.rmtree(folder, ignore_errors=True)
    inp, out = folder / "in", folder / "out"
    inp.mkdir(parents=True)
    hostile = variant.build(inp)
    before = tree_digest(inp)
    reply = worker.run({"input": str(inp), "output": str(out), "stdout": str(folder / "stdout.txt"),
                        "stderr": str(folder / "stderr.txt")}, timeout)
    problems = []
    code = reply["code"] if reply else None
    if reply is None:
        problems.append(f"hang: no answer within {timeout:.0f} s")
    else:
        stderr = (folder / "stderr.txt").read_text(encoding="utf-8", errors="replace")
        if reply["traceback"] or "Traceback (most recent call last)" in stderr:
            problems.append("traceback: " + stderr.strip().splitlines()[-1][:200])
        if code not in (0, 1, 2):
            problems.append(f"exit status {code}")
        problems += check_accounting(inp, out, code, hostile) if code in (0, 1, 2) else []
    if tree_digest(inp) != before:
        problems.append("input changed")
    problems += check_outputs(out)
    if not problems and not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return Outcome(variant.name, variant.kind, code, reply["seconds"] if reply else timeout, problems)


def run_all(variants: list[Variant], work: Path, timeout: float = 60.0, progress: bool = False) -> list[Outcome]:
    worker = Worker()
    outcomes = []
    try:
        for i, variant in enumerate(variants, start=1):
            outcomes.append(run_variant(variant, work, worker, timeout))
            if progress and (i % 25 == 0 or i == len(variants)):
                bad = sum(1 for o in outcomes if o.problems)
                print(f"  {i}/{len(variants)} variants, {bad} with problems", file=sys.stderr, flush=True)
    finally:
        worker.close()
    return outcomes


def totals(outcomes: list[Outcome]) -> dict[str, Any]:
    """The benchmark's numbers: exits, and each kind of problem counted over all variants."""
    problem_kinds = Counter(p.split(":")[0].split(" ")[0] for o in outcomes for p in o.problems)
    return {
        "variants": len(outcomes),
        "by_kind": dict(Counter(o.kind for o in outcomes)),
        "exit_codes": {str(k): v for k, v in sorted(Counter(o.code for o in outcomes).items(), key=lambda kv: str(kv[0]))},
        "tracebacks": problem_kinds.get("traceback", 0),
        "hangs": problem_kinds.get("hang", 0),
        "bad_exit_codes": problem_kinds.get("exit", 0),
        "changed_inputs": problem_kinds.get("input", 0),
        "leftover_files": problem_kinds.get("leftover", 0),
        "corrupt_outputs": problem_kinds.get("corrupt", 0) + problem_kinds.get("unexpected", 0),
        "invalid_dicom_outputs": problem_kinds.get("invalid", 0),
        "unnamed_inputs": problem_kinds.get("not", 0),
        "good_slices_lost": problem_kinds.get("good", 0),
        "other_problems": sum(v for k, v in problem_kinds.items() if k not in {
            "traceback", "hang", "exit", "input", "leftover", "corrupt", "unexpected", "invalid", "not", "good"}),
        "variants_with_problems": sum(1 for o in outcomes if o.problems),
        "max_seconds": round(max((o.seconds for o in outcomes), default=0.0), 2),
        "mean_seconds": round(sum(o.seconds for o in outcomes) / max(1, len(outcomes)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=int, default=500, help="at least this many variants (default 500)")
    parser.add_argument("--sample", type=int, default=None, help="run only a sample of this size (every kind kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a run counts as a hang")
    parser.add_argument("--out", type=Path, default=None, help="folder for fuzz.json and the inputs of failed variants")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    variants = all_variants(args.variants, args.seed)
    if args.sample:
        variants = sample(variants, args.sample, args.seed)
    work = Path(tempfile.mkdtemp(prefix="edge-seg-fuzz-")) if args.out is None else args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    outcomes = run_all(variants, work, args.timeout, progress=True)
    result = totals(outcomes) | {"wall_s": round(time.perf_counter() - started, 1)}
    print(json.dumps(result, indent=2))
    for o in outcomes:
        for problem in o.problems:
            print(f"{o.name}: {problem}")
    if args.out is not None:
        (args.out / "fuzz.json").write_text(json.dumps(result | {"outcomes": [asdict(o) for o in outcomes]}, indent=2))
    elif not result["variants_with_problems"]:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not result["variants_with_problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
