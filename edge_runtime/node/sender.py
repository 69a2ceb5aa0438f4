"""Delivers results from the outbox to every `--send` destination by C-STORE, on its own thread.

Per destination: one association per job, files in order (SEG first), each success recorded
on disk at once; a failure leaves the rest queued and backs off (`--retry-seconds` doubling up
to `--retry-max-seconds`). Results leave the outbox only when every destination has all of
them, so a destination that is down loses nothing. A kill after a C-STORE succeeded and before
it was recorded resends the same instance (same SOP Instance UID: the PACS keeps one copy).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from edge_runtime.node.config import Destination, NodeConfig
from edge_runtime.node.log import EventLog
from edge_runtime.node.spool import SEND_DIR, Job, Spool

_SUCCESS = {0x0000, 0xB000, 0xB006, 0xB007}  # success and the storage warnings (stored, with coercion)


class DeliveryError(Exception):
    """A destination did not take a file: the message says which and why."""


@dataclass
class DestinationState:
    """Back-off bookkeeping of one destination (also shown by the status command)."""

    failures: int = 0
    next_attempt: float = 0.0  # monotonic
    last_error: str | None = None
    delivered: int = 0


class Sender:
    """Thread-safe; `wake` after the worker adds a job, `drain` on shutdown."""

    def __init__(self, config: NodeConfig, spool: Spool, log: EventLog) -> None:
        self.config = config
        self.spool = spool
        self.log = log
        self.states = {d.key: DestinationState() for d in config.destinations}
        self.ae = AE(ae_title=config.ae_title)
        self.ae.acse_timeout = 10
        self.ae.dimse_timeout = 60
        self.ae.network_timeout = 30
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> int:
        return len(self.spool.outbox_jobs())

    def drain(self, deadline: float) -> bool:
        """Keep delivering until the outbox is empty or the monotonic `deadline`; True when empty."""
        while time.monotonic() < deadline and self.pending():
            self.wake()
            time.sleep(0.05)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        return not self.pending()

    # ------------------------------------------------------------------ loop

    def _loop(self) -> None:
        while True:
            try:
                next_at = self._round()
            except Exception as exc:  # a damaged record or a full disk: log, keep the thread, try again
                self.log("sender_error", error=f"{type(exc).__name__}: {exc}")
                next_at = time.monotonic() + self.config.retry_base_seconds
            with self._cond:
                if self._stopping:
                    return
                timeout = 1.0 if next_at is None else min(1.0, max(0.0, next_at - time.monotonic()))
                self._cond.wait(timeout)

    def _round(self) -> float | None:
        """One pass over the outbox; returns when a backed-off destination may be tried again."""
        next_at: float | None = None
        for job in self.spool.outbox_jobs():
            if self._stopping:
                return None
            result = self.spool.result(job)
            files = set(result.get("send", []))
            for destination in self.config.destinations:
                state = self.states[destination.key]
                done = self.spool.delivered(job, destination.key)
                if files <= done:
                    continue
                if time.monotonic() >= state.next_attempt:
                    self._deliver(job, destination, sorted(files), done, state)
                if not files <= self.spool.delivered(job, destination.key):
                    next_at = state.next_attempt if next_at is None else min(next_at, state.next_attempt)
            if all(files <= self.spool.delivered(job, d.key) for d in self.config.destinations):
                destinations = [str(d) for d in self.config.destinations]
                self.spool.close_job(job, {**result, "delivered_to": destinations, "closed": time.time()})
                self.log("job_delivered", job=job.id, study=job.key.study, series=job.key.series,
                         destinations=destinations, files=len(files))
        return next_at

    def _deliver(self, job: Job, destination: Destination, files: list[str], done: set[str], state: DestinationState) -> None:
        todo = [name for name in files if name not in done]
        started = time.perf_counter()
        try:
            sent = self._send(job, destination, todo, done)
        except DeliveryError as exc:
            state.failures += 1
            delay = min(self.config.retry_max_seconds, self.config.retry_base_seconds * 2 ** (state.failures - 1))
            state.next_attempt = time.monotonic() + delay
            state.last_error = str(exc)
            self.log("send_failed", job=job.id, destination=str(destination), error=str(exc), attempt=state.failures,
                     retry_in_s=round(delay, 2))
            return
        state.failures, state.next_attempt, state.last_error = 0, 0.0, None
        state.delivered += len(sent)
        self.log("send_ok", job=job.id, destination=str(destination), files=sent,
                 seconds=round(time.perf_counter() - started, 3))

    def _send(self, job: Job, destination: Destination, names: list[str], done: set[str]) -> list[str]:
        paths = [job.folder / SEND_DIR / name for name in names]
        contexts = _contexts(paths)
        try:
            assoc = self.ae.associate(destination.host, destination.port, contexts=contexts, ae_title=destination.ae_title)
        except Exception as exc:  # a name that does not resolve, a socket error
            raise DeliveryError(f"cannot connect ({type(exc).__name__}: {exc})") from exc
        if not assoc.is_established:
            why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer or connection refused"
            raise DeliveryError(f"association {why}")
        sent: list[str] = []
        try:
            for name, path in zip(names, paths, strict=True):
                try:
                    status = assoc.send_c_store(path)
                except (ValueError, AttributeError, RuntimeError) as exc:
                    raise DeliveryError(f"{name}: {exc}") from exc
                code = getattr(status, "Status", None)
                if code not in _SUCCESS:
                    detail = "no response (connection lost or timed out)" if code is None else f"status 0x{code:04X}"
                    raise DeliveryError(f"{name}: {detail}")
                done.add(name)
                sent.append(name)
                self.spool.mark_delivered(job, destination.key, done)
        finally:
            if assoc.is_established:
                assoc.release()
        return sent


def _contexts(paths: list[Path]) -> list:
    """One presentation context per SOP class: the file's own transfer syntax, then the uncompressed ones."""
    from pynetdicom.presentation import build_context

    wanted: dict[str, list[str]] = {}
    for path in paths:
        meta = read_file_meta_info(path)
        syntaxes = wanted.setdefault(str(meta.MediaStorageSOPClassUID), [])
        for ts in (str(meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            if ts not in syntaxes:
                syntaxes.append(ts)
    return [build_context(sop_class, syntaxes) for sop_class, syntaxes in wanted.items()]
