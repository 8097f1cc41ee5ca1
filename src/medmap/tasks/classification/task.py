"""Classification: a class per image or per lesion. Cross-entropy with class weights and label smoothing;
the best epoch is the one with the highest validation AUC (macro one-vs-rest when multi-class)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmap.data.cache import CachedCase
from medmap.data.dataset import Case
from medmap.data.splits import train_val_test
from medmap.errors import DatasetError
from medmap.evaluation.metrics import binary_metrics, multiclass_metrics, youden_threshold
from medmap.evaluation.plots import confusion_plot, gradcam_panel, reliability_plot, roc_plot
from medmap.io.image import Image
from medmap.models.registry import build_classifier
from medmap.plan import Plan
from medmap.tasks.base import Answer, EvaluationJob
from medmap.tasks.classification import cache, inputs


def class_weights(train: list[CachedCase], classes: int) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1: a rare class counts as much as a common one."""
    counts = np.bincount([c.label for c in train if c.label is not None], minlength=classes).astype(float)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / classes, 0.0)
    return torch.tensor(weights / max(weights[weights > 0].mean(), 1e-9), dtype=torch.float32)


class ClassificationTask:
    name = "classification"
    targets = "labels"  # what a case's target is called in messages
    monitor = "auc"
    learning_rate = 1e-3

    def split(self, cases: list[Case], seed: int) -> dict[str, list[Case]]:
        return train_val_test(cases, seed=seed)

    def check_targets(self, cases: list[Case], split: str) -> None:
        missing = [c.case_id for c in cases if c.label is None]
        if missing:
            raise DatasetError(f"{split} case {missing[0]} has no label ({len(missing)} case(s) without one)")

    def target_problems(self, case: Case, image: Image | None, labels: dict[int, str]) -> list[str]:
        return [] if case.label is not None else ["no label"]

    def evaluation_cache(self, splits: dict[str, list[Case]]) -> dict[str, list[Case]]:
        """Every split: evaluation reads the cached inputs (as prediction cuts them from the images)."""
        return splits

    def cache_cases(self, cases: list[Case], plan: Plan, folder: Path, rng: np.random.Generator) -> None:
        cache.cache_cases(cases, plan, folder)

    def use_record(self, case: Case, cached: CachedCase, plan: Plan) -> dict:
        return cache.use_record(case, cached, plan)

    def sample(self, case: CachedCase, plan: Plan, rng: np.random.Generator, train: bool) -> dict:
        return inputs.sample(case, plan, rng, train)

    def build_network(self, plan: Plan, dropout: float | None) -> nn.Module:
        return build_classifier(plan, 0.2 if dropout is None else dropout)

    def build_loss(self, plan: Plan, train: list[CachedCase], label_smoothing: float) -> nn.Module:
        return nn.CrossEntropyLoss(weight=class_weights(train, len(plan.labels)), label_smoothing=label_smoothing)

    def predictions(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float(), dim=1).cpu().numpy()

    def choose_threshold(self, predictions: np.ndarray, targets: np.ndarray) -> float | None:
        """Binary: Youden's threshold on the positive-class probability (validation data). Multi-class: argmax."""
        if predictions.shape[1] != 2:
            return None
        return youden_threshold(np.asarray(targets).astype(int), predictions[:, 1])

    def evaluate(self, predictions: np.ndarray, targets: np.ndarray, threshold: float | None, seed: int = 0) -> dict:
        if predictions.shape[1] == 2:
            return binary_metrics(targets, predictions[:, 1], 0.5 if threshold is None else threshold, seed=seed)
        return multiclass_metrics(targets, predictions, seed=seed)

    def plots(self, metrics: dict, labels: dict[int, str], baseline: dict | None = None) -> dict[str, bytes]:
        names = [labels[k] for k in sorted(labels)]
        out = {}
        if "roc" in metrics:
            curves = {"model": {**metrics["roc"], "auc": metrics["auc"], "auc_ci": metrics["auc_ci"]}}
            if baseline:
                curves["size only"] = baseline
            out["roc"] = roc_plot(curves)
            matrix = [[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]]
            out["confusion"] = confusion_plot(matrix, names)
            out["reliability"] = reliability_plot(metrics["reliability"], metrics["ece"])
        else:
            out["confusion"] = confusion_plot(metrics["confusion"], names)
        return out

    def explain(self, model: nn.Module, plan: Plan, images: torch.Tensor, class_index: int) -> np.ndarray:
        """Grad-CAM maps (MONAI) of ``class_index`` for a batch, scaled to [0, 1], shaped like the input."""
        import warnings

        from monai.visualize import GradCAM

        from medmap.models.registry import CAM_LAYERS

        model.eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cam = GradCAM(nn_module=model, target_layers=CAM_LAYERS[plan.network])
            maps = cam(x=images, class_idx=class_index)
        return maps.detach().cpu().numpy()[:, 0]

    def examples(
        self,
        model: nn.Module,
        plan: Plan,
        dataset,
        predictions: np.ndarray,
        targets: np.ndarray,
        threshold: float | None,
        per_kind: int = 2,
    ) -> dict[str, bytes]:
        """A Grad-CAM panel of a few true/false positives/negatives (binary tasks)."""
        if predictions.shape[1] != 2:
            return {}
        predicted = (predictions[:, 1] >= (0.5 if threshold is None else threshold)).astype(int)
        kinds = {"TP": (1, 1), "FN": (1, 0), "FP": (0, 1), "TN": (0, 0)}
        items = []
        for kind, (truth, guess) in kinds.items():
            chosen = np.flatnonzero((targets == truth) & (predicted == guess))[:per_kind]
            for i in chosen:
                image = dataset[int(i)]["image"].unsqueeze(0)
                cam = self.explain(model, plan, image, 1)[0]
                picture = image[0, 0].numpy()
                if picture.ndim == 3:  # a volume: its central axial slice
                    middle = picture.shape[0] // 2
                    picture, cam = picture[middle], cam[middle]
                items.append((f"{kind}  p={predictions[i, 1]:.2f}", picture, cam))
        return {"gradcam": gradcam_panel(items)} if items else {}

    def validation_metrics(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        y = np.asarray(targets).astype(int)
        accuracy = float((predictions.argmax(1) == y).mean()) if len(y) else float("nan")
        if len(np.unique(y)) < 2:
            return {"auc": float("nan"), "accuracy": accuracy}
        if predictions.shape[1] == 2:
            auc = roc_auc_score(y, predictions[:, 1])
        else:
            auc = roc_auc_score(
                y, predictions, multi_class="ovr", average="macro", labels=list(range(predictions.shape[1]))
            )
        return {"auc": float(auc), "accuracy": accuracy}

    def evaluate_run(self, job: EvaluationJob) -> dict:
        """The cached inputs of the split, threshold chosen on validation (`evaluate`)."""
        from medmap.tasks.classification.evaluate import evaluate_run

        return evaluate_run(job, self)

    def foreground(self, labels: list) -> list:
        return list(labels)

    def predict_case(self, predictor, case, image: Image, folder: Path) -> Answer:
        from medmap.tasks.classification.predict import predict_case

        return predict_case(predictor, case, image, folder)

    def card_evaluation(self, metrics: dict, baseline: dict | None, split: str) -> tuple[list[str], list[str]]:
        from medmap.tasks.classification.card import card_evaluation

        return card_evaluation(metrics, baseline, split)

    def summary_lines(self, summary: dict) -> list[str]:
        from medmap.tasks.classification.card import summary_lines

        return summary_lines(summary)
