"""Compression and export: pruning, QAT/PQAT, TFLite and ONNX artefacts with manifests and validation."""

import os

# tensorflow-model-optimization needs Keras 2 (tf_keras); set before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
