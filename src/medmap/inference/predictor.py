"""`medmap predict`: a bundle applied to new studies, answers written as files a person or a PACS can use.

INPUT is a DICOM series folder, a folder of studies (every image series under it is a case), an image
file (NIfTI, NRRD, MHA, PNG, ...), a folder of image files, or a CSV manifest (``image`` column, and
``x,y,z`` lesion positions in mm for lesion-level classifiers). Per case, under ``OUT/<case>/``:

- segmentation: ``labels.nii.gz`` on the input's grid; ``seg.dcm`` (DICOM SEG) for DICOM input;
  ``result.json`` with each segment's volume (ml), voxel count, number of connected components and the
  equivalent-sphere diameter of its largest component (mm);
- classification: ``result.json`` with the class probabilities and the decision at the bundle's
  threshold (per lesion for lesion-level models); ``sr.dcm`` (TID 1500 Comprehensive 3D SR) for DICOM
  input;
- detection: ``result.json`` with each finding (centre in LPS mm, diameter, score) at the bundle's
  operating threshold; with ``classifier`` (a lesion-level classifier bundle: find, then classify) each
  finding's class too; ``sr.dcm`` with a measurement group per finding for DICOM input.

A case that fails (unreadable, wrong modality or dimension) is reported and skipped; the others go on.
A case outside the bundle's intended use (`medmap.intended_use`: a chest CT sent to a liver model, a
lesion position outside the lung) is refused the same way, with the reason, and nothing is written for it
(unless ``ignore_intended_use``, which records the reasons in ``result.json``). Of a lesion-level case,
only the lesions outside it are refused; the others are classified.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from medmap.device import check_device
from medmap.errors import ConfigError, InputNotFoundError, MedmapError
from medmap.inference import shards
from medmap.inference.bundle import Bundle, load_bundle
from medmap.inference.engines import load_engines
from medmap.inference.models import Models
from medmap.inference.precision import resolve_precision
from medmap.inference.segment import check_input
from medmap.intended_use import OutOfUseError
from medmap.io.dicom import Series, load_series, scan
from medmap.io.dicom.reader import check_neighbours
from medmap.io.dicom.series import ScanResult
from medmap.io.image import Image
from medmap.io.load import is_image_file, load
from medmap.progress import track
from medmap.tasks import task_for


@dataclass
class InputCase:
    """One case to predict. A series found by `discover` keeps its parsed headers and the scan it came
    from, so loading it reads its pixels without scanning the input tree again (a folder of N series is
    scanned once, not N + 1 times)."""

    case_id: str
    source: Path
    series_uid: str | None = None
    lesions: list[tuple[float, float, float]] = field(default_factory=list)
    series: Series | None = None
    scanned: ScanResult | None = None

    def load(self) -> Image:
        if self.series is not None and self.scanned is not None:
            check_neighbours(self.series, self.scanned)  # an unreadable file beside it may be one of its slices
            return load_series(self.series)
        return load(self.source, self.series_uid)


@dataclass
class CaseResult:
    case_id: str
    ok: bool
    outputs: dict[str, str] = field(default_factory=dict)
    result: dict = field(default_factory=dict)
    error: str = ""
    refused: bool = False  # outside the bundle's intended use (not an error of the input)
    image: Image | None = field(default=None, repr=False)  # the input as loaded (for a picture of it)
    labels: Image | None = field(default=None, repr=False)  # a segmentation's label map on its grid

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
    try:
        scanned = scan(source)
    except InputNotFoundError:
        scanned = None
    found = scanned.series if scanned else []
    cases, seen = [], set()
    for s in found:  # named by the series' folder; a number added only when two series share one
        name = _safe(Path(s.paths[0]).parent.name)
        if name in seen:
            name = f"{name}-{s.uid[-8:]}"
        seen.add(name)
        cases.append(InputCase(name, source, s.uid, series=s, scanned=scanned))
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


def check_pair(detector: Bundle, classifier: Bundle) -> None:
    """Find, then classify needs a detector and a classifier of lesions at given positions."""
    if detector.task != "detection":
        raise ConfigError(f"--classifier goes with a detection bundle; {detector.root} is a {detector.task} model")
    if classifier.task != "classification" or not classifier.plan.lesion_level:
        raise ConfigError(f"--classifier {classifier.root}: not a lesion classifier (it must take lesion positions)")
    ours, theirs = detector.plan.modality or "", classifier.plan.modality or ""
    if ours and theirs and ours != theirs:
        raise ConfigError(f"--classifier {classifier.root}: trained on {theirs}, the detector on {ours}")


def check_modality(image: Image, bundle: Bundle, case_id: str) -> None:
    expected = (bundle.plan.modality or "").upper()
    actual = (image.meta.modality or "").upper()
    if expected and actual and actual != expected:
        raise ConfigError(f"case {case_id}: a {actual} image, the model was trained on {expected}")


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
        classifier: Bundle | None = None,
    ) -> None:
        self.bundle, self.device = bundle, check_device(device)
        self.ignore_intended_use = ignore_intended_use  # answer anyway, the reasons recorded in each result
        self.overlays = overlays  # also Secondary Capture overlay images (segmentation of DICOM input)
        self.engine_name = engine
        self.precision = resolve_precision(precision, device, engine)
        self.task = task_for(bundle.plan)
        engines = load_engines(bundle, engine, device, self.precision)
        self.models = Models(bundle.plan, engines, self.device, bundle.postprocessing)  # as evaluation runs them
        self.algorithm = f"medmap {bundle.plan.dataset} {bundle.task}"
        self.version = bundle.identity  # this model, not the medmap that made it (SoftwareVersions says that)
        self.classifier: Predictor | None = None  # find, then classify: each detection's class
        if classifier is not None:
            check_pair(bundle, classifier)
            self.classifier = Predictor(
                classifier, engine=engine, device=device, precision=precision, ignore_intended_use=ignore_intended_use
            )

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
        answer = self.task.predict_case(self, case, image, folder)  # a refusal writes nothing
        result = CaseResult(case.case_id, True, answer.outputs, answer.result, image=image, labels=answer.labels)
        result.result["case_id"] = case.case_id
        result.result["intended_use"] = (
            "not recorded in this bundle" if use is None else {"outside": outside} if outside else "within"
        )
        result.result["engine"] = self.engine_name
        result.result["precision"] = self.precision
        (folder / "result.json").write_text(json.dumps(result.result, indent=1))
        result.outputs["json"] = str(folder / "result.json")
        return result


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
    classifier: str | Path | None = None,
) -> list[CaseResult]:
    """Every case of ``source`` through the bundle; results under ``out`` plus ``out/summary.json``.
    ``shard=(i, n)``: only the i-th of n deterministic shares of the cases (`medmap.inference.shards`).
    ``classifier``: a lesion classifier bundle that classifies each of a detector's findings."""
    check_device(device)  # a bad option fails before anything is loaded
    resolve_precision(precision, device, engine)
    bundle = load_bundle(bundle_path)
    second = load_bundle(classifier) if classifier is not None else None
    if second is not None:
        check_pair(bundle, second)  # before the input is read (the Predictor checks it again for other callers)
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
        classifier=second,
    )
    results = []
    for case in track(cases, "predicting", enabled=progress):
        try:
            done = predictor.run_case(case, out)
            results.append(replace(done, image=None, labels=None))  # a folder of studies must not pile up in memory
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
