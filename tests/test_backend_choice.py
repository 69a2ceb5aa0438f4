"""`--backend auto`: measured once per (model, CPU, threads), cached in a small file, gated on mask
agreement, reported in report.json. Real interpreters on the bundled model throughout."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backend_choice import (
    CACHE_SCHEMA,
    DISCARD,
    MARGIN,
    MIN_AGREEMENT,
    cache_path,
    choice_key,
    measure,
    measure_isolated,
    measure_startup,
    open_auto,
    pick,
    pick_for_run,
    probe_batch,
    runs_below,
)
from edge_runtime.backends import open_backend
from edge_runtime.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT / "edge_runtime" / "models" / "default.tflite"
STUDY = ROOT / "examples" / "study"


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_SEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _needs_openvino() -> None:
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'edge-seg[openvino]'): one backend, no choice")


@pytest.mark.parametrize(
    ("timings", "chosen"),
    [
        ({"litert": 2.00, "openvino": 1.95}, "litert"),  # 2.5 % faster: noise, keep the default
        ({"litert": 2.00, "openvino": 1.00}, "openvino"),
        ({"litert": 1.00, "openvino": 2.00}, "litert"),
        ({"openvino": 1.0}, "openvino"),  # litert ruled out
    ],
)
def test_a_later_backend_wins_only_when_faster_by_more_than_the_margin(timings: dict, chosen: str) -> None:
    assert pick(timings, ["litert", "tflite-runtime", "openvino"]) == chosen
    assert timings[chosen] <= min(timings.values()) * (1 + MARGIN)


@pytest.mark.parametrize(
    ("slices", "chosen"),
    [
        (15, "litert"),  # 40 + 15 x 2.7 = 80.5 ms against 130 + 15 x 2.2 = 163 ms
        (100, "litert"),  # 310 against 350
        (300, "openvino"),  # 850 against 790: the per-slice gain pays for the start-up
        (10_000, "openvino"),
    ],
)
def test_a_one_shot_run_weighs_each_backends_start_up_against_its_slices(slices: int, chosen: str) -> None:
    timings, startup = {"litert": 2.7, "openvino": 2.2}, {"litert": 40.0, "openvino": 130.0}
    assert pick_for_run(timings, startup, ["litert", "openvino"], slices) == chosen
    assert pick(timings, ["litert", "openvino"]) == "openvino"  # per slice (serve, benchmarks)


def test_a_backend_without_a_start_up_time_is_judged_per_slice() -> None:
    assert pick_for_run({"litert": 2.7, "openvino": 2.2}, {"litert": 40.0}, ["litert", "openvino"], 15) == "openvino"


def test_info_names_the_run_size_below_which_the_quick_starting_backend_runs() -> None:
    from edge_runtime.backend_choice import BackendChoice

    timings, startup = {"litert": 2.7, "openvino": 2.2}, {"litert": 40.0, "openvino": 130.0}
    choice = BackendChoice("openvino", 1, "auto", "measured", "", timings, startup_ms=startup)
    # litert keeps the job while it costs at most 1 + MARGIN times openvino's: brute force over n
    first = next(n for n in range(1, 10_000) if 40.0 + 2.7 * n > (1 + MARGIN) * (130.0 + 2.2 * n))
    assert runs_below(choice, ["litert", "openvino"]) == ("litert", first) and first == 217
    quick = BackendChoice("openvino", 1, "auto", "measured", "", timings, startup_ms={"litert": 40.0, "openvino": 30.0})
    assert runs_below(quick, ["litert", "openvino"]) is None


def test_the_probe_slice_is_real_looking_anatomy() -> None:
    """The probe is a phantom slice through a disc: the model finds every class in it."""
    probe = probe_batch(160)
    assert probe.shape == (1, 160, 160, 1) and probe.min() >= 0.0 and probe.max() <= 1.0
    classes = open_backend(TFLITE, "litert", threads=1).predict(probe).argmax(-1)
    assert set(np.unique(classes)) == {0, 1, 2, 3, 4}
    assert probe_batch(64, channels=3).shape == (1, 64, 64, 3)


def test_auto_measures_once_then_uses_the_cached_choice(cache: Path) -> None:
    _needs_openvino()
    manifest = read_manifest(TFLITE)
    backend, choice = open_auto(TFLITE, 1, manifest)
    assert choice.source == "measured" and choice.requested == "auto" and choice.threads == 1
    assert set(choice.timings_ms) == {"litert", "openvino"} and choice.errors == {}
    assert min(choice.agreement.values()) >= 0.999
    assert choice.backend == pick(choice.timings_ms, ["litert", "openvino"]) == backend.name
    assert choice.timings_ms[choice.backend] <= min(choice.timings_ms.values()) * (1 + MARGIN)
    assert choice.backend in choice.reason and "ms/slice" in choice.reason
    assert set(choice.startup_ms) == {"litert", "openvino"} and min(choice.startup_ms.values()) > 0
    assert choice.calls is None  # no call count given: the per-call choice
    data = json.loads(cache_path().read_text())
    assert data["schema"] == CACHE_SCHEMA
    (key,) = data["entries"]
    assert key.startswith(manifest.sha256) and "threads=1" in key and "openvino=" in key

    again, cached = open_auto(TFLITE, 1, manifest)
    assert cached.source == "cached" and cached.backend == choice.backend == again.name
    assert cached.measured_at == choice.measured_at and cached.timings_ms == choice.timings_ms
    assert cached.startup_ms == choice.startup_ms

    _, other = open_auto(TFLITE, 2, manifest)  # another thread count is another measurement
    assert other.source == "measured" and other.threads == 2
    assert len(json.loads(cache_path().read_text())["entries"]) == 2


def test_a_damaged_cache_file_is_measured_again_and_rewritten(cache: Path) -> None:
    _needs_openvino()
    cache.mkdir(parents=True)
    cache_path().write_text("{not json")
    _, choice = open_auto(TFLITE, 1, read_manifest(TFLITE))
    assert choice.source == "measured"
    assert json.loads(cache_path().read_text())["schema"] == CACHE_SCHEMA


def test_an_unwritable_cache_still_runs_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_openvino()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EDGE_SEG_CACHE_DIR", str(blocker / "cache"))  # a folder under a file cannot exist
    backend, choice = open_auto(TFLITE, 1, read_manifest(TFLITE))
    assert backend.name == choice.backend and choice.cache_file is None
    assert "not cached (" in choice.reason


class _SwappedClasses:
    """A real litert interpreter whose TS and AAP score channels are swapped: a backend that loads
    and runs but computes a different function, as a mis-converted model would."""

    def __init__(self, threads: int) -> None:
        self._inner = open_backend(TFLITE, "litert", threads=threads)
        self.name, self.threads, self.input_dtype, self.batch_free = "openvino", threads, "int8", True

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return self._inner.predict(batch)[..., [0, 1, 2, 4, 3]]


def test_a_backend_whose_masks_disagree_is_ruled_out() -> None:
    found = measure({"litert": open_backend(TFLITE, "litert", threads=1), "openvino": _SwappedClasses(1)}, probe_batch(160))
    assert set(found.timings_ms) == {"litert"} and found.agreement["litert"] == 1.0
    assert found.agreement["openvino"] < 0.999
    assert "openvino disagrees with litert on" in found.errors["openvino"]


def _study_subset(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    for path in sorted(STUDY.glob("*.ima"))[:n]:
        shutil.copy(path, folder / path.name)
    return folder


def test_report_json_says_which_backend_ran_and_why(tmp_path: Path, cache: Path) -> None:
    from edge_runtime.run import run_command

    study = _study_subset(tmp_path / "in")
    assert run_command(input=study, output=tmp_path / "auto", threads=1, formats="npy,report") == 0
    model = json.loads((tmp_path / "auto" / "report.json").read_text())["model"]
    choice = model["backend_choice"]
    assert choice["backend"] == model["backend"] and choice["requested"] == "auto" and choice["threads"] == 1
    assert choice["source"] in ("measured", "only candidate") and choice["reason"]

    assert run_command(input=study, output=tmp_path / "explicit", threads=1, backend="litert", formats="npy,report") == 0
    explicit = json.loads((tmp_path / "explicit" / "report.json").read_text())["model"]["backend_choice"]
    assert explicit["backend"] == "litert" and explicit["source"] == "explicit"


class _FailsAfterWarmup:
    """A real litert interpreter that raises once its warm-up calls are spent (a backend that
    breaks mid-measurement, e.g. out of memory)."""

    def __init__(self, calls: int) -> None:
        self._inner = open_backend(TFLITE, "litert", threads=1)
        self._left = calls
        self.name, self.threads, self.input_dtype, self.batch_free = "openvino", 1, "int8", True

    def predict(self, batch: np.ndarray) -> np.ndarray:
        self._left -= 1
        if self._left < 0:
            raise RuntimeError("device lost")
        return self._inner.predict(batch)


def test_a_backend_that_fails_while_timed_is_ruled_out_and_the_others_still_count() -> None:
    found = measure(
        {"litert": open_backend(TFLITE, "litert", threads=1), "openvino": _FailsAfterWarmup(calls=3)},
        probe_batch(160), warmup=3, rounds=5,
    )
    assert set(found.timings_ms) == {"litert"}
    assert found.errors["openvino"] == "openvino failed while being timed (RuntimeError: device lost)"


class _Timed:
    """A fake backend that takes `ms` per call (busy-waiting), `burst_ms` during calls `burst` (a
    range of call numbers: another process waking up), and returns the same scores as its peers."""

    def __init__(self, name: str, ms: float, burst: range = range(0), burst_ms: float = 0.0) -> None:
        self.name, self.threads, self.input_dtype, self.batch_free = name, 1, "float32", True
        self._ms, self._burst, self._burst_ms, self.calls = ms, burst, burst_ms, 0

    def predict(self, batch: np.ndarray) -> np.ndarray:
        wait = self._burst_ms if self.calls in self._burst else self._ms
        self.calls += 1
        end = time.perf_counter() + wait / 1000.0
        while time.perf_counter() < end:
            pass
        return np.zeros((*batch.shape[:3], 5), dtype=np.float32)


def test_one_busy_block_does_not_flip_the_measured_choice() -> None:
    # the faster backend is hit by a burst 8x its time for a whole block (calls 3..8 after 3 warm-ups)
    backends = {"litert": _Timed("litert", 2.0), "openvino": _Timed("openvino", 1.0, range(3, 9), 8.0)}
    found = measure(backends, probe_batch(160), warmup=3, rounds=6, blocks=5)
    assert len(found.block_medians_ms["openvino"]) == 5 and max(found.block_medians_ms["openvino"]) > 5.0
    assert found.timings_ms["openvino"] < 1.5 < found.timings_ms["litert"]
    assert pick(found.timings_ms, ["litert", "openvino"]) == "openvino"


def test_timed_blocks_alternate_in_abba_order_and_drop_each_blocks_first_calls() -> None:
    order: list[str] = []

    class _Logged(_Timed):
        def predict(self, batch: np.ndarray) -> np.ndarray:
            order.append(self.name)
            return super().predict(batch)

    backends = {"litert": _Logged("litert", 0.0), "openvino": _Logged("openvino", 0.0)}
    found = measure(backends, probe_batch(16), warmup=1, rounds=2, blocks=3)
    per_block = DISCARD + 2
    blocks = [order[2 + k * per_block] for k in range(6)]  # after one warm-up call each
    assert blocks == ["litert", "openvino", "openvino", "litert", "litert", "openvino"]
    assert len(order) == 2 + 6 * per_block and all(len(v) == 3 for v in found.block_medians_ms.values())


def test_auto_times_each_backend_in_a_process_of_its_own(cache: Path) -> None:
    _needs_openvino()
    manifest = read_manifest(TFLITE)
    found = measure_isolated(TFLITE, ["litert", "openvino"], 1, manifest, warmup=1, rounds=3, blocks=2)
    assert set(found.timings_ms) == {"litert", "openvino"} and found.errors == {}
    assert found.agreement["litert"] == 1.0 and found.agreement["openvino"] >= MIN_AGREEMENT
    assert all(len(v) == 2 for v in found.block_medians_ms.values())


def test_a_backend_that_cannot_open_in_its_process_is_ruled_out_by_name() -> None:
    found = measure_isolated(TFLITE, ["litert", "onnxruntime"], 1, read_manifest(TFLITE), warmup=1, rounds=2, blocks=1)
    assert set(found.timings_ms) == {"litert"}
    assert found.errors["onnxruntime"].startswith("onnxruntime cannot run this model (RuntimeError: BackendError: ")


def test_start_up_is_timed_in_fresh_processes_per_backend() -> None:
    startup = measure_startup(TFLITE, ["litert", "onnxruntime"], 1, read_manifest(TFLITE), repeats=2)
    assert set(startup) == {"litert"}  # onnxruntime cannot open a .tflite file: no time, not a crash
    assert 0.0 < startup["litert"] < 60_000.0


def _cache_entry(manifest, threads: int, timings: dict, startup: dict) -> None:
    from edge_runtime.backend_choice import BackendChoice, _store

    candidates = ["litert", "openvino"]
    choice = BackendChoice(pick(timings, candidates), threads, "auto", "measured", "written by the test", timings,
                           startup_ms=startup)
    assert _store(choice_key(manifest.sha256, threads, candidates), choice) is None


def test_a_short_run_takes_the_quick_starting_backend_and_a_long_lived_caller_the_per_slice_winner(cache: Path) -> None:
    """Both backends really open; the cached times decide (set here so that the two answers differ)."""
    _needs_openvino()
    manifest = read_manifest(TFLITE)
    _cache_entry(manifest, 1, {"litert": 2.7, "openvino": 2.2}, {"litert": 40.0, "openvino": 130.0})
    backend, choice = open_auto(TFLITE, 1, manifest, calls=15)
    assert backend.name == choice.backend == "litert" and choice.calls == 15 and choice.source == "cached"
    assert "about 15 model calls" in choice.reason and "litert 40 + 15 x 2.70 = 80 ms" in choice.reason
    backend, choice = open_auto(TFLITE, 1, manifest)
    assert backend.name == choice.backend == "openvino" and choice.calls is None
    backend, choice = open_auto(TFLITE, 1, manifest, calls=5000)
    assert backend.name == "openvino" and "also quickest" in choice.reason


def test_a_run_counts_its_input_files_times_their_windows_for_the_backend_choice(tmp_path: Path, cache: Path) -> None:
    from edge_runtime.run import run_command

    _needs_openvino()
    study = _study_subset(tmp_path / "in", n=4)
    manifest = read_manifest(TFLITE)
    _cache_entry(manifest, 1, {"litert": 2.7, "openvino": 2.2}, {"litert": 40.0, "openvino": 130.0})
    assert run_command(input=study, output=tmp_path / "out", threads=1, formats="npy,report") == 0
    model = json.loads((tmp_path / "out" / "report.json").read_text())["model"]
    assert model["backend"] == model["backend_choice"]["backend"] == "litert"
    own = manifest.preprocessing.field_of_view_mm
    assert model["fields_of_view_mm"] == [own * 0.9375, own, own * 1.0625]
    assert model["backend_choice"]["calls"] == 4 * 3  # each slice seen through three windows
    assert run_command(input=study, output=tmp_path / "one", threads=1, formats="report", single_window=True) == 0
    assert json.loads((tmp_path / "one" / "report.json").read_text())["model"]["backend_choice"]["calls"] == 4
