#!/usr/bin/env bash
# Older edge images: check that the bundled default model gives the same masks under
#   (a) tflite-runtime 2.14 with numpy < 2 (the last tflite-runtime release, 2023),
#   (b) onnxruntime with the bundled ONNX variant,
# as under ai-edge-litert (the reference), on the bundled example study.
# Usage: scripts/check_legacy_runtime.sh [WORK_DIR]   (needs Python 3.11 and PyPI access)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
study="$repo/examples/study"
python="${PYTHON:-python3.11}"
mkdir -p "$work"

echo "== reference: ai-edge-litert (project venv)"
"$repo/.venv/bin/edge-seg" run "$study" -o "$work/litert" --backend litert --format npy,report --overwrite >/dev/null

echo "== onnxruntime, bundled ONNX model"
"$repo/.venv/bin/edge-seg" run "$study" -o "$work/onnx" --model "$repo/edge_runtime/models/default.onnx" \
  --format npy,report --overwrite >/dev/null

echo "== tflite-runtime 2.14 + numpy<2 in a fresh venv"
if [ ! -x "$work/legacy/bin/edge-seg" ]; then
  "$python" -m venv "$work/legacy"
  "$work/legacy/bin/pip" install --quiet "numpy<2" "tflite-runtime==2.14.0" "pydicom>=3,<4" pylibjpeg \
    pylibjpeg-libjpeg pylibjpeg-openjpeg pillow typer rich
  # --no-deps: the legacy image has tflite-runtime instead of ai-edge-litert.
  "$work/legacy/bin/pip" install --quiet --no-deps "$repo"
fi
"$work/legacy/bin/python" -c "import numpy, tflite_runtime; print('numpy', numpy.__version__, 'tflite-runtime', tflite_runtime.__version__)"
"$work/legacy/bin/edge-seg" run "$study" -o "$work/legacy-out" --backend tflite-runtime --format npy,report \
  --overwrite >/dev/null

echo "== agreement with the reference masks"
"$repo/.venv/bin/python" - "$work" <<'PY'
import sys
from pathlib import Path

import numpy as np

work = Path(sys.argv[1])
failed = False
# Different kernel builds round int8 requantisation differently at a few boundary pixels.
for name, minimum in (("legacy-out", 0.999), ("onnx", 0.995)):
    for ref in sorted((work / "litert").rglob("*_labels.npy")):
        other = work / name / ref.relative_to(work / "litert")
        agreement = float((np.load(ref) == np.load(other)).mean())
        ok = agreement >= minimum
        failed |= not ok
        print(f"{name:12s} {ref.parent.name}: pixel agreement {agreement:.5f} (need >= {minimum}) {'ok' if ok else 'FAIL'}")
sys.exit(1 if failed else 0)
PY
