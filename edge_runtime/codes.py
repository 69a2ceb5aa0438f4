"""Every coded concept edge-seg writes into DICOM (SEG, SR, key images), in one table.

Values are literals so the runtime does not import pydicom's 0.4 s concept dictionary just to
name a segment. `pydicom_keyword` names the entry in `pydicom.sr.codedict.codes` that each
concept was taken from (a test checks value, scheme and meaning against it); concepts that
dictionary lacks carry `pydicom_keyword=None` and a `source` saying where the code comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge_runtime.measure import StenosisGrade


@dataclass(frozen=True)
class Concept:
    """A coded concept (value, scheme, meaning) and where it was taken from."""

    value: str
    scheme: str
    meaning: str
    pydicom_keyword: str | None  # attribute of pydicom.sr.codedict.codes.<scheme>; None: not there
    source: str = "pydicom concept dictionary"

    def highdicom(self) -> Any:
        """The concept as a highdicom CodedConcept (imports highdicom)."""
        from highdicom.sr import CodedConcept

        return CodedConcept(value=self.value, scheme_designator=self.scheme, meaning=self.meaning)


def _pd(value: str, scheme: str, meaning: str, keyword: str) -> Concept:
    return Concept(value, scheme, meaning, keyword)


# --- segmented properties (SEG) and findings (SR) -----------------------------------------------
ANATOMICAL_STRUCTURE = _pd("91723000", "SCT", "Anatomical Structure", "AnatomicalStructure")
ARCH_OF_VERTEBRA = _pd("40265002", "SCT", "Arch of vertebra", "ArchOfVertebra")
VERTEBRAL_CANAL = _pd("61853006", "SCT", "Vertebral canal", "VertebralCanal")
LUMBAR_SPINE = _pd("122496007", "SCT", "Lumbar spine", "LumbarSpine")
INTERVERTEBRAL_DISC = Concept(
    "360499006",
    "SCT",
    "Intervertebral disc",
    None,
    "SNOMED CT body structure; pydicom only has level-specific discs (e.g. L4L5Disc 84020006)",
)
SPINAL_DURA_MATER = Concept(
    "37554007",
    "SCT",
    "Spinal dura mater",
    None,
    "SNOMED CT body structure, AAPM TG-263 mapping of 'ThecalSac'; pydicom only has DuraMater "
    "18545000, which includes the cranial dura",
)

# Segmented property type per class short name (SEG). AAP, the area between the anterior and
# posterior vertebral elements around the sac, lies inside the vertebral canal: the nearest concept.
SEGMENT_TYPES: dict[str, Concept] = {
    "IVD": INTERVERTEBRAL_DISC,
    "PE": ARCH_OF_VERTEBRA,
    "TS": SPINAL_DURA_MATER,
    "AAP": VERTEBRAL_CANAL,
}

# --- algorithm and procedure --------------------------------------------------------------------
DEVICE = _pd("121007", "DCM", "Device", "Device")  # observer type of the SR
ARTIFICIAL_INTELLIGENCE = _pd("123110", "DCM", "Artificial Intelligence", "ArtificialIntelligence")
MRI_UNSPECIFIED_BODY_REGION = _pd("25056-3", "LN", "MRI unspecified body region", "MRIUnspecifiedBodyRegion")
IMAGING_MEASUREMENT_REPORT = _pd("126000", "DCM", "Imaging Measurement Report", "ImagingMeasurementReport")

# --- measurements (SR) --------------------------------------------------------------------------
AREA = _pd("42798000", "SCT", "Area", "Area")
SQUARE_MILLIMETER = _pd("mm2", "UCUM", "square millimeter", "SquareMillimeter")
MINIMUM = _pd("255605001", "SCT", "Minimum", "Minimum")
NORMAL_RANGE_LOWER_LIMIT = _pd("385524004", "SCT", "Normal Range Lower Limit", "NormalRangeLowerLimit")
SEVERITY = _pd("246112005", "SCT", "Severity (attribute)", "Severity")
NORMAL = _pd("17621005", "SCT", "Normal", "Normal")
MODERATE = _pd("6736007", "SCT", "Moderate", "Moderate")
SEVERE = _pd("24484000", "SCT", "Severe", "Severe")

# Stenosis grade (thecal-sac area against the run's thresholds) -> coded severity.
# Relative stenosis is reported as Moderate and absolute as Severe; the SR states the cut-offs.
SEVERITY_BY_GRADE: dict[StenosisGrade, Concept] = {
    StenosisGrade.NORMAL: NORMAL,
    StenosisGrade.RELATIVE: MODERATE,
    StenosisGrade.ABSOLUTE: SEVERE,
}

# --- disc levels (SR finding sites, only when the level name is justified) ----------------------
DISC_LEVELS: dict[str, Concept] = {
    "T12-L1": _pd("243926009", "SCT", "Level of T12/L1 intervertebral disc", "LevelOfT12L1IntervertebralDisc"),
    "L1-L2": _pd("243920003", "SCT", "Level of L1/L2 intervertebral disc", "LevelOfL1L2IntervertebralDisc"),
    "L2-L3": _pd("243921004", "SCT", "Level of L2/L3 intervertebral disc", "LevelOfL2L3IntervertebralDisc"),
    "L3-L4": _pd("243922006", "SCT", "Level of L3/L4 intervertebral disc", "LevelOfL3L4IntervertebralDisc"),
    "L4-L5": _pd("243923001", "SCT", "Level of L4/L5 intervertebral disc", "LevelOfL4L5IntervertebralDisc"),
    "L5-S1": _pd("243927000", "SCT", "Level of L5/S1 intervertebral disc", "LevelOfL5S1IntervertebralDisc"),
}
"""Disc level names in anatomical order, cranial to caudal."""


def all_concepts() -> dict[str, Concept]:
    """Every concept defined here by its module-level name (for tests and the README list)."""
    found = {name: value for name, value in globals().items() if isinstance(value, Concept)}
    found |= {f"DISC_LEVELS[{key}]": value for key, value in DISC_LEVELS.items()}
    return found
