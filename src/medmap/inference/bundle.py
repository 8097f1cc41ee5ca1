"""A trained model as one folder that can be checked, read and deployed: the bundle.

``BUNDLE/``
    ``bundle.json``     format and version, task, labels with their coded meanings, the decision
                        threshold, weights, and the SHA-256 of every other file
    ``plan.json``       preprocessing, network and inference settings
    ``weights/model-K.pt``  one per fold (state dicts)
    ``postprocessing.json`` (segmentation), ``metrics.json``, ``history.json`` (when the run has them)
    ``intended_use.json``  what the model accepts (`medmap.intended_use`); predict and serve enforce it
    ``MODEL_CARD.md``   intended use, data, metrics, limits, versions, weights' SHA-256

`load_bundle` refuses a bundle whose files do not match their recorded hashes, or one written in a
newer format than this medmap reads, with a one-line error naming the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from medmap import __version__
from medmap.dicomout.codes import Meaning, meaning_of
from medmap.errors import ConfigError, OutputError
from medmap.inference.postprocess import PostProcessing
from medmap.intended_use import FILE as INTENDED_USE
from medmap.intended_use import IntendedUse
from medmap.plan import Plan

FORMAT = "medmap-bundle"
FORMAT_VERSION = 1


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Label:
    value: int
    name: str
    meaning: Meaning


@dataclass
class Bundle:
    root: Path
    plan: Plan
    labels: list[Label]
    weights: list[Path]
    threshold: float | None = None
    postprocessing: PostProcessing = field(default_factory=PostProcessing)
    metrics: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    intended_use: IntendedUse | None = None  # None: a bundle made before medmap recorded it

    @property
    def task(self) -> str:
        return self.plan.task

    @property
    def identity(self) -> str:
        """What names this model in the DICOM it writes (SEG/SR Algorithm Version, at most 64 characters):
        dataset, task and the first 12 hex digits of the SHA-256 over its weights. Two trainings never
        share it, whatever medmap version made them."""
        digest = hashlib.sha256()
        for name in self.manifest.get("weights", []):
            digest.update(self.manifest.get("files", {}).get(name, "").encode())
        return f"{self.plan.dataset[:40]}-{self.task}-{digest.hexdigest()[:12]}"[:64]

    @property
    def foreground(self) -> list[Label]:
        return [label for label in self.labels if not (self.task == "segmentation" and label.value == 0)]

    def networks(self, device: str | torch.device = "cpu") -> list[torch.nn.Module]:
        """The bundle's networks (one per fold) in eval mode, weights loaded."""
        from medmap.tasks import task_for

        task = task_for(self.plan)
        models = []
        for path in self.weights:
            model = task.build_network(self.plan, None)
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state)
            except Exception as exc:  # torch raises many types for damaged or foreign files
                raise ConfigError(f"{path}: cannot be loaded as this bundle's weights ({type(exc).__name__})") from None
            models.append(model.to(device).eval())
        return models


def run_weights(run: Path) -> list[Path]:
    """A training run's model weights: one per fold when trained with --folds, else the single best.pt
    (which may not exist yet: callers check)."""
    folds = sorted(Path(run).glob("fold-*/checkpoints/best.pt"))
    return folds or [Path(run) / "checkpoints" / "best.pt"]


def _run_weights(run: Path) -> list[Path]:
    weights = run_weights(run)
    if not weights[0].is_file():
        raise OutputError(f"{run}: not a trained run (no checkpoints/best.pt)")
    return weights


def create_bundle(
    run: str | Path, out: str | Path, *, intended_use: str | None = None, body_parts: list[str] | None = None
) -> Path:
    """Package a finished training run (``medmap train`` output) as a bundle folder. ``body_parts``
    (BodyPartExamined values) are added to those the training images carried: the bundle refuses series
    that name another."""
    run, out = Path(run), Path(out)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out}: exists and is not empty")
    plan = Plan.load(run / "plan.json")
    weights = _run_weights(run)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    files = ["plan.json"]
    shutil.copy2(run / "plan.json", out / "plan.json")
    names = []
    for i, path in enumerate(weights):
        target = out / "weights" / f"model-{i}.pt"
        shutil.copy2(path, target)
        names.append(f"weights/model-{i}.pt")
    files += names
    for optional in ("postprocessing.json", "metrics.json", "history.json", "threshold.json"):
        if (run / optional).is_file():
            shutil.copy2(run / optional, out / optional)
            files.append(optional)
    use = IntendedUse.load(run / INTENDED_USE)
    if use is not None:
        use = use.with_body_parts(body_parts or [])
        use.save(out / INTENDED_USE)
        files.append(INTENDED_USE)
    elif body_parts:
        raise ConfigError(
            f"{run}: --body-part needs the run's {INTENDED_USE}, which this (older) run lacks; retrain it"
        )
    threshold = None
    if (run / "threshold.json").is_file():
        threshold = json.loads((run / "threshold.json").read_text()).get("threshold")
    labels = [{"value": int(k), "name": v, "meaning": meaning_of(v).to_dict()} for k, v in sorted(plan.labels.items())]
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
    card = model_card(plan, labels, metrics, threshold, {n: sha256(out / n) for n in names}, intended_use, use)
    (out / "MODEL_CARD.md").write_text(card)
    files.append("MODEL_CARD.md")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medmap_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": plan.task,
        "dataset": plan.dataset,
        "input": {"modality": plan.modality, "channels": plan.channels, "mode": plan.input_mode},
        "intended_use": use.summary() if use is not None else None,
        "labels": labels,
        "threshold": threshold,
        "weights": names,
        "files": {name: sha256(out / name) for name in files},
    }
    manifest["identity"] = Bundle(out, plan, [], [], manifest=manifest).identity
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1))
    return out


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle: format version, every file present and unaltered."""
    root = Path(path)
    manifest_path = root / "bundle.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{root}: not a medmap bundle (no bundle.json)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{manifest_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{manifest_path}: not a medmap bundle (format {manifest.get('format')!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConfigError(
            f"{root}: bundle format {version} was written by a newer medmap "
            f"({manifest.get('medmap_version')}); this is medmap {__version__}, which reads format {FORMAT_VERSION}"
        )
    for name, digest in manifest.get("files", {}).items():
        file = root / name
        if not file.is_file():
            raise ConfigError(f"{file}: missing from the bundle")
        if sha256(file) != digest:
            raise ConfigError(f"{file}: altered since the bundle was made (SHA-256 differs from bundle.json)")
    plan = Plan.load(root / "plan.json")
    labels = [Label(int(d["value"]), d["name"], Meaning.from_dict(d["meaning"])) for d in manifest["labels"]]
    metrics = json.loads((root / "metrics.json").read_text()) if (root / "metrics.json").is_file() else {}
    return Bundle(
        root=root,
        plan=plan,
        labels=labels,
        weights=[root / w for w in manifest["weights"]],
        threshold=manifest.get("threshold"),
        postprocessing=PostProcessing.load(root / "postprocessing.json"),
        metrics=metrics,
        manifest=manifest,
        intended_use=IntendedUse.load(root / INTENDED_USE),
    )


def _metric_lines(plan: Plan, metrics: dict) -> list[str]:
    m = metrics.get("metrics", {})
    split = metrics.get("split", "?")
    if "classes" in m:
        lines = [f"Evaluated on the {split} split ({m.get('n')} cases), mean over cases with 95% bootstrap CI:", ""]
        lines += ["| class | Dice | HD95 (mm) | surface Dice |", "|---|---|---|---|"]
        for name, entry in m["classes"].items():

            def cell(key, entry=entry):
                value = entry[key]
                if value["mean"] is None:
                    return "-"
                ci = f" ({value['ci'][0]:.3f}-{value['ci'][1]:.3f})" if key == "dice" else ""
                return f"{value['mean']:.3f}{ci}"

            lines.append(f"| {name} | {cell('dice')} | {cell('hd95_mm')} | {cell('nsd')} |")
        for name, d in m.get("lesions", {}).items():
            lines.append(
                f"\n{name} lesions: {d['detected']}/{d['lesions']} detected, "
                f"{d['false_positives_per_case']:.2f} false positives per case."
            )
        return lines
    if "auc" in m:
        lo, hi = m.get("auc_ci", [float("nan")] * 2)
        return [
            f"Evaluated on the {split} split ({m.get('n')} cases): AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
            f"sensitivity {m.get('sensitivity', float('nan')):.3f}, "
            f"specificity {m.get('specificity', float('nan')):.3f} at the threshold chosen on validation."
        ]
    return ["No evaluation was recorded with this run."]


def model_card(
    plan: Plan, labels, metrics: dict, threshold, weight_hashes: dict, intended_use: str | None, use: IntendedUse | None
) -> str:
    statement = intended_use or (
        f"Research use: {plan.task} of {plan.modality or 'medical'} images like those of the {plan.dataset} "
        "dataset it was trained on. Not a medical device; not for diagnosis."
    )
    label_lines = [
        f"- {d['value']}: {d['name']} ({d['meaning']['type']['scheme']} {d['meaning']['type']['value']} "
        f'"{d["meaning"]["type"]["meaning"]}")'
        for d in labels
    ]
    lines = [
        f"# Model card: {plan.dataset} {plan.task}",
        "",
        "## Intended use",
        statement,
        "",
        *(
            ["Enforced by `medmap predict` and `medmap serve` (other input is refused with the reason):"]
            + [f"- {line}" for line in use.summary()]
            if use is not None
            else ["No intended-use record: only modality and dimensionality are checked at prediction."]
        ),
        "",
        "## Data",
        f"Trained on the `{plan.dataset}` dataset ({plan.modality}), split by patient into training, validation "
        "and test cases. Preprocessing as in `plan.json`: "
        f"spacing {tuple(round(s, 3) for s in plan.target_spacing)} mm, normalisation `{plan.normalization.scheme}`, "
        f"input {plan.input_mode} patches {plan.patch_size}.",
        "",
        "## Labels",
        *label_lines,
        "",
        "## Model",
        f"`{plan.network}` (width {plan.network_width}, depth {plan.network_depth}), {len(weight_hashes)} model(s)"
        + (f"; decision threshold {threshold:.4f} (chosen on validation)" if threshold is not None else ""),
        "",
        "## Metrics",
        *_metric_lines(plan, metrics),
        "",
        "## Limits",
        "- Only as good as the data it was trained on: other scanners, protocols, populations or pathologies "
        "than those of the training data are outside what was measured.",
        "- The confidence intervals above are over the evaluated cases; a small test set gives wide intervals.",
        f"- Input must be {plan.modality or 'the same modality'}, {plan.channels} channel(s); medmap refuses other "
        "input with an error.",
        "- The metrics were measured in float32. `medmap predict` runs in bfloat16 where the hardware computes "
        "it natively (`--precision auto`; `--precision float32` to match the metrics exactly); `medmap evaluate "
        "RUN DATA --precision bfloat16` measures the difference.",
        "",
        "## Versions and integrity",
        f"- medmap {__version__}, bundle format {FORMAT_VERSION}",
        *[f"- `{name}` SHA-256 `{digest}`" for name, digest in weight_hashes.items()],
        "",
    ]
    return "\n".join(lines)
