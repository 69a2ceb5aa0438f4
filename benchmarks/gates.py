"""Accuracy tolerance gates: how far a compressed variant's Dice may move from the float baseline.

Defaults (the project's promise, one table):

| gate      | applies to                                  | per class |dDice| | mean dDice |
|-----------|---------------------------------------------|-------------------|------------|
| float     | fp32 / fp16 conversions (TFLite, ONNX)      | <= 0.002 (both ways) | -       |
| quantized | dynamic-range, full int8, QAT int8, ONNX int8 | drop <= 0.02    | drop <= 0.01 |
| pruned    | any pruned model (with or without int8)     | -                 | drop <= 0.02 |

"dDice" is variant Dice minus baseline Dice on the same held-out slices. A float conversion
should reproduce the baseline, so its gate is two-sided: moving either way means the
conversion changed the network. Quantized and pruned variants may legitimately come out a
little better than the baseline (QAT and pruning fine-tune the weights again), so their gates
bound the *drop* (baseline - variant); the mean drop equals the drop of the foreground mean
Dice. Background is never gated: it is ~94 % of the pixels and hides everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from edge_runtime.labels import FOREGROUND
from edge_runtime.tolerances import (
    DEFAULT_TOLERANCES,
    FLOAT_PRECISIONS,
    QUANTIZED_PRECISIONS,
    GateKind,
    Tolerance,
    gate_kind,
)

__all__ = [
    "DEFAULT_TOLERANCES",
    "FLOAT_PRECISIONS",
    "QUANTIZED_PRECISIONS",
    "GateKind",
    "GateResult",
    "Tolerance",
    "check_gates",
    "gate_kind",
]


@dataclass(frozen=True)
class GateResult:
    """One check of one variant: the measured number, its limit, and whether it held."""

    variant: str
    gate: str
    check: str
    value: float
    limit: float
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return f"{self.variant}: {self.check} = {self.value:.4f} (limit {self.limit:.4f}) {verdict}"


def check_gates(
    variant: str,
    kind: GateKind,
    variant_dice: dict[str, float],
    baseline_dice: dict[str, float],
    tolerances: dict[GateKind, Tolerance] | None = None,
) -> list[GateResult]:
    """Compare a variant's per-class Dice (keyed by class short name) with the baseline's.

    Returns one GateResult per check the gate kind asks for. Raises KeyError naming the class
    if either side lacks a foreground class.
    """
    tolerance = (tolerances or DEFAULT_TOLERANCES)[kind]
    results: list[GateResult] = []
    drops: list[float] = []
    for cls in FOREGROUND:
        for side, table in (("variant", variant_dice), ("baseline", baseline_dice)):
            if cls.short not in table:
                raise KeyError(f"{variant}: {side} Dice has no class {cls.short!r} (has {sorted(table)})")
        delta = float(variant_dice[cls.short]) - float(baseline_dice[cls.short])
        drops.append(-delta)
        if tolerance.per_class is None:
            continue
        if tolerance.two_sided:
            value, check = abs(delta), f"|dDice {cls.short}|"
        else:
            value, check = -delta, f"Dice drop {cls.short}"
        results.append(GateResult(variant, kind.value, check, value, tolerance.per_class, value <= tolerance.per_class))
    if tolerance.mean is not None:
        mean_drop = sum(drops) / len(drops)
        if tolerance.two_sided:
            value, check = sum(abs(d) for d in drops) / len(drops), "mean |dDice|"
        else:
            value, check = mean_drop, "mean Dice drop"
        results.append(GateResult(variant, kind.value, check, value, tolerance.mean, value <= tolerance.mean))
    return results


def tolerance_table(tolerances: dict[GateKind, Tolerance] | None = None) -> list[dict]:
    """The tolerance table as rows, for reports."""
    rows = []
    for kind, tol in (tolerances or DEFAULT_TOLERANCES).items():
        rows.append({"gate": kind.value, "per_class": tol.per_class, "mean": tol.mean, "two_sided": tol.two_sided})
    return rows
