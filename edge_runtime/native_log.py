"""Keep native libraries' console output (TensorFlow, the TFLite converter, XNNPACK) in a log file.

C++ code writes straight to file descriptors 1 and 2, past Python's sys.stdout/sys.stderr, so
lines like `INFO: Created TensorFlow Lite XNNPACK delegate` or the converter's `I0000 ...`
reach the console whatever the command prints. Redirecting the descriptors for the duration of
a call records them where they can still be read.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def native_output_to(log: Path, append: bool = True) -> Iterator[Path]:
    """Send everything written to fds 1 and 2 inside the block to `log`, then restore both.

    Python's own streams are flushed before and after, so nothing printed before the block ends
    up in the log and nothing printed inside it is lost. `append` False starts the log afresh.
    """
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "ab" if append else "wb") as handle:
        try:
            os.dup2(handle.fileno(), 1)
            os.dup2(handle.fileno(), 2)
            yield log
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
