"""The per-user cache folder for things worth keeping between runs (backend choice, compiled models).

$EDGE_SEG_CACHE_DIR overrides it (tests point it at a temporary folder); else
$XDG_CACHE_HOME/edge-seg, else ~/.cache/edge-seg. Everything in it can be deleted at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EDGE_SEG_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (not created here: writers create what they need and survive failure)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-seg"
