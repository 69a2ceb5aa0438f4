"""The accuracy benchmark's data model: one row per model and the report around them, with verdicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edge_runtime.tolerances import DEFAULT_TOLERANCES, GateResult, tolerance_table

BASELINE_LABEL = "keras-float"


@dataclass
class ModelAccuracy:
    """Scores of one model on the test slices, its change vs the baseline and its gate checks."""

    label: str
    format: str
    precision: str
    recipe: str
    source: str  # "keras" (evaluated here), "artifact" (edge backend), "recorded" (metrics.json / manifest)
    gate: str | None = None
    backend: str | None = None
    mean_dice: float | None = None
    mean_iou: float | None = None
    dice: dict[str, float] = field(default_factory=dict)
    iou: dict[str, float] = field(default_factory=dict)
    delta_dice: dict[str, float] = field(default_factory=dict)
    delta_iou: dict[str, float] = field(default_factory=dict)
    delta_mean_dice: float | None = None
    patient_mean_dice: dict[str, float] = field(default_factory=dict)
    ts: dict[str, Any] | None = None
    gates: list[GateResult] = field(default_factory=list)
    eval_seconds: float | None = None
    error: str | None = None
    skipped: str | None = None

    @property
    def passed(self) -> bool:
        """True only for a row that was evaluated and held every check: skipped is not passed."""
        return self.error is None and self.skipped is None and all(g.passed for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["gates"] = [g.to_dict() for g in self.gates]
        data["passed"] = self.passed
        return data


@dataclass
class AccuracyReport:
    """The baseline, every variant, and what they were evaluated on.

    `allow_skip` accepts variants that could not be run here (a backend not installed); without
    it a skipped variant makes the report fail, since nothing was proven about it.
    """

    run_dir: str
    data: str
    modality: str
    patients: list[str]
    n_slices: int
    baseline: ModelAccuracy
    variants: list[ModelAccuracy]
    thresholds_mm2: dict[str, float]
    pixel_spacing_mm: list[float]
    notes: list[str] = field(default_factory=list)
    allow_skip: bool = False

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for v in self.variants for g in v.gates if not g.passed]

    @property
    def errors(self) -> list[ModelAccuracy]:
        return [v for v in [self.baseline, *self.variants] if v.error]

    @property
    def skipped(self) -> list[ModelAccuracy]:
        return [v for v in self.variants if v.skipped]

    @property
    def passed(self) -> bool:
        return not self.failed_gates and not self.errors and (self.allow_skip or not self.skipped)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir,
            "data": self.data,
            "modality": self.modality,
            "patients": self.patients,
            "n_slices": self.n_slices,
            "tolerances": tolerance_table(DEFAULT_TOLERANCES),
            "thresholds_mm2": self.thresholds_mm2,
            "pixel_spacing_mm": self.pixel_spacing_mm,
            "baseline": self.baseline.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
            "failed_gates": [g.to_dict() for g in self.failed_gates],
            "skipped": [v.label for v in self.skipped],
            "allow_skip": self.allow_skip,
            "passed": self.passed,
            "notes": self.notes,
        }
