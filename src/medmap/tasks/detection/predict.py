"""A detector's answer for one case: the findings at or above the bundle's operating threshold (chosen on
validation at one false positive per scan), each with its centre in LPS mm, estimated diameter and score,
in ``result.json``; with a lesion classifier (find, then classify) each finding also carries the
classifier's probabilities, decision and threshold. For DICOM input, one TID 1500 Comprehensive 3D SR
holds a measurement group per finding (`medmap.dicomout.sr`): what goes back to the PACS.

The classifier answers only inside its own intended use: a finding outside it (say, outside the lungs)
is listed as not assessed with the reason; an image outside it refuses the case (nothing written).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from medmap.io.image import Image
from medmap.tasks.base import Answer
from medmap.tasks.detection.findings import findings, rescaled

if TYPE_CHECKING:
    from medmap.inference.predictor import InputCase, Predictor


def predict_case(predictor: Predictor, case: InputCase, image: Image, folder: Path) -> Answer:
    threshold = predictor.bundle.threshold if predictor.bundle.threshold is not None else 0.5
    classifier = predictor.classifier
    if classifier is not None:  # refused before any work: a chest CT the classifier may not read
        check_classifier_input(classifier, case, image)
    found = [f for f in findings(predictor.models.class_probability(image, 1)) if f.score >= threshold]
    found = rescaled(found, predictor.bundle.diameter_scale)
    name = predictor.bundle.foreground[0].name if predictor.bundle.foreground else "finding"
    listed = [
        {
            "finding": name,
            "position_lps_mm": [round(v, 2) for v in f.centre],
            "diameter_mm": round(f.diameter_mm, 2),
            "score": round(f.score, 4),
        }
        for f in found
    ]
    result: dict = {"coordinates": "LPS mm", "threshold": threshold, "findings": listed}
    if classifier is not None:
        result["classifier"] = classifier.algorithm
        if found:
            from medmap.tasks.classification.predict import classify

            positions = [tuple(f.centre) for f in found]
            classes = classify(classifier, replace(case, lesions=positions), image, refuse_when_none=False)
            for item, classified in zip(listed, classes["findings"], strict=True):
                classified.pop("position_lps_mm")
                item["classification"] = classified
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {}
    if image.meta.slices:  # DICOM input: the findings as a Structured Report, even none (a negative read)
        outputs["sr"] = str(_report(predictor, image, listed, name, folder))
    return Answer(result, outputs)


def check_classifier_input(classifier: Predictor, case: InputCase, image: Image) -> None:
    """The checks `Predictor.run_case` makes for its own bundle, made for the classifier's."""
    from medmap.inference.predictor import check_modality
    from medmap.inference.segment import check_input

    check_modality(image, classifier.bundle, case.case_id)
    check_input(image, classifier.bundle.plan, f"case {case.case_id}")
    use = classifier.bundle.intended_use
    classifier.outside_use(use.check_image(image) if use else [], f"case {case.case_id} (classifier)")


def _report(predictor: Predictor, image: Image, listed: list[dict], name: str, folder: Path) -> Path:
    from medmap.dicomout.sr import LesionFinding, write_lesion_report
    from medmap.tasks.classification.predict import coded_class, lesion_codes

    where = lesion_codes(predictor.bundle.plan.modality)
    findings_ = []
    for item in listed:
        classified = item.get("classification", {})
        known = coded_class(predictor.classifier.bundle, classified) if "decision" in classified else {}
        findings_.append(
            LesionFinding(
                position_lps=tuple(item["position_lps_mm"]),
                diameter_mm=item["diameter_mm"],
                detection_score=item["score"],
                name=item["finding"],
                **where,
                **known,
            )
        )
    algorithm = predictor.algorithm
    if predictor.classifier is not None:
        algorithm = f"{algorithm} + {predictor.classifier.algorithm}"
    return write_lesion_report(
        image,
        findings_,
        folder / "sr.dcm",
        algorithm=algorithm,
        algorithm_version=predictor.version,
        searched_for=LesionFinding((0.0, 0.0, 0.0), name=name, **where),  # the negative read's statement
    )
