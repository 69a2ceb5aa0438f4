"""Import TensorFlow once with its native start-up lines kept in a log (the training side owns TensorFlow)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from edge_runtime.native_log import native_output_to


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
