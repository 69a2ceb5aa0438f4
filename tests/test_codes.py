"""The coded-concept table: each code taken from pydicom matches its dictionary; the others are truly absent there."""

from __future__ import annotations

import pytest
from pydicom.sr import _concepts_dict
from pydicom.sr.codedict import codes

from edge_runtime import codes as edge_codes
from edge_runtime.measure import StenosisGrade

CONCEPTS = edge_codes.all_concepts()
FROM_PYDICOM = {name: c for name, c in CONCEPTS.items() if c.pydicom_keyword is not None}
HAND_TYPED = {name: c for name, c in CONCEPTS.items() if c.pydicom_keyword is None}


@pytest.mark.parametrize("name", sorted(FROM_PYDICOM))
def test_concept_matches_pydicom_dictionary(name: str) -> None:
    concept = FROM_PYDICOM[name]
    reference = getattr(getattr(codes, concept.scheme), concept.pydicom_keyword)
    assert (concept.value, concept.scheme, concept.meaning) == (
        reference.value,
        reference.scheme_designator,
        reference.meaning,
    )


@pytest.mark.parametrize("name", sorted(HAND_TYPED))
def test_hand_typed_concept_is_absent_from_pydicom_and_says_where_it_comes_from(name: str) -> None:
    concept = HAND_TYPED[name]
    values = {value for entry in _concepts_dict.concepts[concept.scheme].values() for value in entry}
    assert concept.value not in values, f"{name} is in pydicom now: take it from there"
    assert concept.source != "pydicom concept dictionary" and len(concept.source) > 20


def test_hand_typed_concepts_are_exactly_the_two_the_readme_lists() -> None:
    assert {c.value for c in HAND_TYPED.values()} == {"360499006", "37554007"}


def test_every_class_has_its_own_segment_type() -> None:
    types = edge_codes.SEGMENT_TYPES
    assert list(types) == ["IVD", "PE", "TS", "AAP"]
    assert len({c.value for c in types.values()}) == 4
    assert edge_codes.ANATOMICAL_STRUCTURE.value not in {c.value for c in types.values()}


def test_every_grade_maps_to_a_distinct_severity_value_of_pydicom() -> None:
    severities = {grade: edge_codes.SEVERITY_BY_GRADE[grade] for grade in StenosisGrade}
    assert [s.meaning for s in severities.values()] == ["Normal", "Moderate", "Severe"]
    assert edge_codes.SEVERITY_BY_GRADE["relative"] is edge_codes.MODERATE  # plain strings from report.json work


def test_disc_levels_run_cranial_to_caudal() -> None:
    assert list(edge_codes.DISC_LEVELS) == ["T12-L1", "L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1"]


def test_highdicom_concept_round_trip() -> None:
    pytest.importorskip("highdicom")
    coded = edge_codes.AREA.highdicom()
    assert (coded.value, coded.scheme_designator, coded.meaning) == ("42798000", "SCT", "Area")
