"""`edge-seg train` end to end on a tiny synthetic set: run-folder contract, resume, time budget, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")

from PIL import Image  # noqa: E402
from tiny_run import TINY, tiny_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from edge_runtime.cli import app  # noqa: E402
from edge_runtime.labels import CLASSES  # noqa: E402
from edge_runtime.preprocessing import PreprocessSpec  # noqa: E402
from train.distribute import plan_strategy  # noqa: E402
from train.fit import TrainConfig, learning_rate_schedule  # noqa: E402
from train.models import build_model, count_macs  # noqa: E402
from train.run_dir import RunDir, RunDirError, resolve_model  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run cut short by --time-budget in epoch 1, then --resume'd to epoch 2 (see tiny_run)."""
    return tiny_run(tmp_path_factory)[1]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_writes_every_run_dir_file(run: Path, data: Path) -> None:
    for name in ("model.keras", "config.json", "split.json", "history.csv", "train.csv", "metrics.json",
                 "curves.png", "predictions.png", "checkpoint/state.json"):
        assert (run / name).is_file(), name
    assert any((run / "logs").rglob("*tfevents*"))
    for png in ("curves.png", "predictions.png"):
        with Image.open(run / png) as image:
            assert image.format == "PNG" and image.size[0] > 200


def test_config_records_the_exact_setup(run: Path, data: Path) -> None:
    config = json.loads((run / "config.json").read_text())
    expected = {"arch": "unet", "encoder": None, "image_size": 32, "depth": 4, "base_filters": 4, "epochs": 2,
                "batch_size": 2, "seed": 3, "modality": "T2", "data": str(data.resolve())}
    assert {k: config[k] for k in expected} == expected
    assert config["lr"] == pytest.approx(2e-3)
    assert config["class_weights"] is None  # equal weights unless --class-weights
    assert PreprocessSpec.from_dict(config["preprocessing"]) == PreprocessSpec(input_size=32)
    model = build_model("unet", 32, base_filters=4)
    assert config["macs_per_slice"] == count_macs(model)["total"]
    assert config["params"] == model.count_params()
    assert len(config["provenance"]["git_commit"]) == 40
    assert config["provenance"]["versions"]["tensorflow"] == tf.__version__


def test_split_json_is_the_data_sets_patient_split(run: Path, data: Path) -> None:
    used = json.loads((run / "split.json").read_text())
    source = json.loads((data / "split.json").read_text())
    assert {k: used[k] for k in ("train", "val", "test")} == {k: source[k] for k in ("train", "val", "test")}
    assert not set(used["train"]) & set(used["test"])


def test_time_budget_stops_cleanly_and_keeps_the_best(run: Path) -> None:
    first = json.loads((run / "first_metrics.json").read_text())
    assert first["training"]["stopped_by_time_budget"] is True
    assert first["training"]["epochs_completed"] == 1  # 5 asked, stopped after the first batch
    assert first["mean_dice"] >= 0 and first["split"] == "test"  # the best model was evaluated


def test_resume_continues_epochs_and_the_optimizer_state(run: Path) -> None:
    before = _rows(run / "history_before_resume.csv")
    after = _rows(run / "history.csv")
    assert [r["epoch"] for r in before] == ["1"]
    assert [r["epoch"] for r in after] == ["1", "2"]  # continued, not restarted
    assert after[0] == before[0]  # earlier epochs kept as they were
    assert [r["epoch"] for r in _rows(run / "train.csv")] == ["0", "1"]  # CSVLogger appended
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 2
    # After epoch 2 the optimizer has taken 1 step (epoch 1 was cut after one batch) plus one
    # full epoch; the logged learning rate is the 2-epoch schedule there. A restart without the
    # checkpoint's step counter would log the schedule at one epoch's steps instead.
    train_slices = 3 * len(json.loads((run / "split.json").read_text())["train"])
    steps = -(-train_slices // TINY["batch_size"])
    config = TrainConfig(**{**TINY, "encoder": None, "depth": 4, "epochs": 2, "lr": 2e-3, "modality": "T2", "data": ""})
    schedule = learning_rate_schedule(config, steps)
    assert float(after[1]["lr"]) == pytest.approx(float(schedule(1 + steps)), rel=1e-5)
    assert float(after[1]["lr"]) != pytest.approx(float(schedule(steps)), rel=1e-3)


def test_metrics_json_has_the_baseline_shape(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    split = json.loads((run / "split.json").read_text())
    assert metrics["split"] == "test" and metrics["patients"] == sorted(split["test"])
    assert metrics["n_slices"] == 3 * len(split["test"])
    assert set(metrics["per_class"]) == {c.short for c in CLASSES}
    fg = [metrics["per_class"][c.short]["dice"] for c in CLASSES[1:]]
    assert metrics["mean_dice"] == pytest.approx(np.mean(fg))
    assert set(metrics["per_patient"]) == set(split["test"])
    assert {"min", "median", "max"} <= set(metrics["spread"]["mean_dice"])
    assert metrics["training"]["epochs_completed"] == 2


def test_run_dir_reads_the_folder_back(run: Path, data: Path) -> None:
    folder = RunDir(run)
    assert folder.spec().input_size == 32
    assert folder.data_dir() == data.resolve()
    assert folder.metrics()["split"] == "test"
    model = folder.load_model()
    assert model.input_shape == (None, 32, 32, 1)
    assert all(layer.dtype == "float32" for layer in model.layers if layer.weights)
    loaded, found = resolve_model(run / "model.keras")
    assert found is not None and found.path == run and loaded.output_shape == (None, 32, 32, 5)


def test_resolve_model_names_a_bad_path(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=r"empty: not a run folder"):
        (tmp_path / "empty").mkdir()
        resolve_model(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RunDirError, match=r"notes\.txt: neither a run folder nor a \.keras model"):
        resolve_model(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "segnet"], "unknown --arch 'segnet'"),
        (["--arch", "resunet", "--encoder", "resnet50"], "unknown --encoder 'resnet50'"),
        (["--image-size", "40"], "input_size 40 must be a positive multiple of 16"),
        (["--modality", "PD"], "unknown --modality 'PD'"),
        (["--time-budget", "0"], "--time-budget must be > 0"),
        (["--class-weights", "1,1,2"], "--class-weights '1,1,2': need 5 positive numbers, one per class (BG,IVD,PE,TS,AAP)"),
        (["--class-weights", "1,1,1,0,1"], "need 5 positive numbers"),
        (["--class-weights", "1,1,x,1,1"], "need 5 positive numbers"),
        (["--field-of-view-mm", "0"], "--field-of-view-mm must be > 0 mm"),
        (["--init-from", "/nonexistent-run"], "--init-from /nonexistent-run: no model.keras to start from"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str, data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "r").exists()


def test_missing_or_empty_data_and_reused_out_exit_2(run: Path, data: Path, tmp_path: Path) -> None:
    cases = [
        (["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "a")], "folder not found"),
        (["--data", str(tmp_path), "--out", str(tmp_path / "b")], "missing label folder"),
        (["--data", str(data), "--out", str(run)], "already holds a training run"),
        (["--data", str(data), "--out", str(tmp_path / "c"), "--resume"], "nothing to resume"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", *args])
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()), result.output


def _tf_config(index: int, task: str = "worker", chief: bool = False) -> str:
    cluster = {"worker": ["hostA:12345", "hostB:12345"], **({"chief": ["hostC:12345"]} if chief else {})}
    return json.dumps({"cluster": cluster, "task": {"type": task, "index": index}})


def test_strategy_follows_the_visible_gpus_and_tf_config() -> None:
    assert (plan_strategy(None, 0).kind, plan_strategy(None, 0).uses_gpu) == ("default", False)
    assert (plan_strategy("", 1).kind, plan_strategy("", 1).uses_gpu) == ("default", True)
    assert (plan_strategy("{}", 4).kind, plan_strategy("{}", 4).uses_gpu) == ("mirrored", True)
    single = json.dumps({"cluster": {"worker": ["hostA:1"]}, "task": {"type": "worker", "index": 0}})
    assert plan_strategy(single, 2).kind == "mirrored"  # one worker is not a cluster


def test_multi_worker_training_has_exactly_one_chief() -> None:
    workers = [plan_strategy(_tf_config(i), 1) for i in range(2)]
    assert [p.kind for p in workers] == ["multi-worker", "multi-worker"]
    assert [p.is_chief for p in workers] == [True, False]  # worker 0 writes the run folder
    with_chief = [plan_strategy(_tf_config(0, "chief", chief=True), 0)] + [
        plan_strategy(_tf_config(i, chief=True), 0) for i in range(2)
    ]
    assert [p.is_chief for p in with_chief] == [True, False, False]  # a "chief" task outranks worker 0
    assert not any(p.uses_gpu for p in with_chief)


def test_a_malformed_tf_config_is_named() -> None:
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        plan_strategy("{cluster", 0)
    with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object"):
        plan_strategy("[1, 2]", 0)


def test_class_weights_reach_the_config_in_class_order(data: Path, tmp_path: Path) -> None:
    from train.config import prepare_config

    config = prepare_config(data, tmp_path / "w", "unet", "resnet18", 1, 2, 32, 4, 1e-3, 0, "T2", False, None, "1,1,1,2.5,1")
    assert config.class_weights == [1.0, 1.0, 1.0, 2.5, 1.0]
    assert [c.short for c in CLASSES] == ["BG", "IVD", "PE", "TS", "AAP"]  # the order the option documents


def test_init_from_starts_at_that_runs_weights_and_fov_reaches_the_spec(run: Path, data: Path, tmp_path: Path) -> None:
    from train.config import prepare_config
    from train.fit import _build, _Session

    config = prepare_config(data, tmp_path / "ft", "unet", "resnet18", 1, 2, 32, 4, 1e-3, 0, "T2", False, None,
                            field_of_view_mm=150.0, init_from=run)  # fmt: skip
    assert config.init_from == str(run.resolve()) and config.field_of_view_mm == 150.0
    assert config.spec() == PreprocessSpec(input_size=32, field_of_view_mm=150.0)
    session = _Session(sets={}, train_arrays=[], train_ds=None, val_ds=None, steps=1)
    from train.distribute import strategy_for_this_machine

    _build(config, strategy_for_this_machine()[0], session, RunDir(tmp_path / "ft"))
    source = RunDir(run).load_model().get_weights()
    assert len(source) == len(session.model.get_weights())
    for ours, theirs in zip(session.model.get_weights(), source, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_init_from_another_architecture_is_refused(run: Path, data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--base-filters", "8",
                                 "--init-from", str(run)])  # fmt: skip
    assert result.exit_code == 2
    assert "its model is ('unet', None, 4) (arch, encoder, base filters), this run's ('unet', None, 8)" in " ".join(
        result.output.split()
    )
