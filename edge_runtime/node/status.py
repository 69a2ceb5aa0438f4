"""`SPOOL/status.json`: what the node is doing, rewritten every second; `edge-seg serve --status` reads it.

Queue counts come from the spool itself, so the status is right even about a node that is
down (then `running` is false: its pid is gone or the file is older than 10 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_write_text
from edge_runtime.node.spool import RESULT_FILE, Spool

STATUS_NAME = "status.json"
STALE_SECONDS = 10.0


def spool_counts(spool: Spool) -> dict[str, int]:
    """Counts of every state in the spool (cheap: folder listings)."""
    jobs = spool.jobs()
    return {
        "receiving_associations": sum(1 for p in spool.incoming.iterdir() if p.is_dir()),
        "series_waiting": len(spool.waiting_series()),
        "queue_length": sum(1 for j in jobs if not (j.folder / RESULT_FILE).exists()),
        "outbox_pending": len(spool.outbox_jobs()),
        "held_instances": spool.held_instances(),
        "failed_jobs": sum(1 for p in spool.failed.iterdir() if p.is_dir()),
        "delivered_jobs": sum(1 for _ in spool.sent.glob("*.json")),
    }


def write_status(spool: Spool, fields: dict[str, Any]) -> dict[str, Any]:
    status = {
        "pid": os.getpid(),
        "updated": time.time(),
        "disk_free_mb": shutil.disk_usage(spool.root).free >> 20,
        **spool_counts(spool),
        **fields,
    }
    atomic_write_text(spool.root / STATUS_NAME, json.dumps(status, indent=2, default=str) + "\n")
    return status


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_status(spool_root: Path) -> dict[str, Any]:
    """The last status.json with live spool counts and `running`; raises FileNotFoundError without a spool."""
    spool = Spool(spool_root)
    if not spool.queue.is_dir():
        raise FileNotFoundError(f"{spool_root} is not an edge-seg spool (no queue/ folder)")
    status: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        status = json.loads((spool.root / STATUS_NAME).read_text(encoding="utf-8"))
    fresh = time.time() - float(status.get("updated", 0)) < STALE_SECONDS
    status["running"] = bool(status) and fresh and _alive(status.get("pid")) and not status.get("stopped")
    status.update(spool_counts(spool))
    return status
