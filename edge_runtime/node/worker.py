"""The one long-lived worker: keeps the model, backend and highdicom loaded, runs each queued
series through the same pipeline as `edge-seg run` (`edge_runtime.run.run_command`), and hands
the DICOM results to the outbox.

Outputs land in OUTPUT/<StudyInstanceUID>/<SeriesInstanceUID>/ (watch-folder jobs:
OUTPUT/<StudyInstanceUID>/watch-<folder>/), each a complete `edge-seg run` output folder,
replaced when the series is processed again.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_runtime.node.config import NodeConfig
from edge_runtime.node.log import EventLog
from edge_runtime.node.spool import Job, Spool
from edge_runtime.outputs import SUMMARY_NAME
from edge_runtime.progress import set_quiet
from edge_runtime.run import resolve_model, run_command
from edge_runtime.segmenter import Segmenter


def dicom_results(output: Path, summary: dict[str, Any]) -> list[Path]:
    """The run's DICOM files in sending order: SEG(s), then SR, then the key-image Secondary Capture."""
    files = [output / f for f in summary.get("relative_files", []) if str(f).endswith(".dcm")]

    def rank(path: Path) -> tuple[int, str]:
        name = path.name
        return (0 if name.endswith("_seg.dcm") else 1 if name.endswith("_sr.dcm") else 2, str(path))

    return sorted((p for p in files if p.is_file()), key=rank)


class Worker:
    """Processes jobs one at a time, oldest first; `wake` when a job is queued."""

    def __init__(self, config: NodeConfig, spool: Spool, log: EventLog, on_done: Callable[[], None]) -> None:
        self.config = config
        self.spool = spool
        self.log = log
        self.on_done = on_done
        set_quiet(True)  # no progress bar per job on stderr: the node's record of a job is its JSON log
        self.segmenter = Segmenter(resolve_model(config.model), backend=config.backend, threads=config.threads,
                                   batch_size=config.batch_size)
        self.highdicom = self._preload_highdicom()
        self.current: Job | None = None
        self.last: dict[str, Any] | None = None
        self.processed = 0
        self.errors: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._drain_until: float | None = None
        self._thread = threading.Thread(target=self._loop, name="worker", daemon=True)

    @staticmethod
    def _preload_highdicom() -> bool:
        """Import highdicom once for the node's life (a CLI run pays ~0.3-0.5 s for it every time)."""
        from edge_runtime.dicom_seg import seg_unavailable_reason

        if seg_unavailable_reason() is not None:
            return False
        from edge_runtime.highdicom_tables import import_highdicom

        import_highdicom()
        return True

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def drain(self, deadline: float) -> bool:
        """Go on with queued jobs until the monotonic `deadline`, then stop after the current one."""
        with self._cond:
            self._drain_until = deadline
            self._cond.notify_all()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + 120)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._drain_until is not None and time.monotonic() >= self._drain_until:
                    return
            job = self.spool.next_job()
            if job is None:
                with self._cond:
                    if self._drain_until is not None:
                        return
                    self._cond.wait(1.0)
                continue
            try:
                self.process(job)
            except Exception as exc:  # e.g. the spool's disk full while recording: the job stays queued, retried
                self.current = None
                self._error(job, f"worker error ({type(exc).__name__}: {exc})")
                time.sleep(1.0)
                continue
            self.on_done()

    def process(self, job: Job) -> None:
        """Run one job; its failure is logged and, after --max-attempts, parks the job in failed/."""
        attempt = self.spool.start_attempt(job)
        if attempt > self.config.max_attempts:
            self.spool.fail_job(job, f"gave up after {attempt - 1} attempts (the node stopped while running it)")
            self._error(job, "gave up", attempts=attempt - 1)
            return
        self.current = job
        started = time.perf_counter()
        output = self.config.output / job.key.study / job.key.series
        self.log("job_started", job=job.id, study=job.key.study, series=job.key.series, instances=job.info.get("instances"),
                 attempt=attempt, output=str(output))
        try:
            code = run_command(
                input=job.input, output=output, loaded=self.segmenter, formats=self.config.formats,
                overwrite=True, quiet=True, ts_relative_mm2=self.config.ts_relative_mm2,
                ts_absolute_mm2=self.config.ts_absolute_mm2,
            )
            summary = _read_summary(output) if code in (0, 1) else None
        except Exception as exc:  # the pipeline keeps its failures per slice; this is a bug or a full disk
            code, summary = -1, None
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = None if summary is not None else f"edge-seg run exit status {code} (its message is on stderr)"
        finally:
            self.current = None
        seconds = round(time.perf_counter() - started, 3)
        skipped = _nothing_to_segment(job.input) if code == 2 else None
        if skipped is not None:  # a sagittal or localizer series of a pushed study: normal, not an error
            self.spool.finish_job(job, {"job": job.id, "study": job.key.study, "series": job.key.series,
                                        "status": "not_segmented", "reason": skipped, "send": [], "seconds": seconds,
                                        "finished": time.time()})
            self.log("job_skipped", job=job.id, study=job.key.study, series=job.key.series, reason=skipped, seconds=seconds)
            return
        if summary is None:  # other exit 2 (a bad input, the output folder) will not change on a retry
            if code == 2 or attempt >= self.config.max_attempts:
                self.spool.fail_job(job, error or "failed")
            self._error(job, error or "failed", exit_code=code, attempt=attempt, seconds=seconds)
            return
        files = dicom_results(output, summary)
        names = self.spool.stage_results(job, files)
        result = {
            "job": job.id, "study": job.key.study, "series": job.key.series, "source": job.info.get("source"),
            "output": str(output), "exit_code": code, "status": summary.get("status"),
            "slices_segmented": summary.get("n_slices_segmented"), "send": names, "seconds": seconds,
            "finished": time.time(),
        }
        self.spool.finish_job(job, result)
        self.processed += 1
        self.last = {"study": job.key.study, "series": job.key.series, "job": job.id, "exit_code": code,
                     "seconds": seconds, "finished": result["finished"]}
        self.log("job_done", job=job.id, study=job.key.study, series=job.key.series, exit_code=code, seconds=seconds,
                 slices_segmented=result["slices_segmented"], files=names)

    def _error(self, job: Job, error: str, **fields: Any) -> None:
        entry = {"job": job.id, "study": job.key.study, "series": job.key.series, "error": error, "time": time.time(), **fields}
        self.errors = [*self.errors[-9:], entry]
        self.log("job_failed", **entry)


def _nothing_to_segment(folder: Path) -> str | None:
    """Why `edge-seg run` found nothing to segment here (its own discovery and rules), or None for another error."""
    from edge_runtime.discovery import discover

    try:
        study = discover(folder)
    except Exception:  # the run's own error stands
        return None
    if study.selected or study.failed:
        return None
    reasons = [reason for _, reason in study.excluded] + [issue.reason for issue in study.skipped[:3]]
    return "; ".join(dict.fromkeys(reasons)) or "no slices"


def _read_summary(output: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((output / SUMMARY_NAME).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else None
    return None
