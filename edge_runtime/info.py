"""`edge-seg info`: a model's manifest as a table (or JSON), with its integrity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge_runtime.manifest import Manifest, ManifestError, TensorSpec, load_verified_manifest, read_manifest, sha256_file
from edge_runtime.preprocessing import format_windows, window_specs


def _tensor(spec: TensorSpec) -> str:
    shape = "x".join("N" if d is None else str(d) for d in spec.shape)
    quant = f", scale {spec.scale:.6g}, zero point {spec.zero_point}" if spec.quantized else ""
    return f"{spec.name}: {shape} {spec.dtype}{quant}"


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value) or "-"
    return str(value) if value not in (None, "") else "-"


def _windows(manifest: Manifest) -> str:
    own = manifest.preprocessing.field_of_view_mm
    if own is None:
        return "one: the whole slice, padded to a square"
    windows = format_windows([spec.field_of_view_mm for spec in window_specs(manifest.preprocessing)])
    return f"{windows}, class probabilities averaged (--single-window: {own:g} mm only)"


def file_sha256(model_path: Path) -> str:
    """The model file's own sha256 (the manifest's may be what it should be, not what it is)."""
    try:
        return sha256_file(model_path)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"


def manifest_table(manifest: Manifest, model_path: Path, verified: str) -> Table:
    """Key facts first (what, how big, is it intact), then tensors, preprocessing and provenance."""
    table = Table(title=f"{model_path.name}", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, str]] = [
        ("name", manifest.name or "-"),
        ("variant", manifest.variant or "-"),
        ("format", manifest.format),
        ("precision", manifest.precision),
        ("integrity", verified),
        ("sha256 (manifest)", manifest.sha256),
        ("sha256 (file)", file_sha256(model_path)),
        ("size", f"{manifest.size_bytes:,} bytes" + (f" ({manifest.gzip_bytes:,} gzipped)" if manifest.gzip_bytes else "")),
        ("MACs per slice", f"{manifest.macs_per_slice:,}" if manifest.macs_per_slice else "-"),
    ]
    rows += [(f"input {i}", _tensor(t)) for i, t in enumerate(manifest.inputs)]
    rows += [(f"output {i}", _tensor(t)) for i, t in enumerate(manifest.outputs)]
    rows += [
        ("preprocessing", _flat(manifest.preprocessing.to_dict())),
        ("windows (edge-seg run)", _windows(manifest)),
        ("classes", ", ".join(f"{c.get('id')} {c.get('short')}" for c in manifest.classes)),
    ]
    rows += [(f"provenance {k}", _flat(v)) for k, v in manifest.provenance.items()]
    rows += [(f"baseline {k}", _flat(v)) for k, v in manifest.baseline_metrics.items()]
    rows += [(f"metrics {k}", _flat(v)) for k, v in manifest.metrics.items()]
    rows += [(f"validation {k}", _flat(v)) for k, v in manifest.validation.items()]
    if manifest.ops:
        rows.append(("ops", ", ".join(manifest.ops)))
    for field_name, value in rows:
        table.add_row(field_name, value)
    return table


def backend_section(model_path: Path, manifest: Manifest, threads: int | None, measure: bool) -> dict[str, Any]:
    """Installed backends for the model and what `--backend auto` runs at `threads`, and why.

    Without `measure` nothing is loaded: the choice comes from the cache (or is the only
    candidate); with it, every candidate is probed now and the cache updated.
    """
    from edge_runtime.backend_choice import BackendChoice, cached_choice, measure_choice, runs_below
    from edge_runtime.backends import candidate_backends, check_threads, open_named

    threads = check_threads(threads)
    candidates = candidate_backends(model_path)
    choice: BackendChoice | None = None
    if len(candidates) == 1:
        name = candidates[0]
        if measure:
            open_named(model_path, name, threads, manifest)  # at least prove that it loads
        choice = BackendChoice(name, threads, "auto", "only candidate", f"{name} is the only installed backend for "
                               f"{model_path.suffix} models")
    elif measure and candidates:
        choice = measure_choice(model_path, threads, manifest, candidates)
    elif candidates:
        choice = cached_choice(manifest.sha256, threads, candidates)
    auto = None
    if choice is not None:
        auto = choice.to_dict() | {"one_shot_below": runs_below(choice, candidates)}
    return {"installed": candidates, "threads": threads, "auto": auto, "windows": len(window_specs(manifest.preprocessing))}


def _backend_rows(section: dict[str, Any]) -> list[tuple[str, str]]:
    installed = ", ".join(section["installed"]) or "none (pip install ai-edge-litert, 'edge-seg[openvino]' or 'edge-seg[onnx]')"
    auto = section["auto"]
    if auto is None:
        text = "not measured on this machine yet: the first `edge-seg run` (or `edge-seg info --measure`) measures and caches it"
    else:
        text = f"{auto['backend']} ({auto['source']}): {auto['reason']}"
    threads = section["threads"]
    rows = [("backends installed", installed), (f"backend auto ({threads} thread{'s' if threads != 1 else ''})", text)]
    if auto is not None and auto.get("one_shot_below"):
        name, calls = auto["one_shot_below"]
        files = -(-calls // section["windows"])
        rows.append(("backend auto, one-shot run", f"`edge-seg run` on fewer than {files} files ({calls} model calls, "
                     f"{section['windows']} per slice) takes {name}: it starts quicker, and the per-call gain would not "
                     "pay for the other's start-up"))
    return rows + [(f"ruled out: {name}", why) for name, why in (auto or {}).get("errors", {}).items()]


def info_command(
    model: Path | None = None, json_output: bool = False, threads: int | None = None, measure: bool = False
) -> int:
    """Print the manifest and the backend `auto` runs; 0 when the model checks out, 2 when it is
    missing, unreadable or altered (or, with `measure`, no backend can run it)."""
    from edge_runtime.backends import BackendError
    from edge_runtime.run import UsageError, resolve_model

    err = Console(stderr=True, soft_wrap=True)
    try:
        model_path = resolve_model(model)
        manifest = read_manifest(model_path)
    except (UsageError, ManifestError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    try:
        load_verified_manifest(model_path)
        problem = None
    except ManifestError as exc:
        problem = str(exc)
    section = None
    if problem is None:  # never load or time a model that failed its integrity check
        try:
            section = backend_section(model_path, manifest, threads, measure)
        except BackendError as exc:
            problem = str(exc)
    if json_output:
        data = manifest.to_dict() | {"file_sha256": file_sha256(model_path), "verified": problem is None,
                                     "verification_error": problem, "backend": section}  # fmt: skip
        print(json.dumps(data, indent=2))
    else:
        ok = "[green]ok[/] (sha256, classes and preprocessing match)"
        verified = ok if problem is None else f"[red]FAILED[/] {escape(problem)}"
        table = manifest_table(manifest, model_path, verified)
        for field_name, value in _backend_rows(section) if section else []:
            table.add_row(field_name, escape(value))
        Console().print(table)
    if problem is not None:
        err.print(f"[red]error:[/] {escape(str(problem))}")
        return 2
    return 0
