"""A training run's folder as an object: every file name defined once, and one way to read each.

Training writes a run (`medmap.training.run`); evaluation, reports, model cards, tracking and bundles
read it; a bundle is a verified, portable copy of its deployable part (`medmap.inference.bundle`).
What is in a run folder:

- ``plan.json`` (the `Plan`), ``config.json`` (the training settings), ``split.json`` (case ids per
  split), ``folds.json`` (a run trained fold by fold), ``budget.json`` (what a time budget bought);
- ``checkpoints/{last,best}.pt``, or ``fold-<i>/checkpoints/...`` per fold (each fold folder is a run
  folder of its own, holding its split, history and checkpoints);
- ``history.json`` (per-epoch losses and validation metrics), ``threshold.json`` (the operating point
  chosen on validation), ``postprocessing.json`` (chosen on validation volumes), ``metrics.json``;
- ``intended_use.json`` (`medmap.intended_use`) and ``provenance.json`` (`medmap.provenance`).

This module sits below training and inference (it imports neither), so both can use it.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from medmap.errors import OutputError
from medmap.intended_use import FILE as INTENDED_USE  # each module that owns a file's content names it
from medmap.plan import Plan
from medmap.provenance import FILE as PROVENANCE

__all__ = [
    "BEST", "BUDGET", "CHECKPOINTS", "CONFIG", "FINISHED", "FOLDS", "HISTORY", "INTENDED_USE", "LAST", "LOCK",
    "METRICS", "PLAN", "POSTPROCESSING", "PRETRAINED", "PROVENANCE", "SPLIT", "THRESHOLD", "RunFolder",
    "load_network", "run_lock",
]  # fmt: skip

PLAN = "plan.json"
CONFIG = "config.json"
SPLIT = "split.json"
FOLDS = "folds.json"
BUDGET = "budget.json"
HISTORY = "history.json"
THRESHOLD = "threshold.json"
POSTPROCESSING = "postprocessing.json"
METRICS = "metrics.json"
CHECKPOINTS = "checkpoints"
BEST = "best.pt"
LAST = "last.pt"
PRETRAINED = "pretrained.json"  # what a --pretrained start loaded (`medmap.models.pretrained.LoadReport`)
LOCK = ".lock"  # taken by the processes that create or join one run (`run_lock`)
FINISHED = "finished.json"  # in a fold's folder: its training is complete (a gathering run reads, not trains, it)


@dataclass(frozen=True)
class RunFolder:
    """``RunFolder(path)``: nothing is read until asked; a missing optional file reads as None."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def file(self, name: str) -> Path:
        return self.path / name

    def read(self, name: str):
        """A JSON file of the run, or None when the run has none (older runs lack some)."""
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else None

    def write(self, name: str, value, *, indent: int = 1) -> Path:
        path = self.path / name
        path.write_text(json.dumps(value, indent=indent))
        return path

    @property
    def plan(self) -> Plan:
        if not (self.path / PLAN).is_file():
            raise OutputError(f"{self.path}: not a run folder (no {PLAN})")
        return Plan.load(self.path / PLAN)

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def fold(self, index: int) -> RunFolder:
        return RunFolder(self.path / f"fold-{index}")

    def fold_folders(self) -> list[RunFolder]:
        """The folds of a run trained with ``--folds K`` that have their split, in fold order; else []."""
        found = [p for p in self.path.glob("fold-*") if (p / SPLIT).is_file()]
        return [RunFolder(p) for p in sorted(found, key=lambda p: int(p.name.split("-")[1]))]

    @property
    def split_ids(self) -> dict[str, list[str]]:
        return self.read(SPLIT) or {}

    @property
    def history(self) -> list[dict]:
        return self.read(HISTORY) or []

    @property
    def threshold(self) -> float | None:
        return (self.read(THRESHOLD) or {}).get("threshold")

    @property
    def diameter_scale(self) -> float:
        """A detector's validation-measured factor from drawn to true diameters (1.0: none measured)."""
        return float((self.read(THRESHOLD) or {}).get("diameter_scale", 1.0))

    def weights(self) -> list[Path]:
        """The model weights that make the run's prediction: one per fold when trained with --folds, else
        the single ``checkpoints/best.pt`` (which may not exist yet: see `trained_weights`)."""
        folds = sorted(self.path.glob(f"fold-*/{CHECKPOINTS}/{BEST}"))
        return folds or [self.checkpoints / BEST]

    def trained_weights(self) -> list[Path]:
        weights = self.weights()
        if not weights[0].is_file():
            raise OutputError(f"{self.path}: not a trained run (no {CHECKPOINTS}/{BEST})")
        return weights

    def load_networks(self, plan: Plan, dropout: float | None, device):
        """Each of the run's models, built from ``plan``, on ``device``, in evaluation mode."""
        for path in self.trained_weights():
            yield load_network(plan, path, dropout, device)


def load_network(plan: Plan, weights: Path, dropout: float | None = None, device="cpu"):
    """The plan's network (built by its task) with ``weights`` loaded, in evaluation mode: the one way
    evaluation, the report's examples, bundles and prediction get a trained network. A damaged or foreign
    weights file is one error naming it."""
    import torch

    from medmap.errors import ConfigError
    from medmap.tasks import task_for

    network = task_for(plan).build_network(plan, dropout)
    try:
        network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as exc:  # torch raises many types for damaged or foreign files
        raise ConfigError(f"{weights}: cannot be loaded as this model's weights ({type(exc).__name__})") from None
    return network.to(device).eval()


@contextlib.contextmanager
def run_lock(run_dir: Path, *, shared: bool):
    """Processes training folds of one run at once (``--fold i``) take turns creating or joining it: the
    first plans and caches, the others then find the plan. A plain run needs no lock."""
    if not shared:
        yield
        return
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / LOCK, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
