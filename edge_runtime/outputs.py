"""The one owner of what a run leaves behind: output formats, the folder lock, staging, `--overwrite`.

A run checks its output folder before any inference: not inside the input, a folder, writable,
enough free space, not locked by another run (`OUT/.edge-seg.lock`, an flock released by the
kernel when the holder dies), and, without `--overwrite`, no planned file already there. Every
file is written into a private staging folder inside OUT and moved into place at the end, the
summary last; `--overwrite` replaces each series folder whole and removes what the previous
run (per its summary.json) wrote and this one did not, so OUT holds exactly this run's files.
An interrupted run removes its staging folder; one killed outright leaves it behind for the
next run, which removes it under the lock before it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.atomic import atomic_path, atomic_write_text
from edge_runtime.cpu import usable_cores
from edge_runtime.dicom_builder import DicomBuilder, Job
from edge_runtime.inputs import display_path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: fall back to an exclusive-create lock file
    fcntl = None  # type: ignore[assignment]


class OutputFormat(StrEnum):
    """What `--format` can ask for: per-series files, and the run's report files."""

    PNG = "png"
    NPY = "npy"
    OVERLAY = "overlay"
    SEG = "seg"
    SR = "sr"  # after SEG: the SR references the SEG files
    SUMMARY = "summary"  # key-image sheet per study (PNG + Secondary Capture)
    REPORT = "report"


OUTPUT_FORMATS = tuple(f.value for f in OutputFormat)
LOCK_NAME = ".edge-seg.lock"
STAGING_PREFIX = ".edge-seg-staging-"
TRASH_PREFIX = ".edge-seg-trash-"
SUMMARY_NAME = "summary.json"
REPORT_NAMES = ("report.json", "report.csv")
_MIN_FREE_BYTES = 16 << 20
_ENCODERS = min(4, usable_cores())  # PNG encoder threads of one run


class OutputError(ValueError):
    """The output location cannot be used (exit status 2); the message names the path and the fix."""


class OutputBusy(OutputError):
    """Another run holds the output folder's lock."""


def inside(path: Path, folder: Path) -> bool:
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or path.is_relative_to(folder)


class OutputLock:
    """An exclusive lock on one output folder, with the holder's identity in the lock file."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, holder: dict[str, Any]) -> None:
        """Take the lock or raise OutputBusy naming the holder (pid, host, start time, input)."""
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | (0 if fcntl else os.O_EXCL), 0o644)
            except FileExistsError:
                raise OutputBusy(self._busy_message()) from None
            except OSError as exc:
                raise OutputError(f"cannot create the lock file {display_path(self.path)} ({exc.strerror})") from exc
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    raise OutputBusy(self._busy_message()) from None
                try:  # the previous holder may have removed the file between our open and our lock
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
            self._fd = fd
            return
        raise OutputBusy(f"output folder lock {display_path(self.path)} keeps changing hands; try again")

    def _busy_message(self) -> str:
        holder: dict[str, Any] = {}
        for _ in range(5):  # the holder writes its identity right after locking
            try:
                holder = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            except (OSError, ValueError):
                holder = {}
            if holder:
                break
            time.sleep(0.05)
        who = (
            f"edge-seg run pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')} "
            f"(input {holder.get('input')})"
            if holder
            else "another edge-seg run"
        )
        return f"output folder {display_path(self.path.parent)} is in use by {who}; wait for it or choose another -o"

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it: a waiting run re-checks the inode
        os.close(self._fd)
        self._fd = None


class RunOutputs:
    """Stage-and-swap writer for one run into `output`."""

    def __init__(self, output: Path, input_path: Path, overwrite: bool) -> None:
        self.output = Path(output)
        self.input = Path(input_path)
        self.overwrite = overwrite
        self.lock = OutputLock(self.output)
        self.staging = self.output / f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        self.written: list[Path] = []  # relative to `output`
        self.swept: list[str] = []
        self._created_output = False
        self._open = False
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[tuple[Future[Any], int, Callable[[Exception], None], Callable[[], None] | None]] = []
        self.builder = DicomBuilder()  # runs DICOM jobs here unless the run forks one (edge_runtime.dicom_builder)
        self._built: list[tuple[Job, Callable[[Any], None], Callable[[Exception], None]]] = []

    # ----------------------------------------------------------------- before inference

    def check_location(self) -> None:
        """Refuse an output inside the input or one that is not a folder (nothing is created yet)."""
        if self.input.is_dir() and inside(self.output, self.input):
            raise OutputError(
                f"output {display_path(self.output)} is inside the input {display_path(self.input)}; choose a folder outside it"
            )
        if self.output.exists() and not self.output.is_dir():
            raise OutputError(f"output {display_path(self.output)} exists and is not a folder")

    def open(self, planned: list[Path], needed_bytes: int, holder: dict[str, Any]) -> None:
        """Create and lock OUT, remove leftovers of killed runs, refuse clashes and a full disk, start staging."""
        self.check_location()
        try:
            if not self.output.exists():
                self.output.mkdir(parents=True)
                self._created_output = True
        except OSError as exc:
            raise OutputError(f"cannot create the output folder {display_path(self.output)} ({exc.strerror})") from exc
        try:
            self.lock.acquire(holder)
        except OutputError:
            self._remove_created_output()
            raise
        try:
            self._sweep()
            self._check_clashes(planned)
            free = shutil.disk_usage(self.output).free
            if free < needed_bytes + _MIN_FREE_BYTES:
                raise OutputError(
                    f"only {free >> 20} MiB free in {display_path(self.output)}; this run needs about "
                    f"{(needed_bytes + _MIN_FREE_BYTES) >> 20} MiB"
                )
            self.staging.mkdir()
        except BaseException:
            self.lock.release()
            self._remove_created_output()
            raise
        self._open = True

    def _sweep(self) -> None:
        """Remove staging and trash folders of runs that were killed (we hold the lock: nobody uses them)."""
        for entry in sorted(self.output.iterdir()):
            if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                shutil.rmtree(entry, ignore_errors=True)
                self.swept.append(entry.name)

    def _check_clashes(self, planned: list[Path]) -> None:
        for path in planned:
            if self.input.is_dir() and inside(path, self.input):
                raise OutputError(f"output file {display_path(path)} would land inside the input {display_path(self.input)}")
        if self.overwrite:
            return
        existing = [p for p in planned if p.exists()]
        if existing:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise OutputError(f"output {display_path(existing[0])}{more} already exists; use --overwrite to replace")

    # ----------------------------------------------------------------- writing (into staging)

    def staged(self, final: Path) -> Path:
        """Where a writer puts `final` (a path under `output`) until the run commits."""
        relative = Path(final).relative_to(self.output)
        target = self.staging / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @contextlib.contextmanager
    def file(self, final: Path) -> Iterator[Path]:
        """Yield a temporary path for `final`; it counts as written only if the block succeeds."""
        with atomic_path(self.staged(final)) as tmp:
            yield tmp
        self.adopt(final)

    def staged_dir(self, final_folder: Path) -> Path:
        """The staging folder standing for `final_folder` (created), for writers that name their own files."""
        relative = Path(final_folder).relative_to(self.output)
        target = self.staging / relative
        target.mkdir(parents=True, exist_ok=True)
        return target

    def adopt(self, final: Path) -> None:
        """Record a file a writer put at `staged(final)` itself."""
        self.written.append(Path(final).relative_to(self.output))

    def stage_png(self, image: Any, final: Path) -> None:
        """Encode `image` into the staged file for `final` (atomic); no bookkeeping, so any thread may call it."""
        with atomic_path(self.staged(final)) as tmp:
            image.save(tmp, format="PNG", compress_level=1)  # fast zlib: 5-10x quicker, files ~20% larger

    def save_png_later(
        self,
        image: Any,
        final: Path,
        failed: Callable[[Exception], None],
        done: Callable[[], None] | None = None,
        keep: Callable[[Any], Any] | None = None,
    ) -> Future[Any]:
        """`stage_png` on a worker thread (Pillow's encoder releases the GIL, so it overlaps the SEG and SR).

        `image` is a Pillow image, or a function returning one (rendered on the worker too) or None
        (nothing to write). `final` keeps its place among the written files. The future's result is
        `keep(image)` once written (True without `keep`; None when there was nothing to write), so
        the image itself is freed as soon as it is on disk. `wait()` calls `done` when the file was
        written, or drops it and calls `failed` with the exception.
        """
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=_ENCODERS, thread_name_prefix="edge-seg-png")
        relative = Path(final).relative_to(self.output)

        def job() -> Any:
            picture = image() if callable(image) else image
            if picture is None:
                return None
            self.stage_png(picture, final)
            return keep(picture) if keep is not None else True

        future = self._pool.submit(job)
        self.written.append(relative)
        self._pending.append((future, len(self.written) - 1, failed, done))
        return future

    def build_later(
        self, function: Callable[..., Any], args: tuple[Any, ...], done: Callable[[Any], None],
        failed: Callable[[Exception], None],
    ) -> None:  # fmt: skip
        """Run `function(*args)` (a DICOM writer that stages its own files) in `builder`; `wait()`
        then calls `done(result)`, which adopts the files, or `failed(exception)`."""
        self._built.append((self.builder.submit(function, *args), done, failed))

    def wait(self) -> None:
        """Finish the background writes, in the order they were asked for (see `save_png_later`,
        then `build_later`)."""
        pending, self._pending = self._pending, []
        lost: set[int] = set()
        for future, slot, failed, done in pending:
            try:
                written = future.result() is not None
            except Exception as exc:
                lost.add(slot)
                failed(exc)
                continue
            if not written:
                lost.add(slot)
            elif done is not None:
                done()
        if lost:
            self.written = [p for i, p in enumerate(self.written) if i not in lost]
        built, self._built = self._built, []
        for job, done_with, failed in built:
            try:
                value = job.result()
            except Exception as exc:
                failed(exc)
                continue
            done_with(value)

    def _stop_pool(self) -> None:
        """No more background writes: queued ones are cancelled, running ones finish (before staging is removed)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending = []

    def save_npy(self, array: np.ndarray, final: Path) -> None:
        with self.file(final) as tmp, open(tmp, "wb") as handle:
            np.save(handle, array)

    def write_text(self, final: Path, text: str) -> None:
        with self.file(final) as tmp:
            tmp.write_bytes(text.encode("utf-8"))

    def final_paths(self) -> list[str]:
        return [display_path(self.output / p) for p in self.written]

    # ----------------------------------------------------------------- the end

    def commit(self, summary_text: str) -> None:
        """Move the staged files into place, summary.json last; with --overwrite, drop the previous run's files."""
        if self._pending or self._built:
            raise RuntimeError("commit() before wait(): background writes are still pending")
        self._stop_pool()
        self.builder.close()
        trash = self.output / f"{TRASH_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
        entries = sorted({p.parts[0] for p in self.written})
        if self.overwrite:
            old = [SUMMARY_NAME, *entries, *self.stale_entries()]
            for name in dict.fromkeys(old):  # summary.json first: a reader never sees it beside half-replaced files
                if (self.output / name).exists() or (self.output / name).is_symlink():
                    trash.mkdir(exist_ok=True)
                    os.replace(self.output / name, trash / name)
            for name in entries:
                os.replace(self.staging / name, self.output / name)
        else:
            for relative in self.written:
                (self.output / relative).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.staging / relative, self.output / relative)
        atomic_write_text(self.output / SUMMARY_NAME, summary_text)
        shutil.rmtree(trash, ignore_errors=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        self._open = False

    def stale_entries(self, also: tuple[str, ...] = ()) -> list[str]:
        """With --overwrite: what the previous run wrote (per its summary.json) that this run does not write.

        `also` names top-level files this run is still going to write (its reports).
        """
        if not self.overwrite:
            return []
        mine = {p.parts[0] for p in self.written} | {SUMMARY_NAME, *also}
        return sorted(n for n in self._previous_entries() - mine if (self.output / n).exists())

    def _previous_entries(self) -> set[str]:
        """Top-level names the previous run's summary.json says it wrote (never hidden ones)."""
        try:
            data = json.loads((self.output / SUMMARY_NAME).read_text(encoding="utf-8"))
            files = data.get("relative_files", []) if isinstance(data, dict) else []
        except (OSError, ValueError):
            return set()
        names = {Path(f).parts[0] for f in files if isinstance(f, str) and f and not Path(f).is_absolute()}
        return {n for n in names if not n.startswith(".") and n not in ("..",)}

    def abort(self) -> None:
        """Drop everything staged (the run failed or was interrupted before committing)."""
        self._stop_pool()
        self.builder.close(kill=True)  # before its staging folder goes
        self._built = []
        if self._open:
            shutil.rmtree(self.staging, ignore_errors=True)
            self._open = False

    def close(self) -> None:
        self.abort()
        self.lock.release()

    def _remove_created_output(self) -> None:
        if self._created_output:
            with contextlib.suppress(OSError):
                self.output.rmdir()
            self._created_output = False


def holder_info(input_path: Path) -> dict[str, Any]:
    """Who holds the lock, for the message a second run prints."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "input": display_path(input_path),
    }
