"""Model manifests: written beside the model, verified before any model is used."""

import json

import pytest

from edge_runtime.manifest import (
    Manifest,
    ManifestError,
    TensorSpec,
    load_verified_manifest,
    manifest_path,
    sha256_file,
    write_manifest,
)
from edge_runtime.preprocessing import PreprocessSpec


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "unet-tflite-int8.tflite"
    path.write_bytes(b"not really a flatbuffer, but bytes to hash" * 10)
    manifest = Manifest(
        model_file=path.name,
        format="tflite",
        precision="int8",
        sha256=sha256_file(path),
        inputs=[TensorSpec("image", [None, 64, 64, 1], "int8", 1 / 255, -128)],
        outputs=[TensorSpec("scores", [None, 64, 64, 5], "int8", 1 / 256, -128)],
        preprocessing=PreprocessSpec(input_size=64),
    )
    write_manifest(manifest, path)
    return path


def test_manifest_is_a_sidecar_that_round_trips(model_file):
    assert manifest_path(model_file).name == "unet-tflite-int8.tflite.json"
    manifest = load_verified_manifest(model_file)
    assert manifest.inputs[0].quantized and manifest.inputs[0].zero_point == -128
    assert manifest.preprocessing == PreprocessSpec(input_size=64)
    assert [c["short"] for c in manifest.classes] == ["BG", "IVD", "PE", "TS", "AAP"]


def test_tampered_model_is_refused(model_file):
    data = bytearray(model_file.read_bytes())
    data[5] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256 .* does not match"):
        load_verified_manifest(model_file)


def test_missing_manifest_is_refused(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    with pytest.raises(ManifestError, match="no manifest found"):
        load_verified_manifest(path)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d["preprocessing"].update(version=99), "preprocessing spec version 99"),
        (lambda d: d["preprocessing"].update(input_size=128), "does not match preprocessing input_size"),
        (lambda d: d["classes"].pop(), "class table"),
        (lambda d: d.update(schema="other/1"), "schema"),
        (lambda d: d.pop("inputs"), "malformed manifest"),
    ],
)
def test_inconsistent_manifest_is_refused(model_file, change, message):
    side = manifest_path(model_file)
    data = json.loads(side.read_text())
    change(data)
    side.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message):
        load_verified_manifest(model_file)
