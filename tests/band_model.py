"""A tiny real ONNX model with a known answer: intensity bands -> classes (for runtime tests without TensorFlow).

Scores are linear in the normalised intensity x: s_k = k*x - k^2*step/2, so the argmax is the
class whose band centre k*step is nearest to x. With step 0.25, slices painted at raw values
0/1000/2000/3000/4000 (normalised 0/.25/.5/.75/1) segment exactly into classes 0/1/2/3/4.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.labels import NUM_CLASSES
from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
from edge_runtime.preprocessing import PreprocessSpec, prepare_slice, restore_labels

STEP = 0.25


def band_weights() -> tuple[np.ndarray, np.ndarray]:
    k = np.arange(NUM_CLASSES, dtype=np.float32)
    return k[None, :], (-(k**2) * STEP / 2).astype(np.float32)


def expected_mask(image: np.ndarray, spec: PreprocessSpec, pixel_spacing=None) -> np.ndarray:
    """What the band model must produce, computed with numpy instead of onnxruntime."""
    tensor, geometry = prepare_slice(image, spec, pixel_spacing)
    weight, bias = band_weights()
    scores = tensor[..., None] * weight[0] + bias
    return restore_labels(scores, geometry)


def write_band_model(
    folder: Path, input_size: int = 64, name: str = "bands", field_of_view_mm: float | None = None
) -> Path:
    """Write `<folder>/<name>.onnx` (free batch dimension) and its manifest; needs the onnx package."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight, bias = band_weights()
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "w"], ["logits"]),
            helper.make_node("Add", ["logits", "b"], ["scores"]),
        ],
        "bands",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", input_size, input_size, 1])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", input_size, input_size, NUM_CLASSES])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edge-seg tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    manifest = Manifest(
        model_file=path.name,
        format="onnx",
        precision="fp32",
        sha256=sha256_file(path),
        inputs=[TensorSpec("input", [None, input_size, input_size, 1], "float32")],
        outputs=[TensorSpec("scores", [None, input_size, input_size, NUM_CLASSES], "float32")],
        preprocessing=PreprocessSpec(input_size=input_size, field_of_view_mm=field_of_view_mm),
        name=name,
        variant="onnx-fp32",
        provenance={"recipe": "intensity bands (test model)"},
        size_bytes=path.stat().st_size,
    )
    write_manifest(manifest, path)
    return path


def banded_slice(size: int = 64, shift: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(raw uint16 slice, its class-id mask): IVD, AAP, TS and PE blocks on a zero background."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[8 + shift : 24 + shift, 12:52] = 1  # IVD (disc) at the top (anterior)
    mask[24 + shift : 28 + shift, 16:48] = 4  # AAP strip behind the disc
    mask[30 : 36 + shift, 24:40] = 3  # TS, taller with `shift`
    mask[44:58, 14:50] = 2  # PE at the back
    return mask.astype(np.uint16) * 1000, mask  # class k painted at 1000*k -> normalised k/4
