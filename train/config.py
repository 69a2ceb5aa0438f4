"""What defines a training run: TrainConfig, and the checks that turn command-line arguments into one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.preprocessing import PreprocessSpec
from train import run_dir as rd
from train.data.mendeley import MODALITY_CHOICES


class TrainError(ValueError):
    """Bad training input: reported as a one-line error, exit status 2."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (config.json holds these plus derived facts)."""

    arch: str
    encoder: str | None
    image_size: int
    depth: int
    base_filters: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    modality: str
    data: str
    patience: int = 20
    warmup_epochs: int = 2
    class_weights: list[float] | None = None
    field_of_view_mm: float | None = None
    init_from: str | None = None  # a run folder whose weights start this run (fine-tuning)

    def model_kwargs(self) -> dict[str, Any]:
        if self.arch == "unet":
            return {"depth": self.depth, "base_filters": self.base_filters}
        return {"encoder": self.encoder, "base_filters": self.base_filters}

    def spec(self) -> PreprocessSpec:
        return PreprocessSpec(input_size=self.image_size, field_of_view_mm=self.field_of_view_mm)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from config.json (derived keys such as MACs and provenance are ignored)."""
    known = set(TrainConfig.__dataclass_fields__)
    return TrainConfig(**{k: v for k, v in data.items() if k in known})


def build_from_config(config: dict[str, Any] | TrainConfig):
    """Rebuild a run's architecture (untrained) from config.json, e.g. to load weights into."""
    from train.models import build_model

    cfg = config if isinstance(config, TrainConfig) else config_from_dict(config)
    return build_model(cfg.arch, cfg.image_size, **cfg.model_kwargs())


def check_model_args(arch: str, encoder: str, image_size: int, base_filters: int) -> tuple[str | None, int]:
    """(encoder or None, depth) after the same checks the builders make, without building."""
    from train.models import ARCHITECTURES
    from train.models.blocks import check_input_size
    from train.models.resunet import ENCODER_BLOCKS, TOTAL_STRIDE

    if arch not in ARCHITECTURES:
        raise TrainError(f"unknown --arch {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    if base_filters < 1 or (arch == "resunet" and base_filters < 2):
        raise TrainError(f"--base-filters {base_filters} is too small for {arch}")
    try:
        if arch == "unet":
            depth = 4
            check_input_size(image_size, 2**depth, arch)
            return None, depth
        if encoder not in ENCODER_BLOCKS:
            raise TrainError(f"unknown --encoder {encoder!r}; choose one of {', '.join(sorted(ENCODER_BLOCKS))}")
        check_input_size(image_size, TOTAL_STRIDE, arch)
        return encoder, int(math.log2(TOTAL_STRIDE))
    except TrainError:
        raise
    except ValueError as exc:
        raise TrainError(f"--image-size: {exc}") from None


def parse_class_weights(text: str | None) -> list[float] | None:
    """Loss weights per class from "BG,IVD,PE,TS,AAP" (e.g. "1,1,1,2,1"), or None for equal weights."""
    if text is None:
        return None
    from edge_runtime.labels import CLASSES

    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        weights = []
    if len(weights) != len(CLASSES) or not all(w > 0 for w in weights):
        names = ",".join(c.short for c in CLASSES)
        raise TrainError(f"--class-weights {text!r}: need {len(CLASSES)} positive numbers, one per class ({names})")
    return weights


def check_data(data: Path):
    """The data set's labelled slice pairs, or TrainError naming the folder and what is wrong."""
    from train.data.mendeley import index_dataset

    if not data.exists():
        raise TrainError(f"--data {data}: folder not found")
    if not data.is_dir():
        raise TrainError(f"--data {data}: not a folder")
    try:
        pairs = index_dataset(data)
    except (OSError, ValueError) as exc:
        raise TrainError(f"--data {data}: {exc}") from None
    if not pairs:
        raise TrainError(f"--data {data}: no labelled slices found (expected the Mendeley layout; try `edge-seg synth`)")
    return pairs


def prepare_config(
    data: Path,
    out: Path,
    arch: str,
    encoder: str,
    epochs: int,
    batch_size: int,
    image_size: int,
    base_filters: int,
    lr: float,
    seed: int,
    modality: str,
    resume: bool,
    time_budget: float | None,
    class_weights: str | None = None,
    field_of_view_mm: float | None = None,
    init_from: Path | None = None,
) -> TrainConfig:
    """Validate every argument (raising TrainError) and return the run's config.

    With resume the saved config wins, except `epochs` (so a finished run can be extended).
    """
    data, out = Path(data).resolve(), Path(out)
    if time_budget is not None and time_budget <= 0:
        raise TrainError(f"--time-budget must be > 0 minutes, got {time_budget}")
    if epochs < 1 or batch_size < 1:
        raise TrainError(f"--epochs and --batch-size must be >= 1, got {epochs}, {batch_size}")
    run = rd.RunDir(out)
    if resume:
        if not run.is_run() or run.state() is None:
            raise TrainError(f"--out {out}: nothing to resume (no {rd.CONFIG} and {rd.CHECKPOINT_DIR}/{rd.STATE})")
        try:
            config = config_from_dict(run.config())
        except (TypeError, rd.RunDirError) as exc:
            raise TrainError(f"--out {out}: unusable {rd.CONFIG} ({exc})") from None
        config.epochs = epochs
        check_data(Path(config.data))
        return config
    if run.is_run() or run.model_path.exists():
        raise TrainError(f"--out {out} already holds a training run; use --resume to continue it or choose another --out")
    if modality not in MODALITY_CHOICES:
        raise TrainError(f"unknown --modality {modality!r}; choose one of {', '.join(MODALITY_CHOICES)}")
    if not lr > 0:
        raise TrainError(f"--lr must be > 0, got {lr}")
    weights = parse_class_weights(class_weights)
    encoder_used, depth = check_model_args(arch, encoder, image_size, base_filters)
    if field_of_view_mm is not None and not field_of_view_mm > 0:
        raise TrainError(f"--field-of-view-mm must be > 0 mm, got {field_of_view_mm}")
    start = check_init_from(init_from, arch, encoder_used, base_filters) if init_from is not None else None
    check_data(data)
    return TrainConfig(
        arch=arch,
        encoder=encoder_used,
        image_size=image_size,
        depth=depth,
        base_filters=base_filters,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        modality=modality,
        data=str(data),
        class_weights=weights,
        field_of_view_mm=field_of_view_mm,
        init_from=start,
    )


def check_init_from(init_from: Path, arch: str, encoder: str | None, base_filters: int) -> str:
    """The resolved run folder to start from, or TrainError when it has no model or another architecture."""
    run = rd.RunDir(Path(init_from))
    if not run.model_path.is_file():
        raise TrainError(f"--init-from {init_from}: no {run.model_path.name} to start from")
    try:
        source = config_from_dict(run.config())
    except (TypeError, rd.RunDirError) as exc:
        raise TrainError(f"--init-from {init_from}: unusable {rd.CONFIG} ({exc})") from None
    ours = (arch, encoder, base_filters)
    theirs = (source.arch, source.encoder, source.base_filters)
    if ours != theirs:
        raise TrainError(f"--init-from {init_from}: its model is {theirs} (arch, encoder, base filters), this run's {ours}")
    return str(Path(init_from).resolve())
