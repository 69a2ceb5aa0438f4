"""Training side of edge-seg: data, models, losses and fitting (TensorFlow via tf_keras)."""

import os

# tensorflow-model-optimization works only with Keras 2 (tf_keras); this must be set before
# TensorFlow is first imported anywhere in the process.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
