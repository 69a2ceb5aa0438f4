"""Native start-up lines of the interpreters stay off the console; the program's own output does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_run_prints_no_xnnpack_line(tmp_path: Path) -> None:
    env = {**os.environ, "EDGE_SEG_CACHE_DIR": str(tmp_path / "cache")}
    exe = Path(sys.executable).with_name("edge-seg")
    result = subprocess.run(
        [str(exe), "run", str(ROOT / "examples" / "study"), "-o", str(tmp_path / "out"), "--format", "png",
         "--backend", "litert", "--threads", "1"],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stdout + result.stderr
    assert "segmenting" in result.stderr and "results in" in result.stderr  # our own lines still reach the console
