"""Find the exported artefacts in a folder and describe each one from its verified manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.manifest import Manifest, ManifestError, gzip_size, load_verified_manifest
from edge_runtime.precision import Precision
from edge_runtime.tolerances import GateKind, gate_kind

MODEL_SUFFIXES = (".tflite", ".onnx")
_FORMAT_ORDER = ("tflite", "onnx")


def _precision_rank(precision: str) -> int:
    """Report order of a precision (edge_runtime.precision); unknown ones last."""
    try:
        return Precision.parse(precision).rank
    except ValueError:
        return 99


def _sparsity(provenance: dict[str, Any]) -> float | None:
    """Target sparsity from the provenance (top level or its `optimization` entry)."""
    optimization = provenance.get("optimization")
    for source in (provenance, optimization if isinstance(optimization, dict) else {}):
        for key in ("prune", "target_sparsity", "sparsity", "pruning_sparsity"):
            value = source.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1:
                return float(value)
    return None


def recipe_of(provenance: dict[str, Any], name: str = "") -> tuple[str, bool, bool]:
    """(recipe label, pruned, quantisation-aware) from a manifest's provenance and model name.

    The exporter records `pruned` and `quantization_aware` in the provenance; the name (e.g.
    `unet-pruned50`) is a fallback for artefacts exported before those keys existed.
    """
    lowered = name.lower()
    pruned = bool(provenance.get("pruned")) or "prun" in lowered
    qat = bool(provenance.get("quantization_aware")) or "qat" in lowered
    parts = []
    if pruned:
        sparsity = _sparsity(provenance)
        parts.append(f"pruned{round(100 * sparsity)}" if sparsity is not None else "pruned")
    if qat:
        parts.append("qat")
    return ("-".join(parts) or "float"), pruned, qat


@dataclass(frozen=True)
class Variant:
    """One exported model file and what its manifest says it is."""

    label: str
    path: Path
    format: str
    precision: str
    recipe: str
    pruned: bool
    qat: bool
    manifest: Manifest

    @property
    def gate(self) -> GateKind:
        return gate_kind(self.precision, self.pruned)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def gzip_bytes(self) -> int:
        """Manifest value when recorded, else measured (gzip -9: where pruned zeros pay off)."""
        if self.manifest.gzip_bytes:
            return int(self.manifest.gzip_bytes)
        return gzip_size(self.path)

    @property
    def macs_per_slice(self) -> int | None:
        return self.manifest.macs_per_slice

    def sort_key(self) -> tuple:
        recipe_rank = 0 if self.recipe == "float" else (1 if not self.pruned else 2)
        precision_rank = _precision_rank(self.precision)
        format_rank = _FORMAT_ORDER.index(self.format) if self.format in _FORMAT_ORDER else 99
        return (recipe_rank, self.recipe, format_rank, precision_rank, self.label)


def variant_label(model_path: Path) -> str:
    """Artefacts are named `<name>-<format>.<ext>` (e.g. unet-pruned50-tflite-int8): the stem is
    unique within a folder and readable."""
    return Path(model_path).stem


def describe_variant(path: Path) -> Variant:
    """Verify one artefact's manifest (sha256, class table, preprocessing) and describe it."""
    path = Path(path)
    manifest = load_verified_manifest(path)
    recipe, pruned, qat = recipe_of(manifest.provenance, manifest.name or path.stem)
    try:
        gate_kind(manifest.precision, pruned)
    except ValueError as exc:
        raise ManifestError(f"{path}: {exc}") from exc
    return Variant(
        label=variant_label(path),
        path=path,
        format=manifest.format,
        precision=manifest.precision,
        recipe=recipe,
        pruned=pruned,
        qat=qat,
        manifest=manifest,
    )


def discover_variants(folder: Path, recursive: bool = True) -> list[Variant]:
    """Every `.tflite`/`.onnx` under `folder` whose manifest verifies, in a stable report order.

    Raises ManifestError naming the file when a model lacks a manifest or fails verification
    (a benchmark of an unverified artefact would be meaningless), FileNotFoundError when the
    folder does not exist, and ValueError when it holds no artefacts or two share a label.
    Hidden files and folders (the exporter's scratch space) are skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"artefacts folder {folder} does not exist")
    pattern = "**/*" if recursive else "*"
    paths = sorted(
        p
        for p in folder.glob(pattern)
        if p.is_file()
        and p.suffix.lower() in MODEL_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not paths:
        raise ValueError(f"{folder}: no .tflite or .onnx artefacts found")
    variants: list[Variant] = []
    seen: dict[str, Path] = {}
    for path in paths:
        variant = describe_variant(path)
        if variant.label in seen:
            raise ValueError(f"two artefacts share the label {variant.label!r}: {seen[variant.label]} and {path}")
        seen[variant.label] = path
        variants.append(variant)
    return sorted(variants, key=Variant.sort_key)
