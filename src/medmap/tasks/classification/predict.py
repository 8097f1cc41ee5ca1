"""A classifier's answer for one case: class probabilities and the decision at the bundle's threshold in
``result.json`` (per lesion for a lesion-level model), and for DICOM input a TID 1500 Comprehensive 3D
SR with one finding per assessed lesion. Lesions outside the model's intended use are refused one by
one (the others are classified); a case with none left is refused whole, before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medmap.errors import ConfigError
from medmap.io.image import Image
from medmap.tasks.base import Answer
from medmap.tasks.classification.inputs import (
    centre_of,
    classifier_input,
    normalized_cube,
    raw_lesion_cube,
    whole_image_input,
)

if TYPE_CHECKING:
    from medmap.inference.predictor import InputCase, Predictor


def decide(p: np.ndarray, threshold: float | None) -> int:
    """Binary with a threshold: the positive class when its probability reaches it; else the arg-max."""
    if len(p) == 2 and threshold is not None:
        return int(p[1] >= threshold)
    return int(np.argmax(p))


def _item(p: np.ndarray, names: list[str], threshold: float | None) -> dict:
    return {
        "probabilities": {n: round(float(v), 6) for n, v in zip(names, p, strict=True)},
        "decision": names[decide(p, threshold)],
        "threshold": threshold,
    }


def classify(predictor: Predictor, case: InputCase, image: Image, *, refuse_when_none: bool = True) -> dict:
    """The findings of a case (nothing written: a refusal leaves no trace). ``refuse_when_none``: a case
    whose every lesion is outside the intended use is refused whole (a detector's candidates are not:
    each is then reported as not assessed)."""
    bundle = predictor.bundle
    plan, names, threshold = bundle.plan, [label.name for label in bundle.labels], bundle.threshold
    if not plan.lesion_level:
        p = predictor.models.probabilities([classifier_input(whole_image_input(image, plan)[0], plan)])[0]
        return _item(p, names, threshold)
    if not case.lesions:
        raise ConfigError(f"case {case.case_id}: a lesion-level model needs lesion positions (--lesion x,y,z or a CSV)")
    use, inputs, items = bundle.intended_use, [], []
    for position in case.lesions:
        index = image.world_to_index(np.asarray(position, dtype=float))
        if np.any(index < -0.5) or np.any(index > np.asarray(image.shape) - 0.5):
            raise ConfigError(f"case {case.case_id}: lesion at {position} mm (LPS) lies outside the image")
        raw = raw_lesion_cube(image, position, plan)
        reasons = use.check_lesion(centre_of(raw, plan), position) if use else []
        item: dict = {"position_lps_mm": list(position)}
        if reasons and not predictor.ignore_intended_use:
            item.update(assessed=False, reason="; ".join(reasons))
        else:
            inputs.append(classifier_input(normalized_cube(raw, plan), plan))
            if reasons:
                item["outside_intended_use"] = reasons
        items.append(item)
    if not inputs and refuse_when_none:
        predictor.outside_use([i["reason"] for i in items], f"case {case.case_id}")
    assessed = iter(predictor.models.probabilities(inputs) if inputs else [])
    for item in items:
        if item.get("assessed", True):
            item.update(_item(next(assessed), names, threshold))
    return {"findings": items}


def predict_case(predictor: Predictor, case: InputCase, image: Image, folder: Path) -> Answer:
    result = classify(predictor, case, image)
    folder.mkdir(parents=True, exist_ok=True)
    outputs = {}
    if "findings" in result and image.meta.slices:  # DICOM input: the findings as a Structured Report
        assessed = [f for f in result["findings"] if f.get("assessed", True)]
        outputs["sr"] = str(_report(predictor, image, assessed, folder))
    return Answer(result, outputs)


def coded_class(bundle, item: dict) -> dict:
    """A classified lesion's decision and probability as the SR writes them (`LesionFinding` fields)."""
    names = [label.name for label in bundle.labels]
    positive = names[-1]  # the class order is negative first (medmap.data.layouts)
    meaning = next(label.meaning for label in bundle.labels if label.name == item["decision"])
    return {
        "predicted_class": meaning.type,
        "probability": item["probabilities"][positive],
        "probability_name": "Probability of cancer" if positive.lower() == "malignant" else "Probability",
    }


def lesion_codes(modality: str | None) -> dict:
    """What a lesion is and where, for the SR: a CT's lesion is a lung nodule (the worked example)."""
    from medmap.dicomout.codes import meaning_of

    if modality == "CT":
        return {"finding_type": meaning_of("nodule").type, "finding_site": meaning_of("lung").type}
    return {"finding_type": meaning_of("lesion").type}


def _report(predictor: Predictor, image: Image, items: list[dict], folder: Path) -> Path:
    from medmap.dicomout.sr import LesionFinding, write_lesion_report

    bundle = predictor.bundle
    where = lesion_codes(bundle.plan.modality)
    findings = [
        LesionFinding(position_lps=tuple(item["position_lps_mm"]), **where, **coded_class(bundle, item))
        for item in items
    ]
    return write_lesion_report(
        image, findings, folder / "sr.dcm", algorithm=predictor.algorithm, algorithm_version=predictor.version
    )
