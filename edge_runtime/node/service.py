"""`edge-seg serve`: wires spool, SCP, tracker, worker, sender and watch folder; signals and drain.

Start-up: lock the spool (one node per spool), `recover` what a kill interrupted, load the
model once, then listen. SIGTERM/SIGINT drain: stop listening, let associations in progress
finish, keep processing and sending until the queue and outbox are empty or `--drain-seconds`
pass, then exit 0. Whatever is left stays in the spool for the next start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge_runtime.node.config import NodeConfig, NodeConfigError
from edge_runtime.node.log import EventLog
from edge_runtime.node.spool import SeriesKey, Spool
from edge_runtime.node.status import read_status, write_status
from edge_runtime.node.tracker import Claim, SeriesTracker

LOCK_NAME = ".node.lock"
_PRUNE_EVERY_S = 3600.0


class SpoolBusy(NodeConfigError):
    """Another node holds this spool."""


def lock_spool(root: Path) -> int:
    """An exclusive flock on SPOOL/.node.lock (released by the kernel when the holder dies)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        holder = (root / LOCK_NAME).read_text(encoding="utf-8", errors="replace").strip() or "another process"
        raise SpoolBusy(f"spool {root} is in use by {holder}; one node per spool") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"edge-seg serve pid {os.getpid()}\n".encode())
    return fd


def series_name(folder: Path) -> str:
    """A readable folder name for the run's outputs: S<SeriesNumber>_<SeriesDescription> of the first instance."""
    from pydicom import dcmread

    for path in sorted(folder.glob("*.dcm"))[:1]:
        with contextlib.suppress(Exception):
            ds = dcmread(path, stop_before_pixels=True, specific_tags=["SeriesNumber", "SeriesDescription"])
            number, description = ds.get("SeriesNumber", ""), str(ds.get("SeriesDescription", "") or "")
            return f"S{number}_{description}".strip("_") if number != "" else (description or "series")
    return "series"


class Node:
    """The running parts of one node."""

    def __init__(self, config: NodeConfig, log: EventLog) -> None:
        from edge_runtime.node.sender import Sender
        from edge_runtime.node.worker import Worker

        self.config = config
        self.log = log
        self.spool = Spool(config.spool)
        self.started = time.time()
        self.stop = threading.Event()
        self.draining = False
        recovery = self.spool.recover()
        self.log("recovered", **dataclasses.asdict(recovery))
        self.worker = Worker(config, self.spool, log, on_done=self._job_done)
        self.sender = Sender(config, self.spool, log)
        self.tracker = SeriesTracker(config.quiet_seconds, self._series_ready)
        for key in self.spool.waiting_series():
            self.tracker.recovered(key)
        self.scp: Any = None
        self.watch: Any = None

    def _series_ready(self, key: SeriesKey) -> Claim:
        if self.spool.busy(key):
            return Claim.BUSY
        name = series_name(self.spool.series / key.study / key.series)
        outcome, job = self.spool.claim(key, name)
        if job is not None:
            self.log("series_complete", source="dicom", job=job.id, study=key.study, series=key.series,
                     instances=job.info["instances"])
            self.worker.wake()
        elif outcome == "duplicate":
            self.log("series_duplicate", study=key.study, series=key.series,
                     reason="every instance was processed before (still in done/): not run again")
        return Claim(outcome)

    def _job_done(self) -> None:
        self.sender.wake()
        self._write_status()  # last_study at once, not up to a second later

    def start(self) -> int | None:
        from edge_runtime.node.scp import StorageSCP
        from edge_runtime.node.watch import WatchFolder

        self.worker.start()
        self.sender.start()
        self.tracker.start()
        port = None
        if self.config.scp:
            self.scp = StorageSCP(self.config, self.spool, self.tracker, self.log)
            port = self.scp.start()
        if self.config.watch is not None:
            self.watch = WatchFolder(self.config.watch, self.config.quiet_seconds, self.spool, self.log, self.worker.wake)
            self.watch.start()
        return port

    def status_fields(self) -> dict[str, Any]:
        c = self.config
        return {
            "ae_title": c.ae_title, "host": c.host, "port": self.scp.port if self.scp else None,
            "listening": bool(self.scp) and not self.draining, "watch": str(c.watch) if c.watch else None,
            "started": self.started, "draining": self.draining,
            "active_associations": self.scp.active() if self.scp else 0,
            "in_progress": self.worker.current.id if self.worker.current else None,
            "processed": self.worker.processed, "last_study": self.worker.last, "errors": self.worker.errors,
            "destinations": {str(d): dataclasses.asdict(self.sender.states[d.key]) for d in c.destinations},
        }

    def run_until_stopped(self) -> None:
        last_prune = float("-inf")  # prune once at start, then hourly
        while not self.stop.wait(1.0):
            self._write_status()
            if time.monotonic() - last_prune > _PRUNE_EVERY_S:
                last_prune = time.monotonic()
                removed = self.spool.prune(self.config.retain_hours)
                if removed:
                    self.log("pruned", entries=removed, retain_hours=self.config.retain_hours)

    def drain(self, reason: str) -> bool:
        """Stop receiving, finish what can be finished before the deadline; True when nothing was left."""
        self.draining = True
        deadline = time.monotonic() + self.config.drain_seconds
        self.log("node_draining", reason=reason, drain_seconds=self.config.drain_seconds)
        if self.scp is not None:
            self.scp.stop_listening()
            self.scp.wait_idle(deadline)
        if self.watch is not None:
            self.watch.stop()
        self.tracker.stop()
        self.worker.drain(deadline)
        self.sender.drain(max(deadline, time.monotonic() + 5.0) if self.config.destinations else deadline)
        status = self._write_status(stopped=True)
        left = {k: status[k] for k in ("series_waiting", "queue_length", "outbox_pending", "held_instances")}
        self.log("node_stopped", left_in_spool=left, processed=self.worker.processed)
        return not any(left.values())

    def _write_status(self, **extra: Any) -> dict[str, Any]:
        try:
            return write_status(self.spool, {**self.status_fields(), **extra})
        except OSError as exc:  # a full disk must not stop the node; the status is only informative
            self.log("status_error", error=str(exc))
            return {"series_waiting": 0, "queue_length": 0, "outbox_pending": 0, "held_instances": 0}


def print_status(spool: Path) -> int:
    """`edge-seg serve --status`: exit 0 when the node runs, 1 when it does not, 2 without a spool."""
    try:
        status = read_status(spool)
    except FileNotFoundError as exc:
        print(json.dumps({"running": False, "error": str(exc)}))
        return 2
    print(json.dumps(status, indent=2, default=str))
    return 0 if status["running"] else 1


def serve_command(config: NodeConfig, show_status: bool = False) -> int:
    """Run the node until SIGTERM/SIGINT; returns the exit status (2: bad option, busy spool, model, port)."""
    from rich.console import Console
    from rich.markup import escape

    from edge_runtime.backends import BackendError
    from edge_runtime.manifest import ManifestError
    from edge_runtime.run import UsageError

    err = Console(stderr=True, soft_wrap=True)
    if show_status:
        return print_status(config.spool)
    log: EventLog | None = None
    lock_fd = None
    try:
        config.validate()
        lock_fd = lock_spool(config.spool)
        config.output.mkdir(parents=True, exist_ok=True)
        log = EventLog(config.log_path)
        if not config.allowed_aets and config.scp:
            log("warning", message="no --allow given: any calling AE title may store to this node")
        node = Node(config, log)
        port = node.start()
    except (NodeConfigError, UsageError, ManifestError, BackendError, ValueError, OSError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        if log is not None:
            log("node_failed", error=str(exc))
            log.close()
        if lock_fd is not None:
            os.close(lock_fd)
        return 2
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        node.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log("node_started", pid=os.getpid(), ae_title=config.ae_title, host=config.host, port=port, watch=config.watch,
        allowed_aets=list(config.allowed_aets), destinations=[str(d) for d in config.destinations],
        spool=str(config.spool), output=str(config.output), quiet_seconds=config.quiet_seconds,
        min_free_mb=config.min_free_mb, formats=config.formats, model=str(node.worker.segmenter.model_path),
        backend=node.worker.segmenter.backend.name, threads=node.worker.segmenter.backend.threads,
        highdicom_loaded=node.worker.highdicom, python=sys.version.split()[0])
    try:
        node.run_until_stopped()
        name = signal.Signals(received[0]).name if received else "stop"
        node.drain(f"signal {name}")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.close()
        os.close(lock_fd)
    return 0
