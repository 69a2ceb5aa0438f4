"""One latency measurement in a fresh process, so peak memory and thread pools belong to it alone.

The parent (benchmarks.latency) starts `python -m benchmarks.worker '<json task>'` with the
thread-count environment already set; the worker prints one line `RESULT <json>` on stdout.
Task kinds: "backend" (a .tflite/.onnx artefact through edge_runtime.backends), "keras" (the
seed project's U-Net or our float Keras model, timed with `model.predict` as the seed shipped),
and "matmul" (numpy fp32 matrix multiply rate: the machine's compute ceiling).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESULT_PREFIX = "RESULT "


def memory_status() -> dict[str, int]:
    """Current and peak resident set size of this process in bytes (VmRSS, VmHWM)."""
    status = Path("/proc/self/status")
    values: dict[str, int] = {}
    if status.is_file():
        for line in status.read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    if "VmHWM" not in values:  # not Linux: ru_maxrss is KiB on Linux/BSD, bytes on macOS
        scale = 1 if sys.platform == "darwin" else 1024
        values["VmHWM"] = values["VmRSS"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    return {"rss_bytes": values["VmRSS"], "peak_rss_bytes": values["VmHWM"]}


def time_calls(call: Callable[[], object], warmup: int, min_repeats: int, max_repeats: int, budget_s: float) -> list[float]:
    """Warm up, then time `call` (seconds each) at least `min_repeats` times and at most
    `max_repeats`, stopping early once `budget_s` of timed calls has passed."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_repeats and (len(times) < min_repeats or spent < budget_s):
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        times.append(elapsed)
        spent += elapsed
    return times


def _input(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def _run_backend(task: dict) -> dict:
    """Time one backend on one artefact; backend "auto" times whatever `--backend auto` picks
    (its load time then includes the first measurement on this machine, if not cached yet)."""
    from edge_runtime.backends import open_backend

    before = memory_status()
    start = time.perf_counter()
    backend = open_backend(Path(task["path"]), backend=task["backend"], threads=int(task["threads"]))
    load_s = time.perf_counter() - start
    size = int(task["input_size"])
    batch = _input((1, size, size, int(task.get("channels", 1))))
    times = time_calls(lambda: backend.predict(batch), task["warmup"], task["min_repeats"], task["max_repeats"], task["budget_s"])
    return {
        "times_s": times,
        "load_s": load_s,
        "backend_used": backend.name,
        "rss_before_model_bytes": before["rss_bytes"],
        **memory_status(),
    }


def _configure_tensorflow(threads: int):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def _run_keras(task: dict) -> dict:
    threads = int(task["threads"])
    _configure_tensorflow(threads)
    before = memory_status()
    start = time.perf_counter()
    if task["source"] == "seed":
        from benchmarks.seed_model import seed_macs, seed_unet

        model = seed_unet()
        macs = seed_macs(model)
        size_bytes = int(model.count_params()) * 4
    else:
        from train.models import count_macs

        model = _load_keras_model(Path(task["path"]), task.get("run_dir"))
        macs = int(count_macs(model)["total"])
        size_bytes = Path(task["path"]).stat().st_size
    load_s = time.perf_counter() - start
    _, height, width, channels = model.input_shape
    batch = _input((1, height, width, channels))
    times = time_calls(
        lambda: model.predict(batch, verbose=0),
        task["warmup"],
        task["min_repeats"],
        task["max_repeats"],
        task["budget_s"],
    )
    return {
        "times_s": times,
        "load_s": load_s,
        "input_size": int(height),
        "macs_per_slice": macs,
        "size_bytes": size_bytes,
        "parameters": int(model.count_params()),
        "rss_before_model_bytes": before["rss_bytes"],
        **memory_status(),
    }


def _load_keras_model(model_file: Path, run_dir: str | None):
    """Our float model as the training code loads it (RunDir), else plain tf_keras loading."""
    if run_dir is not None:
        try:
            from train.run_dir import RunDir
        except ImportError:
            pass
        else:
            return RunDir(Path(run_dir)).load_model()
    import tf_keras as keras

    return keras.models.load_model(model_file, compile=False)


def _run_matmul(task: dict) -> dict:
    size = int(task["size"])
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    times = time_calls(lambda: a @ b, task["warmup"], task["min_repeats"], task["max_repeats"], task["budget_s"])
    flops = 2.0 * size**3
    return {
        "times_s": times,
        "size": size,
        "gflops_best": flops / min(times) / 1e9,
        "gflops_median": flops / float(np.median(times)) / 1e9,
    }


RUNNERS: dict[str, Callable[[dict], dict]] = {"backend": _run_backend, "keras": _run_keras, "matmul": _run_matmul}


def run_task(task: dict) -> dict:
    kind = task.get("kind")
    if kind not in RUNNERS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {sorted(RUNNERS)}")
    return RUNNERS[kind](task)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.worker '<json task>'", file=sys.stderr)
        return 2
    result = run_task(json.loads(argv[0]))
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
