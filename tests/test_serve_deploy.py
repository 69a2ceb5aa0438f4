"""The example systemd unit and Dockerfile start `edge-seg serve` with options the command accepts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom", reason="the node needs the 'node' extra (pynetdicom)")

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _unit_exec_start() -> list[str]:
    text = (DEPLOY / "edge-seg-node.service").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n\s*", " ", text)
    line = next(ln for ln in joined.splitlines() if ln.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def _docker_command() -> list[str]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    return entry + cmd


def _status_with(args: list[str], spool: Path) -> subprocess.CompletedProcess[str]:
    """Run `edge-seg serve ARGS --status` with the spool moved to `spool`: options are parsed, nothing starts."""
    serve = args[args.index("serve") + 1 :]
    serve[serve.index("--spool") + 1] = str(spool)
    exe = Path(sys.executable).with_name("edge-seg")
    return subprocess.run([str(exe), "serve", *serve, "--status"], capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("source", ["systemd", "docker"])
def test_deploy_examples_use_options_serve_accepts(source: str, tmp_path: Path) -> None:
    args = _unit_exec_start() if source == "systemd" else _docker_command()
    assert args[0].endswith("edge-seg") and args[1] == "serve"
    done = _status_with(args, tmp_path / "no-spool")
    assert done.returncode == 2, done.stderr  # 2 from --status without a spool, not from a bad option
    assert "is not an edge-seg spool" in json.loads(done.stdout)["error"]


def test_systemd_stop_timeout_outlasts_the_drain() -> None:
    args = _unit_exec_start()
    drain = float(args[args.index("--drain-seconds") + 1])
    text = (DEPLOY / "edge-seg-node.service").read_text(encoding="utf-8")
    stop = float(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))
    assert stop > drain + 10
