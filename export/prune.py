"""Magnitude pruning with tfmot: polynomial decay to a target sparsity, fine-tune, strip, measure."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PruningPlan:
    """When the sparsity ramps (PolynomialDecay from 0 at step 0 to `target` at `end_step`)."""

    target: float
    total_steps: int
    end_step: int
    frequency: int

    def to_dict(self) -> dict:
        return asdict(self)


def pruning_plan(target: float, total_steps: int) -> PruningPlan:
    """Ramp over the first ~75 % of fine-tuning, then let the last steps recover at full sparsity.

    The mask is only updated every `frequency` steps, so `end_step` is a multiple of it: the
    target sparsity is then really applied (tfmot prunes at step s when s % frequency == 0).
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target sparsity must be between 0 and 1 (exclusive), got {target}")
    if total_steps < 2:
        raise ValueError(f"pruning needs at least 2 fine-tuning steps, got {total_steps}")
    frequency = max(1, min(100, total_steps // 20))
    end_step = max(frequency, (int(0.75 * total_steps) // frequency) * frequency)
    end_step = min(end_step, ((total_steps - 1) // frequency) * frequency)
    return PruningPlan(target, total_steps, end_step, frequency)


def kept_dense(model) -> set[str]:
    """Conv2D layers left unpruned: the first (one input channel: a handful of weights per filter)
    and the last (the 1x1 class head). Both hold a tiny share of the weights but every pixel's
    features or class scores pass through them, so pruning them costs accuracy for no size."""
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    return {convs[0], convs[-1]} if len(convs) > 2 else set()


def prune_wrap(model, plan: PruningPlan):
    """Wrap each Conv2D kernel except those of kept_dense() in prune_low_magnitude with the plan's schedule."""
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=plan.target,
        begin_step=0,
        end_step=plan.end_step,
        frequency=plan.frequency,
    )
    dense = kept_dense(model)

    def wrap(layer):
        if type(layer).__name__ == "Conv2D" and layer.name not in dense:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer  # shared, weights and all (as tfmot's own whole-model wrapping does)

    return keras.models.clone_model(model, clone_function=wrap)


def pruning_callbacks() -> list:
    """UpdatePruningStep advances the schedule; fit() without it never prunes."""
    import tensorflow_model_optimization as tfmot

    return [tfmot.sparsity.keras.UpdatePruningStep()]


def strip(model):
    """Remove the pruning wrappers; the zeros stay in the plain kernels."""
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.strip_pruning(model)


def _kernel(layer) -> np.ndarray | None:
    """The prunable weight of a plain or QAT-wrapped Conv2D/Dense layer, or None."""
    inner = getattr(layer, "layer", layer)  # QuantizeWrapper keeps the original layer
    if type(inner).__name__ not in ("Conv2D", "Dense", "DepthwiseConv2D"):
        return None
    # Inside a QuantizeWrapper `inner.kernel` is the fake-quantised tensor; read the variable.
    for weight in layer.weights:
        if weight.name.split("/")[-1].startswith(("kernel", "depthwise_kernel")):
            return np.asarray(weight.numpy())
    return None


def measure_sparsity(model, kept_dense_layers: set[str] | frozenset[str] = frozenset()) -> dict:
    """Zero share of each Conv2D/Dense kernel, counted from the weights themselves.

    "overall" covers every kernel; "pruned_overall" only the layers that were pruned (all but
    `kept_dense_layers`), which is what the target sparsity refers to. Works on stripped models
    and on QAT-wrapped ones (so pruning-preserving QAT can be checked).
    """
    layers = {}
    for layer in model.layers:
        kernel = _kernel(layer)
        if kernel is None:
            continue
        name = getattr(layer, "layer", layer).name
        zeros, size = int(np.count_nonzero(kernel == 0)), int(kernel.size)
        layers[name] = {"weights": size, "zeros": zeros, "sparsity": zeros / size, "pruned": name not in kept_dense_layers}
    if not layers:
        raise ValueError("model has no Conv2D/Dense kernels to measure")

    def share(rows: list[dict]) -> float:
        weights = sum(r["weights"] for r in rows)
        return sum(r["zeros"] for r in rows) / weights if weights else 0.0

    pruned = [r for r in layers.values() if r["pruned"]]
    return {
        "overall": share(list(layers.values())),
        "pruned_overall": share(pruned),
        "weights": sum(r["weights"] for r in layers.values()),
        "zeros": sum(r["zeros"] for r in layers.values()),
        "kept_dense": sorted(kept_dense_layers),
        "layers": layers,
    }
