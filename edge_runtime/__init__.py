"""edge-seg on-device runtime: DICOM in, masks/overlays/measurements/DICOM SEG out, no TensorFlow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-seg")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"
