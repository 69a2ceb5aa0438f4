"""Post-export validation: run an artefact through the edge runtime and compare it with the Keras model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edge_runtime.backends import open_backend
from edge_runtime.labels import CLASSES
from edge_runtime.metrics import Scores, confusion_matrix, scores_from_confusion, segmentation_scores
from edge_runtime.preprocessing import PreprocessSpec, SliceGeometry, prepare_slice, restore_labels
from edge_runtime.tolerances import DEFAULT_TOLERANCES, GateKind, GateResult, Tolerance, check_gates, describe_gate, gate_kind
from export.formats import ExportFormat

_BATCH = 16


@dataclass(frozen=True)
class ValidationSet:
    """Prepared slices (N, S, S, 1) float32 and, when known, their ground truth.

    labels: class ids either at model resolution, an (N, S, S) array, or at each slice's
    original size, a list with the `geometries` prepare_slice returned; then predictions are
    restored to the original size before scoring, exactly as train.evaluate scores the float
    baseline (metrics.json), so the Dice numbers are comparable with it.
    """

    images: np.ndarray
    labels: np.ndarray | list[np.ndarray] | None
    source: str
    held_out: bool = True
    geometries: list[SliceGeometry] | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 1 or len(self.images) == 0:
            raise ValueError(f"validation images must be (N, S, S, 1) with N >= 1, got {self.images.shape}")
        if self.labels is None:
            return
        if self.geometries is not None:
            if not (len(self.labels) == len(self.geometries) == len(self.images)):
                raise ValueError("validation labels, geometries and images differ in number")
        elif np.shape(self.labels) != self.images.shape[:3]:
            raise ValueError(f"validation labels {np.shape(self.labels)} do not match images {self.images.shape}")

    def scores(self, class_scores: np.ndarray) -> Scores:
        """Dice/IoU of per-class scores (N, S, S, C) against the labels, pooled over slices."""
        if self.labels is None:
            raise ValueError("this validation set has no labels")
        if self.geometries is None:
            return segmentation_scores(class_scores.argmax(-1), np.asarray(self.labels))
        confusion = sum(
            confusion_matrix(restore_labels(s, g), t) for s, g, t in zip(class_scores, self.geometries, self.labels, strict=True)
        )
        return scores_from_confusion(confusion)


@dataclass(frozen=True)
class ValidationReport:
    """How closely one artefact reproduces the Keras model, and whether it meets its gate.

    `gate` names the tolerance row (edge_runtime.tolerances) and `gates` holds every check of
    it; `passed` is True only when each check held.
    """

    format: str
    precision: str
    backend: str
    slices: int
    source: str
    held_out: bool
    reference: str  # "ground-truth" (Dice vs labels) or "keras-prediction" (no labels given)
    agreement: float
    dice_keras: dict[str, float]
    dice_artefact: dict[str, float]
    dice_delta: dict[str, float]
    mean_abs_delta: float
    max_abs_delta: float
    gate: str
    gates: list[GateResult]
    passed: bool

    def to_dict(self) -> dict:
        data = asdict(self)
        data["gates"] = [g.to_dict() for g in self.gates]
        return data

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def summary(self) -> str:
        deltas = " ".join(f"{k} {v:+.4f}" for k, v in self.dice_delta.items() if k != CLASSES[0].short)
        verdict = "PASS" if self.passed else "FAIL"
        failed = "; failed: " + ", ".join(f"{g.check} {g.value:.4f} > {g.limit}" for g in self.failed) if self.failed else ""
        return (
            f"{self.format}: {verdict} agreement {100 * self.agreement:.3f}% on {self.slices} slices; "
            f"dDice vs Keras [{deltas}] mean|d| {self.mean_abs_delta:.4f}; gate {self.gate}{failed}"
        )


def predict_keras(model, images: np.ndarray) -> np.ndarray:
    """Float per-class scores of the Keras model, in small batches."""
    return np.concatenate([model(images[i : i + _BATCH], training=False).numpy() for i in range(0, len(images), _BATCH)])


def predict_artefact(path: Path, images: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, str]:
    """Per-class scores of an exported artefact through the edge runtime's own backend."""
    backend = open_backend(path, threads=threads)
    scores = np.concatenate([backend.predict(images[i : i + _BATCH]) for i in range(0, len(images), _BATCH)])
    return scores, backend.name


def compare(
    fmt: ExportFormat,
    keras_scores: np.ndarray,
    artefact_scores: np.ndarray,
    validation: ValidationSet,
    backend: str = "",
    pruned: bool = False,
    tolerances: dict[GateKind, Tolerance] | None = None,
) -> ValidationReport:
    """Argmax agreement, per-class Dice delta (artefact minus Keras) and the gate verdict.

    With labels, both models are scored against the ground truth; without, the Keras argmax is
    the reference (its Dice is then 1 by definition). Every format is judged by its row of the
    tolerance table (edge_runtime.tolerances: float, quantized, or pruned when `pruned`), the
    same rows the benchmarks gate on; the agreement is reported, not gated.
    """
    if keras_scores.shape != artefact_scores.shape:
        raise ValueError(f"{fmt.name}: artefact output {artefact_scores.shape} != Keras output {keras_scores.shape}")
    keras_pred = keras_scores.argmax(-1)
    art_pred = artefact_scores.argmax(-1)
    if validation.labels is not None:
        keras_dice = {s.short: s.dice for s in validation.scores(keras_scores).per_class}
        art_dice = {s.short: s.dice for s in validation.scores(artefact_scores).per_class}
    else:
        keras_dice = {s.short: s.dice for s in segmentation_scores(keras_pred, keras_pred).per_class}
        art_dice = {s.short: s.dice for s in segmentation_scores(art_pred, keras_pred).per_class}
    delta = {k: art_dice[k] - keras_dice[k] for k in keras_dice}
    fg = [abs(delta[c.short]) for c in CLASSES[1:]]
    kind = gate_kind(fmt.precision, pruned)
    gates = check_gates(fmt.name, kind, art_dice, keras_dice, tolerances)
    return ValidationReport(
        format=fmt.name,
        precision=fmt.precision,
        backend=backend,
        slices=len(validation.images),
        source=validation.source,
        held_out=validation.held_out,
        reference="ground-truth" if validation.labels is not None else "keras-prediction",
        agreement=float((keras_pred == art_pred).mean()),
        dice_keras=keras_dice,
        dice_artefact=art_dice,
        dice_delta=delta,
        mean_abs_delta=float(np.mean(fg)),
        max_abs_delta=float(np.max(fg)),
        gate=describe_gate(kind, tolerances or DEFAULT_TOLERANCES),
        gates=gates,
        passed=all(g.passed for g in gates),
    )


def validate_artefact(
    path: Path,
    fmt: ExportFormat,
    keras_scores: np.ndarray,
    validation: ValidationSet,
    pruned: bool = False,
    threads: int | None = None,
) -> ValidationReport:
    """Run `path` through open_backend on the validation slices and compare with `keras_scores`."""
    scores, backend = predict_artefact(path, validation.images, threads=threads)
    return compare(fmt, keras_scores, scores, validation, backend=backend, pruned=pruned)


def held_out_validation_set(
    data: Path, spec: PreprocessSpec, slices: int, modality: str = "T2", run=None, seed: int = 0, split: str = "test"
) -> ValidationSet:
    """Up to `slices` prepared slices of held-out patients (the test split by default: the patients
    the float baseline in metrics.json was scored on) with their labels at original size."""
    from export.calibration import spread_pick
    from train.data.mendeley import load_pair, pixel_spacing_of, with_modalities
    from train.evaluate import split_pairs

    pairs, _ = split_pairs(Path(data), split, run, seed=seed)
    samples = with_modalities(sorted(pairs, key=lambda p: (p.patient_id, p.disc)), modality)
    chosen = spread_pick(samples, slices)
    images, labels, geometries = [], [], []
    for pair, contrast in chosen:
        raw, truth = load_pair(pair, contrast)
        image, geometry = prepare_slice(raw, spec, pixel_spacing_of(pair))
        images.append(image)
        labels.append(truth)
        geometries.append(geometry)
    patients = len({p.patient_id for p, _ in chosen})
    return ValidationSet(
        np.stack(images)[..., None].astype(np.float32),
        labels,
        f"{len(chosen)} {modality} slices of {patients} {split}-split patients in {data} (scored at original size)",
        geometries=geometries,
    )
