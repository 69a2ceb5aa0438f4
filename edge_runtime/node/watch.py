"""`--watch DIR`: each folder directly inside DIR is one delivery; once nothing in it has changed for
`--quiet-seconds` it moves into the spool as a job for the same worker (sites that route by file share).

Hidden entries (a copy tool's temporary names) are left alone; loose files directly in DIR are
reported once and not touched.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge_runtime.node.log import EventLog
from edge_runtime.node.spool import Spool, valid_uid

Signature = tuple[int, int, float]


def folder_signature(folder: Path) -> Signature:
    """(files, bytes, newest mtime) of everything under `folder`: any copy in progress changes it."""
    count, size, newest = 0, 0, 0.0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime)
    return count, size, newest


def study_of(folder: Path) -> str:
    """The StudyInstanceUID of the first DICOM file found, or 'unknown-study' (outputs are grouped by it)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        try:
            uid = str(dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get("StudyInstanceUID", ""))
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if valid_uid(uid):
            return uid
    return "unknown-study"


class WatchFolder:
    """Polls DIR (every quarter of the quiet time, at most 0.5 s); thread-safe start/stop."""

    def __init__(self, folder: Path, quiet_seconds: float, spool: Spool, log: EventLog, on_job: Callable[[], None]) -> None:
        self.folder = Path(folder)
        self.quiet = quiet_seconds
        self.spool = spool
        self.log = log
        self.on_job = on_job
        self._seen: dict[str, tuple[Signature, float]] = {}
        self._loose_reported: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = min(0.5, self.quiet / 4)
        while not self._stop.wait(interval):
            try:
                self.scan(time.monotonic())
            except OSError as exc:
                self.log("watch_error", folder=str(self.folder), error=str(exc))

    def scan(self, now: float) -> int:
        """One poll; returns how many folders became jobs."""
        queued = 0
        present = set()
        for entry in sorted(self.folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir() or entry.is_symlink():
                if entry.name not in self._loose_reported:
                    self._loose_reported.add(entry.name)
                    self.log("watch_ignored", path=str(entry), reason="not a series folder (put each series in its own folder)")
                continue
            present.add(entry.name)
            signature = folder_signature(entry)
            previous = self._seen.get(entry.name)
            if previous is None or previous[0] != signature:
                self._seen[entry.name] = (signature, now)
                continue
            if signature[0] == 0 or now - previous[1] < self.quiet:
                continue
            job = self.spool.claim_folder(entry, study_of(entry), entry.name)
            del self._seen[entry.name]
            present.discard(entry.name)
            queued += 1
            self.log("series_complete", source="watch", folder=str(entry), job=job.id, study=job.key.study,
                     instances=job.info["instances"])
            self.on_job()
        for name in set(self._seen) - present:
            del self._seen[name]
        return queued
