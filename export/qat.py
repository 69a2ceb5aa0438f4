"""Quantisation-aware training set-up: plain QAT, or pruning-preserving QAT for a pruned model."""

from __future__ import annotations


def quantize_aware(model, preserve_sparsity: bool = False):
    """Wrap `model` for QAT with tfmot's default 8-bit scheme.

    preserve_sparsity=True uses Default8BitPrunePreserveQuantizeScheme, so a pruned model's
    zero weights stay zero through fine-tuning (Conv2D/Dense only). BatchNorm directly after
    Conv2D is folded by the scheme; the models in train.models are built for that.
    """
    import tensorflow_model_optimization as tfmot

    annotated = tfmot.quantization.keras.quantize_annotate_model(model)
    if preserve_sparsity:
        scheme = tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        return tfmot.quantization.keras.quantize_apply(annotated, scheme)
    return tfmot.quantization.keras.quantize_apply(annotated)


def save_qat_model(model, path) -> None:
    """Save a QAT model as HDF5: tf_keras's .keras format drops QuantizeLayer variables on reload
    (tfmot 0.8.1: "expected 5 variables, but received 3"), HDF5 round-trips under quantize_scope."""
    if not str(path).endswith(".h5"):
        raise ValueError(f"{path}: QAT models are saved as .h5 (the .keras format does not reload them)")
    model.save(str(path), save_format="h5", include_optimizer=False)
