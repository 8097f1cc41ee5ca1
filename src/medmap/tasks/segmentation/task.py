"""Segmentation: a label per voxel. Dice + cross-entropy by default; the best epoch is the one with the
highest mean foreground Dice on the validation cases' centre patches (a quick proxy: the full
evaluation runs the sliding window over whole volumes, `medmap.tasks.segmentation.evaluate`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmap.data.cache import CachedCase
from medmap.data.dataset import Case
from medmap.data.splits import train_val_test
from medmap.errors import ConfigError
from medmap.io.image import Image
from medmap.models.segmenters import build_segmenter
from medmap.plan import Plan
from medmap.tasks.base import Answer, EvaluationJob
from medmap.tasks.segmentation import cache, sampling
from medmap.tasks.segmentation.loss import PARTIAL_LOSSES, SegmentationLoss, dice_per_class


class VoxelLabeller:
    """The model side of every task that labels voxels (segmentation, and detection's voxel labeller):
    the plan's segmenter, its loss, arg-max label maps."""

    def build_network(self, plan: Plan, dropout: float | None) -> nn.Module:
        # no dropout by default: nnU-Net trains without it, and in DynUNet it doubles the forward time on a CPU
        return build_segmenter(plan, 0.0 if dropout is None else dropout)

    def build_loss(self, plan: Plan, train: list[CachedCase], label_smoothing: float) -> nn.Module:
        kind = "dice_ce" if plan.loss == "default" else plan.loss
        partial = [c.case_id for c in train if c.meta.get("unannotated")]
        if partial and kind not in PARTIAL_LOSSES:
            raise ConfigError(
                f"case {partial[0]} (and {len(partial) - 1} more) did not annotate every label: partial annotation "
                f"trains with the loss {' or '.join(PARTIAL_LOSSES)}, not {kind}"
            )
        return SegmentationLoss(kind)

    def predictions(self, logits: torch.Tensor) -> np.ndarray:
        return logits.argmax(1).to(torch.uint8).cpu().numpy()


class SegmentationTask(VoxelLabeller):
    name = "segmentation"
    targets = "masks"  # what a case's target is called in messages
    monitor = "dice"
    # 3e-3, not 1e-3: on the demo liver in a 4-minute budget tumour Dice 0.783 against 0.015 (and nnU-Net's
    # SGD at 1e-2: 0.000); see docs/benchmarks.md, "Training per hour"
    learning_rate = 3e-3

    def split(self, cases: list[Case], seed: int) -> dict[str, list[Case]]:
        """Train/val/test by patient. Images without a mask (an MSD ``imagesTs`` without ``labelsTs``)
        cannot be scored: they go to ``unlabelled`` (predicted at evaluation, not scored). A dataset that
        brings its own test images keeps them as its test set: no labelled case is held out beyond the
        validation cases, so every other one is trained on (when those test images have no labels the run
        is scored on validation and says so). Only a dataset without test images of its own has a test
        share of its labelled cases held out."""
        labelled = [c for c in cases if c.mask is not None]
        unlabelled = [c for c in cases if c.mask is None]
        has_own_test = any(c.split == "test" for c in cases)
        splits = train_val_test(labelled, seed=seed, test=0.0 if has_own_test else 0.2)
        return {**splits, "unlabelled": unlabelled}

    def check_targets(self, cases: list[Case], split: str) -> None:
        """Cases without a mask are set apart by `split`; masks are checked against their images when read."""

    def target_problems(self, case: Case, image: Image | None, labels: dict[int, str]) -> list[str]:
        from medmap.tasks.segmentation.targets import target_problems

        return target_problems(case, image, labels)

    def evaluation_cache(self, splits: dict[str, list[Case]]) -> dict[str, list[Case]]:
        """None: evaluation segments the original volumes."""
        return {}

    def cache_cases(self, cases: list[Case], plan: Plan, folder: Path, rng: np.random.Generator) -> None:
        cache.cache_cases(cases, plan, folder, rng)

    def use_record(self, case: Case, cached: CachedCase, plan: Plan) -> dict:
        return cache.use_record(case, cached, plan)

    def sample(self, case: CachedCase, plan: Plan, rng: np.random.Generator, train: bool) -> dict:
        return sampling.sample(case, plan, rng, train)

    def validation_metrics(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        classes = [int(v) for v in np.unique(np.concatenate([np.unique(predictions), np.unique(targets)])) if v > 0]
        scores = dice_per_class(predictions, targets, classes)
        values = [v for v in scores.values() if not np.isnan(v)]
        metrics = {f"dice_{k}": v for k, v in scores.items()}
        metrics["dice"] = float(np.mean(values)) if values else float("nan")
        return metrics

    def evaluate_run(self, job: EvaluationJob) -> dict:
        """Whole volumes in their own geometry, post-processing chosen on validation (`evaluate`)."""
        from medmap.tasks.segmentation.evaluate import evaluate_run

        return evaluate_run(job)

    def foreground(self, labels: list) -> list:
        return [label for label in labels if label.value != 0]

    def predict_case(self, predictor, case, image: Image, folder: Path) -> Answer:
        from medmap.tasks.segmentation.predict import predict_case

        return predict_case(predictor, case, image, folder)

    def card_evaluation(self, metrics: dict, baseline: dict | None, split: str) -> tuple[list[str], list[str]]:
        from medmap.tasks.segmentation.card import card_evaluation

        return card_evaluation(metrics, baseline, split)

    def summary_lines(self, summary: dict) -> list[str]:
        from medmap.tasks.segmentation.card import summary_lines

        return summary_lines(summary)
