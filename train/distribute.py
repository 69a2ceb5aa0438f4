"""Devices and numeric precision for training: which tf.distribute strategy, mixed precision, float32 saves.

One process uses every visible GPU: `MirroredStrategy` with more than one GPU, the default
strategy with one GPU or on CPU. Several machines: set TF_CONFIG on each worker and the same
command picks `MultiWorkerMirroredStrategy`; only the chief (worker 0, or a "chief" task)
writes the run folder. Mixed precision (`mixed_float16`) is on only when a GPU is visible.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StrategyPlan:
    """What the visible devices and TF_CONFIG ask for, decided without touching TensorFlow."""

    kind: str  # "multi-worker", "mirrored" or "default"
    uses_gpu: bool
    is_chief: bool


def plan_strategy(tf_config: str | None, gpus: int) -> StrategyPlan:
    """The strategy for `gpus` visible GPUs and the TF_CONFIG environment value (JSON or empty).

    More than one task (workers plus a chief) in TF_CONFIG means multi-worker training, whose
    chief is the task of type "chief", or worker 0 when the cluster has none; otherwise several GPUs mirror and one GPU or
    the CPU runs the default strategy. Raises ValueError when TF_CONFIG is not a JSON object.
    """
    try:
        config = json.loads(tf_config or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"TF_CONFIG is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {tf_config!r}")
    cluster = config.get("cluster", {}) or {}
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        task = config.get("task", {}) or {}
        task_type, index = task.get("type", "worker"), int(task.get("index", 0))
        chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
        return StrategyPlan("multi-worker", gpus > 0, chief)
    if gpus > 1:
        return StrategyPlan("mirrored", True, True)
    return StrategyPlan("default", gpus > 0, True)


def make_strategy(plan: StrategyPlan):
    """The tf.distribute strategy object for a plan."""
    import tensorflow as tf

    if plan.kind == "multi-worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if plan.kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_for_this_machine() -> tuple[Any, StrategyPlan]:
    """(strategy, plan) for the visible GPUs and $TF_CONFIG."""
    import os

    import tensorflow as tf

    plan = plan_strategy(os.environ.get("TF_CONFIG"), len(tf.config.list_physical_devices("GPU")))
    return make_strategy(plan), plan


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """`mixed_float16` inside the block when `mixed`, float32 otherwise; the previous policy afterwards."""
    import tf_keras as keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else previous)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def float32_twin(config):
    """An uncompiled float32 build of the architecture (a mixed_float16 graph would run in float16 on export)."""
    import tf_keras as keras

    from train.config import build_from_config

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        return build_from_config(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
