"""Tiny phantom data sets and hand-built run folders for the export and optimize tests."""

from __future__ import annotations

import json
from pathlib import Path

from edge_runtime.preprocessing import PreprocessSpec

SIZE = 32


def make_data(root: Path, patients: int = 8) -> Path:
    """A phantom data set in the Mendeley layout (the project's own generator), with its split."""
    from train.data.splits import load_or_create_split
    from train.data.synth import synthesize

    synthesize(out=root, patients=patients, seed=0)
    load_or_create_split(root, seed=0)
    return root


def make_run(root: Path, data: Path, arch: str = "unet", base_filters: int = 4, model=None) -> Path:
    """A run folder as `edge-seg train` writes it, around `model` or an untrained tiny model (32 px).

    Pass a trained model (tests/trained_tiny.py) when the run is exported: an untrained one sits
    on near-ties everywhere and no faithful int8 conversion can pass its gate.
    """
    from train.evaluate import evaluate_predictor, keras_predictor, split_pairs
    from train.models import build_model, count_macs
    from train.run_dir import RunDir

    kwargs = {"depth": 2, "base_filters": base_filters} if arch == "unet" else {"base_filters": base_filters}
    model = model if model is not None else build_model(arch, SIZE, **kwargs)
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    spec = PreprocessSpec(input_size=SIZE)
    config = {
        "arch": arch,
        "encoder": None if arch == "unet" else "resnet18",
        "image_size": SIZE,
        "depth": 2,
        "base_filters": base_filters,
        "epochs": 1,
        "batch_size": 4,
        "lr": 2e-3,
        "seed": 0,
        "modality": "T2",
        "data": str(data.resolve()),
        "preprocessing": spec.to_dict(),
        "macs_per_slice": count_macs(model)["total"],
        "provenance": {"note": "hand-built test run"},
    }
    (root / "config.json").write_text(json.dumps(config))
    (root / "split.json").write_text((data / "split.json").read_text())
    pairs, _ = split_pairs(data, "test", RunDir(root))
    result = evaluate_predictor(keras_predictor(model), pairs, spec, "T2")
    (root / "metrics.json").write_text(json.dumps(result.to_dict()))
    return root
