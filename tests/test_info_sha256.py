"""`edge-seg info` on a tampered model shows the file's own sha256 beside the manifest's."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edge_runtime.info import info_command
from edge_runtime.manifest import Manifest, TensorSpec, sha256_file, write_manifest
from edge_runtime.preprocessing import PreprocessSpec


@pytest.fixture()
def tampered(tmp_path: Path) -> tuple[Path, str, str]:
    """(model, manifest sha256, file sha256) after one byte of the model changed behind its manifest."""
    path = tmp_path / "m-tflite-int8.tflite"
    path.write_bytes(b"TFL3" + bytes(range(100)))  # info hashes the file, it does not load it
    manifest = Manifest(
        model_file=path.name, format="tflite", precision="int8", sha256=sha256_file(path),
        inputs=[TensorSpec("input", [None, 32, 32, 1], "int8", 0.004, -128)],
        outputs=[TensorSpec("scores", [None, 32, 32, 5], "int8", 0.004, -128)],
        preprocessing=PreprocessSpec(input_size=32), size_bytes=path.stat().st_size,
    )  # fmt: skip
    write_manifest(manifest, path)
    recorded = manifest.sha256
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    return path, recorded, hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_carries_the_file_sha256(tampered, capsys):
    path, recorded, actual = tampered
    assert recorded != actual
    assert info_command(path, json_output=True) == 2
    data = json.loads(capsys.readouterr().out)
    assert (data["sha256"], data["file_sha256"]) == (recorded, actual)


def test_table_shows_both_digests(tampered, capsys):
    path, recorded, actual = tampered
    assert info_command(path) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert f"sha256 (manifest) {recorded[:20]}" in out.replace("│ ", "").replace(" │", "")
    assert actual[:20] in out
