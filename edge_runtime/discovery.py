"""Find every file under an input, classify it, group DICOM slices into series and apply the selection rules.

Inputs are only ever opened for reading. Each file found, hidden ones included, ends up as a
slice of a selected series, an excluded slice, or a skipped or failed issue naming it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from pathlib import Path

import numpy as np

from edge_runtime.dicom_classify import DICOM_SUFFIXES, NPY_SUFFIXES, PNG_SUFFIXES, HeaderError, classify, text_attr
from edge_runtime.geometry import dicom_record, natural_key, order_slices
from edge_runtime.inputs import InputIssue, Series, SliceRecord, Study, display_path, safe_name
from edge_runtime.selection import SelectionRules, dominant_plane, series_exclusion, series_matches, slice_exclusion

# Output names a series folder must not take (the run's own top-level files).
RESERVED_NAMES = frozenset({"summary.json", "report.json", "report.csv"})
# Header values every slice of one series must share; a slice that disagrees is failed, not mixed in.
_SHARED = ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID")


def slice_stem(path: Path) -> str:
    """File name without a known image extension (UID-style names keep their dots), safe as an output name."""
    name = path.stem if path.suffix.lower() in DICOM_SUFFIXES | PNG_SUFFIXES | NPY_SUFFIXES else path.name
    return safe_name(name, fallback="slice")


# --------------------------------------------------------------------------- listing


def list_files(input_path: Path) -> tuple[list[Path], list[InputIssue], list[InputIssue]]:
    """Regular files to read, plus skipped entries (hidden, links to folders, FIFOs) and unreadable folders."""
    if not input_path.is_dir():
        return [input_path], [], []
    files: list[Path] = []
    skipped: list[InputIssue] = []
    failed: list[InputIssue] = []

    def unreadable(exc: OSError) -> None:
        failed.append(InputIssue(Path(exc.filename or input_path), f"cannot list folder ({type(exc).__name__}: {exc.strerror})"))

    for root, dirs, names in os.walk(input_path, onerror=unreadable, followlinks=False):
        folder = Path(root)
        dirs.sort()
        for name in list(dirs):
            if (folder / name).is_symlink():
                skipped.append(InputIssue(folder / name, "symbolic link to a folder: not followed"))
                dirs.remove(name)
        hidden_folder = any(part.startswith(".") for part in folder.relative_to(input_path).parts)
        for name in sorted(names):
            path = folder / name
            if hidden_folder or name.startswith("."):
                skipped.append(InputIssue(path, "hidden file (its name or a folder above starts with '.'): not read"))
                continue
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                skipped.append(InputIssue(path, f"broken link or vanished file ({type(exc).__name__}: {exc.strerror})"))
                continue
            if not stat.S_ISREG(mode):
                skipped.append(InputIssue(path, "not a regular file (FIFO, socket or device): not read"))
                continue
            files.append(path)
    return files, skipped, failed


# --------------------------------------------------------------------------- PNG / NPY


def _image_slice_records(path: Path) -> tuple[list[SliceRecord], InputIssue | None]:
    """PNG or NPY file -> slice records (a 3-D .npy is a stack), or why it is skipped."""
    stem = slice_stem(path)
    if path.suffix.lower() in NPY_SUFFIXES:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            return [], InputIssue(path, f"unreadable .npy file ({exc})")
        if array.ndim == 2:
            return [SliceRecord(path, "npy", stem)], None
        if array.ndim == 3:
            return [SliceRecord(path, "npy", f"{stem}_{i:03d}", frame=i) for i in range(array.shape[0])], None
        return [], InputIssue(path, f".npy array of shape {array.shape}; expected (H, W) or (N, H, W)")
    return [SliceRecord(path, "png", stem)], None


# --------------------------------------------------------------------------- discovery


def discover(input_path: Path, series: str | None = None, rules: SelectionRules | None = None) -> Study:
    """Find, classify, group, order and select the series under `input_path` (a folder tree or one file).

    Parameters
    ----------
    input_path
        A folder tree or a single file.
    series
        `--series`: pick series by SeriesDescription or folder substring, or SeriesInstanceUID,
        whatever their modality (see `SelectionRules.for_series`).
    rules
        Selection rules (default `SelectionRules()`: MR, axial, no LOCALIZER/DERIVED/SECONDARY);
        `series` then narrows them to one series.

    PNG/NPY slices are used only when the input holds no DICOM slices (or when the rules name
    their folder).
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"input {display_path(input_path)} does not exist")
    if rules is None:
        rules = SelectionRules.for_series(series) if series is not None else SelectionRules()
    else:
        rules = rules.with_series(series)
    study = Study(input=input_path)
    files, study.skipped, study.failed = list_files(input_path)
    study.n_files = len(files) + len(study.skipped)
    records: list[SliceRecord] = []
    image_groups: dict[Path, list[SliceRecord]] = {}
    for path in files:
        if path.suffix.lower() in PNG_SUFFIXES | NPY_SUFFIXES:
            if path.parent.name.lower().endswith("_labels"):
                study.skipped.append(InputIssue(path, "label image (folder ends in _labels), not a slice"))
                continue
            found, issue = _image_slice_records(path)
            if issue:
                study.skipped.append(issue)
            image_groups.setdefault(path.parent, []).extend(found)
            continue
        try:
            verdict = classify(path)
            if verdict.status == "image":
                records.append(dicom_record(path, verdict.dataset, slice_stem(path)))
            elif verdict.status == "skipped":
                study.skipped.append(InputIssue(path, verdict.reason))
            else:
                study.failed.append(InputIssue(path, verdict.reason))
        except HeaderError as exc:
            study.failed.append(InputIssue(path, f"corrupt DICOM header: {exc}"))
        except Exception as exc:  # one unexpected header must cost its own file, never the study
            study.failed.append(InputIssue(path, f"unexpected error reading the header ({type(exc).__name__}: {exc})"))
    records = _resolve_duplicates(records, study)
    groups: dict[str, list[SliceRecord]] = {}
    for record in records:
        uid = str(record.dataset.get("SeriesInstanceUID", "") or "").strip() or f"no-uid:{record.path.parent}"
        groups.setdefault(uid, []).append(record)
    dicom_series = [_dicom_series(uid, members, input_path, rules, study) for uid, members in groups.items()]
    image_series = [_image_series(folder, found, input_path) for folder, found in image_groups.items() if found]
    _name_series([*dicom_series, *image_series])
    for candidate in dicom_series:
        reason = _series_reason(candidate, rules)
        if reason:
            study.excluded.append((candidate, reason))
        else:
            study.selected.append(candidate)
    for candidate in image_series:
        if rules.series is not None and not series_matches(candidate, rules.series):
            study.excluded.append((candidate, f"does not match --series {rules.series!r}"))
        elif dicom_series and rules.series is None:
            study.excluded.append((candidate, "PNG/NPY slices ignored because the input holds DICOM series"))
        else:
            study.selected.append(candidate)
    return study


def _resolve_duplicates(records: list[SliceRecord], study: Study) -> list[SliceRecord]:
    """Identical copies of one instance: keep the first. Different files claiming one SOPInstanceUID:
    keep both (each is segmented) but neither can be referenced by a DICOM SEG."""
    by_uid: dict[str, list[SliceRecord]] = {}
    for record in records:
        if record.sop_instance_uid:
            by_uid.setdefault(record.sop_instance_uid, []).append(record)
    dropped: set[int] = set()
    for claimants in by_uid.values():
        if len(claimants) < 2:
            continue
        digests = {id(r): _digest(r.path) for r in claimants}
        first = claimants[0]
        if len(set(digests.values())) == 1:
            for copy in claimants[1:]:
                study.skipped.append(
                    InputIssue(copy.path, f"duplicate of {display_path(first.path)} (same SOPInstanceUID, identical file)")
                )
                dropped.add(id(copy))
            continue
        for record in claimants:
            others = ", ".join(display_path(r.path) for r in claimants if r is not record)
            record.seg_excluded = f"SOPInstanceUID is also claimed by {others} (different content)"
    return [r for r in records if id(r) not in dropped]


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _majority(values: list[str]) -> str:
    counts = Counter(values)
    return max(counts, key=lambda v: (counts[v], -values.index(v)))


def _dicom_series(uid: str, records: list[SliceRecord], input_path: Path, rules: SelectionRules, study: Study) -> Series:
    records = sorted(records, key=lambda r: natural_key(str(r.path)))
    for keyword in _SHARED:  # a slice from another study or frame of reference is corrupt, not part of this series
        values = [_safe_text(r.dataset, keyword) for r in records]
        if len(set(values)) > 1:
            expected = _majority(values)
            for record, value in zip(list(records), values, strict=True):
                if value != expected:
                    reason = f"{keyword} {value[:64] or '(missing)'} differs from the rest of its series ({expected[:64]})"
                    study.failed.append(InputIssue(record.path, reason))
                    records.remove(record)
    placed = [r for r in records if r.position is not None and r.orientation is not None]
    if placed and len(placed) < len(records):
        for record in records:
            if record not in placed:
                reason = "no usable ImagePositionPatient/ImageOrientationPatient while the rest of its series has them"
                study.failed.append(InputIssue(record.path, reason))
        records = placed
    first = records[0].dataset if records else None
    folder = records[0].path.parent if records else input_path
    series = Series(
        uid=uid,
        name=_folder_name(folder, input_path),
        folder=folder,
        kind="dicom",
        description=_safe_text(first, "SeriesDescription"),
        modality=_majority([_safe_text(r.dataset, "Modality") for r in records]) if records else "",
        series_number=_series_number(first),
    )
    plane = dominant_plane(records) if records else "unknown"
    kept, left_out = [], []
    for record in records:
        reason = slice_exclusion(record, rules, plane)
        if reason:
            left_out.append(InputIssue(record.path, reason))
        else:
            kept.append(record)
    series.excluded_slices = left_out
    if not kept:  # the whole series is excluded: keep its slices (ordered) so the report can list them
        kept, series.all_excluded = records, True
    series.slices, series.blocks, series.ordering = order_slices(kept)
    series.orientation = dominant_plane(series.slices) if series.slices else plane
    if series.slices:
        series.modality = _majority([_safe_text(r.dataset, "Modality") for r in series.slices])
    _unique_stems(series.slices)
    return series


def _series_reason(series: Series, rules: SelectionRules) -> str | None:
    """Why a DICOM series is excluded as a whole, or None when it has slices that passed the rules."""
    if not series.slices:
        return "no slice left after the header checks"
    if rules.series is not None and not series_matches(series, rules.series):
        reason = f"does not match --series {rules.series!r}"
        series.excluded_slices = [InputIssue(r.path, reason) for r in series.slices]
        return reason
    if series.all_excluded:
        return series_exclusion([issue.reason for issue in series.excluded_slices])
    return None


def _safe_text(dataset: object, keyword: str) -> str:
    if dataset is None:
        return ""
    try:
        return text_attr(dataset, keyword)
    except HeaderError:
        return ""


def _series_number(dataset: object) -> int | None:
    text = _safe_text(dataset, "SeriesNumber")
    return int(text) if text.isdigit() else None


def _folder_name(folder: Path, input_path: Path) -> str:
    return safe_name(folder.name if folder.name else input_path.resolve().name)


def _image_series(folder: Path, records: list[SliceRecord], input_path: Path) -> Series:
    ordered = sorted(records, key=lambda s: natural_key(s.stem))
    _unique_stems(ordered)
    return Series(
        uid=f"folder:{display_path(folder)}",
        name=_folder_name(folder, input_path),
        folder=folder,
        kind=records[0].kind,
        description=display_path(folder.name),
        ordering="file name",
        slices=ordered,
    )


def _unique_stems(records: list[SliceRecord]) -> None:
    seen: dict[str, int] = {}
    taken = {r.stem for r in records}
    for record in records:
        count = seen.get(record.stem, 0)
        seen[record.stem] = count + 1
        if count:
            candidate = f"{record.stem}_{count + 1}"
            while candidate in taken:
                count += 1
                candidate = f"{record.stem}_{count + 1}"
            taken.add(candidate)
            record.stem = candidate


def _name_series(series_list: list[Series]) -> None:
    """Distinct, safe output names: two series from one folder (or same-named folders) get suffixes."""
    for item in series_list:
        if item.name.lower() in RESERVED_NAMES:
            item.name = f"series_{item.name}"
    by_name: dict[str, list[Series]] = {}
    for item in series_list:
        by_name.setdefault(item.name, []).append(item)
    for name, group in by_name.items():
        if len(group) < 2:
            continue
        for index, item in enumerate(group, start=1):
            suffix = f"S{item.series_number}" if item.series_number is not None else str(index)
            item.name = f"{name}_{suffix}"
        if len({item.name for item in group}) < len(group):
            for index, item in enumerate(group, start=1):
                item.name = f"{name}_{index}"
    names = [item.name for item in series_list]
    taken = set()
    for item, name in zip(series_list, names, strict=True):  # a suffixed name may still meet another folder's
        candidate, k = name, 2
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        item.name = candidate
        taken.add(candidate)
