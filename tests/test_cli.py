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
