"""Accuracy tolerance gates for the benchmarks: a variant vs the float baseline.

The table and its checks live in edge_runtime.tolerances (the one owner of every gate, also
used by export validation); this module keeps the benchmarks' import path.
"""

from __future__ import annotations

from edge_runtime.tolerances import (
    DEFAULT_TOLERANCES,
    FLOAT_PRECISIONS,
    QUANTIZED_PRECISIONS,
    GateKind,
    GateResult,
    Tolerance,
    check_gates,
    describe_gate,
    gate_kind,
    tolerance_table,
)

__all__ = [
    "DEFAULT_TOLERANCES",
    "FLOAT_PRECISIONS",
    "QUANTIZED_PRECISIONS",
    "GateKind",
    "GateResult",
    "Tolerance",
    "check_gates",
    "describe_gate",
    "gate_kind",
    "tolerance_table",
]
