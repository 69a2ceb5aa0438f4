"""Find the exported artefacts in a folder and describe each one from its verified manifest."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from benchmarks.gates import GateKind, gate_kind
from edge_runtime.manifest import Manifest, ManifestError, load_verified_manifest

MODEL_SUFFIXES = (".tflite", ".onnx")
_PRECISION_ORDER = ("fp32", "float32", "fp16", "float16", "dynamic-int8", "dynamic", "int8", "uint8")
_FORMAT_ORDER = ("keras", "tflite", "onnx")


@dataclass(frozen=True)
class Variant:
    """One exported model file and what its manifest says it is."""

    label: str
    path: Path
    format: str
    precision: str
    variant: str
    manifest: Manifest

    @property
    def gate(self) -> GateKind:
        return gate_kind(self.precision, self.variant)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    @property
    def gzip_bytes(self) -> int:
        """Manifest value when recorded, else measured (gzip level 9, what pruning buys)."""
        if self.manifest.gzip_bytes:
            return int(self.manifest.gzip_bytes)
        return gzip_size(self.path)

    @property
    def macs_per_slice(self) -> int | None:
        return self.manifest.macs_per_slice

    def sort_key(self) -> tuple:
        recipe = self.variant.lower()
        recipe_rank = 0 if recipe in ("", "float", "baseline", "fp32") else (1 if "qat" in recipe and "prun" not in recipe else 2)
        precision_rank = _PRECISION_ORDER.index(self.precision) if self.precision in _PRECISION_ORDER else len(_PRECISION_ORDER)
        format_rank = _FORMAT_ORDER.index(self.format) if self.format in _FORMAT_ORDER else len(_FORMAT_ORDER)
        return (recipe_rank, recipe, format_rank, precision_rank, self.label)


def gzip_size(path: Path) -> int:
    """Bytes after gzip -9: the download/storage cost, where pruned zeros pay off."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


def variant_label(model_path: Path) -> str:
    """Artefacts are named `<name>-<format>-<precision>.<ext>`: the stem is unique and readable."""
    return Path(model_path).stem


def discover_variants(folder: Path, recursive: bool = True) -> list[Variant]:
    """Every `.tflite`/`.onnx` under `folder` with a manifest that verifies (sha256, classes, spec).

    Raises ManifestError naming the file when a model lacks a manifest or fails verification
    (a benchmark of an unverified artefact would be meaningless), FileNotFoundError when the
    folder does not exist, and ValueError when it holds no artefacts or two share a label.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"artefacts folder {folder} does not exist")
    pattern = "**/*" if recursive else "*"
    paths = sorted(
        p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES and not p.name.startswith(".")
    )
    if not paths:
        raise ValueError(f"{folder}: no .tflite or .onnx artefacts found")
    variants: list[Variant] = []
    seen: dict[str, Path] = {}
    for path in paths:
        manifest = load_verified_manifest(path)
        label = variant_label(path)
        if label in seen:
            raise ValueError(f"two artefacts share the label {label!r}: {seen[label]} and {path}")
        seen[label] = path
        try:
            gate_kind(manifest.precision, manifest.variant)
        except ValueError as exc:
            raise ManifestError(f"{path}: {exc}") from exc
        variants.append(
            Variant(
                label=label,
                path=path,
                format=manifest.format,
                precision=manifest.precision,
                variant=manifest.variant,
                manifest=manifest,
            )
        )
    return sorted(variants, key=Variant.sort_key)
