"""edge-seg on-device runtime: DICOM in, masks/overlays/measurements/DICOM SEG out, no TensorFlow."""

__version__ = "0.1.0"  # the package version (pyproject.toml reads it from here)
