"""The accuracy tolerance table: one place that says how far a variant's Dice may move.

Export validation reports against it and the benchmarks gate on it (benchmarks/gates.py has
the full rationale). Lives in edge_runtime so both, and an edge box without TensorFlow, share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class GateKind(StrEnum):
    """Which tolerance row applies to a variant."""

    FLOAT = "float"
    QUANTIZED = "quantized"
    PRUNED = "pruned"


@dataclass(frozen=True)
class Tolerance:
    """Limits for one gate kind; None means "not checked"."""

    per_class: float | None
    mean: float | None
    two_sided: bool


DEFAULT_TOLERANCES: dict[GateKind, Tolerance] = {
    GateKind.FLOAT: Tolerance(per_class=0.002, mean=None, two_sided=True),
    GateKind.QUANTIZED: Tolerance(per_class=0.02, mean=0.01, two_sided=False),
    GateKind.PRUNED: Tolerance(per_class=None, mean=0.02, two_sided=False),
}

FLOAT_PRECISIONS = frozenset({"fp32", "float32", "fp16", "float16"})
QUANTIZED_PRECISIONS = frozenset({"dynamic-int8", "dynamic", "int8", "uint8", "int16x8"})


def gate_kind(precision: str, pruned: bool = False) -> GateKind:
    """Pick the gate for an artefact from its manifest precision and whether it was pruned.

    Anything pruned gets the pruned gate whatever its precision; otherwise float precisions get
    the float gate and every integer/dynamic precision (QAT included) the quantized gate.
    Raises ValueError for a precision it does not know, so a new format is never silently
    ungated.
    """
    precision_key = precision.strip().lower()
    if pruned:
        return GateKind.PRUNED
    if precision_key in FLOAT_PRECISIONS:
        return GateKind.FLOAT
    if precision_key in QUANTIZED_PRECISIONS or "int8" in precision_key:
        return GateKind.QUANTIZED
    raise ValueError(
        f"no accuracy gate for precision {precision!r}; known precisions: {sorted(FLOAT_PRECISIONS | QUANTIZED_PRECISIONS)}"
    )
