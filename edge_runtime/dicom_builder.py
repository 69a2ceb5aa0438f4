"""Where a run's DICOM files (SEG, SR, key-image Secondary Capture) are built: a forked second process.

highdicom and pydicom are pure Python, so built in the run's own process they hold the GIL for
the 0.3-0.5 s a study's DICOM files take (highdicom's import included) while the label PNGs and
overlays wait. `DicomBuilder.fork()` starts a child before the model loads, when the run has no
threads yet (nothing is forked holding a lock). The child imports highdicom while the parent
reads headers and infers, then builds each file on the second core while the parent draws PNGs.

Jobs are module-level functions with picklable arguments, run one at a time in the order they
were submitted, so a series' SR job can read the SEG its series' previous job wrote. A job's
exception is raised again by `Job.result()`; a child that dies (killed, out of memory) fails
the jobs it held with `BuilderDied`, which costs those files only. `DicomBuilder()` runs every
job at once in the caller (its `prepare` before the first), with the same results: for
long-lived processes (`edge-seg serve`) and systems without fork.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("!Q")  # length of the pickled frame that follows
_PENDING = object()


class BuilderDied(RuntimeError):
    """The DICOM builder process ended before it returned this job's result."""


class Job:
    """The result of one submitted job, available from `result()` once the builder has run it."""

    def __init__(self, builder: DicomBuilder) -> None:
        self._builder = builder
        self._value: Any = _PENDING
        self._error: BaseException | None = None

    @property
    def pending(self) -> bool:
        return self._value is _PENDING and self._error is None

    def _settle(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value, self._error = value, error

    def result(self) -> Any:
        """The job's return value (waiting for it); raises the job's own exception if it failed."""
        if self.pending:
            self._builder._collect(self)
        if self._error is not None:
            raise self._error
        return self._value


class DicomBuilder:
    """Runs DICOM-writing jobs in a forked child (see `fork`), or in the caller."""

    def __init__(self, prepare: Callable[[], Any] | None = None) -> None:
        self._prepare = prepare  # run once before the first job, where the jobs run
        self.pid: int | None = None
        self._send: Any = None
        self._receive: Any = None
        self._pending: deque[Job] = deque()
        self._died: BuilderDied | None = None
        self.peak_rss_bytes: int | None = None  # the child's, once it is reaped (for report.json)
        self._closed = False

    @classmethod
    def fork(cls, prepare: Callable[[], Any] | None = None) -> DicomBuilder:
        """A builder whose jobs run in a new child process; `prepare` (an import) runs there first.

        Call it while the process has no other threads. Where os.fork does not exist, or fails
        (no memory, process limit), the jobs run in the caller.
        """
        builder = cls(prepare)
        if not hasattr(os, "fork"):
            return builder
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (jobs_r, jobs_w, results_r, results_w):
                os.close(fd)
            return builder
        if pid == 0:  # the child: never returns to the caller's code
            os.close(jobs_w)
            os.close(results_r)
            code = 1
            try:
                _serve(jobs_r, results_w, prepare)
                code = 0
            finally:
                os._exit(code)
        os.close(jobs_r)
        os.close(results_w)
        builder._prepare = None  # the child runs it
        builder.pid = pid
        builder._send = os.fdopen(jobs_w, "wb")
        builder._receive = os.fdopen(results_r, "rb")
        return builder

    def submit(self, function: Callable[..., Any], *args: Any) -> Job:
        """Run `function(*args)` in the builder; its result comes from the returned Job."""
        job = Job(self)
        if self._closed:
            job._settle(error=RuntimeError("the DICOM builder is closed"))
            return job
        if self.pid is None:
            prepare, self._prepare = self._prepare, None
            _prepare_once(prepare)
            try:
                job._settle(function(*args))
            except Exception as exc:
                job._settle(error=exc)
            return job
        if self._died is not None:
            job._settle(error=self._died)
            return job
        try:
            _write_frame(self._send, pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:  # an argument that cannot travel
            job._settle(error=exc)
            return job
        except OSError as exc:  # the child is gone (broken pipe)
            self._fail_pending(BuilderDied(f"the DICOM builder process ended ({exc})"))
            job._settle(error=self._died)
            return job
        self._pending.append(job)
        return job

    def _collect(self, wanted: Job) -> None:
        """Read results (they come back in submission order) until `wanted` has one."""
        while wanted.pending:
            try:
                frame = _read_frame(self._receive)
            except (EOFError, OSError) as exc:
                self._fail_pending(BuilderDied(f"the DICOM builder process ended before it finished ({exc})"))
                return
            job = self._pending.popleft()
            try:
                status, payload = pickle.loads(frame)
            except Exception as exc:  # e.g. an exception class that cannot be rebuilt here
                job._settle(error=RuntimeError(f"the DICOM builder's reply could not be read ({type(exc).__name__}: {exc})"))
                continue
            job._settle(payload) if status == "ok" else job._settle(error=payload)

    def _fail_pending(self, died: BuilderDied) -> None:
        self._died = died
        while self._pending:
            self._pending.popleft()._settle(error=died)

    def close(self, kill: bool = False) -> None:
        """Collect what is pending (or, with `kill`, stop the child at once), then reap the child.
        A closed builder takes no more jobs."""
        self._closed = True
        if self.pid is None:
            return
        pid = self.pid
        try:
            if kill:
                os.kill(pid, signal.SIGKILL)
            elif self._pending:
                self._collect(self._pending[-1])
        finally:
            self.pid = None
            for stream in (self._send, self._receive):
                with contextlib.suppress(OSError):
                    stream.close()
            _, _, usage = os.wait4(pid, 0)
            self.peak_rss_bytes = int(usage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
            if kill:
                self._fail_pending(BuilderDied("the DICOM builder process was stopped"))


def _prepare_once(prepare: Callable[[], Any] | None) -> None:
    """Run `prepare` (an import) if given; a failure is left to the job that needs it, which raises it itself."""
    if prepare is not None:
        with contextlib.suppress(Exception):
            prepare()


def _write_frame(stream: Any, data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_frame(stream: Any) -> bytes:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("no more frames")
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("truncated frame")
    return data


def _serve(jobs_fd: int, results_fd: int, prepare: Callable[[], Any] | None) -> None:
    """The child's loop: a reader thread drains the job pipe (so the parent never waits to submit)
    while this thread runs the jobs in order and writes each result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent handles it
    frames: queue.Queue[bytes | None] = queue.Queue()

    def read_jobs() -> None:
        with os.fdopen(jobs_fd, "rb") as jobs:
            while True:
                try:
                    frames.put(_read_frame(jobs))
                except (EOFError, OSError):
                    frames.put(None)
                    return

    threading.Thread(target=read_jobs, name="dicom-builder-jobs", daemon=True).start()
    _prepare_once(prepare)
    with os.fdopen(results_fd, "wb") as results:
        while (frame := frames.get()) is not None:
            try:
                function, args = pickle.loads(frame)
                reply = ("ok", function(*args))
            except Exception as exc:
                reply = ("error", exc)
            try:
                data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # a result or exception that cannot travel back
                data = pickle.dumps(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
            _write_frame(results, data)
