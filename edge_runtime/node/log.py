"""Structured log: one JSON object per line and event, for journald, Docker or a log shipper."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO


class EventLog:
    """Thread-safe JSON-lines writer; `event` is the one required key, `ts` is UTC ISO 8601."""

    def __init__(self, path: Path | None = None, stream: TextIO | None = None) -> None:
        self._lock = threading.Lock()
        self._file: TextIO | None = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115
        self._stream = stream if stream is not None else (None if self._file else sys.stdout)

    def __call__(self, event: str, **fields: Any) -> None:
        now = time.time()
        record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
                  "event": event, **fields}
        line = json.dumps(record, default=str, ensure_ascii=True) + "\n"
        with self._lock:
            for out in (self._file, self._stream):
                if out is None:
                    continue
                try:
                    out.write(line)
                    out.flush()
                except (OSError, ValueError):  # a full disk must not stop the node: the line goes to stderr
                    sys.stderr.write(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
