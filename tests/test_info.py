"""`edge-seg info`: manifest table and JSON, integrity verdict, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime import run
from edge_runtime.info import info_command
from edge_runtime.manifest import Manifest, TensorSpec, read_manifest, sha256_file, write_manifest
from edge_runtime.preprocessing import PreprocessSpec


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "unet-tflite-int8.tflite"
    path.write_bytes(b"TFL3" + bytes(range(200)))  # info never loads the model, it only hashes it
    manifest = Manifest(
        model_file=path.name,
        format="tflite",
        precision="int8",
        sha256=sha256_file(path),
        inputs=[TensorSpec("input", [None, 160, 160, 1], "int8", 0.00392, -128)],
        outputs=[TensorSpec("scores", [None, 160, 160, 5], "int8", 0.00390625, -128)],
        preprocessing=PreprocessSpec(input_size=160),
        name="unet",
        variant="tflite-int8",
        provenance={"recipe": "unet base16", "seed": 0},
        baseline_metrics={"mean_dice": 0.91},
        size_bytes=path.stat().st_size,
        macs_per_slice=123_456_789,
    )
    write_manifest(manifest, path)
    return path


def test_table_shows_the_manifest_and_a_passed_integrity_check(model: Path, capsys: pytest.CaptureFixture) -> None:
    assert info_command(model) == 0
    out = capsys.readouterr().out
    for text in ("unet", "tflite-int8", "int8", "ok", "Nx160x160x1", "scale 0.00392", "123,456,789", "unet base16", "0.91"):
        assert text in out, text
    assert "one: the whole slice" in " ".join(out.split())  # no field of view: one window


def test_the_bundled_model_is_seen_through_three_windows(capsys: pytest.CaptureFixture) -> None:
    assert info_command(BUNDLED) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    own = read_manifest(BUNDLED).preprocessing.field_of_view_mm
    windows = " / ".join(f"{fov:g}" for fov in (own * 0.9375, own, own * 1.0625))
    assert f"{windows} mm, class probabilities averaged (--single-window: {own:g} mm only)" in out


def test_json_output_is_the_manifest_plus_verdict(model: Path, capsys: pytest.CaptureFixture) -> None:
    assert info_command(model, json_output=True) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] is True and data["verification_error"] is None
    assert data["sha256"] == sha256_file(model)
    assert data["preprocessing"]["input_size"] == 160
    assert data["inputs"][0]["zero_point"] == -128


def test_a_tampered_model_is_reported_and_exits_2(model: Path, capsys: pytest.CaptureFixture) -> None:
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    assert info_command(model, json_output=True) == 2
    captured = capsys.readouterr()
    verdict = json.loads(captured.out)
    assert verdict["verified"] is False
    assert "does not match the manifest" in verdict["verification_error"]
    assert "sha256" in captured.err


def test_missing_manifest_and_missing_default_model_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(b"x")
    assert info_command(bare) == 2
    assert "no manifest found" in capsys.readouterr().err
    monkeypatch.setattr(run, "DEFAULT_MODEL", tmp_path / "models" / "default.tflite")
    assert info_command(None) == 2
    assert "--model" in capsys.readouterr().err


BUNDLED = Path(__file__).resolve().parents[1] / "edge_runtime" / "models" / "default.tflite"


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EDGE_SEG_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_backend_rows_list_installed_backends_and_say_when_auto_is_not_measured_yet(
    model: Path, cache: Path, capsys: pytest.CaptureFixture
) -> None:
    assert info_command(model, threads=2) == 0  # nothing is loaded: the fake model stays unread
    out = capsys.readouterr().out
    assert "backends installed" in out and "litert" in out and "backend auto (2 threads)" in out
    if "openvino" in out:  # two candidates: auto needs a measurement nobody has made yet
        assert "not measured on this machine yet" in out
    else:
        assert "litert (only candidate)" in out
    assert not cache.exists()


def test_measure_probes_the_bundled_model_and_the_next_info_reads_the_cache(
    cache: Path, capsys: pytest.CaptureFixture
) -> None:
    assert info_command(BUNDLED, json_output=True, threads=1, measure=True) == 0
    section = json.loads(capsys.readouterr().out)["backend"]
    assert section["threads"] == 1 and section["installed"][0] == "litert"
    first = section["auto"]
    assert first["backend"] in section["installed"] and first["reason"]
    assert first["source"] == ("measured" if len(section["installed"]) > 1 else "only candidate")
    assert info_command(BUNDLED, json_output=True, threads=1) == 0
    backend = json.loads(capsys.readouterr().out)["backend"]
    assert backend["windows"] == 3
    second = backend["auto"]
    assert second["backend"] == first["backend"]
    assert second["source"] == ("cached" if len(section["installed"]) > 1 else "only candidate")


def test_measure_on_a_model_no_backend_can_load_exits_2(model: Path, cache: Path, capsys: pytest.CaptureFixture) -> None:
    assert info_command(model, threads=1, measure=True) == 2
    assert "cannot load this model" in capsys.readouterr().err


def test_a_tampered_model_is_never_loaded_for_the_backend_check(model: Path, capsys: pytest.CaptureFixture) -> None:
    model.write_bytes(model.read_bytes() + b"x")
    assert info_command(model, json_output=True, measure=True) == 2
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["backend"] is None and "does not match the manifest" in verdict["verification_error"]
