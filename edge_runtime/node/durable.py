"""Crash-safe file operations: temp file, fsync, rename, fsync of the folder.

`edge_runtime.atomic` makes writes atomic for readers; the node also needs them durable
(a C-STORE success or a state change must survive a power cut or SIGKILL), so every
write here is flushed to disk and so is the folder entry that names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename or create in it is durable only after this)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that after return it is on disk whole, or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{secrets.token_hex(6)}-{path.name}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_json_durable(path: Path, data: Any) -> None:
    write_durable(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def rename_durable(source: Path, target: Path) -> None:
    """Move `source` to `target` (same file system) and flush both folders."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    fsync_dir(target.parent)
    if source.parent != target.parent:
        fsync_dir(source.parent)


def remove_tree(path: Path) -> None:
    """Remove a folder: first renamed aside (one atomic step), then deleted."""
    import shutil

    if not path.exists():
        return
    aside = path.parent / f"{TMP_PREFIX}rm-{secrets.token_hex(6)}-{path.name}"
    os.replace(path, aside)
    fsync_dir(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


def sweep_temporaries(folder: Path) -> int:
    """Delete leftovers of writes and removals a kill interrupted (never a finished file)."""
    import shutil

    removed = 0
    if not folder.is_dir():
        return 0
    for root, dirs, files in os.walk(folder):
        for name in files:
            if name.startswith(TMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
        for name in list(dirs):
            if name.startswith(TMP_PREFIX):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                dirs.remove(name)
                removed += 1
    return removed
