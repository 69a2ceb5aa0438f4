"""When is a series complete? After `--quiet-seconds` without a new instance, and every association
that brought instances of it has been released (an aborted one contributes nothing until a clean
delivery of the same series). The tracker only decides; `on_ready` claims the series in the spool.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from edge_runtime.node.spool import SeriesKey


class Claim(StrEnum):
    """What `on_ready` did with a complete series."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"
    EMPTY = "empty"
    BUSY = "busy"  # a job of the same series is still queued or running: ask again shortly


@dataclass
class _Series:
    last_instance: float
    open_associations: set[str] = field(default_factory=set)
    released: bool = False  # some of its instances are in series/ (released or recovered)


class SeriesTracker:
    """Thread-safe; its own thread calls `on_ready(key)` once a series is complete."""

    def __init__(self, quiet_seconds: float, on_ready: Callable[[SeriesKey], Claim], clock: Callable[[], float] = time.monotonic):
        self.quiet = quiet_seconds
        self.on_ready = on_ready
        self._clock = clock
        self._series: dict[SeriesKey, _Series] = {}
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="series-tracker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    def instance(self, key: SeriesKey, association: str) -> None:
        with self._cond:
            state = self._series.setdefault(key, _Series(self._clock()))
            state.last_instance = self._clock()
            state.open_associations.add(association)

    def association_ended(self, association: str, keys: list[SeriesKey], released: bool) -> None:
        """`released`: its instances are now in series/; else they were held."""
        with self._cond:
            for key in keys:
                state = self._series.get(key)
                if state is None:
                    state = self._series[key] = _Series(self._clock())
                state.open_associations.discard(association)
                state.released = state.released or released
                if not state.released and not state.open_associations:
                    del self._series[key]
            self._cond.notify_all()

    def recovered(self, key: SeriesKey) -> None:
        """A series found in series/ at start-up: complete after a fresh quiet time."""
        with self._cond:
            self._series[key] = _Series(self._clock(), released=True)
            self._cond.notify_all()

    def waiting(self) -> int:
        with self._cond:
            return len(self._series)

    def _due(self, now: float) -> tuple[list[SeriesKey], float | None]:
        due, next_at = [], None
        for key, state in self._series.items():
            if not state.released or state.open_associations:
                continue
            at = state.last_instance + self.quiet
            if at <= now:
                due.append(key)
            else:
                next_at = at if next_at is None else min(next_at, at)
        return due, next_at

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopped:
                    return
                due, next_at = self._due(self._clock())
                if not due:
                    timeout = None if next_at is None else max(0.0, next_at - self._clock())
                    self._cond.wait(timeout if timeout is not None else 1.0)
                    continue
                for key in due:  # claimed outside the lock below; taken out now so no instance is missed
                    del self._series[key]
            for key in due:
                try:
                    outcome = self.on_ready(key)
                except Exception:  # e.g. a full disk while claiming: the series stays in series/, ask again
                    outcome = Claim.BUSY
                if outcome is Claim.BUSY:
                    with self._cond:
                        state = self._series.setdefault(key, _Series(self._clock(), released=True))
                        state.last_instance = max(state.last_instance, self._clock() - self.quiet + min(self.quiet, 0.5))
