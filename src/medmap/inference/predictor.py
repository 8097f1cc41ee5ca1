"""`medmap predict`: a bundle applied to new studies, answers written as files a person or a PACS can use.

INPUT is a DICOM series folder, a folder of studies (every image series under it is a case), an image
file (NIfTI, NRRD, MHA, PNG, ...), a folder of image files, or a CSV manifest (``image`` column, and
``x,y,z`` lesion positions in mm for lesion-level classifiers). Per case, under ``OUT/<case>/``:

- segmentation: ``labels.nii.gz`` on the input's grid; ``seg.dcm`` (DICOM SEG) for DICOM input;
  ``result.json`` with each segment's volume (ml), voxel count, number of connected components and the
  equivalent-sphere diameter of its largest component (mm);
- classification: ``result.json`` with the class probabilities and the decision at the bundle's
  threshold (per lesion for lesion-level models); ``sr.dcm`` (TID 1500 Comprehensive 3D SR) for DICOM
  input.

A case that fails (unreadable, wrong modality or dimension) is reported and skipped; the others go on.
A case outside the bundle's intended use (`medmap.intended_use`: a chest CT sent to a liver model, a
lesion position outside the lung) is refused the same way, with the reason, and nothing is written for it
(unless ``ignore_intended_use``, which records the reasons in ``result.json``). Of a lesion-level case,
only the lesions outside it are refused; the others are classified.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medmap.data.cache import centre_of, normalized_cube, raw_lesion_cube, whole_image_input
from medmap.data.loader import classifier_input
from medmap.device import check_device
from medmap.errors import ConfigError, InputNotFoundError, MedmapError
from medmap.inference import shards
from medmap.inference.bundle import Bundle, load_bundle
from medmap.inference.engines import load_engines
from medmap.inference.precision import resolve_precision
from medmap.inference.segment import check_input, segment_image
from medmap.intended_use import OutOfUseError
from medmap.io.image import Image
from medmap.io.load import is_image_file, load, save
from medmap.progress import track


@dataclass
class InputCase:
    case_id: str
    source: Path
    series_uid: str | None = None
    lesions: list[tuple[float, float, float]] = field(default_factory=list)

    def load(self) -> Image:
        return load(self.source, self.series_uid)


@dataclass
class CaseResult:
    case_id: str
    ok: bool
    outputs: dict[str, str] = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    error: str = ""
    refused: bool = False  # outside the bundle's intended use (not an error of the input)

    def dicom_results(self) -> list[str]:
        """The DICOM objects written for this case (SEG, SR, overlay images): what goes back to a PACS."""
        files = [self.outputs[key] for key in ("seg", "sr") if key in self.outputs]
        if "overlays" in self.outputs:
            files += [str(p) for p in sorted(Path(self.outputs["overlays"]).glob("*.dcm"))]
        return files


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "case"


def discover(source: Path, lesions: list[tuple[float, float, float]] | None = None) -> list[InputCase]:
    """The cases of an input path (see the module docstring)."""
    if not source.exists():
        raise InputNotFoundError(f"{source}: no such file or folder")
    if source.suffix.lower() == ".csv":
        return _manifest_cases(source)
    if source.is_file():
        return [InputCase(_safe(source.name.split(".")[0]), source, lesions=list(lesions or []))]
    from medmap.io.dicom import scan

    try:
        found = scan(source).series
    except InputNotFoundError:
        found = []
    cases, seen = [], set()
    for s in found:  # named by the series' folder; a number added only when two series share one
        name = _safe(Path(s.paths[0]).parent.name)
        if name in seen:
            name = f"{name}-{s.uid[-8:]}"
        seen.add(name)
        cases.append(InputCase(name, source, s.uid))
    if not cases:
        files = sorted(p for p in source.rglob("*") if p.is_file() and is_image_file(p))
        cases = [InputCase(_safe(p.name.split(".")[0]), p) for p in files]
    if not cases:
        raise InputNotFoundError(f"{source}: no DICOM series or image files found")
    for case in cases:
        case.lesions = list(lesions or [])
    return cases


def _manifest_cases(path: Path) -> list[InputCase]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "image" not in rows[0]:
        raise ConfigError(f"{path}: a prediction manifest needs an 'image' column")
    by_image: dict[str, InputCase] = {}
    for line, row in enumerate(rows, start=2):
        image = (path.parent / row["image"]).resolve()
        case = by_image.setdefault(row["image"], InputCase(_safe(row["image"].replace("/", "_")), image))
        if row.get("x") not in (None, ""):
            try:
                case.lesions.append((float(row["x"]), float(row["y"]), float(row["z"])))
            except (TypeError, ValueError):
                raise ConfigError(f"{path}, line {line}: x, y, z must be numbers (mm, LPS)") from None
    return list(by_image.values())


def check_modality(image: Image, bundle: Bundle, case_id: str) -> None:
    expected = (bundle.plan.modality or "").upper()
    actual = (image.meta.modality or "").upper()
    if expected and actual and actual != expected:
        raise ConfigError(f"case {case_id}: a {actual} image, the model was trained on {expected}")


def segment_summary(labels: Image, bundle: Bundle) -> dict:
    voxel_ml = float(np.prod(labels.spacing)) / 1000
    out = {}
    for label in bundle.foreground:
        mask = labels.array == label.value
        components, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        largest = int(np.bincount(components.ravel())[1:].max()) if n else 0
        out[label.name] = {
            "label": label.value,
            "voxels": int(mask.sum()),
            "volume_ml": round(float(mask.sum()) * voxel_ml, 3),
            "components": int(n),
            "largest_component_diameter_mm": round(float(np.cbrt(6 * largest * voxel_ml * 1000 / np.pi)), 2),
        }
    return out


class Predictor:
    """A loaded bundle with its engines, ready for cases."""

    def __init__(
        self,
        bundle: Bundle,
        *,
        engine: str = "torch",
        device: str = "cpu",
        precision: str = "auto",
        overlays: bool = False,
        ignore_intended_use: bool = False,
    ) -> None:
        self.bundle, self.device = bundle, check_device(device)
        self.ignore_intended_use = ignore_intended_use  # answer anyway, the reasons recorded in each result
        self.overlays = overlays  # also Secondary Capture overlay images (segmentation of DICOM input)
        self.engine_name = engine
        self.precision = resolve_precision(precision, device, engine)
        self.engines = load_engines(bundle, engine, device, self.precision)
        self.algorithm = f"medmap {bundle.plan.dataset} {bundle.task}"
        self.version = bundle.identity  # this model, not the medmap that made it (SoftwareVersions says that)

    def segment(self, image: Image) -> Image:
        return segment_image(
            image, self.bundle.plan, self.engines, postprocessing=self.bundle.postprocessing, device=self.device
        )

    def classify(self, inputs: list[np.ndarray]) -> np.ndarray:
        """Mean softmax of the fold models for a list of network inputs ``[C, *patch]``."""
        x = torch.from_numpy(np.stack(inputs)).to(self.device)
        if self.bundle.plan.input_mode in ("2d", "2.5d") and x.dim() == 5:
            x = x[:, :, 0]
        with torch.inference_mode():
            probabilities = [torch.softmax(engine(x).float(), 1).cpu().numpy() for engine in self.engines]
        return np.mean(probabilities, axis=0)

    def decide(self, p: np.ndarray) -> int:
        threshold = self.bundle.threshold
        if len(p) == 2 and threshold is not None:
            return int(p[1] >= threshold)
        return int(np.argmax(p))

    def outside_use(self, reasons: list[str], what: str) -> list[str]:
        """Raise `OutOfUseError` for ``reasons`` unless told to answer anyway (then return them)."""
        if reasons and not self.ignore_intended_use:
            raise OutOfUseError(f"{what}: not assessed, outside the model's intended use: {'; '.join(reasons)}")
        return reasons

    def run_case(self, case: InputCase, out: Path) -> CaseResult:
        image = case.load()
        check_modality(image, self.bundle, case.case_id)
        check_input(image, self.bundle.plan, f"case {case.case_id}")
        use = self.bundle.intended_use
        outside = self.outside_use(use.check_image(image) if use else [], f"case {case.case_id}")
        folder = out / case.case_id
        is_dicom = bool(image.meta.slices)
        result = CaseResult(case.case_id, True)
        if self.bundle.task != "segmentation":
            findings = self._classification(case, image)  # may refuse a case: nothing is written before
        folder.mkdir(parents=True, exist_ok=True)
        if self.bundle.task == "segmentation":
            labels = self.segment(image)
            result.outputs["labels"] = str(save(labels, folder / "labels.nii.gz"))
            result.result = {"segments": segment_summary(labels, self.bundle)}
            if is_dicom:
                from medmap.dicomout.seg import write_segmentation

                segments = [(label.value, label.name, label.meaning) for label in self.bundle.foreground]
                seg = write_segmentation(
                    labels,
                    image,
                    segments,
                    folder / "seg.dcm",
                    algorithm=self.algorithm,
                    algorithm_version=self.version,
                )
                result.outputs["seg"] = str(seg)
                if self.overlays:
                    from medmap.dicomout.overlay import write_overlays

                    written = write_overlays(
                        labels,
                        image,
                        folder / "overlays",
                        [s[:2] for s in segments],
                        algorithm=f"{self.algorithm} {self.version}",
                    )
                    result.outputs["overlays"] = str(folder / "overlays")
                    result.result["overlay_images"] = len(written)
        else:
            result.result = findings
            if "findings" in findings and is_dicom:
                assessed = [f for f in findings["findings"] if f.get("assessed", True)]
                result.outputs["sr"] = str(self._report(image, assessed, folder))
        result.result["case_id"] = case.case_id
        result.result["intended_use"] = (
            "not recorded in this bundle" if use is None else {"outside": outside} if outside else "within"
        )
        result.result["engine"] = self.engine_name
        result.result["precision"] = self.precision
        (folder / "result.json").write_text(json.dumps(result.result, indent=1))
        result.outputs["json"] = str(folder / "result.json")
        return result

    def _classification(self, case: InputCase, image: Image) -> dict:
        plan, names = self.bundle.plan, [label.name for label in self.bundle.labels]
        if not plan.lesion_level:
            p = self.classify([classifier_input(whole_image_input(image, plan)[0], plan)])[0]
            return self._item(p, names)
        if not case.lesions:
            raise ConfigError(
                f"case {case.case_id}: a lesion-level model needs lesion positions (--lesion x,y,z or a CSV)"
            )
        use, inputs, items = self.bundle.intended_use, [], []
        for position in case.lesions:
            index = image.world_to_index(np.asarray(position, dtype=float))
            if np.any(index < -0.5) or np.any(index > np.asarray(image.shape) - 0.5):
                raise ConfigError(f"case {case.case_id}: lesion at {position} mm (LPS) lies outside the image")
            raw = raw_lesion_cube(image, position, plan)
            reasons = use.check_lesion(centre_of(raw, plan), position) if use else []
            item: dict = {"position_lps_mm": list(position)}
            if reasons and not self.ignore_intended_use:
                item.update(assessed=False, reason="; ".join(reasons))
            else:
                inputs.append(classifier_input(normalized_cube(raw, plan), plan))
                if reasons:
                    item["outside_intended_use"] = reasons
            items.append(item)
        if not inputs:
            self.outside_use([i["reason"] for i in items], f"case {case.case_id}")
        assessed = iter(self.classify(inputs))
        for item in items:
            if item.get("assessed", True):
                item.update(self._item(next(assessed), names))
        return {"findings": items}

    def _item(self, p: np.ndarray, names: list[str]) -> dict:
        return {
            "probabilities": {n: round(float(v), 6) for n, v in zip(names, p, strict=True)},
            "decision": names[self.decide(p)],
            "threshold": self.bundle.threshold,
        }

    def _report(self, image: Image, items: list[dict], folder: Path) -> Path:
        from medmap.dicomout.codes import meaning_of
        from medmap.dicomout.sr import LesionFinding, write_lesion_report

        names = [label.name for label in self.bundle.labels]
        positive = names[-1]  # the class order is negative first (medmap.data.layouts)
        finding_type = meaning_of("nodule").type if self.bundle.plan.modality == "CT" else meaning_of("lesion").type
        findings = []
        for item in items:
            decided = item["decision"]
            meaning = next(label.meaning for label in self.bundle.labels if label.name == decided)
            findings.append(
                LesionFinding(
                    position_lps=tuple(item["position_lps_mm"]),
                    finding_type=finding_type,
                    predicted_class=meaning.type,
                    probability=item["probabilities"][positive],
                    probability_name="Probability of cancer" if positive.lower() == "malignant" else "Probability",
                    finding_site=meaning_of("lung").type if self.bundle.plan.modality == "CT" else None,
                )
            )
        return write_lesion_report(
            image, findings, folder / "sr.dcm", algorithm=self.algorithm, algorithm_version=self.version
        )


def predict(
    bundle_path: str | Path,
    source: str | Path,
    out: str | Path,
    *,
    engine: str = "torch",
    device: str = "cpu",
    precision: str = "auto",
    overlays: bool = False,
    lesions: list[tuple[float, float, float]] | None = None,
    ignore_intended_use: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool = False,
) -> list[CaseResult]:
    """Every case of ``source`` through the bundle; results under ``out`` plus ``out/summary.json``.
    ``shard=(i, n)``: only the i-th of n deterministic shares of the cases (`medmap.inference.shards`)."""
    check_device(device)  # a bad option fails before anything is loaded
    resolve_precision(precision, device, engine)
    bundle = load_bundle(bundle_path)
    cases = discover(Path(source), lesions)
    if shard is not None:
        cases = shards.select(cases, shard)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(
        bundle,
        engine=engine,
        device=device,
        precision=precision,
        overlays=overlays,
        ignore_intended_use=ignore_intended_use,
    )
    results = []
    for case in track(cases, "predicting", enabled=progress):
        try:
            results.append(predictor.run_case(case, out))
        except MedmapError as exc:
            message = str(exc) if case.case_id in str(exc) else f"case {case.case_id}: {exc}"
            results.append(CaseResult(case.case_id, False, error=message, refused=isinstance(exc, OutOfUseError)))
    summary = [
        {"case_id": r.case_id, "ok": r.ok, "refused": r.refused, "outputs": r.outputs, "error": r.error}
        for r in results
    ]
    if shard is None:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    else:
        shards.write_and_merge(out, shard, summary)
    return results
