"""The accuracy tolerance table and its checks: the one owner of every accuracy gate.

Export validation (an artefact vs the Keras model it came from) and the benchmarks (a variant
vs the float baseline) both call `check_gates` with this table. It lives in edge_runtime so
both, and an edge box without TensorFlow, share it.

| gate      | applies to                                    | per class dDice      | mean dDice   |
|-----------|-----------------------------------------------|----------------------|--------------|
| float     | fp32 / fp16 conversions (TFLite, ONNX)        | <= 0.002 (both ways) | -            |
| quantized | dynamic-range, full int8, QAT int8, ONNX int8 | drop <= 0.02         | drop <= 0.01 |
| pruned    | any pruned model (with or without int8)       | -                    | drop <= 0.02 |

"dDice" is the candidate's Dice minus the reference's Dice on the same slices. A float
conversion should reproduce its reference, so its gate is two-sided: moving either way means
the conversion changed the network. Quantized and pruned variants may legitimately come out a
little better (QAT and pruning fine-tune the weights again), so their gates bound the *drop*
(reference - candidate); the mean drop equals the drop of the foreground mean Dice.
Background is never gated: it is ~94 % of the pixels and hides everything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

from edge_runtime.labels import FOREGROUND
from edge_runtime.precision import ALIASES, Precision


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

_SPELLINGS = {p.value: p for p in Precision} | {alias: Precision(p) for alias, p in ALIASES.items()}
FLOAT_PRECISIONS = frozenset(name for name, p in _SPELLINGS.items() if p.is_float)
QUANTIZED_PRECISIONS = frozenset(name for name, p in _SPELLINGS.items() if not p.is_float)


def gate_kind(precision: str | Precision, pruned: bool = False) -> GateKind:
    """Pick the gate for an artefact from its manifest precision and whether it was pruned.

    Anything pruned gets the pruned gate whatever its precision; otherwise float precisions get
    the float gate and every integer/dynamic precision (QAT included) the quantized gate.
    Raises ValueError for a precision it does not know, so a new format is never silently
    ungated.
    """
    try:
        parsed = Precision.parse(precision)
    except ValueError as exc:
        raise ValueError(f"no accuracy gate for precision {precision!r}: {exc}") from None
    if pruned:
        return GateKind.PRUNED
    return GateKind.FLOAT if parsed.is_float else GateKind.QUANTIZED


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
    """Compare a candidate's per-class Dice (keyed by class short name) with its reference's.

    Returns one GateResult per check the gate kind asks for (never an empty list for the
    default table). A NaN Dice fails its check. Raises KeyError naming the class if either side
    lacks a foreground class.
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
        if tolerance.two_sided:
            value, check = sum(abs(d) for d in drops) / len(drops), "mean |dDice|"
        else:
            value, check = sum(drops) / len(drops), "mean Dice drop"
        results.append(GateResult(variant, kind.value, check, value, tolerance.mean, value <= tolerance.mean))
    return results


def describe_gate(kind: GateKind, tolerances: dict[GateKind, Tolerance] | None = None) -> str:
    """One line naming a gate's limits, e.g. "quantized: Dice drop <= 0.02 per class, mean drop <= 0.01"."""
    tol = (tolerances or DEFAULT_TOLERANCES)[kind]
    measure = "|dDice|" if tol.two_sided else "Dice drop"
    parts = []
    if tol.per_class is not None:
        parts.append(f"{measure} <= {tol.per_class} per class")
    if tol.mean is not None:
        parts.append(f"mean {measure} <= {tol.mean}")
    return f"{kind.value}: " + ", ".join(parts)


def tolerance_table(tolerances: dict[GateKind, Tolerance] | None = None) -> list[dict]:
    """The tolerance table as rows, for reports."""
    return [
        {"gate": kind.value, "per_class": tol.per_class, "mean": tol.mean, "two_sided": tol.two_sided}
        for kind, tol in (tolerances or DEFAULT_TOLERANCES).items()
    ]
