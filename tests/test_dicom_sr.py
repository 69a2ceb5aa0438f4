"""TID 1500 SR: written from explicit findings, read back by highdicom, dciodvfy and dcmqi's tid1500reader."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dicom_factory as f
import numpy as np
import pydicom
import pytest
from dicom_readers import dciodvfy_errors, dsrdump_problems, tid1500_json

from edge_runtime import dicom_seg, dicom_sr, outline
from edge_runtime.level_names import name_levels
from edge_runtime.manifest import Manifest, TensorSpec
from edge_runtime.measure import StenosisThresholds, grade_stenosis
from edge_runtime.preprocessing import PreprocessSpec
from edge_runtime.research_use import intended_use

hd = pytest.importorskip("highdicom")

PIXEL_MM2 = 0.6875**2
THRESHOLDS = StenosisThresholds(relative_mm2=110.0, absolute_mm2=70.0)  # not the defaults: the SR must state these
SEVERITY = {"normal": "17621005", "relative": "6736007", "absolute": "24484000"}


def _manifest() -> Manifest:
    return Manifest(
        model_file="unet-int8.tflite",
        format="tflite",
        precision="int8",
        sha256="89abcdef" * 8,
        inputs=[TensorSpec("input", [None, 64, 64, 1], "int8", 0.0039, -128)],
        outputs=[TensorSpec("scores", [None, 64, 64, 5], "int8", 0.0039, -128)],
        preprocessing=PreprocessSpec(input_size=64),
        name="unet-test",
        variant="tflite-int8",
        provenance={"intended_use": "Research and evaluation only."},
    )


def _masks() -> list[np.ndarray]:
    """Six 48x44 slices; TS grows from 9x9 to 19x19 pixels (38-171 mm2): all three grades occur."""
    masks = []
    for k in range(6):
        mask = np.zeros((48, 44), np.uint8)
        mask[4:14, 4:40] = 1
        side = 9 + 2 * k
        mask[20 : 20 + side, 10 : 10 + side] = 3
        masks.append(mask)
    return masks


class Study:
    """Six slices in two levels (0-2, 3-5), their SEG, and the explicit SR inputs."""

    def __init__(self, tmp_path: Path, comments: list[str | None] | None = None) -> None:
        images = [np.random.default_rng(k).integers(0, 4000, (48, 44)).astype(np.uint16) for k in range(6)]
        self.sources = f.mr_series(images)
        for ds, text in zip(self.sources, comments or [None] * 6, strict=True):
            if text:
                ds.ImageComments = text
        self.masks = _masks()
        self.manifest = _manifest()
        self.seg_path = dicom_seg.write_dicom_seg(tmp_path / "seg.dcm", self.sources, self.masks, self.manifest)
        self.seg = pydicom.dcmread(self.seg_path, stop_before_pixels=True)
        self.slices = []
        for k, (ds, mask) in enumerate(zip(self.sources, self.masks, strict=True)):
            area = float((mask == 3).sum()) * PIXEL_MM2
            self.slices.append(
                dicom_sr.SliceFinding(
                    ds, f"IM{k}", area, grade_stenosis(area, THRESHOLDS).value, outline.largest_outline(mask == 3)
                )
            )
        groups = [[0, 1, 2], [3, 4, 5]]
        names = name_levels(
            groups, [float(ds.ImagePositionPatient[2]) for ds in self.sources], [ds.get("ImageComments") for ds in self.sources]
        )
        self.levels = []
        for group, name in zip(groups, names, strict=True):
            narrowest = min(group, key=lambda i: self.slices[i].area_mm2)
            self.levels.append(
                dicom_sr.LevelFinding(
                    name,
                    self.slices[narrowest].area_mm2,
                    self.slices[narrowest].grade,
                    tuple(self.sources[i].SOPInstanceUID for i in group),
                    self.sources[narrowest].SOPInstanceUID,
                )
            )

    def content(self, **changes) -> dicom_sr.ReportContent:
        content = dicom_sr.ReportContent(
            self.slices, self.levels, self.manifest, THRESHOLDS, intended_use(self.manifest), [self.seg]
        )
        return replace(content, **changes)


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    return Study(tmp_path)


@pytest.fixture()
def written(study: Study, tmp_path: Path) -> Path:
    return dicom_sr.write_sr(tmp_path / "sr.dcm", study.content())


def _groups(path: Path) -> tuple[list, list]:
    sr = hd.sr.srread(path)
    planar = sr.content.get_planar_roi_measurement_groups()
    volumetric = sr.content.get_volumetric_roi_measurement_groups()
    return planar, volumetric


def test_one_planar_group_per_slice_with_area_severity_and_polyline(study: Study, written: Path) -> None:
    planar, _ = _groups(written)
    assert len(planar) == 6
    for group, finding, mask in zip(planar, study.slices, study.masks, strict=True):
        (area,) = group.get_measurements(name=hd.sr.CodedConcept("42798000", "SCT", "Area"))
        assert area.value == pytest.approx(float((mask == 3).sum()) * PIXEL_MM2)
        assert area.unit.value == "mm2" and area.unit.scheme_designator == "UCUM"
        (severity,) = group.get_qualitative_evaluations(name=hd.sr.CodedConcept("246112005", "SCT", "Severity (attribute)"))
        assert severity.value.value == SEVERITY[finding.grade]
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        points = region.value
        assert np.array_equal(points[0], points[-1])  # closed
        assert outline.polygon_area(points[:-1]) * PIXEL_MM2 == pytest.approx(area.value)  # the outline holds the area
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == finding.source.SOPInstanceUID
        assert group.finding_type.value == "37554007"
    assert {g.get_qualitative_evaluations()[0].value.value for g in planar} == set(SEVERITY.values())
    assert all(not g.finding_sites for g in planar)  # no justified level name: no site repeated per slice


def test_one_volumetric_group_per_level_with_minimum_referencing_the_ts_segment(study: Study, written: Path) -> None:
    _, volumetric = _groups(written)
    assert len(volumetric) == 2
    for group, level, first in zip(volumetric, study.levels, (0, 3), strict=True):
        (area,) = group.get_measurements()
        assert area.value == pytest.approx(study.slices[first].area_mm2)  # the smallest sac is each level's first slice
        assert area.derivation.value == "255605001"  # Minimum
        assert group.get_qualitative_evaluations()[0].value.value == SEVERITY[study.slices[first].grade]
        segment = group.reference_type  # the ROI is given by a SEG segment, not by coordinates
        assert segment.value == "121191"  # Referenced Segment
        item = next(i for i in group[0].ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121191")
        ref = item.ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == study.seg.SOPInstanceUID
        assert int(ref.ReferencedSegmentNumber) == 3 and "ReferencedFrameNumber" not in ref
        sources = {
            i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
            for i in group[0].ContentSequence
            if i.ConceptNameCodeSequence[0].CodeValue == "121233"  # Source image for segmentation
        }
        assert sources == set(level.slice_uids)
        assert level.name.label in group.tracking_identifier and "from caudal" in group.tracking_identifier


def test_thresholds_are_stated_with_the_run_values(written: Path) -> None:
    _, volumetric = _groups(written)
    (area,) = [i for i in volumetric[0][0].ContentSequence if i.ValueType == "NUM"]
    properties = {p.ConceptNameCodeSequence[0].CodeMeaning: p for p in area.ContentSequence}
    assert float(properties["Normal Range Lower Limit"].MeasuredValueSequence[0].NumericValue) == 110.0
    statement = properties["Normal Range description"].TextValue
    assert statement == dicom_sr.thresholds_statement(THRESHOLDS)
    assert ">= 110 mm2" in statement and "< 70 mm2" in statement and "Moderate" in statement


def test_algorithm_device_and_research_marking(study: Study, written: Path) -> None:
    ds = pydicom.dcmread(written)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.ContentQualification == "RESEARCH"
    assert ds.SeriesDescription.startswith("RESEARCH USE ONLY: ")
    assert ds.StudyInstanceUID == study.sources[0].StudyInstanceUID and ds.PatientID == study.sources[0].PatientID
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "UNVERIFIED" and ds.PreliminaryFlag == "PRELIMINARY"
    planar, _ = _groups(written)
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in planar[0][0].ContentSequence if i.ValueType == "TEXT"}
    assert texts["Algorithm Name"] == "unet-test" and texts["Algorithm Version"] == "tflite-int8"
    assert texts["Algorithm Parameters"] == f"sha256={'89abcdef' * 8}"


def test_a_clinical_model_is_not_marked(study: Study, tmp_path: Path) -> None:
    manifest = replace(study.manifest, provenance={"intended_use": "cleared for clinical use"})
    path = dicom_sr.write_sr(tmp_path / "clinical.dcm", study.content(manifest=manifest, use=intended_use(manifest)))
    ds = pydicom.dcmread(path)
    assert ds.ContentQualification == "PRODUCT" and not ds.SeriesDescription.startswith("RESEARCH")


def test_without_a_seg_levels_carry_the_outlines_of_their_slices(study: Study, tmp_path: Path) -> None:
    path = dicom_sr.write_sr(tmp_path / "noseg.dcm", study.content(segmentations=[]))
    _, volumetric = _groups(path)
    regions = [i for i in volumetric[1][0].ContentSequence if i.ValueType == "SCOORD"]
    assert len(regions) == 3
    assert [r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in regions] == list(
        study.levels[1].slice_uids
    )


def test_justified_level_names_become_finding_sites(tmp_path: Path) -> None:
    named = Study(tmp_path, comments=["L5-S1"] * 3 + ["L4-L5"] * 3)
    path = dicom_sr.write_sr(tmp_path / "named.dcm", named.content())
    planar, volumetric = _groups(path)
    sites = [[s.value.value for s in g.finding_sites] for g in volumetric]
    assert sites == [["122496007", "243927000"], ["122496007", "243923001"]]  # lumbar spine + L5/S1, L4/L5
    assert "L5-S1" in volumetric[0].tracking_identifier and "(L4-L5)" in planar[4].tracking_identifier
    assert [[s.value.value for s in g.finding_sites] for g in planar] == [["243927000"]] * 3 + [["243923001"]] * 3


def test_sr_is_valid_for_dciodvfy(written: Path) -> None:
    assert dciodvfy_errors(written) == []


def test_dcmtk_reads_the_sr_tree_without_a_warning(written: Path) -> None:
    assert dsrdump_problems(written) == []


def test_dcmqi_reads_the_same_areas_grades_and_references(study: Study, written: Path, tmp_path: Path) -> None:
    data = tid1500_json(written, tmp_path)
    groups = data["Measurements"]
    assert len(groups) == 8
    expected = [(s.area_mm2, s.grade) for s in study.slices] + [(lv.min_area_mm2, lv.grade) for lv in study.levels]
    for group, (area, grade) in zip(groups, expected, strict=True):
        (item,) = group["measurementItems"]
        assert float(item["value"]) == pytest.approx(area, abs=0.05)
        assert item["units"]["CodeValue"] == "mm2"
        severity = [q for q in group["qualitativeEvaluations"] if q["conceptCode"]["CodeValue"] == "246112005"]
        assert [q["conceptValue"]["CodeValue"] for q in severity] == [SEVERITY[grade]]
        assert group["measurementAlgorithmIdentification"]["AlgorithmParameters"] == [f"sha256={'89abcdef' * 8}"]
    for group in groups[6:]:
        assert group["segmentationSOPInstanceUID"] == study.seg.SOPInstanceUID and group["ReferencedSegment"] == 3
    assert data["compositeContext"] == [study.seg.SOPInstanceUID]
    assert set(data["imageLibrary"]) == {ds.SOPInstanceUID for ds in study.sources}
    assert data["SeriesDescription"].startswith("RESEARCH USE ONLY")


def test_inputs_are_validated_with_the_offending_value(study: Study) -> None:
    finding = study.slices[0]
    with pytest.raises(ValueError, match="outline must be a closed"):
        dicom_sr.SliceFinding(finding.source, "IM0", 10.0, "normal", finding.outline[:-1])
    with pytest.raises(ValueError, match="'mild' is not a valid StenosisGrade"):
        dicom_sr.SliceFinding(finding.source, "IM0", 10.0, "mild", finding.outline)
    with pytest.raises(ValueError, match=r"area must be > 0 mm2, got 0.0"):
        dicom_sr.SliceFinding(finding.source, "IM0", 0.0, "absolute", finding.outline)
    level = study.levels[0]
    with pytest.raises(ValueError, match="minimum slice x is not one of the level's slices"):
        dicom_sr.LevelFinding(level.name, 1.0, "absolute", level.slice_uids, "x")
    with pytest.raises(ValueError, match="at least one slice"):
        dicom_sr.build_measurement_report(study.content(slices=[], levels=[]))
    with pytest.raises(ValueError, match=f"slice {level.slice_uids[0]} has no slice finding"):
        dicom_sr.build_measurement_report(study.content(slices=study.slices[1:]))


def test_three_angled_blocks_each_level_references_its_blocks_seg(tmp_path: Path) -> None:
    from angled_study import angled_series

    masks = [[m for m in _masks()[:3]] for _ in range(3)]
    images = [
        [np.random.default_rng(9 * b + k).integers(0, 4000, (48, 44)).astype(np.uint16) for k in range(3)] for b in range(3)
    ]
    blocks = angled_series(images)
    manifest = _manifest()
    segs, slices, levels = [], [], []
    for b, (block, block_masks) in enumerate(zip(blocks, masks, strict=True)):
        seg_path = dicom_seg.write_dicom_seg(tmp_path / f"block{b}_seg.dcm", block, block_masks, manifest)
        assert dciodvfy_errors(seg_path) == []
        segs.append(pydicom.dcmread(seg_path, stop_before_pixels=True))
        for k, (ds, mask) in enumerate(zip(block, block_masks, strict=True)):
            area = float((mask == 3).sum()) * PIXEL_MM2
            grade = grade_stenosis(area, THRESHOLDS).value
            slices.append(dicom_sr.SliceFinding(ds, f"B{b}IM{k}", area, grade, outline.largest_outline(mask == 3)))
    all_sources = [ds for block in blocks for ds in block]
    names = name_levels([[0, 1, 2], [3, 4, 5], [6, 7, 8]], [float(ds.ImagePositionPatient[2]) for ds in all_sources], [None] * 9)
    for b, name in enumerate(names):
        uids = tuple(ds.SOPInstanceUID for ds in blocks[b])
        levels.append(dicom_sr.LevelFinding(name, slices[3 * b].area_mm2, slices[3 * b].grade, uids, uids[0]))
    content = dicom_sr.ReportContent(slices, levels, manifest, THRESHOLDS, intended_use(manifest), segs)
    path = dicom_sr.write_sr(tmp_path / "sr.dcm", content)
    assert dciodvfy_errors(path) == []
    data = tid1500_json(path, tmp_path)
    level_groups = data["Measurements"][9:]
    assert [g["segmentationSOPInstanceUID"] for g in level_groups] == [s.SOPInstanceUID for s in segs]
    assert [g["TrackingIdentifier"].split(":")[0] for g in level_groups] == [
        f"thecal sac, level {k} from caudal" for k in (1, 2, 3)
    ]
    assert sorted(data["compositeContext"]) == sorted(s.SOPInstanceUID for s in segs)
    planar, _ = _groups(path)
    orientations = {tuple(float(v) for v in ds.ImageOrientationPatient) for ds in all_sources}
    assert len(orientations) == 3 and len(planar) == 9  # one POLYLINE group per slice whatever its block's angle


def _flat(dataset, skip_vrs=("UI", "DA", "TM", "DT")) -> list:
    """Every element except UIDs, dates and times (new per document), sequences in order."""
    items = []
    for element in dataset:
        if element.VR in skip_vrs:
            continue
        if element.VR == "SQ":
            items.append((element.tag, [_flat(item, skip_vrs) for item in element.value]))
        else:
            items.append((element.tag, element.value))
    return items


def _references(dataset) -> list[str]:
    keys = ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID", "StudyInstanceUID", "SOPClassUID")
    return [str(e.value) for e in dataset.iterall() if e.keyword in keys]


@pytest.mark.parametrize("variant", ["seg", "no-seg"])
def test_the_assembled_sr_is_the_document_highdicoms_own_constructor_writes(study: Study, tmp_path: Path, variant: str) -> None:
    content = study.content(**({"segmentations": []} if variant == "no-seg" else {}))
    fast = dicom_sr.build_measurement_report(content)
    report, evidence = dicom_sr.build_report_tree(content)
    plain = hd.sr.Comprehensive3DSR(evidence=evidence, content=report[0], **dicom_sr.document_attributes(content))
    plain.ContentQualification = content.use.content_qualification
    fast.save_as(tmp_path / "fast.dcm", enforce_file_format=True)
    plain.save_as(tmp_path / "plain.dcm", enforce_file_format=True)
    a, b = pydicom.dcmread(tmp_path / "fast.dcm"), pydicom.dcmread(tmp_path / "plain.dcm")
    assert _flat(a.file_meta) == _flat(b.file_meta)
    assert _flat(a) == _flat(b)
    assert _references(a) == _references(b)  # same sources, SEG and study, in the same places
    assert [e.keyword for e in a.iterall() if e.VR == "UI"] == [e.keyword for e in b.iterall() if e.VR == "UI"]
    # in memory it reads like the document highdicom reads back: `content` is the tree that was written
    assert isinstance(fast, hd.sr.Comprehensive3DSR)
    read = hd.sr.srread(tmp_path / "plain.dcm")
    for get in ("get_planar_roi_measurement_groups", "get_volumetric_roi_measurement_groups"):
        assert [len(g) for g in getattr(fast.content, get)()] == [len(g) for g in getattr(read.content, get)()]
    assert fast.content[0].ContentSequence is fast.ContentSequence


def test_a_reference_missing_from_the_evidence_is_refused_as_highdicom_does(study: Study) -> None:
    content = study.content()
    report, evidence = dicom_sr.build_report_tree(content)
    attributes = dicom_sr.document_attributes(content)
    with pytest.raises(ValueError, match=evidence[0].SOPInstanceUID):
        dicom_sr._assembled_sr_class()(report, evidence[1:], **attributes)
    with pytest.raises(ValueError, match=evidence[0].SOPInstanceUID):
        hd.sr.Comprehensive3DSR(evidence=evidence[1:], content=report[0], **attributes)


def test_an_outline_anywhere_on_a_large_slice_is_the_same_polygon_moved() -> None:
    small = _masks()[2] == 3
    big = np.zeros((320, 320), bool)
    big[201 : 201 + small.shape[0], 77 : 77 + small.shape[1]] = small
    moved = outline.largest_outline(big)
    assert np.array_equal(moved, outline.largest_outline(small) + np.array([77.0, 201.0]))
