"""Where a model came from: source commit, library versions, machine and time."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edge_runtime import __version__

SOURCE_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "numpy")


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """Commit and dirty flag of the source tree, or {} when it is not a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


def package_versions() -> dict[str, str]:
    out = {"edge-seg": __version__}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """A JSON-ready record for config.json and manifests; `extra` adds e.g. recipe or seed."""
    return {
        **git_state(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "versions": package_versions(),
        **extra,
    }
