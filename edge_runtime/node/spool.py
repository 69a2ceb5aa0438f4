"""The node's durable spool: every received instance and every job state lives here, as files.

Layout under SPOOL (each state change is one rename, flushed to disk; see `durable`):

    incoming/<assoc>/<study>/<series>/<sop>.dcm   an open association's instances (acknowledged)
    incoming/<assoc>/RELEASED                     the peer released: promote even after a crash
    held/<assoc>/<study>/<series>/<sop>.dcm       an aborted association's instances: kept, never
                                                  processed alone; merged into their series when a
                                                  later association delivers it cleanly
    series/<study>/<series>/<sop>.dcm             released instances waiting for the quiet time
    queue/<job>/job.json, queue/<job>/<name>/     complete series waiting for (or in) processing
    queue/<job>/send/, queue/<job>/result.json    processed: the DICOM results to send
    outbox/<job>/...  delivered/<destination>.json  results not yet at every destination
    sent/<job>.json                               delivery record (pruned after --retain-hours)
    failed/<job>/                                 jobs that failed --max-attempts times (kept)
    done/<study>/<series>/<sop>.dcm               inputs of processed series, kept --retain-hours so
                                                  a late instance re-runs the whole series and a
                                                  repeated send is recognised as a duplicate

A SIGKILL between any two steps leaves a state that `recover` completes or repeats: nothing
acknowledged is lost, no job runs to completion twice, no result is queued twice.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.inputs import safe_name
from edge_runtime.node.durable import (
    fsync_dir,
    read_json,
    remove_tree,
    rename_durable,
    sweep_temporaries,
    write_durable,
    write_json_durable,
)

RELEASED = "RELEASED"
JOB_FILE = "job.json"
RESULT_FILE = "result.json"
SEND_DIR = "send"
DELIVERED_DIR = "delivered"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_STATES = ("incoming", "held", "series", "queue", "outbox", "sent", "failed", "done")


def valid_uid(value: object) -> bool:
    """A DICOM UID (digits and dots, <= 64 characters): safe as a file or folder name."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.match(value))


@dataclass(frozen=True, order=True)
class SeriesKey:
    """One series: StudyInstanceUID and SeriesInstanceUID (both validated UIDs)."""

    study: str
    series: str

    def __str__(self) -> str:
        return f"{self.study}/{self.series}"


@dataclass
class Job:
    """A complete series (or watch-folder folder) in queue/ or outbox/."""

    id: str
    folder: Path
    info: dict[str, Any]

    @property
    def key(self) -> SeriesKey:
        return SeriesKey(self.info["study"], self.info["series"])

    @property
    def input(self) -> Path:
        return self.folder / self.info["name"]


@dataclass
class Recovery:
    """What `recover` found and did at start-up (logged as one event)."""

    promoted: int = 0  # associations released just before a kill: moved on to series/
    held: int = 0  # associations open at the kill: their instances held
    series_waiting: int = 0
    jobs_resumed: int = 0
    jobs_finished: int = 0  # processed before the kill, moved on to the outbox
    outbox: int = 0
    temporaries: int = 0


class Spool:
    """Owns the spool folder; thread-safe (receive threads, the tracker, the worker, the sender)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        for state in _STATES:
            setattr(self, state, self.root / state)
        self.incoming: Path
        self.held: Path
        self.series: Path
        self.queue: Path
        self.outbox: Path
        self.sent: Path
        self.failed: Path
        self.done: Path
        self._lock = threading.RLock()
        self._seq = 0

    def create(self) -> None:
        for state in _STATES:
            (self.root / state).mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ receive

    def store_instance(self, assoc: str, key: SeriesKey, sop: str, data: bytes) -> Path:
        """Write one received instance durably (the C-STORE success must come after this)."""
        path = self.incoming / assoc / key.study / key.series / f"{sop}.dcm"
        write_durable(path, data)
        return path

    def release(self, assoc: str) -> list[SeriesKey]:
        """The peer released: its instances join their series (and any held instances of them)."""
        folder = self.incoming / assoc
        if not folder.is_dir():
            return []
        write_durable(folder / RELEASED, b"")
        return self._promote(folder)

    def hold(self, assoc: str) -> int:
        """The association was aborted (or refused some instances): keep its instances aside; returns how many."""
        folder = self.incoming / assoc
        if not folder.is_dir():
            return 0
        count = sum(1 for _ in folder.glob("*/*/*.dcm"))
        with contextlib.suppress(FileNotFoundError):
            (folder / RELEASED).unlink()
        rename_durable(folder, self.held / assoc)
        return count

    def _promote(self, folder: Path) -> list[SeriesKey]:
        keys: list[SeriesKey] = []
        with self._lock:
            for series_dir in sorted(folder.glob("*/*")):
                if not series_dir.is_dir():
                    continue
                key = SeriesKey(series_dir.parent.name, series_dir.name)
                target = self.series / key.study / key.series
                target.mkdir(parents=True, exist_ok=True)
                for path in series_dir.glob("*.dcm"):
                    os.replace(path, target / path.name)
                self._merge_held(key, target)
                fsync_dir(target)
                keys.append(key)
            remove_tree(folder)
        return keys

    def _merge_held(self, key: SeriesKey, target: Path) -> int:
        """Move held instances of `key` into `target` (the newer copy of a SOP instance wins)."""
        moved = 0
        for assoc in sorted(self.held.iterdir()) if self.held.is_dir() else []:
            source = assoc / key.study / key.series
            if not source.is_dir():
                continue
            for path in source.glob("*.dcm"):
                if (target / path.name).exists():
                    path.unlink()
                else:
                    os.replace(path, target / path.name)
                    moved += 1
            _remove_empty(source, stop=self.held)
        return moved

    def held_instances(self) -> int:
        return sum(1 for _ in self.held.glob("*/*/*/*.dcm"))

    def waiting_series(self) -> list[SeriesKey]:
        """Series in series/ (after a restart their quiet time starts again)."""
        return [SeriesKey(p.parent.name, p.name) for p in sorted(self.series.glob("*/*")) if p.is_dir()]

    # ------------------------------------------------------------------ series -> job

    def busy(self, key: SeriesKey) -> bool:
        """A job of this series is still queued or running: its successor waits (no double processing)."""
        return any(job.key == key for job in self.jobs())

    def claim(self, key: SeriesKey, name: str) -> tuple[str, Job | None]:
        """Turn a complete series into a job; returns ('queued', job), ('duplicate', None) or ('empty', None).

        A series whose instances were all processed before (still in done/) is a duplicate
        send and is dropped; one with new instances takes the processed ones along and runs whole.
        """
        with self._lock:
            source = self.series / key.study / key.series
            sops = {p.name for p in source.glob("*.dcm")} if source.is_dir() else set()
            if not sops:
                if source.is_dir():
                    _remove_empty(source, stop=self.series)
                return "empty", None
            done = self.done / key.study / key.series
            if done.is_dir():
                previous = {p.name for p in done.glob("*.dcm")}
                if sops <= previous:
                    remove_tree(source)
                    _remove_empty(source.parent, stop=self.series)
                    return "duplicate", None
                for path in done.glob("*.dcm"):
                    if path.name not in sops:
                        os.replace(path, source / path.name)
                fsync_dir(source)
            job_id = self._job_id()
            folder = self.queue / job_id
            info = {
                "id": job_id,
                "source": "dicom",
                "study": key.study,
                "series": key.series,
                "name": safe_name(name),
                "instances": len(list(source.glob("*.dcm"))),
                "queued": time.time(),
                "attempts": 0,
            }
            write_json_durable(folder / JOB_FILE, info)
            rename_durable(source, folder / info["name"])
            _remove_empty(source.parent, stop=self.series)
            return "queued", Job(job_id, folder, info)

    def claim_folder(self, folder: Path, study: str, name: str) -> Job:
        """A watch-folder series folder becomes a job (renamed when on this file system, else copied)."""
        with self._lock:
            job_id = self._job_id()
            job_dir = self.queue / job_id
            info = {
                "id": job_id,
                "source": "watch",
                "study": study,
                "series": f"watch-{safe_name(name)}",
                "name": safe_name(name),
                "instances": sum(1 for p in folder.rglob("*") if p.is_file()),
                "queued": time.time(),
                "attempts": 0,
                "watch_path": str(folder),
            }
            write_json_durable(job_dir / JOB_FILE, info)
            target = job_dir / info["name"]
            try:
                rename_durable(folder, target)
            except OSError:  # another file system: copy durably, then remove the original
                partial = job_dir / f".copy-{info['name']}"
                shutil.copytree(folder, partial)
                for path in partial.rglob("*"):
                    if path.is_file():
                        with open(path, "rb") as handle:
                            os.fsync(handle.fileno())
                rename_durable(partial, target)
                shutil.rmtree(folder)
            return Job(job_id, job_dir, info)

    def _job_id(self) -> str:
        self._seq += 1
        return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{self._seq:05d}-{secrets.token_hex(3)}"

    def jobs(self) -> list[Job]:
        """Queued jobs, oldest first (job ids sort by time)."""
        return [job for job in (_load_job(p) for p in sorted(self.queue.iterdir()) if p.is_dir()) if job is not None]

    def next_job(self) -> Job | None:
        pending = [job for job in self.jobs() if not (job.folder / RESULT_FILE).exists()]
        return pending[0] if pending else None

    def start_attempt(self, job: Job) -> int:
        """Count an attempt durably before running it (a job that kills the node is not retried forever)."""
        job.info["attempts"] = int(job.info.get("attempts", 0)) + 1
        write_json_durable(job.folder / JOB_FILE, job.info)
        remove_tree(job.folder / SEND_DIR)
        return job.info["attempts"]

    # ------------------------------------------------------------------ job -> outbox

    def stage_results(self, job: Job, files: list[Path]) -> list[str]:
        """Hard-link (or copy) the DICOM results into the job, so a later run of the series cannot change them."""
        send = job.folder / SEND_DIR
        send.mkdir(exist_ok=True)
        names = []
        for index, path in enumerate(files):
            name = f"{index:02d}_{path.name}"
            try:
                os.link(path, send / name)
            except OSError:
                write_durable(send / name, path.read_bytes())
            names.append(name)
        fsync_dir(send)
        return names

    def finish_job(self, job: Job, result: dict[str, Any]) -> Job:
        """Record the result, keep the inputs in done/, move the job to the outbox (each step repeatable)."""
        with self._lock:
            write_json_durable(job.folder / RESULT_FILE, result)
            return self._to_outbox(job)

    def _to_outbox(self, job: Job) -> Job:
        if job.input.is_dir():
            done = self.done / job.key.study / job.key.series
            if done.exists():
                remove_tree(done)
            rename_durable(job.input, done)
        target = self.outbox / job.id
        rename_durable(job.folder, target)
        return Job(job.id, target, job.info)

    def fail_job(self, job: Job, reason: str) -> None:
        """Park a job that keeps failing in failed/ with its inputs, for the operator."""
        with self._lock:
            job.info["failed"] = reason
            write_json_durable(job.folder / JOB_FILE, job.info)
            rename_durable(job.folder, self.failed / job.id)

    # ------------------------------------------------------------------ outbox

    def outbox_jobs(self) -> list[Job]:
        return [job for job in (_load_job(p) for p in sorted(self.outbox.iterdir()) if p.is_dir()) if job is not None]

    def result(self, job: Job) -> dict[str, Any]:
        return read_json(job.folder / RESULT_FILE)

    def delivered(self, job: Job, destination: str) -> set[str]:
        path = job.folder / DELIVERED_DIR / f"{destination}.json"
        return set(read_json(path)) if path.exists() else set()

    def mark_delivered(self, job: Job, destination: str, names: set[str]) -> None:
        write_json_durable(job.folder / DELIVERED_DIR / f"{destination}.json", sorted(names))

    def close_job(self, job: Job, record: dict[str, Any]) -> None:
        """Every destination has every file: keep a small record, drop the job folder."""
        write_json_durable(self.sent / f"{job.id}.json", record)
        remove_tree(job.folder)

    # ------------------------------------------------------------------ start-up and housekeeping

    def recover(self) -> Recovery:
        """Complete or undo what a kill interrupted; run before anything else touches the spool."""
        report = Recovery()
        self.create()
        report.temporaries = sweep_temporaries(self.root)
        for folder in sorted(self.incoming.iterdir()):
            if (folder / RELEASED).exists():
                self._promote(folder)
                report.promoted += 1
            elif folder.is_dir():
                self.hold(folder.name)
                report.held += 1
        for folder in sorted(self.queue.iterdir()):
            job = _load_job(folder)
            if job is None or (not job.input.is_dir() and not (folder / RESULT_FILE).exists()):
                remove_tree(folder)  # claimed but not moved in (the series is still in series/), or debris
            elif (folder / RESULT_FILE).exists():
                self._to_outbox(job)
                report.jobs_finished += 1
            else:
                report.jobs_resumed += 1
        report.series_waiting = len(self.waiting_series())
        report.outbox = len(self.outbox_jobs())
        return report

    def prune(self, retain_hours: float) -> int:
        """Drop done/ inputs and sent/ records older than `retain_hours`; returns how many."""
        limit = time.time() - retain_hours * 3600
        removed = 0
        with self._lock:
            for folder in list(self.done.glob("*/*")):
                if folder.is_dir() and folder.stat().st_mtime < limit:
                    remove_tree(folder)
                    _remove_empty(folder.parent, stop=self.done)
                    removed += 1
            for record in list(self.sent.glob("*.json")):
                if record.stat().st_mtime < limit:
                    record.unlink()
                    removed += 1
        return removed


def _load_job(folder: Path) -> Job | None:
    try:
        info = read_json(folder / JOB_FILE)
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not {"id", "study", "series", "name"} <= set(info):
        return None
    return Job(folder.name, folder, info)


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove `folder` and empty parents up to (not including) `stop`."""
    folder = Path(folder)
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
