"""A lesion classification as a DICOM Structured Report: TID 1500 Measurement Report in a Comprehensive 3D SR.

Per lesion one "Volumetric ROI measurements and qualitative evaluations" group (TID 1411): the lesion's
location as a 3-D point in the series' frame of reference (the volumetric reference form, SCOORD3D,
with the source series referenced; the planar image+segment form draws dciodvfy errors here), the
finding type (e.g. SNOMED CT "Nodule"), the predicted class as a qualitative evaluation (e.g.
"Malignant"), the model's probability of that class as a numeric measurement (DCM "Probability of
cancer" for a malignant/benign model, "Probability" otherwise), and the algorithm's name and version.
The source images are the SR's evidence.
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
    predicted_class: Code  # the model's decision (malignant / benign)
    probability: float  # of the predicted class... see ``probability_name``
    probability_name: str = "Probability"  # "Probability of cancer" when the positive class is malignant
    finding_site: Code | None = None  # where (lung)


def write_lesion_report(
    source: Image,
    findings: list[LesionFinding],
    path: str | Path,
    *,
    algorithm: str,
    algorithm_version: str,
    series_number: int = 902,
) -> Path:
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
        name = (
            codes.DCM.ProbabilityOfCancer
            if finding.probability_name == "Probability of cancer"
            else (codes.DCM.Probability)
        )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"lesion {number}"),
                referenced_volume_surface=point,
                finding_type=finding.finding_type.to_highdicom(),
                algorithm_id=algorithm_id,
                finding_sites=[hd.sr.FindingSite(finding.finding_site.to_highdicom())]
                if finding.finding_site
                else None,
                measurements=[
                    hd.sr.Measurement(
                        name=name,
                        value=round(float(finding.probability), 6),
                        unit=codes.UCUM.NoUnits,
                        algorithm_id=algorithm_id,
                    )
                ],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=codes.DCM.Finding, value=finding.predicted_class.to_highdicom())
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
