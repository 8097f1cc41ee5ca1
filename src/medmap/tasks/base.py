"""The `Task` protocol: everything that differs between tasks, in one place per task.

The cache, the sampler, the trainer, the run, evaluation, the predictor and the bundle call these
methods and never compare task names (the planner may: its decisions are per task by nature).
`medmap.tasks.task_for` is the one mapping from a plan to its task. A task is a package under
``tasks/``: ``task.py`` (this protocol), ``cache.py``, the sampling, ``evaluate.py`` and ``predict.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import nn

from medmap.data.cache import CachedCase
from medmap.data.dataset import Case
from medmap.io.image import Image
from medmap.plan import Plan
from medmap.run_folder import RunFolder

if TYPE_CHECKING:
    from medmap.inference.predictor import InputCase, Predictor


@dataclass
class EvaluationJob:
    """One split of a trained run to evaluate, with what every task's evaluation reads."""

    run: RunFolder
    plan: Plan
    splits: dict[str, list[Case]]
    cached: dict[str, list[CachedCase]]  # the cached cases per split, for tasks that evaluate from the cache
    seed: int
    device: str
    precision: str  # resolved: float32 or bfloat16
    dropout: float | None
    monitor: str
    history: list[dict] | None = None
    split: str = "test"
    out_dir: Path | None = None
    progress: bool = False

    @property
    def out(self) -> Path:
        return self.out_dir or self.run.path


@dataclass
class Answer:
    """What a task answered for one case: ``result.json``'s content, the files written by kind (labels,
    seg, sr, overlays) and, for a segmentation, the label map itself (so nothing re-reads it)."""

    result: dict
    outputs: dict[str, str]
    labels: Image | None = None


class Task(Protocol):
    name: str
    targets: str  # what a case's target is called: "masks", "labels"
    monitor: str  # validation metric to maximise: best checkpoint and early stopping
    learning_rate: float  # AdamW's peak learning rate when the user gives none (measured per task)

    # data
    def split(self, cases: list[Case], seed: int) -> dict[str, list[Case]]:
        """Train / val / test (and any other named group) by patient."""
        ...

    def check_targets(self, cases: list[Case], split: str) -> None:
        """Refuse, naming a case, when cases of ``split`` lack what training or scoring needs."""
        ...

    def target_problems(self, case: Case, image: Image | None, labels: dict[int, str]) -> list[str]:
        """What is wrong with a case's target (`medmap dataset check`): missing, unreadable, off its image's
        grid, undeclared values. ``image`` is None when it could not be read."""
        ...

    def evaluation_cache(self, splits: dict[str, list[Case]]) -> dict[str, list[Case]]:
        """The splits whose cached inputs evaluation reads (training caches train and val besides)."""
        ...

    def cache_cases(self, cases: list[Case], plan: Plan, folder: Path, rng: np.random.Generator) -> None:
        """Preprocess one group of cases (one image's) into the cache folder (`medmap.data.cache`)."""
        ...

    def use_record(self, case: Case, cached: CachedCase, plan: Plan) -> dict:
        """The case's intended-use record (`medmap.intended_use`)."""
        ...

    def sample(self, case: CachedCase, plan: Plan, rng: np.random.Generator, train: bool) -> dict:
        """One ``{"image", "target"}`` sample cut from a cached case (random in training, centred else)."""
        ...

    # model
    def build_network(self, plan: Plan, dropout: float | None) -> nn.Module:
        """The plan's network; ``dropout`` None means the task's default."""
        ...

    def build_loss(self, plan: Plan, train: list[CachedCase], label_smoothing: float) -> nn.Module: ...

    def predictions(self, logits: torch.Tensor) -> np.ndarray:
        """Network outputs of a batch -> what is stored per case (class probabilities, label maps)."""
        ...

    def validation_metrics(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        """Quick metrics computed after every epoch on the validation cases."""
        ...

    # evaluation
    def evaluate_run(self, job: EvaluationJob) -> dict:
        """Score a trained run on one split: operating points chosen on validation only, metrics with
        confidence intervals, per-case files, plots and the report (side steps only warn)."""
        ...

    def card_evaluation(self, metrics: dict, baseline: dict | None, split: str) -> tuple[list[str], list[str]]:
        """The model card's evaluation lines and its weak points in words, from ``metrics.json``."""
        ...

    def summary_lines(self, summary: dict) -> list[str]:
        """What the CLI prints about an evaluated split (the summary `evaluate_run` returned)."""
        ...

    # deployment
    def foreground(self, labels: list) -> list:
        """The labels a result reports (a segmentation's background is not a finding)."""
        ...

    def predict_case(self, predictor: Predictor, case: InputCase, image: Image, folder: Path) -> Answer:
        """One checked input case answered, its files written under ``folder``. Refusals
        (`medmap.intended_use.OutOfUseError`) come before anything is written."""
        ...
