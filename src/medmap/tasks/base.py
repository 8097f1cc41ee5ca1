"""The `Task` protocol: the only place where classification and segmentation differ.

The trainer, predictor and evaluator call these methods and never branch on the task's name. A task
supplies its network, its loss, how a batch of network outputs becomes predictions, and the metric
that decides the best epoch.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import nn

from medmap.data.cache import CachedCase
from medmap.plan import Plan


class Task(Protocol):
    name: str
    monitor: str  # validation metric to maximise: best checkpoint and early stopping
    learning_rate: float  # AdamW's peak learning rate when the user gives none (measured per task)

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

    def choose_threshold(self, predictions: np.ndarray, targets: np.ndarray) -> float | None:
        """Any operating point, chosen on validation predictions (never on the evaluated cases)."""
        ...

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray, threshold: float | None, seed: int = 0) -> dict:
        """The full metrics of an evaluated split, with confidence intervals."""
        ...

    def plots(self, metrics: dict, labels: dict[int, str], baseline: dict | None = None) -> dict[str, bytes]:
        """PNG plots of those metrics, for the report."""
        ...

    def examples(
        self,
        model: nn.Module,
        plan: Plan,
        dataset,
        predictions: np.ndarray,
        targets: np.ndarray,
        threshold: float | None,
    ) -> dict[str, bytes]:
        """Pictures of a few cases for a person to look at (Grad-CAM, overlays)."""
        ...
