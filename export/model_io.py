"""Load Keras models for export (plain, pruned-and-stripped, or quantisation-aware) with clear errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

from export.formats import ExportInputError

_QAT_LAYERS = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")


def is_qat_model(model) -> bool:
    """True when the model holds tfmot quantisation wrappers (QAT or pruning-preserving QAT)."""
    return any(type(layer).__name__ in _QAT_LAYERS for layer in model.layers)


def run_model_file(run) -> Path:
    """A run folder's model: config "model_file" when set (QAT runs save model.h5), else model.keras."""
    return run.path / str(run.config().get("model_file", run.model_path.name))


def load_keras_model(path: Path):
    """Load a `.keras`/`.h5` model (QAT wrappers included) or raise ExportInputError naming the file.

    A file that is not a Keras archive, or one that is truncated or corrupted, is refused here
    rather than failing somewhere inside the converter.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportInputError(f"{path}: model file not found")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ExportInputError(f"{path}: not a Keras model (a .keras file is a zip archive; this one is not, or it is corrupted)")
    if path.suffix not in (".keras", ".h5"):
        raise ExportInputError(f"{path}: not a Keras model (expected a .keras or .h5 file or a run folder)")
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    try:
        with tfmot.quantization.keras.quantize_scope():
            return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types (ValueError, OSError, KeyError, zip errors)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportInputError(f"{path}: not a readable Keras model ({message[:200]})") from exc
