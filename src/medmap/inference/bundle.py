"""A trained model as one folder that can be checked, read and deployed: the bundle.

``BUNDLE/``
    ``bundle.json``     format and version, task, labels with their coded meanings, the decision
                        threshold, weights, and the SHA-256 of every other file
    ``plan.json``       preprocessing, network and inference settings
    ``weights/model-K.pt``  one per fold (state dicts)
    ``postprocessing.json`` (segmentation), ``metrics.json``, ``history.json`` (when the run has them)
    ``provenance.json``  versions, commit, command line, seed, hardware and data digest of the training
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
from medmap import run_folder as runs
from medmap.colours import label_colour
from medmap.dicomout.codes import Meaning, meaning_of
from medmap.errors import ConfigError, OutputError
from medmap.inference.model_card import model_card
from medmap.inference.postprocess import PostProcessing
from medmap.intended_use import FILE as INTENDED_USE
from medmap.intended_use import IntendedUse
from medmap.plan import Plan
from medmap.run_folder import RunFolder, load_network

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
    diameter_scale: float = 1.0  # a detector's drawn-to-true diameter factor, measured on validation
    postprocessing: PostProcessing = field(default_factory=PostProcessing)
    metrics: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    intended_use: IntendedUse | None = None  # None: a bundle made before medmap recorded it

    @property
    def task(self) -> str:
        return self.plan.task

    @property
    def identity(self) -> str:
        """What names this model in the DICOM it writes (`identity_of`)."""
        files = self.manifest.get("files", {})
        return identity_of(self.plan, [files.get(name, "") for name in self.manifest.get("weights", [])])

    @property
    def foreground(self) -> list[Label]:
        """The labels a result reports (`Task.foreground`)."""
        from medmap.tasks import task_for

        return task_for(self.plan).foreground(self.labels)

    def networks(self, device: str | torch.device = "cpu") -> list[torch.nn.Module]:
        """The bundle's networks (one per fold) in eval mode, weights loaded."""
        return [load_network(self.plan, path, None, device) for path in self.weights]


def identity_of(plan: Plan, weight_digests: list[str]) -> str:
    """A model's name in the SEG/SR it writes (Algorithm Version, at most 64 characters): dataset, task and
    the first 12 hex digits of the SHA-256 over its weights' SHA-256s. Two trainings never share it,
    whatever medmap version made them."""
    digest = hashlib.sha256("".join(weight_digests).encode()).hexdigest()[:12]
    return f"{plan.dataset[:40]}-{plan.task}-{digest}"[:64]


def create_bundle(
    run: str | Path, out: str | Path, *, intended_use: str | None = None, body_parts: list[str] | None = None
) -> Path:
    """Package a finished training run (``medmap train`` output) as a bundle folder. ``body_parts``
    (BodyPartExamined values) are added to those the training images carried: the bundle refuses series
    that name another."""
    folder, out = RunFolder(run), Path(out)
    run = folder.path
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out}: exists and is not empty")
    plan = folder.plan
    weights = folder.trained_weights()
    (out / "weights").mkdir(parents=True, exist_ok=True)
    files = [runs.PLAN]
    shutil.copy2(folder.file(runs.PLAN), out / runs.PLAN)
    names = []
    for i, path in enumerate(weights):
        target = out / "weights" / f"model-{i}.pt"
        shutil.copy2(path, target)
        names.append(f"weights/model-{i}.pt")
    files += names
    for optional in (runs.POSTPROCESSING, runs.METRICS, runs.HISTORY, runs.THRESHOLD, runs.PROVENANCE):
        if folder.file(optional).is_file():
            shutil.copy2(folder.file(optional), out / optional)
            files.append(optional)
    use = IntendedUse.load(folder.file(INTENDED_USE))
    if use is not None:
        use = use.with_body_parts(body_parts or [])
        use.save(out / INTENDED_USE)
        files.append(INTENDED_USE)
    elif body_parts:
        raise ConfigError(
            f"{run}: --body-part needs the run's {INTENDED_USE}, which this (older) run lacks; retrain it"
        )
    threshold = folder.threshold
    labels = [
        {"value": int(k), "name": v, "meaning": meaning_of(v).to_dict(), "colour": list(label_colour(v, int(k)))}
        for k, v in sorted(plan.labels.items())
    ]
    weight_hashes = {n: sha256(out / n) for n in names}
    identity = identity_of(plan, list(weight_hashes.values()))
    card = model_card(run, plan, labels, weight_hashes, identity, intended_use, use, FORMAT_VERSION)
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
        **({"diameter_scale": folder.diameter_scale} if plan.task == "detection" else {}),
        "weights": names,
        "files": {name: sha256(out / name) for name in files},
    }
    manifest["identity"] = identity
    (out / "bundle.json").write_text(json.dumps(manifest, indent=1))
    return out


def load_bundle(path: str | Path) -> Bundle:
    """Read and verify a bundle: format version, every file present and unaltered."""
    root = Path(path)
    manifest_path = root / "bundle.json"
    if not manifest_path.is_file():
        if (root / runs.PLAN).is_file() and (root / runs.CHECKPOINTS).is_dir():
            raise ConfigError(
                f"{root}: a training run, not a bundle: package it first with `medmap bundle create {root} -o BUNDLE` "
                "(the bundle holds the verified weights, intended use and model card that prediction uses)"
            )
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
    copy = RunFolder(root)  # a bundle holds the deployable files of its run, under the same names
    plan = copy.plan
    labels = [Label(int(d["value"]), d["name"], Meaning.from_dict(d["meaning"])) for d in manifest["labels"]]
    metrics = copy.read(runs.METRICS) or {}
    return Bundle(
        root=root,
        plan=plan,
        labels=labels,
        weights=[root / w for w in manifest["weights"]],
        threshold=manifest.get("threshold"),
        diameter_scale=float(manifest.get("diameter_scale", 1.0)),
        postprocessing=PostProcessing.load(copy.file(runs.POSTPROCESSING)),
        metrics=metrics,
        manifest=manifest,
        intended_use=IntendedUse.load(root / INTENDED_USE),
    )
