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


def import_tensorflow_quietly(log: Path) -> bool:
    """Import TensorFlow (if installed and not yet imported) with its start-up lines sent to `log`.

    TensorFlow's C++ start-up messages (oneDNN, CUDA probing, absl's "All log messages before
    absl::InitializeLog()") ignore TF_CPP_MIN_LOG_LEVEL; importing it here once keeps them off
    the console. Returns True when TensorFlow is imported afterwards. An import error is left for
    the command itself to report.
    """
    import importlib.util

    if "tensorflow" in sys.modules:
        return True
    if importlib.util.find_spec("tensorflow") is None:
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with native_output_to(log, append=False):
            import tensorflow  # noqa: F401
    except (ImportError, OSError):
        return False
    return True
