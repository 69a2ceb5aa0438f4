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


def prune_wrap(model, plan: PruningPlan):
    """Wrap every prunable layer (Conv2D kernels here) in prune_low_magnitude with the plan's schedule."""
    import tensorflow_model_optimization as tfmot

    schedule = tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.0,
        final_sparsity=plan.target,
        begin_step=0,
        end_step=plan.end_step,
        frequency=plan.frequency,
    )
    return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)


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


def measure_sparsity(model) -> dict:
    """Zero share of each Conv2D/Dense kernel, counted from the weights themselves, and overall.

    Works on stripped models and on QAT-wrapped ones (so pruning-preserving QAT can be checked).
    """
    layers = {}
    zeros_total = size_total = 0
    for layer in model.layers:
        kernel = _kernel(layer)
        if kernel is None:
            continue
        zeros, size = int(np.count_nonzero(kernel == 0)), int(kernel.size)
        name = getattr(getattr(layer, "layer", layer), "name", layer.name)
        layers[name] = {"weights": size, "zeros": zeros, "sparsity": zeros / size}
        zeros_total += zeros
        size_total += size
    if not size_total:
        raise ValueError("model has no Conv2D/Dense kernels to measure")
    return {"overall": zeros_total / size_total, "weights": size_total, "zeros": zeros_total, "layers": layers}
