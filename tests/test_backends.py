"""Inference backends on the bundled int8 model, checked on the example study's slices (real-looking
phantom anatomy, not noise): OpenVINO against ai-edge-litert, format/backend pairing, and a
runtime-only install without OpenVINO, onnxruntime or highdicom."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import BackendError, candidate_backends, open_backend
from edge_runtime.manifest import manifest_path, read_manifest
from edge_runtime.preprocessing import prepare_slice
from edge_runtime.segmenter import Segmenter

ROOT = Path(__file__).resolve().parents[1]
TFLITE = ROOT / "edge_runtime" / "models" / "default.tflite"
ONNX = ROOT / "edge_runtime" / "models" / "default.onnx"
STUDY = ROOT / "examples" / "study"
OPENVINO_MISSING = "OpenVINO is not installed (pip install 'edge-seg[openvino]')"


def _needs(module: str, reason: str) -> None:
    pytest.importorskip(module, reason=reason)


@pytest.fixture(scope="module")
def slices() -> np.ndarray:
    """The example study's 12 slices, prepared as the bundled model expects: (12, 160, 160, 1)."""
    import pydicom

    spec = read_manifest(TFLITE).preprocessing
    files = sorted(STUDY.glob("*.ima"))
    assert len(files) == 12
    datasets = [pydicom.dcmread(f) for f in files]
    return np.stack([prepare_slice(ds.pixel_array, spec, ds.PixelSpacing)[0] for ds in datasets])[..., None]


@pytest.fixture(scope="module")
def litert_masks(slices: np.ndarray) -> np.ndarray:
    masks = open_backend(TFLITE, "litert", threads=1).predict(slices).argmax(-1)
    assert set(np.unique(masks)) == {0, 1, 2, 3, 4}  # every class present: agreement is not just background
    return masks


def test_openvino_reads_the_int8_tflite_and_agrees_with_litert(slices: np.ndarray, litert_masks: np.ndarray) -> None:
    _needs("openvino", OPENVINO_MISSING)
    backend = open_backend(TFLITE, "openvino", threads=1)
    assert backend.name == "openvino" and backend.input_dtype == "int8" and backend.batch_free
    scores = backend.predict(slices)  # batch 12 in one call
    assert scores.shape == (12, 160, 160, 5) and scores.dtype == np.float32
    assert scores.min() >= 0.0 and scores.max() <= 1.0  # dequantised softmax, not raw int8
    agreement = float((scores.argmax(-1) == litert_masks).mean())
    assert agreement >= 0.999, agreement
    one_by_one = np.concatenate([backend.predict(slices[i : i + 1]) for i in range(len(slices))])
    np.testing.assert_array_equal(scores, one_by_one)


@pytest.mark.parametrize("threads", [1, 2])
def test_openvino_compiles_with_the_thread_count_it_is_given(threads: int) -> None:
    openvino = pytest.importorskip("openvino", reason=OPENVINO_MISSING)
    backend = open_backend(TFLITE, "openvino", threads=threads)
    assert backend.threads == threads
    assert int(backend.compiled.get_property("INFERENCE_NUM_THREADS")) == threads
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32  # not bf16


def test_openvino_runs_the_int8_onnx_export(slices: np.ndarray) -> None:
    """The bundled QDQ model compiles in OpenVINO 2026.4; its masks differ from onnxruntime's on
    about 0.1 % of pixels (OpenVINO requantises the decoder concatenations differently), which is
    why `auto` rules it out for this model (test_backend_choice)."""
    _needs("openvino", OPENVINO_MISSING)
    _needs("onnxruntime", "onnxruntime is not installed (pip install 'edge-seg[onnx]')")
    backend = open_backend(ONNX, "openvino", threads=2)
    assert backend.input_dtype == "float32"
    reference = open_backend(ONNX, "onnxruntime", threads=1).predict(slices).argmax(-1)
    agreement = float((backend.predict(slices).argmax(-1) == reference).mean())
    assert agreement >= 0.995, agreement


def test_compiled_blobs_are_cached_and_give_the_same_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slices: np.ndarray
) -> None:
    _needs("openvino", OPENVINO_MISSING)
    monkeypatch.setenv("EDGE_SEG_CACHE_DIR", str(tmp_path / "cache"))
    first = open_backend(TFLITE, "openvino", threads=1).predict(slices[:2])
    blobs = list((tmp_path / "cache").glob("openvino-*/*/*.blob"))
    assert len(blobs) == 1
    second = open_backend(TFLITE, "openvino", threads=1).predict(slices[:2])  # imported from the blob
    np.testing.assert_array_equal(first, second)


def test_openvino_refuses_an_int8_model_without_a_manifest(tmp_path: Path) -> None:
    _needs("openvino", OPENVINO_MISSING)
    bare = tmp_path / "bare.tflite"
    shutil.copy(TFLITE, bare)
    with pytest.raises(BackendError, match="needs the manifest's int8 scale and zero point"):
        open_backend(bare, "openvino", threads=1)


def test_openvino_refuses_a_manifest_whose_tensor_types_disagree(tmp_path: Path) -> None:
    _needs("openvino", OPENVINO_MISSING)
    model = tmp_path / "m.tflite"
    shutil.copy(TFLITE, model)
    data = json.loads(manifest_path(TFLITE).read_text())
    data["inputs"][0]["dtype"] = "float32"
    manifest_path(model).write_text(json.dumps(data))
    with pytest.raises(BackendError, match="openvino reads the input as int8, the manifest says float32"):
        open_backend(model, "openvino", threads=1)


@pytest.mark.parametrize(
    ("model", "backend", "message"),
    [
        (TFLITE, "onnxruntime", "a .tflite model needs litert, tflite-runtime or openvino, not onnxruntime"),
        (ONNX, "litert", "litert cannot run an ONNX model; it needs the onnxruntime backend"),
        (TFLITE, "tensorrt", "unknown backend 'tensorrt'"),
        (Path("model.pt"), "litert", "unknown model format '.pt'"),
    ],
)
def test_wrong_backend_or_format_is_a_clear_error(model: Path, backend: str, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        open_backend(model, backend, threads=1)


def test_without_a_name_the_first_installed_backend_in_preference_order_opens() -> None:
    assert candidate_backends(TFLITE)[0] == "litert"
    assert open_backend(TFLITE, threads=1).name == "litert"  # what export validation and benchmarks get


RUNTIME_ONLY = """
import json, sys
for name in ("openvino", "onnxruntime", "highdicom", "tensorflow"):
    sys.modules[name] = None  # what a runtime-only install looks like: these cannot be imported
from edge_runtime.backends import BackendError, candidate_backends, open_backend
try:
    open_backend(sys.argv[1], "openvino", threads=1)
    hint = None
except BackendError as exc:
    hint = str(exc)
print("PROBE " + json.dumps({"tflite": candidate_backends("m.tflite"), "onnx": candidate_backends("m.onnx"), "hint": hint}))
from edge_runtime.cli import main
sys.argv = ["edge-seg", "run", sys.argv[2], "-o", sys.argv[3], "--threads", "1"]
main()
"""


def test_a_runtime_only_install_runs_the_study_with_litert_exactly_as_before(tmp_path: Path) -> None:
    """OpenVINO, onnxruntime and highdicom are blocked in a fresh interpreter (None in sys.modules
    makes their import fail as if they were not installed); `--backend auto` then opens litert
    without measuring or writing a cache, and the masks are litert's."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-c", RUNTIME_ONLY, str(TFLITE), str(STUDY), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**_env(), "EDGE_SEG_CACHE_DIR": str(cache)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert probe["tflite"] == ["litert"] and probe["onnx"] == []
    assert "backend 'openvino' is not installed: pip install 'edge-seg[openvino]'" in probe["hint"]
    report = json.loads((out / "report.json").read_text())
    choice = report["model"]["backend_choice"]
    assert report["model"]["backend"] == "litert" and choice["source"] == "only candidate"
    assert not cache.exists()  # nothing measured, nothing cached
    (series,) = report["series"]
    assert any("highdicom" in note for note in series["notes"])  # the SEG is skipped with its hint

    import pydicom

    masks = np.load(series["outputs"]["npy"])
    datasets = [pydicom.dcmread(STUDY / f"{stem}.ima") for stem in series["outputs"]["npy_stems"]]
    pixels, spacings = [ds.pixel_array for ds in datasets], [ds.PixelSpacing for ds in datasets]
    expected = [r.mask for r in Segmenter(TFLITE, backend="litert", threads=1).segment(pixels, spacings)]
    np.testing.assert_array_equal(masks, np.stack(expected))


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}
