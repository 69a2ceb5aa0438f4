"""Test set-up: Keras 2 for tfmot, quiet TensorFlow, and small shared fixtures."""

import os
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The measured backend choice and OpenVINO's compiled blobs go to a per-session folder, never
# into the user's cache (edge_runtime.user_cache); tests that check the cache use their own tmp.
os.environ["EDGE_SEG_CACHE_DIR"] = tempfile.mkdtemp(prefix="edge-seg-test-cache-")
