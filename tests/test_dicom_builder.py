"""The DICOM builder: jobs in a forked child, in order, errors carried back, a dead child costs its jobs only."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from edge_runtime.dicom_builder import BuilderDied, DicomBuilder

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the forked builder needs os.fork (POSIX)")


def pid_and_value(value: int) -> tuple[int, int]:
    return os.getpid(), value


def append_line(path: Path, text: str) -> list[str]:
    with path.open("a") as handle:
        handle.write(text + "\n")
    return path.read_text().splitlines()


def fail(message: str) -> None:
    raise ValueError(message)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def big(n: int) -> bytes:
    return b"x" * n


def length(data: bytes) -> int:
    return len(data)


def test_jobs_run_in_another_process_in_submission_order(tmp_path: Path) -> None:
    builder = DicomBuilder.fork()
    try:
        log = tmp_path / "order.txt"
        jobs = [builder.submit(append_line, log, f"job {k}") for k in range(5)]
        assert jobs[-1].result() == [f"job {k}" for k in range(5)]  # all five ran, in order, before the last returned
        assert [len(j.result()) for j in jobs] == [1, 2, 3, 4, 5]
        child, value = builder.submit(pid_and_value, 7).result()
        assert (child != os.getpid(), child == builder.pid, value) == (True, True, 7)
    finally:
        builder.close()
    assert builder.pid is None and builder.peak_rss_bytes > 0
    with pytest.raises(RuntimeError, match="closed"):  # never silently in the caller after the child is gone
        builder.submit(pid_and_value, 8).result()


def test_a_jobs_exception_comes_back_with_its_type_and_message_and_the_next_job_still_runs() -> None:
    builder = DicomBuilder.fork()
    try:
        failed, after = builder.submit(fail, "no such tag"), builder.submit(pid_and_value, 3)
        with pytest.raises(ValueError, match="^no such tag$"):
            failed.result()
        assert after.result()[1] == 3
    finally:
        builder.close()


def test_large_jobs_and_results_cross_without_deadlock() -> None:
    """The child drains its job pipe while it writes a result the parent has not read yet; without
    that, a large job sent behind a large result would block both processes for ever."""
    builder = DicomBuilder.fork()
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the builder deadlocked"))
    signal.alarm(30)
    try:
        first = builder.submit(big, 3_000_000)  # a result far beyond the 64 KiB pipe buffer
        time.sleep(0.2)  # the child is now blocked writing it
        second = builder.submit(length, b"y" * 3_000_000)  # and this job is as large
        assert (len(first.result()), second.result()) == (3_000_000, 3_000_000)
    finally:
        signal.alarm(0)
        builder.close()


def test_an_argument_that_cannot_be_pickled_fails_that_job_only() -> None:
    builder = DicomBuilder.fork()
    try:
        bad = builder.submit(pid_and_value, lambda: None)
        with pytest.raises(Exception, match="pickle|lambda"):
            bad.result()
        assert builder.submit(pid_and_value, 1).result()[1] == 1
    finally:
        builder.close()


def test_a_child_that_dies_fails_the_jobs_it_held_and_every_later_one() -> None:
    builder = DicomBuilder.fork()
    try:
        first = builder.submit(pid_and_value, 1)
        assert first.result()[1] == 1
        dying, queued = builder.submit(die), builder.submit(pid_and_value, 2)
        for job in (dying, queued):
            with pytest.raises(BuilderDied, match="ended before it finished"):
                job.result()
        with pytest.raises(BuilderDied):
            builder.submit(pid_and_value, 3).result()
        assert first.result()[1] == 1  # a collected result stays
    finally:
        builder.close()


def test_kill_stops_a_running_job_at_once_and_fails_what_it_held() -> None:
    builder = DicomBuilder.fork()
    pid = builder.pid
    slow = builder.submit(sleep, 60)
    started = time.monotonic()
    builder.close(kill=True)
    assert time.monotonic() - started < 10
    with pytest.raises(BuilderDied, match="stopped"):
        slow.result()
    with pytest.raises(ProcessLookupError):  # reaped, not a zombie
        os.kill(pid, 0)


def test_the_inline_builder_runs_each_job_at_once_in_the_caller() -> None:
    builder = DicomBuilder()
    job = builder.submit(pid_and_value, 5)
    assert not job.pending and job.result() == (os.getpid(), 5)
    with pytest.raises(ValueError, match="inline"):
        builder.submit(fail, "inline").result()
    builder.close()  # nothing to reap


def write_pid(path: Path) -> None:
    path.write_text(str(os.getpid()))


def test_prepare_runs_once_where_the_jobs_run(tmp_path: Path) -> None:
    forked = DicomBuilder.fork(prepare=lambda: write_pid(tmp_path / "forked"))
    try:
        child = forked.submit(pid_and_value, 0).result()[0]
        assert int((tmp_path / "forked").read_text()) == child != os.getpid()
    finally:
        forked.close()
    calls: list[int] = []
    inline = DicomBuilder(prepare=lambda: calls.append(os.getpid()))
    assert calls == []  # not before a job needs it
    inline.submit(pid_and_value, 1)
    inline.submit(pid_and_value, 2)
    assert calls == [os.getpid()]
