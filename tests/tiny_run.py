"""One tiny training run shared by the train and evaluate tests (built once per pytest session)."""

from __future__ import annotations

import json
from pathlib import Path

TINY = {"arch": "unet", "image_size": 32, "base_filters": 4, "batch_size": 2, "seed": 3}
"""32 px, 4 base filters: trains in seconds on 2 shared cores."""


def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(data, run): 4 synthetic patients; a run cut by --time-budget in epoch 1, then --resume'd to 2.

    The first training's metrics and history are kept as first_metrics.json and
    history_before_resume.csv for the time-budget and resume tests.
    """
    from train.data.synth import synthesize
    from train.fit import train_command

    base = tmp_path_factory.getbasetemp() / "tiny_run"
    data, out = base / "synth4", base / "unet"
    if (base / "complete").is_file():
        return data, out
    synthesize(data, patients=4, seed=0)
    first = train_command(data=data, out=out, epochs=5, time_budget=0.001, **TINY)
    (out / "first_metrics.json").write_text(json.dumps(first))
    (out / "history_before_resume.csv").write_text((out / "history.csv").read_text())
    train_command(data=data, out=out, epochs=2, resume=True, **TINY)
    (base / "complete").write_text("ok\n")
    return data, out
