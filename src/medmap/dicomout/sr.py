"""Lesion findings as a DICOM Structured Report: TID 1500 Measurement Report in a Comprehensive 3D SR.

Per lesion one "Volumetric ROI measurements and qualitative evaluations" group (TID 1411): a tracking
identifier and UID, the lesion's location as a 3-D point in the series' frame of reference (the
volumetric reference form, SCOORD3D, with the source series referenced; the planar image+segment form
draws dciodvfy errors here), the finding type (e.g. SNOMED CT "Nodule") and site ("Lung"), and what is
known of it: a detector's estimated diameter (SCT "Diameter", mm) and its score (DCM "Certainty of
Finding", %); a classifier's decided class as a qualitative evaluation (e.g. "Malignant") and its
probability as a measurement (DCM "Probability of cancer" for a malignant/benign model, "Probability"
otherwise). Every measurement names the algorithm and its version. The source images are the SR's
evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap import __version__
from medmap.dicomout.codes import Code
from medmap.dicomout.seg import MANUFACTURER, source_datasets
from medmap.io.image import Image


@dataclass
class LesionFinding:
    position_lps: tuple[float, float, float]  # mm, patient coordinates (DICOM's x, y, z)
    finding_type: Code  # what the lesion is (nodule)
    predicted_class: Code | None = None  # a classifier's decision (malignant / benign)
    probability: float | None = None  # the classifier's probability of the positive class, see below
    probability_name: str = "Probability"  # "Probability of cancer" when the positive class is malignant
    finding_site: Code | None = None  # where (lung)
    diameter_mm: float | None = None  # a detector's estimate
    detection_score: float | None = None  # a detector's score, 0-1 (written as a percentage)
    name: str = "lesion"  # the tracking identifier is "<name> <number>"

    def measurements(self, algorithm_id) -> list:
        import highdicom as hd
        from pydicom.sr.codedict import codes

        values = []
        if self.diameter_mm is not None:
            values.append((codes.SCT.Diameter, round(float(self.diameter_mm), 2), codes.UCUM.Millimeter))
        if self.detection_score is not None:
            values.append(
                (codes.DCM.CertaintyOfFinding, round(100 * float(self.detection_score), 2), codes.UCUM.Percent)
            )
        if self.probability is not None:
            name = (
                codes.DCM.ProbabilityOfCancer
                if self.probability_name == "Probability of cancer"
                else codes.DCM.Probability
            )
            values.append((name, round(float(self.probability), 6), codes.UCUM.NoUnits))
        return [hd.sr.Measurement(name=n, value=v, unit=u, algorithm_id=algorithm_id) for n, v, u in values]


def write_lesion_report(
    source: Image,
    findings: list[LesionFinding],
    path: str | Path,
    *,
    algorithm: str,
    algorithm_version: str,
    series_number: int = 902,
    searched_for: LesionFinding | None = None,
) -> Path:
    """The SR of ``findings``. A detector's negative read (no finding) is still a report: one group
    (TID 1501) stating ``searched_for``'s finding type as Absent at its site, so a PACS user sees the scan
    was read and nothing was found (TID 1500 needs at least one group)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    datasets = source_datasets(source, pixels=False)  # evidence references instances, never their pixels
    first = datasets[0]
    frame_of_reference = first.FrameOfReferenceUID
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm, version=algorithm_version)
    groups = []
    for number, finding in enumerate(findings, start=1):
        point = hd.sr.VolumeSurface(
            graphic_type=hd.sr.GraphicTypeValues3D.POINT,
            graphic_data=np.asarray([finding.position_lps], dtype=float),
            frame_of_reference_uid=frame_of_reference,
            source_series=hd.sr.SourceSeriesForSegmentation(first.SeriesInstanceUID),
        )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{finding.name} {number}"),
                referenced_volume_surface=point,
                finding_type=finding.finding_type.to_highdicom(),
                algorithm_id=algorithm_id,
                finding_sites=[hd.sr.FindingSite(finding.finding_site.to_highdicom())]
                if finding.finding_site
                else None,
                measurements=finding.measurements(algorithm_id),
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=finding.predicted_class.to_highdicom())
                ]
                if finding.predicted_class is not None
                else None,
            )
        )
    if not groups and searched_for is not None:
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"no {searched_for.name} found"),
                finding_type=searched_for.finding_type.to_highdicom(),
                algorithm_id=algorithm_id,
                finding_sites=[hd.sr.FindingSite(searched_for.finding_site.to_highdicom())]
                if searched_for.finding_site
                else None,
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=searched_for.finding_type.to_highdicom(), value=codes.SCT.Absent)
                ],
            )
        )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=algorithm[:64], manufacturer_name=MANUFACTURER, model_name=algorithm[:64]
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion
        if getattr(first, "Modality", "") == "CT"
        else hd.sr.CodedConcept("P5-09051", "SRT", "Imaging procedure"),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=datasets,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=f"{algorithm} findings"[:64],
        software_versions=f"medmap {__version__}",
    )
    path = Path(path)
    sr.save_as(path)
    return path
