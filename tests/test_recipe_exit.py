"""The recipe's exit status, from steps whose outcome the test decides (each heavy step is a stub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

import benchmarks.recipe as recipe
import benchmarks.report
import export.exporter
import export.optimize
import train.data.synth
import train.fit


def _stub_steps(monkeypatch: pytest.MonkeyPatch, failing: set[str]) -> list[str]:
    """Replace synth/train/optimize/export/bench with stubs; a name in `failing` fails its step."""
    calls: list[str] = []

    def synthesize(out, **kwargs):
        calls.append("synth")
        Path(out).mkdir(parents=True, exist_ok=True)

    def train_command(data, out, **kwargs):
        calls.append("train")
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps({"mean_dice": 0.5}))
        if "train" in failing:
            raise typer.Exit(2)

    def optimize_run(base, out, **kwargs):
        calls.append("optimize")
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text("{}")

    def export_command(run, out, formats="all", name=None, **kwargs):
        calls.append(f"export {name}")
        if f"export {name}" in failing:
            raise typer.Exit(1)  # what export_command does on a failed gate

    def bench_all_command(**kwargs):
        calls.append("bench")
        return 1 if "bench" in failing else 0

    monkeypatch.setattr(train.data.synth, "synthesize", synthesize)
    monkeypatch.setattr(train.fit, "train_command", train_command)
    monkeypatch.setattr(export.optimize, "optimize_run", optimize_run)
    monkeypatch.setattr(export.exporter, "export_command", export_command)
    monkeypatch.setattr(benchmarks.report, "bench_all_command", bench_all_command)
    return calls


def test_every_step_ok_exits_0_and_records_each(monkeypatch, tmp_path):
    calls = _stub_steps(monkeypatch, failing=set())
    assert recipe.recipe_command("smoke", tmp_path) == 0
    assert calls == ["synth", "synth", "train", "train", "export unet", "optimize", "export unet-pruned50", "bench"]
    steps = json.loads((tmp_path / "recipe.json").read_text())["steps"]
    assert all(step["ok"] for step in steps.values()) and len(steps) == 8


@pytest.mark.parametrize("failing", ["bench", "export unet-pruned50"])
def test_a_failed_optional_step_exits_1_after_the_others_ran(monkeypatch, tmp_path, failing):
    calls = _stub_steps(monkeypatch, failing={failing})
    assert recipe.recipe_command("smoke", tmp_path) == 1
    assert calls[-1] == "bench"  # the recipe went on to the end
    steps = json.loads((tmp_path / "recipe.json").read_text())["steps"]
    assert [name for name, step in steps.items() if not step["ok"]] == [failing]


def test_a_failed_required_step_stops_the_recipe_with_exit_1(monkeypatch, tmp_path):
    calls = _stub_steps(monkeypatch, failing={"export unet"})
    with pytest.raises(typer.Exit) as stopped:
        recipe.recipe_command("smoke", tmp_path)
    assert stopped.value.exit_code == 1
    assert calls == ["synth", "synth", "train", "train", "export unet"]  # nothing after the failed export
    assert not (tmp_path / "recipe.json").exists()


def test_an_unknown_recipe_exits_2(monkeypatch, tmp_path, capsys):
    calls = _stub_steps(monkeypatch, failing=set())
    assert recipe.recipe_command("gigantic", tmp_path / "out") == 2
    assert calls == [] and not (tmp_path / "out").exists()
    assert "unknown recipe 'gigantic'" in capsys.readouterr().err
