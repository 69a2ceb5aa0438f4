"""`--backend auto`: time each installed backend on the model once per machine, cache the winner.

Every installed backend that can load the model runs a bundled, real-looking probe slice
(models/probe_slice.json); one whose mask disagrees with the default backend's on more than
0.1 % of the pixels is ruled out. The others are timed warm at batch 1, each in a process of its
own (as a run has it), in blocks taken in turn in ABBA order; a backend's time is the lower
quartile of its block medians. A backend later in the preference order wins only when it beats
every earlier one by more than MARGIN, so when times are within noise the lighter default
(ai-edge-litert for .tflite, onnxruntime for .onnx) keeps the job. The choice is keyed by (model
sha256, CPU signature, threads, candidate backends and their versions) and kept in a small JSON
file in the user cache folder (edge_runtime.user_cache), so only the first run on a machine pays
for the measurement.

A one-shot `edge-seg run` also pays each runtime's start (its import, the model's load or compile,
the first call) once for only a few dozen model calls (slices times the windows each is seen
through), so it picks by the whole job: start-up plus the calls times the per-call time, both
measured (start-up in fresh processes, after the timing, so a compiled-model cache is warm as it is
in a run). A long-lived caller (`serve`, the benchmarks) gives no call count and gets the per-call
choice.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.backends import DISTRIBUTIONS, Backend, BackendError, candidate_backends, install_hint, open_named
from edge_runtime.cpu import cpu_signature
from edge_runtime.user_cache import cache_dir

if TYPE_CHECKING:
    from edge_runtime.manifest import Manifest

CACHE_FILE = "backend-choice.json"
CACHE_SCHEMA = "edge-seg-backend-choice/3"  # 3: start-up times; 2: isolated processes, blocks; 1: one process
MAX_ENTRIES = 64
MARGIN = 0.03  # a later backend must be more than 3 % faster than every earlier one (the default stays within 5 %)
MIN_AGREEMENT = 0.999  # share of probe pixels whose class must match the default backend's
WARMUP = 3
ROUNDS = 12  # timed calls per backend in one block (after DISCARD more), blocks alternating between backends
BLOCKS = 10  # blocks per backend; a backend's time is the lower quartile of its block medians
QUANTILE = 25  # other processes only ever add time, and two-thread runtimes suffer unevenly from them: compare
# the blocks in which each backend had its cores (the lower quartile), not how busy the box happened to be
DISCARD = 2  # first calls of a block, dropped: a runtime whose threads were idle wakes them up
STARTUP_REPEATS = 3  # fresh processes per backend for the start-up time (its median; taken in turn)
PROBE_FILE = Path(__file__).resolve().parent / "models" / "probe_slice.json"


@dataclass
class BackendChoice:
    """Which backend runs a model, and why: what `edge-seg info` and report.json show."""

    backend: str
    threads: int
    requested: str  # "auto" or the explicit backend name
    source: str  # "explicit", "only candidate", "measured" or "cached"
    reason: str
    timings_ms: dict[str, float] = field(default_factory=dict)  # warm ms per slice, batch 1 (lower quartile of block medians)
    block_medians_ms: dict[str, list[float]] = field(default_factory=dict)  # each block's median, to see the spread
    agreement: dict[str, float] = field(default_factory=dict)  # probe pixels equal to the default backend's
    errors: dict[str, str] = field(default_factory=dict)  # candidates ruled out, with why
    measured_at: str | None = None
    cache_file: str | None = None
    startup_ms: dict[str, float] = field(default_factory=dict)  # runtime import + model load + first call, fresh process
    calls: int | None = None  # chosen for a job of about this many model calls (None: per call, a long-lived caller)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendChoice:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Measurement:
    """What one round of probing found."""

    timings_ms: dict[str, float]
    agreement: dict[str, float]
    errors: dict[str, str]
    block_medians_ms: dict[str, list[float]] = field(default_factory=dict)


# --------------------------------------------------------------------------- cache file


def cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _version(name: str) -> str:
    try:
        return metadata.version(DISTRIBUTIONS[name])
    except metadata.PackageNotFoundError:
        return "?"


def choice_key(sha256: str, threads: int, candidates: list[str]) -> str:
    """What a cached choice depends on; a new model, CPU, thread count or backend version re-measures."""
    backends = ",".join(f"{name}={_version(name)}" for name in candidates)
    return f"{sha256}|{cpu_signature()}|threads={threads}|{backends}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable or damaged: measure again
        return {}
    if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def cached_choice(sha256: str, threads: int, candidates: list[str]) -> BackendChoice | None:
    """The cached choice for this model, machine and thread count, or None."""
    entry = _read_cache(cache_path()).get(choice_key(sha256, threads, candidates))
    if not isinstance(entry, dict) or entry.get("backend") not in candidates:
        return None
    try:
        return BackendChoice.from_dict(entry | {"source": "cached", "cache_file": str(cache_path())})
    except TypeError:  # an entry of another shape: measure again
        return None


def _store(key: str, choice: BackendChoice) -> str | None:
    """Add the choice to the cache file; returns why it could not be written, or None."""
    from edge_runtime.atomic import atomic_write_json

    path = cache_path()
    entries = _read_cache(path)
    entries.pop(key, None)
    entries[key] = {k: v for k, v in choice.to_dict().items() if k not in ("source", "cache_file")}
    while len(entries) > MAX_ENTRIES:  # dicts keep insertion order: drop the oldest
        entries.pop(next(iter(entries)))
    try:
        atomic_write_json(path, {"schema": CACHE_SCHEMA, "entries": entries})
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------- measuring


@lru_cache(maxsize=1)
def _probe_image() -> np.ndarray:
    data = json.loads(PROBE_FILE.read_text())
    raw = zlib.decompress(base64.b64decode(data["zlib_base64"]))
    return np.frombuffer(raw, dtype=np.uint8).reshape(data["shape"]).astype(np.float32) / 255.0


def probe_batch(size: int, channels: int = 1) -> np.ndarray:
    """The probe slice as a (1, size, size, channels) model input in [0, 1]."""
    from edge_runtime.preprocessing import resize_image

    image = _probe_image()
    if image.shape != (size, size):
        image = np.clip(resize_image(image, (size, size)), 0.0, 1.0)
    return np.repeat(image[None, :, :, None], channels, axis=3).astype(np.float32)


class _InProcess:
    """Times a backend opened in this process."""

    def __init__(self, backend: Backend, batch: np.ndarray) -> None:
        self._backend, self._batch = backend, batch

    def mask(self, warmup: int) -> np.ndarray:
        for _ in range(warmup):
            scores = self._backend.predict(self._batch)
        return np.asarray(scores).argmax(axis=-1)

    def time(self, calls: int) -> list[float]:
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            self._backend.predict(self._batch)
            times.append(time.perf_counter() - start)
        return times

    def close(self) -> None:
        pass


_WORKER_FLAG = "--backend-choice-worker"
_WORKER_TIMEOUT_S = 120.0


class _Isolated:
    """Times a backend in a process of its own, as `edge-seg run` has it: only that runtime loaded,
    its threads alone (two runtimes in one process slowed each other by 10-60 % here, unevenly)."""

    def __init__(self, model_path: Path, name: str, threads: int, size: int, channels: int) -> None:
        import subprocess
        import sys

        self.name = name
        task = {"model": str(model_path), "backend": name, "threads": threads, "size": size, "channels": channels}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.backend_choice", _WORKER_FLAG, json.dumps(task)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        import select

        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:
            raise RuntimeError(f"the measuring process ended (exit status {self._proc.poll()})") from exc
        ready, _, _ = select.select([self._proc.stdout], [], [], _WORKER_TIMEOUT_S)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError("the measuring process ended or hung" + (f" (exit status {self._proc.returncode})"
                                                                       if self._proc.returncode is not None else ""))
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def mask(self, warmup: int) -> np.ndarray:
        answer = self._ask({"warmup": warmup})
        raw = zlib.decompress(base64.b64decode(answer["mask"]))
        return np.frombuffer(raw, dtype=np.uint8).reshape(answer["shape"])

    def time(self, calls: int) -> list[float]:
        return [float(t) for t in self._ask({"time": calls})["times_s"]]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=5)
            except Exception:
                self._proc.kill()
                self._proc.wait()


def _worker(task_json: str) -> int:
    """The measuring process: open one backend, then answer {"warmup": n} with the probe mask and
    {"time": n} with n call times, one JSON line each, until stdin closes."""
    import sys

    task = json.loads(task_json)

    def reply(answer: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    model = Path(task["model"])
    try:
        backend = open_named(model, task["backend"], int(task["threads"]), _manifest(model, None))
    except Exception as exc:  # reported on the first request, as an in-process open would be
        backend, failure = None, f"{type(exc).__name__}: {exc}"
    batch = probe_batch(int(task["size"]), int(task["channels"]))
    timer = _InProcess(backend, batch) if backend is not None else None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if timer is None:
                raise BackendError(failure)
            if "warmup" in request:
                mask = timer.mask(int(request["warmup"])).astype(np.uint8)
                encoded = base64.b64encode(zlib.compress(mask.tobytes(), 1)).decode("ascii")
                reply({"mask": encoded, "shape": list(mask.shape)})
            else:
                reply({"times_s": timer.time(int(request["time"]))})
        except Exception as exc:  # interpreters raise RuntimeError/ValueError/their own types
            reply({"error": f"{type(exc).__name__}: {exc}"})
    return 0


_STARTUP_FLAG = "--backend-startup-worker"


def _startup_worker(task_json: str) -> int:
    """A process that opens one backend and runs the probe once, then prints the seconds that took
    (the runtime's import included: what a run's process pays before its first slice)."""
    import sys

    task = json.loads(task_json)
    model = Path(task["model"])
    manifest = _manifest(model, None)
    batch = probe_batch(int(task["size"]), int(task["channels"]))
    start = time.perf_counter()
    open_named(model, task["backend"], int(task["threads"]), manifest).predict(batch)
    sys.stdout.write(json.dumps({"startup_s": time.perf_counter() - start}) + "\n")
    return 0


def measure_startup(model_path: Path, names: list[str], threads: int, manifest: Manifest,
                    repeats: int = STARTUP_REPEATS) -> dict[str, float]:
    """Median ms from a fresh process's first import of each backend to its first result, the
    backends taken in turn; one that fails here is left out (it has no start-up time to compare)."""
    import subprocess
    import sys

    size, channels = _input_shape(manifest)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            task = {"model": str(model_path), "backend": name, "threads": threads, "size": size, "channels": channels}
            try:
                done = subprocess.run([sys.executable, "-m", "edge_runtime.backend_choice", _STARTUP_FLAG,
                                       json.dumps(task)], capture_output=True, text=True, timeout=_WORKER_TIMEOUT_S)
                samples[name].append(1000.0 * float(json.loads(done.stdout.splitlines()[-1])["startup_s"]))
            except (subprocess.SubprocessError, OSError, ValueError, IndexError, KeyError):
                continue
    return {name: round(statistics.median(values), 1) for name, values in samples.items() if values}


def measure(
    backends: dict[str, Backend], batch: np.ndarray, warmup: int = WARMUP, rounds: int = ROUNDS, blocks: int = BLOCKS
) -> Measurement:
    """Check each backend's mask against the first one's on `batch`, then time the ones that agree
    (backends opened in this process; `measure_isolated` gives each a process of its own).

    `backends` is in preference order; the first is the reference. Each backend runs `blocks`
    blocks of DISCARD + `rounds` warm calls (the first DISCARD of a block dropped), blocks taken
    in turn in ABBA order, so a change in machine load hits every backend alike; a backend's time
    is the lower quartile of its block medians in milliseconds, which busy blocks (another process
    waking up) cannot move.
    """
    return _measure({name: _InProcess(backend, batch) for name, backend in backends.items()}, warmup, rounds, blocks)


def measure_isolated(
    model_path: Path, names: list[str], threads: int, manifest: Manifest,
    warmup: int = WARMUP, rounds: int = ROUNDS, blocks: int = BLOCKS,
) -> Measurement:
    """`measure`, each backend in a process of its own (started together, stopped afterwards)."""
    size, channels = _input_shape(manifest)
    timers = {name: _Isolated(model_path, name, threads, size, channels) for name in names}
    try:
        return _measure(timers, warmup, rounds, blocks)
    finally:
        for timer in timers.values():
            timer.close()


def _measure(timers: dict[str, Any], warmup: int, rounds: int, blocks: int) -> Measurement:
    errors: dict[str, str] = {}
    masks: dict[str, np.ndarray] = {}
    for name, timer in timers.items():
        try:
            masks[name] = timer.mask(warmup)
        except Exception as exc:  # interpreters raise RuntimeError/ValueError/their own types
            errors[name] = f"{name} cannot run this model ({type(exc).__name__}: {exc})"
    agreement: dict[str, float] = {}
    if masks:
        reference_name = next(iter(masks))
        reference = masks[reference_name]
        for name, mask in masks.items():
            agreement[name] = round(float((mask == reference).mean()), 6) if mask.shape == reference.shape else 0.0
            if agreement[name] < MIN_AGREEMENT:
                errors[name] = (
                    f"{name} disagrees with {reference_name} on {100 * (1 - agreement[name]):.2f} % of the probe "
                    f"slice's pixels (at most {100 * (1 - MIN_AGREEMENT):.1f} % allowed)"
                )
    timed = [name for name in masks if name not in errors]
    block_medians: dict[str, list[float]] = {name: [] for name in timed}
    for block in range(blocks):
        # ABBA order: no backend always runs right after another (caches, turbo, the other's threads)
        for name in timed if block % 2 == 0 else timed[::-1]:
            if name in errors:
                continue
            try:
                times = timers[name].time(DISCARD + rounds)[DISCARD:]
            except Exception as exc:  # ran during warm-up, fails now: rule it out rather than stop
                errors[name] = f"{name} failed while being timed ({type(exc).__name__}: {exc})"
                continue
            block_medians[name].append(1000.0 * statistics.median(times))
    kept = {name: values for name, values in block_medians.items() if name not in errors and values}
    timings = {name: round(float(np.percentile(values, QUANTILE)), 3) for name, values in kept.items()}
    return Measurement(timings, agreement, errors, {name: [round(v, 3) for v in values] for name, values in kept.items()})


def pick(timings_ms: dict[str, float], order: list[str], margin: float = MARGIN) -> str:
    """The first backend in preference `order` within `margin` of the fastest measured one."""
    measured = [name for name in order if name in timings_ms]
    if not measured:
        raise BackendError("no backend could be measured")
    fastest = min(timings_ms[name] for name in measured)
    return next(name for name in measured if timings_ms[name] <= fastest * (1.0 + margin))


def pick_for_run(timings_ms: dict[str, float], startup_ms: dict[str, float], order: list[str], calls: int,
                 margin: float = MARGIN) -> str:
    """`pick` by the whole job: start-up plus `calls` warm calls (a backend without a start-up
    time is judged per call only)."""
    return pick({name: startup_ms.get(name, 0.0) + calls * ms for name, ms in timings_ms.items()}, order, margin)


def runs_below(choice: BackendChoice, order: list[str], limit: int = 1_000_000) -> tuple[str, int] | None:
    """(backend, n): one-shot runs of fewer than n model calls take `backend` rather than the per-call
    choice, for its quicker start-up; None when the per-call choice also starts quickest."""
    if not choice.timings_ms or not choice.startup_ms:
        return None
    small = pick_for_run(choice.timings_ms, choice.startup_ms, order, 1)
    if small == choice.backend:
        return None
    low, high = 1, limit  # pick_for_run(.., low) != per-call choice; find the first n where it is
    if pick_for_run(choice.timings_ms, choice.startup_ms, order, high) != choice.backend:
        return small, limit
    while high - low > 1:
        middle = (low + high) // 2
        if pick_for_run(choice.timings_ms, choice.startup_ms, order, middle) == choice.backend:
            high = middle
        else:
            low = middle
    return small, high


def for_run(choice: BackendChoice, calls: int | None, order: list[str]) -> BackendChoice:
    """`choice` (per call) turned into the choice for a job of about `calls` calls."""
    if calls is None or not choice.timings_ms or not choice.startup_ms:
        return choice
    chosen = pick_for_run(choice.timings_ms, choice.startup_ms, order, calls)
    costs = ", ".join(f"{name} {choice.startup_ms[name]:.0f} + {calls} x {choice.timings_ms[name]:.2f} = "
                      f"{choice.startup_ms[name] + calls * choice.timings_ms[name]:.0f} ms"
                      for name in order if name in choice.timings_ms and name in choice.startup_ms)
    reason = (f"for a run of about {calls} model calls, start-up (runtime import, model load, first call; fresh "
              f"processes) plus the calls: {costs}; {chosen} costs least" if chosen != choice.backend else
              f"for a run of about {calls} model calls {chosen} is also quickest with its start-up counted ({costs})")
    return replace(choice, backend=chosen, calls=calls, reason=f"{reason}. Per call: {choice.reason}")


def _reason(chosen: str, timings_ms: dict[str, float], order: list[str], threads: int) -> str:
    fastest = min(timings_ms, key=lambda name: timings_ms[name])
    others = ", ".join(f"{n} {timings_ms[n]:.2f}" for n in order if n in timings_ms and n != chosen)
    text = (f"measured {BLOCKS} alternating blocks of {ROUNDS} warm runs per backend, each in its own process, at "
            f"{threads} thread(s), lower quartile of the block medians: {chosen} {timings_ms[chosen]:.2f} ms/slice")
    text += f" vs {others}" if others else ""
    if chosen == fastest:
        return text + " (fastest)"
    return text + f" ({fastest} is within {100 * MARGIN:.0f} %: kept {chosen}, earlier in the preference order)"


# --------------------------------------------------------------------------- choosing


def _input_shape(manifest: Manifest) -> tuple[int, int]:
    shape = manifest.inputs[0].shape if manifest.inputs else []
    if len(shape) == 4 and shape[1] and shape[3]:
        return int(shape[1]), int(shape[3])
    return manifest.preprocessing.input_size, 1


def _manifest(model_path: Path, manifest: Manifest | None) -> Manifest:
    if manifest is not None:
        return manifest
    from edge_runtime.manifest import ManifestError, read_manifest

    try:
        return read_manifest(model_path)
    except ManifestError as exc:
        raise BackendError(f"--backend auto needs the model's manifest: {exc}") from exc


def open_auto(model_path: Path, threads: int, manifest: Manifest | None = None,
              calls: int | None = None) -> tuple[Backend, BackendChoice]:
    """Open the backend `auto` picks for this model: the only candidate, the cached choice, or
    the winner of a measurement made now (and cached); for a job of about `calls` model calls
    (a one-shot run) the winner by start-up plus calls, otherwise by the time per call."""
    manifest = _manifest(model_path, manifest)
    candidates = candidate_backends(model_path)
    if not candidates:
        raise BackendError(f"no backend for {Path(model_path).suffix} models is installed: {install_hint(model_path)}")
    if len(candidates) == 1:
        name = candidates[0]
        reason = f"{name} is the only installed backend for {Path(model_path).suffix} models"
        return open_named(model_path, name, threads, manifest), BackendChoice(name, threads, "auto", "only candidate", reason)
    cached = cached_choice(manifest.sha256, threads, candidates)
    if cached is not None:
        choice = for_run(cached, calls, candidates)
        try:
            return open_named(model_path, choice.backend, threads, manifest), choice
        except BackendError:
            pass  # the cached backend broke since: measure again
    choice = measure_choice(model_path, threads, manifest, candidates)
    choice = for_run(choice, calls, candidates)
    return open_named(model_path, choice.backend, threads, manifest), choice


def measure_choice(model_path: Path, threads: int, manifest: Manifest, candidates: list[str]) -> BackendChoice:
    """Probe and time every candidate, each in a process of its own, then time each one's start-up;
    cache the per-slice choice (with the times a run's choice is made from)."""
    found = measure_isolated(model_path, candidates, threads, manifest)
    errors = dict(found.errors)
    if not found.timings_ms:
        raise BackendError("; ".join(errors.values()))
    chosen = pick(found.timings_ms, candidates)
    startup = measure_startup(model_path, [name for name in candidates if name in found.timings_ms], threads, manifest)
    reason = _reason(chosen, found.timings_ms, candidates, threads)
    if startup:
        reason += "; start-up in a fresh process: " + ", ".join(f"{n} {ms:.0f} ms" for n, ms in startup.items())
    if errors:
        reason += "; ruled out: " + ", ".join(sorted(errors))
    choice = BackendChoice(
        chosen, threads, "auto", "measured", reason, found.timings_ms, found.block_medians_ms, found.agreement, errors,
        datetime.now(UTC).isoformat(timespec="seconds"), str(cache_path()), startup,
    )
    problem = _store(choice_key(manifest.sha256, threads, candidates), choice)
    if problem is not None:
        choice.reason += f"; not cached ({problem})"
        choice.cache_file = None
    return choice


if __name__ == "__main__":  # the measuring process of `_Isolated`
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == _WORKER_FLAG:
        sys.exit(_worker(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == _STARTUP_FLAG:
        sys.exit(_startup_worker(sys.argv[2]))
    sys.exit(f"usage: python -m edge_runtime.backend_choice {_WORKER_FLAG} TASK_JSON (started by --backend auto)")
