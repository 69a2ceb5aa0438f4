"""DICOM SR measurement report (TID 1500, Comprehensive 3D SR): thecal-sac areas per slice and per disc level.

Per slice with a thecal sac, one planar ROI group (TID 1410) holds the sac's closed POLYLINE
outline on its source image (OHIF shows only groups with coordinates), its area in mm2 and a
coded severity. Per disc level, one volumetric ROI group (TID 1411) holds the level's minimum
area and its severity and references the TS segment of the SEG on the level's slices (what 3D
Slicer and dcmqi read); without a SEG it carries the level's outlines instead. The cut-offs
behind each severity are stated in every area's normal-range properties.

Inputs are plain values (areas, grades, outlines, source headers, SEG datasets), so this module
does not depend on how the run pipeline measured them. highdicom is imported on use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import __version__
from edge_runtime import codes as c
from edge_runtime.dicom_save import save_dicom
from edge_runtime.level_names import LevelName
from edge_runtime.manifest import Manifest
from edge_runtime.measure import StenosisGrade, StenosisThresholds
from edge_runtime.research_use import IntendedUse

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
TS_SEGMENT_NUMBER = 3  # segments are numbered by class id (edge_runtime.labels)


@dataclass(frozen=True)
class SliceFinding:
    """The thecal sac on one source image, as the SR reports it."""

    source: Any  # pydicom Dataset of the source image (header only is enough)
    label: str  # slice name shown to a reader, e.g. the file stem
    area_mm2: float
    grade: str  # a StenosisGrade value
    outline: np.ndarray  # closed (N, 2) polygon, (column, row) image coordinates

    def __post_init__(self) -> None:
        points = np.asarray(self.outline, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 4 or not np.array_equal(points[0], points[-1]):
            raise ValueError(f"slice {self.label}: outline must be a closed (N >= 4, 2) polygon, got shape {points.shape}")
        StenosisGrade(self.grade)  # raises ValueError naming the bad grade
        if not np.isfinite(self.area_mm2) or self.area_mm2 <= 0:
            raise ValueError(f"slice {self.label}: thecal-sac area must be > 0 mm2, got {self.area_mm2}")


@dataclass(frozen=True)
class LevelFinding:
    """One disc level: its name, minimum thecal-sac area and the slices it spans."""

    name: LevelName
    min_area_mm2: float
    grade: str
    slice_uids: tuple[str, ...]  # SOP Instance UIDs of the level's slices that show the sac
    min_slice_uid: str  # the slice with the minimum

    def __post_init__(self) -> None:
        StenosisGrade(self.grade)
        if self.min_slice_uid not in self.slice_uids:
            raise ValueError(f"{self.name.label}: minimum slice {self.min_slice_uid} is not one of the level's slices")


@dataclass
class ReportContent:
    """Everything one SR says, besides the patient/study context taken from the sources."""

    slices: Sequence[SliceFinding]
    levels: Sequence[LevelFinding]
    manifest: Manifest
    thresholds: StenosisThresholds
    use: IntendedUse
    segmentations: Sequence[Any] = field(default_factory=list)  # SEG datasets (pydicom) of these sources


def thresholds_statement(thresholds: StenosisThresholds) -> str:
    """The cut-offs and the coded severity each grade is reported as, in words."""
    t = thresholds
    return (
        f"Thecal-sac cross-sectional area: normal >= {t.relative_mm2:g} mm2 (severity {c.NORMAL.meaning}); "
        f"relative central stenosis {t.absolute_mm2:g} to < {t.relative_mm2:g} mm2 (severity {c.MODERATE.meaning}); "
        f"absolute central stenosis < {t.absolute_mm2:g} mm2 (severity {c.SEVERE.meaning})."
    )


@cache
def _coded(concept: c.Concept) -> Any:
    """One highdicom CodedConcept per concept: building hundreds of identical ones costs ~10 % of the SR."""
    return concept.highdicom()


def segment_sources(segmentation: Any, segment_number: int) -> dict[str, list[int]]:
    """Source SOP Instance UID -> 1-based numbers of the SEG frames of `segment_number` derived from it."""
    frames: dict[str, list[int]] = {}
    for number, item in enumerate(segmentation.PerFrameFunctionalGroupsSequence, start=1):
        if int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != segment_number:
            continue
        for derivation in item.get("DerivationImageSequence", []):
            for ref in derivation.get("SourceImageSequence", []):
                frames.setdefault(str(ref.ReferencedSOPInstanceUID), []).append(number)
    return frames


def _algorithm(manifest: Manifest) -> Any:
    """Name, version and the model file's sha256 (kept short: it repeats in every group)."""
    import highdicom as hd

    return hd.sr.AlgorithmIdentification(
        name=manifest.name or Path(manifest.model_file).stem,
        version=manifest.variant or manifest.precision or __version__,
        parameters=[f"sha256={manifest.sha256}"],
    )


def _area(value: float, thresholds: StenosisThresholds | None, source: Any | None = None) -> Any:
    """Area in mm2; a level's minimum also carries the cut-offs behind its severity, in numbers and words."""
    import highdicom as hd

    properties, derivation, referenced = None, None, None
    if thresholds is not None:
        lower = hd.sr.NumContentItem(
            name=_coded(c.NORMAL_RANGE_LOWER_LIMIT),
            value=thresholds.relative_mm2,
            unit=_coded(c.SQUARE_MILLIMETER),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES,
        )
        properties = hd.sr.MeasurementProperties(
            normal_range_properties=hd.sr.NormalRangeProperties(
                values=[lower],
                description=thresholds_statement(thresholds),
                authority="edge-seg run stenosis thresholds (--ts-relative, --ts-absolute)",
            )
        )
        derivation = _coded(c.MINIMUM)
    if source is not None:
        referenced = [hd.sr.SourceImageForMeasurement(source.SOPClassUID, source.SOPInstanceUID)]
    return hd.sr.Measurement(
        name=_coded(c.AREA),
        value=float(value),
        unit=_coded(c.SQUARE_MILLIMETER),
        derivation=derivation,
        properties=properties,
        referenced_images=referenced,
    )


def _severity(grade: str) -> Any:
    import highdicom as hd

    return hd.sr.QualitativeEvaluation(
        name=_coded(c.SEVERITY), value=_coded(c.SEVERITY_BY_GRADE[StenosisGrade(grade)])
    )


def _sites(level: LevelName | None, lumbar: bool) -> list[Any] | None:
    """Finding sites: the lumbar spine (level groups) and the disc level when its name is justified.

    Slice groups carry only a justified disc level: repeating "lumbar spine" on every slice costs
    ~15 % of the SR's build time and says nothing the level groups do not.
    """
    import highdicom as hd

    sites = [hd.sr.FindingSite(anatomic_location=_coded(c.LUMBAR_SPINE))] if lumbar else []
    if level is not None and level.anatomical is not None:
        sites.append(hd.sr.FindingSite(anatomic_location=_coded(c.DISC_LEVELS[level.anatomical])))
    return sites or None


def _region(finding: SliceFinding) -> Any:
    import highdicom as hd

    source = finding.source
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(finding.outline, dtype=np.float64),
        source_image=hd.sr.SourceImageForRegion(source.SOPClassUID, source.SOPInstanceUID),
    )


def _slice_group(finding: SliceFinding, level: LevelName | None, content: ReportContent, algorithm: Any) -> Any:
    import highdicom as hd

    where = f" ({level.label})" if level is not None else ""
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier=f"thecal sac, slice {finding.label}{where}"),
        referenced_region=_region(finding),
        finding_type=_coded(c.SPINAL_DURA_MATER),
        algorithm_id=algorithm,
        finding_sites=_sites(level, lumbar=False),
        measurements=[_area(finding.area_mm2, None)],
        qualitative_evaluations=[_severity(finding.grade)],
    )


def _level_reference(
    level: LevelFinding, by_uid: dict[str, SliceFinding], ts_sources: Sequence[tuple[Any, set[str]]]
) -> dict[str, Any]:
    """The TS segment of the SEG that holds the level's narrowest slice, else the level's outlines.

    The reference names the segment, not frames (DICOM allows one or the other); the level's
    slices are its "source image for segmentation" items.
    """
    import highdicom as hd

    for seg, with_ts in ts_sources:
        if level.min_slice_uid not in with_ts:
            continue
        in_seg = [by_uid[u].source for u in level.slice_uids if u in with_ts]
        return {
            "referenced_segment": hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                segment_number=TS_SEGMENT_NUMBER,
                source_images=[hd.sr.SourceImageForSegmentation(s.SOPClassUID, s.SOPInstanceUID) for s in in_seg],
            )
        }
    return {"referenced_regions": [_region(by_uid[u]) for u in level.slice_uids]}


def _level_group(
    level: LevelFinding,
    content: ReportContent,
    algorithm: Any,
    by_uid: dict[str, SliceFinding],
    ts_sources: Sequence[tuple[Any, set[str]]],
) -> Any:
    import highdicom as hd

    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            identifier=f"thecal sac, {level.name.label}: minimum area ({level.name.basis})"
        ),
        **_level_reference(level, by_uid, ts_sources),
        finding_type=_coded(c.SPINAL_DURA_MATER),
        algorithm_id=algorithm,
        finding_sites=_sites(level.name, lumbar=True),
        measurements=[_area(level.min_area_mm2, content.thresholds, by_uid[level.min_slice_uid].source)],
        qualitative_evaluations=[_severity(level.grade)],
    )


def _referenced_uids(node: Any, found: set[str]) -> set[str]:
    """SOP Instance UIDs referenced by the IMAGE and COMPOSITE items below `node` (what highdicom checks against evidence)."""
    for item in node.get("ContentSequence", ()):
        if item.ValueType in ("IMAGE", "COMPOSITE"):
            found.add(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        _referenced_uids(item, found)
    return found


@cache
def _assembled_sr_class() -> type:
    """The Comprehensive3DSR subclass below, defined on first use (highdicom is imported on use)."""
    import highdicom as hd
    from pydicom import Dataset

    class AssembledComprehensive3DSR(hd.sr.Comprehensive3DSR):
        """Comprehensive3DSR taking the TID 1500 tree as built: the base constructor deep-copies and re-parses it (~0.1 s here).

        highdicom's constructor is given the root container without its children (the document
        header, evidence, flags and patient/study module come from highdicom as usual); the built
        tree is then attached as is, and `content` returns that same MeasurementReport. The one
        check of the full tree the constructor would have made, that every referenced instance is
        in `evidence`, is made here. tests/test_dicom_sr.py checks that the document equals the
        one highdicom's plain constructor writes, apart from UIDs, dates and times.
        """

        def __init__(self, report: Any, evidence: Sequence[Any], **kwargs: Any) -> None:
            root = report[0]
            missing = _referenced_uids(root, set()) - {str(e.SOPInstanceUID) for e in evidence}
            if missing:
                raise ValueError(f"SR content references instances not given as evidence: {sorted(missing)}")
            header = Dataset()
            for element in root:
                if element.keyword != "ContentSequence":
                    header.add(element)
            header.ContentSequence = []
            super().__init__(evidence=evidence, content=header, **kwargs)
            self.ContentSequence = root.ContentSequence
            self._report = report

        @property
        def content(self) -> Any:
            """The MeasurementReport this document was assembled from (its items are the document's)."""
            return self._report

    return AssembledComprehensive3DSR


def build_report_tree(content: ReportContent) -> tuple[Any, list[Any]]:
    """The TID 1500 MeasurementReport of `content` (highdicom templates) and the evidence it references.

    Raises
    ------
    ValueError
        When there is nothing to report, a level names a slice with no finding, or the
        sources belong to more than one study.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    if not content.slices:
        raise ValueError("SR needs at least one slice with a thecal sac")
    by_uid = {f.source.SOPInstanceUID: f for f in content.slices}
    for level in content.levels:
        missing = [u for u in level.slice_uids if u not in by_uid]
        if missing:
            raise ValueError(f"{level.name.label}: slice {missing[0]} has no slice finding")
    studies = {f.source.StudyInstanceUID for f in content.slices}
    if len(studies) != 1:
        raise ValueError(f"SR sources span {len(studies)} studies; one report covers one study")
    algorithm = _algorithm(content.manifest)
    level_of = {u: level.name for level in content.levels for u in level.slice_uids}
    groups = [_slice_group(f, level_of.get(uid), content, algorithm) for uid, f in by_uid.items()]
    ts_sources = [(seg, set(segment_sources(seg, TS_SEGMENT_NUMBER))) for seg in content.segmentations]
    groups += [_level_group(level, content, algorithm, by_uid, ts_sources) for level in content.levels]
    observer = hd.sr.ObserverContext(
        observer_type=_coded(c.DEVICE),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(),
            name="edge-seg",
            manufacturer_name="edge-seg",
            model_name=(content.manifest.name or "edge-seg model")[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_coded(c.MRI_UNSPECIFIED_BODY_REGION),
        imaging_measurements=groups,
        title=_coded(c.IMAGING_MEASUREMENT_REPORT),
    )
    evidence = [f.source for f in content.slices] + list(content.segmentations)
    return report, evidence


def document_attributes(
    content: ReportContent, series_number: int = 9902, series_description: str = "edge-seg thecal-sac measurements"
) -> dict[str, Any]:
    """Keyword arguments of highdicom's Comprehensive3DSR besides `evidence` and `content` (new UIDs each call)."""
    from pydicom.uid import generate_uid

    return {
        "series_instance_uid": generate_uid(),
        "series_number": series_number,
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": "edge-seg",
        "is_complete": True,
        "is_final": False,  # a draft for the radiologist to verify
        "is_verified": False,
        "record_evidence": False,
        "series_description": content.use.describe(series_description),
        "manufacturer_model_name": (content.manifest.name or "edge-seg model")[:64],
        "software_versions": f"edge-seg {__version__}",
    }


def build_measurement_report(
    content: ReportContent,
    series_number: int = 9902,
    series_description: str = "edge-seg thecal-sac measurements",
) -> Any:
    """A highdicom Comprehensive3DSR holding the TID 1500 report of `content`.

    Raises
    ------
    ValueError
        When there is nothing to report, a level names a slice with no finding, or the
        sources belong to more than one study.
    """
    report, evidence = build_report_tree(content)
    attributes = document_attributes(content, series_number, series_description)
    sr = _assembled_sr_class()(report, evidence, **attributes)
    sr.ContentQualification = content.use.content_qualification
    return sr


def write_sr(path: Path, content: ReportContent, **kwargs: Any) -> Path:
    """Build the report of `content` and save it atomically to `path`."""
    sr = build_measurement_report(content, **kwargs)
    return save_dicom(sr, path)
