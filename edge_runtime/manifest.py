"""Model manifest: the JSON sidecar that says what a model file is and proves it is unchanged."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.atomic import atomic_write_text
from edge_runtime.labels import CLASSES
from edge_runtime.preprocessing import SPEC_VERSION, PreprocessSpec

SCHEMA = "edge-seg-manifest/1"
FORMATS = ("keras", "tflite", "onnx")


class ManifestError(ValueError):
    """A model has no usable manifest, or the manifest does not match the model file."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, shape (None = free dim), dtype, int8 quantisation."""

    name: str
    shape: list[int | None]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale > 0


@dataclass
class Manifest:
    """Everything the runtime and the benchmarks need to know about one model artefact."""

    model_file: str
    format: str
    precision: str
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: PreprocessSpec
    name: str = ""
    variant: str = ""
    classes: list[dict[str, Any]] = field(default_factory=lambda: [asdict(c) for c in CLASSES])
    provenance: dict[str, Any] = field(default_factory=dict)
    baseline_metrics: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    size_bytes: int = 0
    gzip_bytes: int = 0
    macs_per_slice: int | None = None
    ops: list[str] = field(default_factory=list)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["preprocessing"] = self.preprocessing.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "manifest") -> Manifest:
        if data.get("schema") != SCHEMA:
            raise ManifestError(f"{source}: schema {data.get('schema')!r} is not {SCHEMA!r}")
        try:
            values = dict(data)
            values["inputs"] = [TensorSpec(**t) for t in data["inputs"]]
            values["outputs"] = [TensorSpec(**t) for t in data["outputs"]]
            values["preprocessing"] = PreprocessSpec.from_dict(data["preprocessing"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{source}: malformed manifest ({exc})") from exc


def manifest_path(model_path: Path) -> Path:
    """`model.tflite` -> `model.tflite.json` (unique even when .tflite and .onnx share a stem)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gzip_size(path: Path) -> int:
    """Bytes after gzip -9 (no timestamp): what sparsity and low precision buy on the wire."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9, mtime=0))


def write_manifest(manifest: Manifest, model_path: Path) -> Path:
    """Write the sidecar next to `model_path` atomically and return its path."""
    path = manifest_path(model_path)
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(model_path: Path) -> Manifest:
    """Read the sidecar of `model_path` without checking the model file."""
    path = manifest_path(model_path)
    if not path.is_file():
        raise ManifestError(f"{model_path}: no manifest found (expected {path.name} beside it)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc})") from exc
    return Manifest.from_dict(data, source=str(path))


def load_verified_manifest(model_path: Path) -> Manifest:
    """Read the manifest and refuse the model unless file hash, classes and preprocessing match."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ManifestError(f"{model_path}: model file not found")
    manifest = read_manifest(model_path)
    actual = sha256_file(model_path)
    if actual != manifest.sha256:
        raise ManifestError(
            f"{model_path}: sha256 {actual[:12]}... does not match the manifest's "
            f"{manifest.sha256[:12]}...; the model file was changed or corrupted"
        )
    expected_classes = [c.short for c in CLASSES]
    got_classes = [c.get("short") for c in manifest.classes]
    if got_classes != expected_classes:
        raise ManifestError(f"{model_path}: class table {got_classes} != runtime's {expected_classes}")
    if manifest.preprocessing.version != SPEC_VERSION:
        raise ManifestError(
            f"{model_path}: preprocessing spec version {manifest.preprocessing.version} is not "
            f"supported by this runtime (supports {SPEC_VERSION})"
        )
    size = manifest.preprocessing.input_size
    in_shape = manifest.inputs[0].shape if manifest.inputs else []
    if len(in_shape) != 4 or in_shape[1:3] != [size, size]:
        raise ManifestError(
            f"{model_path}: input shape {in_shape} does not match preprocessing input_size {size}"
        )
    return manifest
