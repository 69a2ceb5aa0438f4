"""One progress-bar style for every long-running command (rich, on stderr)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

QUIET_ENV = "EDGE_SEG_QUIET"
"""Set (to 1) by `edge-seg --quiet`; an environment variable so worker processes inherit it."""


def set_quiet(quiet: bool) -> None:
    """Switch progress bars off (True) or back on for this process and the processes it starts."""
    if quiet:
        os.environ[QUIET_ENV] = "1"
    else:
        os.environ.pop(QUIET_ENV, None)


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(completed)` that moves a stderr progress bar to `completed` of `total`
    (a no-op under `--quiet`)."""
    if is_quiet():
        yield lambda completed: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total)
        yield lambda completed: progress.update(task, completed=completed)
