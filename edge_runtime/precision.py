"""The numeric precisions a model file can carry: one enum for exporters, manifests, gates and reports."""

from __future__ import annotations

from enum import StrEnum


class Precision(StrEnum):
    """Manifest precision of an artefact (the value is what manifests and reports write).

    Declaration order is the report order: float first, then the integer precisions.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC_INT8 = "dynamic-int8"  # int8 weights, float activations (TFLite dynamic range)
    INT8 = "int8"  # full integer: int8 weights and activations
    INT16X8 = "int16x8"  # int16 activations, int8 weights (not exported here; read from others' manifests)

    @property
    def is_float(self) -> bool:
        """Float precisions reproduce the float model; integer ones approximate it."""
        return self in (Precision.FP32, Precision.FP16)

    @property
    def rank(self) -> int:
        """Position in the report order."""
        return list(Precision).index(self)

    @classmethod
    def parse(cls, value: str | Precision) -> Precision:
        """A precision from its manifest value or a common alias (float32, float16, dynamic, uint8).

        Raises ValueError naming the value and the known ones, so a new precision is never
        silently treated as one of these.
        """
        if isinstance(value, Precision):
            return value
        key = str(value).strip().lower()
        key = ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            known = sorted([p.value for p in cls] + list(ALIASES))
            raise ValueError(f"unknown precision {value!r}; known precisions: {known}") from None


ALIASES: dict[str, str] = {
    "float32": Precision.FP32.value,
    "float16": Precision.FP16.value,
    "dynamic": Precision.DYNAMIC_INT8.value,
    "uint8": Precision.INT8.value,
}
"""Other spellings found in manifests written by other tools or older versions."""
