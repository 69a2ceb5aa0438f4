"""Load Keras models for export (plain, pruned-and-stripped, or quantisation-aware) with clear errors."""

from __future__ import annotations

from pathlib import Path

from export.formats import ExportInputError

_QAT_LAYERS = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")


def is_qat_model(model) -> bool:
    """True when the model holds tfmot quantisation wrappers (QAT or pruning-preserving QAT)."""
    return any(type(layer).__name__ in _QAT_LAYERS for layer in model.layers)


def load_keras_model(path: Path):
    """Load a `.keras`/`.h5` model (QAT wrappers included) or raise ExportInputError naming the file.

    The checks are train.run_dir.load_keras_file's (the one model loader); export reports them
    as bad input (exit status 2).
    """
    from train.run_dir import RunDirError, load_keras_file

    try:
        return load_keras_file(Path(path))
    except RunDirError as exc:
        raise ExportInputError(str(exc)) from exc
