"""The training run folder contract: file names, readers, and the one way to find and load a run's model.

RUN_DIR/
  model.keras        best model by validation mean foreground Dice (float32, no optimizer)
  checkpoint/        last epoch's weights + optimizer (tf.train.Checkpoint) and state.json, for --resume
  config.json        exact training config (arch, sizes, lr, seed, data, preprocessing, MACs, provenance)
  split.json         the patient split used
  history.csv        one row per epoch: losses, Dice/IoU, learning rate, seconds, slices/s
  train.csv          Keras CSVLogger output
  metrics.json       test-patient Dice/IoU at original resolution (the float baseline)
  curves.png         training curves
  predictions.png    test predictions vs truth
  logs/              TensorBoard
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from edge_runtime.preprocessing import PreprocessSpec

MODEL = "model.keras"
CHECKPOINT_DIR = "checkpoint"
STATE = "state.json"
CONFIG = "config.json"
SPLIT = "split.json"
HISTORY = "history.csv"
TRAIN_LOG = "train.csv"
METRICS = "metrics.json"
CURVES = "curves.png"
PREDICTIONS = "predictions.png"
LOGS = "logs"


class RunDirError(ValueError):
    """A path is not a usable run folder or model file."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RunDirError(f"{path}: not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


class RunDir:
    """A training run folder (see the module docstring for its layout)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def model_path(self) -> Path:
        """model.keras, or the file config.json names (QAT runs save model.h5)."""
        if self.is_run():
            name = self.config().get("model_file")
            if name:
                return self.path / name
        return self.path / MODEL

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def state_path(self) -> Path:
        return self.checkpoint_dir / STATE

    def file(self, name: str) -> Path:
        return self.path / name

    def is_run(self) -> bool:
        """True when the folder holds a config.json (a run started here)."""
        return (self.path / CONFIG).is_file()

    def config(self) -> dict[str, Any]:
        return _read_json(self.path / CONFIG)

    def metrics(self) -> dict[str, Any]:
        return _read_json(self.path / METRICS)

    def split(self) -> dict[str, list[str]]:
        return _read_json(self.path / SPLIT)

    def state(self) -> dict[str, Any] | None:
        """Resume state (completed epochs, best score) or None when no checkpoint was written."""
        return _read_json(self.state_path) if self.state_path.is_file() else None

    def spec(self) -> PreprocessSpec:
        try:
            return PreprocessSpec.from_dict(self.config()["preprocessing"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirError(f"{self.path / CONFIG}: no usable 'preprocessing' entry ({exc})") from exc

    def data_dir(self) -> Path:
        try:
            return Path(self.config()["data"])
        except KeyError as exc:
            raise RunDirError(f"{self.path / CONFIG}: no 'data' entry") from exc

    def load_model(self):
        """The best model, without its training configuration (no custom objects needed)."""
        if not self.model_path.is_file():
            raise RunDirError(f"{self.path}: no {self.model_path.name} (training did not finish an epoch?)")
        return load_keras_file(self.model_path)


KERAS_SUFFIXES = (".keras", ".h5")


def load_keras_file(path: Path):
    """Load a `.keras`/`.h5` model (QAT wrappers included) or raise RunDirError naming the file.

    A file that is not a Keras archive, or one that is truncated or corrupted, is refused here
    rather than failing somewhere inside TensorFlow.
    """
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: model file not found")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise RunDirError(f"{path}: not a Keras model (a .keras file is a zip archive; this one is not, or it is corrupted)")
    if path.suffix not in KERAS_SUFFIXES:
        raise RunDirError(f"{path}: not a Keras model (expected a .keras or .h5 file or a run folder)")
    import tensorflow_model_optimization as tfmot
    import tf_keras

    try:
        with tfmot.quantization.keras.quantize_scope():  # QAT wrappers; harmless for float models
            return tf_keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types (ValueError, OSError, KeyError, zip errors)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: not a readable Keras model ({message[:200]})") from exc


def resolve_model(path: Path):
    """(keras model, RunDir or None) from a run folder or a .keras/.h5 file.

    A model file inside a run folder that names it (config.json "model_file", else model.keras)
    also returns that RunDir, so its preprocessing spec and split are known.
    """
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        if not run.model_path.is_file():
            raise RunDirError(f"{path}: not a run folder (no {run.model_path.name} inside)")
        return run.load_model(), run
    if path.is_file() and path.suffix in KERAS_SUFFIXES:
        run = RunDir(path.parent)
        owner = run if run.is_run() and run.model_path.resolve() == path.resolve() else None
        return load_keras_file(path), owner
    if not path.exists():
        raise RunDirError(f"{path}: no such file or folder")
    raise RunDirError(f"{path}: neither a run folder nor a .keras model")
