"""One option vocabulary across commands, escaped messages, extras checked before anything is written."""

from __future__ import annotations

import importlib.util
import io
import os

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from edge_runtime.cli import app
from edge_runtime.messages import print_error, print_message

WRITERS = ["train", "optimize", "export", "evaluate", "run", "recipe", "bench accuracy", "bench latency", "bench real",
           "bench all"]  # fmt: skip


def _commands() -> dict:
    """Every command (sub-commands as "bench accuracy") as typer builds it."""
    found = {}
    for name, command in typer.main.get_command(app).commands.items():
        if hasattr(command, "commands"):  # a group: `edge-seg bench ...`
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def _option(command, flag: str):
    """The option of `command` spelled `flag`, or None (arguments have no is_flag)."""
    options = [p for p in command.params if hasattr(p, "is_flag")]
    return next((p for p in options if flag in [*p.opts, *p.secondary_opts]), None)


def test_every_command_that_writes_takes_dash_o_and_output():
    commands = _commands()
    for name in WRITERS:
        short, long = _option(commands[name], "-o"), _option(commands[name], "--output")
        assert short is not None and short is long, f"`edge-seg {name}` lacks -o/--output"


def test_json_is_a_flag_and_seed_a_number_wherever_they_appear():
    commands = _commands()
    with_json = {name for name, c in commands.items() if _option(c, "--json")}
    with_seed = {name for name, c in commands.items() if _option(c, "--seed")}
    assert {"evaluate", "run", "info"} <= with_json and {"synth", "train"} <= with_seed
    for name in with_json:
        assert _option(commands[name], "--json").is_flag, f"`edge-seg {name} --json` should print JSON, not take a path"
    for name in with_seed:
        option = _option(commands[name], "--seed")
        assert not option.is_flag and type(option.default) is int, f"`edge-seg {name} --seed` should take a number"
    assert _option(commands["bench latency"], "--seed-model").is_flag  # the seed project's model, not a seed


def test_messages_keep_brackets_and_markup_literal():
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    print_error(console, "this command needs the 'onnx' extra: pip install 'edge-seg[onnx]'")
    print_message(console, "skipped", "file [red]x[/red].dcm")
    assert buffer.getvalue().splitlines() == [
        "error: this command needs the 'onnx' extra: pip install 'edge-seg[onnx]'",
        "skipped: file [red]x[/red].dcm",
    ]


@pytest.mark.parametrize("args", [["recipe", "default", "-o", "OUT"], ["train", "--data", "DATA", "-o", "OUT"],
                                  ["export", "MODEL", "-o", "OUT"]])  # fmt: skip
def test_a_missing_train_extra_stops_before_anything_is_written(args, tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def without_tensorflow(name, *rest):
        return None if name.split(".")[0] == "tensorflow" else real_find_spec(name, *rest)

    monkeypatch.setattr(importlib.util, "find_spec", without_tensorflow)
    (tmp_path / "DATA").mkdir()
    (tmp_path / "MODEL").write_text("x")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "pip install 'edge-seg[train]'" in result.output  # escaped: the [train] survives rich
    assert not (tmp_path / "OUT").exists()


def test_native_output_goes_to_the_log_not_the_console(tmp_path, capfd):
    from edge_runtime.native_log import native_output_to

    print("before", flush=True)
    with native_output_to(tmp_path / "native.log"):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(1, b"fully_quantize: 0\n")
    print("after", flush=True)
    captured = capfd.readouterr()
    assert captured.out == "before\nafter\n" and captured.err == ""
    assert (tmp_path / "native.log").read_text() == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\nfully_quantize: 0\n"


def test_quiet_drops_the_progress_bar_and_keeps_the_result(tmp_path, monkeypatch):
    from edge_runtime.progress import QUIET_ENV

    monkeypatch.delenv(QUIET_ENV, raising=False)
    loud = CliRunner().invoke(app, ["synth", str(tmp_path / "a"), "--patients", "1"])
    monkeypatch.setenv(QUIET_ENV, "")  # registered, so the variable -q sets is removed after the test
    quiet = CliRunner().invoke(app, ["-q", "synth", str(tmp_path / "b"), "--patients", "1"])
    assert loud.exit_code == quiet.exit_code == 0
    assert "synthesising patients" in loud.output and "synthesising patients" not in quiet.output
    assert "wrote 3 labelled slices" in quiet.output


def test_run_takes_its_input_as_argument_or_dash_i_but_not_both(tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "s.png")
    runner = CliRunner()
    png = ["--format", "npy", "--pixel-spacing", "0.7"]
    as_option = runner.invoke(app, ["run", "-i", str(tmp_path / "s.png"), "-o", str(tmp_path / "o1"), *png])
    as_argument = runner.invoke(app, ["run", str(tmp_path / "s.png"), "-o", str(tmp_path / "o2"), *png])
    assert as_option.exit_code == as_argument.exit_code == 0, as_option.output + as_argument.output
    assert sorted(p.name for p in (tmp_path / "o1").rglob("*.npy")) == sorted(p.name for p in (tmp_path / "o2").rglob("*.npy"))
    for args in (["run", "-o", str(tmp_path / "o3")], ["run", str(tmp_path / "s.png"), "-i", str(tmp_path / "s.png")]):
        refused = runner.invoke(app, args)
        assert refused.exit_code == 2 and "give the input once" in refused.output
    assert not (tmp_path / "o3").exists()
