"""The recipe: one command from synthetic data to bundled models (smoke profile)."""

import json

import pytest

pytest.importorskip("tensorflow")

from benchmarks.recipe import INTENDED_USE, bundle_artifacts, recipe_command
from edge_runtime.manifest import load_verified_manifest, manifest_path


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe")
    code = recipe_command("smoke", out)
    return out, code


def test_smoke_recipe_runs_every_step_and_records_it(smoke):
    out, code = smoke
    summary = json.loads((out / "recipe.json").read_text())
    steps = summary["steps"]
    for name in ("synth", "example study", "train", "fine-tune", "export float", "prune 50%", "export unet-pruned50", "bench"):
        assert name in steps and steps[name]["seconds"] >= 0
    for name in ("synth", "train", "fine-tune", "export float"):
        assert steps[name]["ok"], name
    # trained on whole slices, then fine-tuned from those weights in the 160 mm window, which ships
    tuned = json.loads((out / "runs" / "unet-fov" / "config.json").read_text())
    assert tuned["init_from"] == str((out / "runs" / "unet").resolve()) and tuned["field_of_view_mm"] == 160.0
    assert json.loads((out / "runs" / "unet" / "config.json").read_text())["preprocessing"]["field_of_view_mm"] is None
    assert load_verified_manifest(out / "artifacts" / "unet-tflite-int8.tflite").preprocessing.field_of_view_mm == 160.0
    # The exit status follows what the artefacts themselves record (the rule itself, with stubbed
    # steps whose outcome is known, is in test_recipe_exit.py): every export gate and the bench.
    exports = [r for p in (out / "artifacts").glob("*-export.json") for r in json.loads(p.read_text())]
    bench_passed = json.loads((out / "report" / "report.json").read_text())["passed"]
    assert exports and code == (0 if bench_passed and all(r["passed"] for r in exports) else 1)
    assert (out / "report" / "report.md").is_file()
    for artefact in ("unet-tflite-int8.tflite", "unet-onnx-int8.onnx", "unet-pruned50-tflite-int8.tflite"):
        assert load_verified_manifest(out / "artifacts" / artefact).sha256


def test_bundle_ships_verified_models_and_the_example(smoke, tmp_path):
    out, _ = smoke
    written = bundle_artifacts(out / "artifacts", "unet", out / "example", tmp_path / "models", tmp_path / "examples")
    assert tmp_path / "models" / "default.tflite" in written
    for model in ("default.tflite", "default.onnx"):
        manifest = load_verified_manifest(tmp_path / "models" / model)
        assert manifest.model_file == model
        assert manifest.provenance["intended_use"] == INTENDED_USE
        text = manifest_path(tmp_path / "models" / model).read_text()
        assert str(out) in (out / "artifacts" / f"unet-{model.split('.')[1]}-int8.{model.split('.')[1]}.json").read_text()
        assert str(out) not in text and str(out.resolve()) not in text  # no build-machine paths shipped
        assert "recipe-out/data" in text
    study = sorted((tmp_path / "examples" / "study").iterdir())
    truth = sorted((tmp_path / "examples" / "truth").iterdir())
    # Ground truth for every slice of the study (disc and vertebral-body levels), named alike.
    assert len(study) >= 12 and [p.stem for p in study] == [p.stem for p in truth]
