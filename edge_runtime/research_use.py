"""Research-use marking: decided once from the model's intended use, written into every output.

A model whose manifest says it is for research (the bundled one: trained on synthetic phantoms)
must not produce a SEG, SR or picture that could pass for a clinical result. The marking uses
the standard attribute ContentQualification = RESEARCH (SOP Common module), a prefix on the
series and content descriptions, and a visible line on every image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge_runtime.manifest import Manifest

RESEARCH_LABEL = "RESEARCH USE ONLY"
RESEARCH_LINE = "RESEARCH USE ONLY - not for clinical use"
_RESEARCH_WORDS = re.compile(r"research|not for clinical|investigational|not a medical device", re.IGNORECASE)


@dataclass(frozen=True)
class IntendedUse:
    """What the model's manifest says about its use, and how outputs must be marked."""

    research_only: bool
    statement: str  # the manifest's own words ("" when it has none)

    @property
    def content_qualification(self) -> str:
        """DICOM ContentQualification (0018,9004): RESEARCH or PRODUCT."""
        return "RESEARCH" if self.research_only else "PRODUCT"

    @property
    def image_line(self) -> str | None:
        """The line to draw on every picture, or None for a model cleared for clinical use."""
        return RESEARCH_LINE if self.research_only else None

    def describe(self, text: str, limit: int = 64) -> str:
        """`text` with the research prefix (when needed), cut to a DICOM LO/SH length."""
        if self.research_only and not text.upper().startswith(RESEARCH_LABEL):
            text = f"{RESEARCH_LABEL}: {text}" if text else RESEARCH_LABEL
        return text[:limit]


def intended_use(manifest: Manifest) -> IntendedUse:
    """Research-only unless the manifest states an intended use without research wording.

    A manifest without any statement is treated as research-only: an unknown model must not be
    presented as a clinical one.
    """
    statement = str((manifest.provenance or {}).get("intended_use") or "").strip()
    research = not statement or bool(_RESEARCH_WORDS.search(statement))
    return IntendedUse(research_only=research, statement=statement)
