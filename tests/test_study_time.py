"""The whole-study benchmark's process measurement: wall, CPU and the child's own peak RSS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Run from a small driver process: Linux counts a child's pre-exec memory (a copy of its parent's)
# into its ru_maxrss, and this test process may hold TensorFlow.
DRIVER = """
import json, os, sys
from benchmarks.study_time import run_measured
allocate = "import sys; b = bytearray(80 * 2**20); b[::4096] = bytes(len(b[::4096])); sys.exit(3)"
big = run_measured([sys.executable, "-c", allocate], dict(os.environ))
small = run_measured([sys.executable, "-c", "pass"], dict(os.environ))
print(json.dumps([big.__dict__, small.__dict__]))
"""


def test_peak_rss_and_exit_status_are_the_child_s_own() -> None:
    proc = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=120, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    big, small = json.loads(proc.stdout)
    assert big["returncode"] == 3 and small["returncode"] == 0
    assert big["peak_rss_bytes"] >= small["peak_rss_bytes"] + 70 * 2**20  # 80 MiB touched in that child only
    assert big["wall_s"] > 0 and big["cpu_s"] > 0


FORKING = """
import os, time
mine = bytearray(40 * 2**20); mine[::4096] = b"x" * len(mine[::4096])
pid = os.fork()
if pid == 0:
    theirs = bytearray(80 * 2**20); theirs[::4096] = b"y" * len(theirs[::4096])
    time.sleep(0.5)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_sampled_memory_adds_up_a_forked_child_and_counts_shared_pages_once() -> None:
    from benchmarks.study_time import sample_memory

    sampled = sample_memory([sys.executable, "-c", FORKING], dict(os.environ))
    if sampled is None:
        pytest.skip("no /proc/PID/smaps_rollup on this system")
    assert sampled["processes"] == 2
    # 40 MiB in the parent (shared with the child after the fork: once in PSS, twice in RSS) + 80 MiB in the child
    assert 120 * 2**20 / 1e6 <= sampled["peak_pss_mb"] < 120 * 2**20 / 1e6 + 60
    assert sampled["peak_rss_mb"] >= sampled["peak_pss_mb"] + 30 * 2**20 / 1e6
