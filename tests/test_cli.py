"""The edge-seg entry point: help, version, and clear hints when an extra is missing."""

import subprocess
import sys

from typer.testing import CliRunner

from edge_runtime import __version__
from edge_runtime.cli import app

runner = CliRunner()


def test_version_and_help_list_every_command():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    help_text = runner.invoke(app, ["--help"]).output
    for command in ("synth", "train", "evaluate", "optimize", "export", "run", "info", "bench"):
        assert command in help_text


def _run_without_tensorflow(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter where `import tensorflow` fails, as on an edge box."""
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['tf_keras'] = None\n"
        "from edge_runtime.cli import main\n"
        f"sys.argv = ['edge-seg', *{list(args)!r}]\n"
        "main()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_heavy_command_without_the_extra_exits_2_with_a_hint(tmp_path):
    result = _run_without_tensorflow("train", "--data", str(tmp_path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "pip install 'edge-seg[train]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_help_names_the_extra_without_tensorflow():
    result = _run_without_tensorflow("train", "--help")
    assert result.returncode == 0
    assert "needs the 'train' extra" in result.stdout


_FAST_EXIT_DRIVER = """
import os, sys
import edge_runtime.cli as cli
real_exit = os._exit
def recorded(code):
    sys.stderr.write(f"FAST-EXIT {code}\\n")
    sys.stderr.flush()
    real_exit(code)
os._exit = recorded
sys.argv = ["edge-seg", *sys.argv[1:]]
cli.main()
"""


def test_run_ends_the_process_at_once_after_writing_everything(tmp_path):
    """The console script's `run` ends with os._exit once run_command returned: the exit status,
    the JSON summary on stdout (a pipe) and every output file are all there."""
    from pathlib import Path

    study = Path(__file__).resolve().parents[1] / "examples" / "study"
    out = tmp_path / "out"
    args = ["run", str(study), "-o", str(out), "--format", "png,npy,overlay,report", "--threads", "1", "--json"]
    done = subprocess.run([sys.executable, "-c", _FAST_EXIT_DRIVER, *args], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "EDGE_SEG_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 0 and "FAST-EXIT 0" in done.stderr
    import json

    summary = json.loads(done.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert all((out / rel).is_file() for rel in summary["relative_files"])
    assert not list(out.glob(".edge-seg-*"))  # staging removed, lock released

    again = subprocess.run([sys.executable, "-c", _FAST_EXIT_DRIVER, *args], capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "EDGE_SEG_CACHE_DIR": str(tmp_path / "cache")})
    assert again.returncode == 2 and "FAST-EXIT 2" in again.stderr  # refused before writing: the status still holds
    assert "already exists" in again.stderr and json.loads((out / "summary.json").read_text()) == summary
