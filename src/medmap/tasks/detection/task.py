"""Detection: findings in a volume, each a centre and a diameter in LPS mm with a score.

The detector is a voxel labeller trained on the findings drawn as spheres (the segmentation branch of a
Retina U-Net; nnDetection and MONAI's RetinaNet are the anchors it is measured against) and its
findings are the scored regions of its probability map (`findings`). It trains through segmentation's
cache core, patch sampling (centred on findings a third of the time), loss and network; the best epoch
is the one with the highest Dice of the spheres on validation patches (a quick proxy); the evaluation
runs whole scans and scores them as LUNA16 does (`evaluate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medmap.data.cache import CachedCase
from medmap.data.dataset import Case
from medmap.data.splits import train_val_test
from medmap.intended_use import case_record
from medmap.io.image import Image
from medmap.plan import Plan
from medmap.tasks.base import Answer, EvaluationJob
from medmap.tasks.segmentation import sampling
from medmap.tasks.segmentation.loss import dice_per_class
from medmap.tasks.segmentation.task import VoxelLabeller


class DetectionTask(VoxelLabeller):
    name = "detection"
    targets = "findings"
    monitor = "dice"
    learning_rate = 3e-3  # segmentation's (the same network; the loss weighs the findings up, `loss.py`)

    def split(self, cases: list[Case], seed: int) -> dict[str, list[Case]]:
        """By patient; scans without findings are kept (they hold the false positives). When the table's
        findings carry classes (a nodule table with malignancy), the patients go where the classifier of
        the same table and seed puts them (its split is stratified by class, one row per finding), so
        that find-then-classify is scored on patients neither model saw; patients with no classed
        finding are split apart."""
        classed = [
            Case(f"line-{lesion.line}", c.images, c.patient_id, label=lesion.label, split=c.split)
            for c in cases
            for lesion in c.lesions
            if lesion.label is not None
        ]
        if not classed:
            return train_val_test(cases, seed=seed)
        classed.sort(key=lambda row: int(row.case_id.split("-")[1]))  # the table's order, as the classifier reads
        patient_split = {c.patient_id: name for name, rows in train_val_test(classed, seed=seed).items() for c in rows}
        rest = train_val_test([c for c in cases if c.patient_id not in patient_split], seed=seed)
        return {
            name: [c for c in cases if patient_split.get(c.patient_id) == name] + rest[name]
            for name in ("train", "val", "test")
        }

    def check_targets(self, cases: list[Case], split: str) -> None:
        """A scan may have no findings; each finding's place is checked when the scan is cached."""

    def target_problems(self, case: Case, image: Image | None, labels: dict[int, str]) -> list[str]:
        from medmap.tasks.detection.cache import outside

        return [] if image is None else outside(case, image)

    def evaluation_cache(self, splits: dict[str, list[Case]]) -> dict[str, list[Case]]:
        """None: evaluation runs the detector on whole scans."""
        return {}

    def cache_cases(self, cases: list[Case], plan: Plan, folder: Path, rng: np.random.Generator) -> None:
        from medmap.tasks.detection.cache import cache_cases

        cache_cases(cases, plan, folder, rng)

    def use_record(self, case: Case, cached: CachedCase, plan: Plan) -> dict:
        return cached.meta["use"] if "use" in cached.meta else case_record(case.load_image(), plan.modality)

    def sample(self, case: CachedCase, plan: Plan, rng: np.random.Generator, train: bool) -> dict:
        return sampling.sample(case, plan, rng, train)

    def build_loss(self, plan: Plan, train: list[CachedCase], label_smoothing: float):
        """Dice + cross-entropy with the findings' voxels weighted up (`medmap.tasks.detection.loss`)."""
        from medmap.tasks.detection.loss import FindingLoss, finding_weight, log

        if plan.loss != "default":  # a loss the user chose (--set loss=...)
            return super().build_loss(plan, train, label_smoothing)
        weight = finding_weight(train)
        log.info("detection loss: finding voxels weighted %.1f in the cross-entropy (training scans)", weight)
        return FindingLoss(weight)

    def validation_metrics(self, predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        return {"dice": float(dice_per_class(predictions, targets, [1])[1])}  # NaN: no finding in these patches

    def evaluate_run(self, job: EvaluationJob) -> dict:
        from medmap.tasks.detection.evaluate import evaluate_run

        return evaluate_run(job)

    def card_evaluation(self, metrics: dict, baseline: dict | None, split: str) -> tuple[list[str], list[str]]:
        from medmap.tasks.detection.card import card_evaluation

        return card_evaluation(metrics, baseline, split)

    def summary_lines(self, summary: dict) -> list[str]:
        from medmap.tasks.detection.card import summary_lines

        return summary_lines(summary)

    def foreground(self, labels: list) -> list:
        return [label for label in labels if label.value != 0]

    def predict_case(self, predictor, case, image: Image, folder: Path) -> Answer:
        from medmap.tasks.detection.predict import predict_case

        return predict_case(predictor, case, image, folder)
