"""The README's quick start and runtime examples, run exactly as written (in a scratch folder).

The shell lines that install packages (`python3.11 -m venv`, `pip install`) are not run: they
need a package index. The test checks that they are the only lines left out, so a command added
to these sections is run here or the test says so. The long workflow is run with small sizes by
scripts/readme_workflow.py (minutes: EDGE_SEG_README_WORKFLOW=1 runs it here too).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
INSTALL = re.compile(r"^(python3(\.\d+)? -m venv|pip install|\.venv/bin/pip install)")


def bash_blocks(section: str) -> list[list[str]]:
    """Command lines (comments and blank lines dropped) of each ```bash block under `## section`."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^##+ {re.escape(section)}.*?$(.*?)(?=^## )", text, flags=re.M | re.S)
    assert match, f"README has no section {section!r}"
    blocks = re.findall(r"```bash\n(.*?)```", match.group(1), flags=re.S)
    return [[line.split("  #")[0].strip() for line in b.splitlines() if line.strip() and not line.startswith("#")]
            for b in blocks]  # fmt: skip


def _scratch(tmp_path: Path) -> Path:
    """A folder where the README's relative paths (.venv, examples) mean what they mean in the repo."""
    # the README's .venv is whatever environment runs the tests (CI installs into .ci-venv)
    venv = ROOT / ".venv" if (ROOT / ".venv").exists() else Path(sys.prefix)
    if not (venv / "bin" / "edge-seg").exists():
        pytest.skip(f"{venv} has no edge-seg: the quick start needs the installed package")
    if not (ROOT / "examples").exists():
        pytest.skip(f"{ROOT / 'examples'} is missing: the quick start needs the bundled example")
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _run(line: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_only_install_lines_are_left_out():
    for section in ("Quick start", "Data"):
        for block in bash_blocks(section):
            left_out = [line for line in block if not line.startswith(("edge-seg ", ".venv/bin/edge-seg "))]
            assert all(INSTALL.match(line) or line.startswith(".venv/bin/python -m pytest") for line in left_out), left_out


def test_quick_start_runs_as_written_and_says_how_to_run_it_again(tmp_path):
    cwd = _scratch(tmp_path)
    (command,) = [line for block in bash_blocks("Quick start") for line in block if "edge-seg run" in line]
    assert shlex.split(command)[:2] == [".venv/bin/edge-seg", "run"]
    first = _run(command, cwd)
    assert first.returncode == 0, first.stderr
    out = cwd / shlex.split(command)[shlex.split(command).index("-o") + 1]
    assert (out / "summary.json").is_file() and (out / "report.json").is_file()
    assert list(out.glob("*/*_seg.dcm")) or "highdicom" in first.stderr  # the SEG, or the note on what to install
    assert "Dice" in first.stdout + first.stderr  # scored against the example's ground truth
    again = _run(command, cwd)
    assert again.returncode == 2 and "--overwrite" in again.stderr  # existing outputs are kept
    quick_start = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "--overwrite" in quick_start, "the README should say how to run the quick start again"
    assert _run(command + " --overwrite", cwd).returncode == 0


def test_synthetic_data_examples_run(tmp_path):
    """Each `edge-seg synth` line of the Data section: as written up to 60 patients; larger sets
    (the training-set recipes) with 8 patients, every other option as written."""
    commands = [line for block in bash_blocks("Data") for line in block if line.startswith("edge-seg synth")]
    assert commands
    for command in commands:
        patients = int(re.search(r"--patients (\d+)", command).group(1))
        line = command if patients <= 60 else re.sub(r"--patients \d+", "--patients 8", command)
        done = _run(line, tmp_path)
        assert done.returncode == 0, (line, done.stderr)
        folder = tmp_path / shlex.split(line)[2]
        assert (folder / "truth.csv").is_file(), line
        assert (folder / "preview.png").is_file() == ("--preview" in line), line
        if "--dicom" in line:
            assert any(folder.rglob("*.dcm")) or any(folder.rglob("*.ima")), "--dicom writes DICOM studies"


@pytest.mark.skipif(not os.environ.get("EDGE_SEG_README_WORKFLOW"),
                    reason="minutes of training and export: set EDGE_SEG_README_WORKFLOW=1 to run the long workflow")  # fmt: skip
def test_long_workflow_runs_with_small_sizes(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "readme_workflow.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=3600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
