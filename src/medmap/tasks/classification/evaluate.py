"""Evaluate a classification run on one split, from its cached inputs.

1. The decision threshold (Youden's J, binary tasks) is chosen on validation predictions made by models
   that never trained on them: the out-of-fold predictions of a ``--folds`` run, else the validation
   split; it is stored in ``threshold.json`` and never chosen again (the test split never chooses).
2. The evaluated split is predicted by the run's models through `medmap.inference.models.Models`, the
   object `medmap predict` answers with, so evaluation measures what prediction does.
3. ``metrics.json`` (with bootstrap intervals and, for lesions with diameters, the size-only baseline
   and the paired AUC difference), ``predictions_<split>.csv`` and ``report.html`` (ROC, confusion,
   reliability, Grad-CAM examples, training curves). Figures and report are side steps: they warn.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medmap import provenance
from medmap import run_folder as runs
from medmap.data.cache import CachedCase
from medmap.data.dataset import Case
from medmap.data.loader import PatchDataset
from medmap.evaluation.baseline import paired_auc_difference, size_baseline_on_split
from medmap.evaluation.optional import optional
from medmap.evaluation.plots import training_curves
from medmap.evaluation.report import classification_report
from medmap.inference.models import Models
from medmap.run_folder import RunFolder, load_network
from medmap.tasks.base import EvaluationJob
from medmap.tasks.classification.inputs import classifier_input


def write_predictions(path: Path, cases: list[Case], predictions: np.ndarray, labels: dict[int, str]) -> None:
    names = [labels[k] for k in sorted(labels)]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "patient_id", "label", *[f"p_{n}" for n in names], "predicted"])
        for case, p in zip(cases, predictions, strict=True):
            label = labels.get(case.label, "") if case.label is not None else ""
            writer.writerow([case.case_id, case.patient_id, label, *[f"{v:.6f}" for v in p], names[int(np.argmax(p))]])


def predict_cached(models: Models, cases: list[CachedCase]) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities of cached cases (their centred input, as prediction cuts it) and their labels."""
    inputs = [classifier_input(case.arrays()[0], models.plan) for case in cases]
    targets = np.array([-1 if case.label is None else case.label for case in cases])
    return models.probabilities(inputs), targets


def _models(job: EvaluationJob, weights: list[Path]) -> Models:
    return Models.load(job.plan, weights, device=job.device, precision=job.precision, dropout=job.dropout)


def choose_threshold(job: EvaluationJob, task) -> float | None:
    """The threshold from ``threshold.json``, or chosen now on predictions of models that never trained on
    the cases (out-of-fold for a ``--folds`` run) and written there with the predictions it used."""
    run, plan = job.run, job.plan
    if run.file(runs.THRESHOLD).is_file():
        return run.threshold
    by_id = {
        c.case_id: (case, c) for name in job.cached for case, c in zip(job.splits[name], job.cached[name], strict=True)
    }
    folds = run.fold_folders()
    groups = [(fold.split_ids["val"], [fold.checkpoints / runs.BEST]) for fold in folds]
    if not folds:
        groups = [([c.case_id for c in job.splits["val"]], run.weights())]
    cases, predictions, targets = [], [], []
    for ids, weights in groups:
        p, y = predict_cached(_models(job, weights), [by_id[i][1] for i in ids])
        cases += [by_id[i][0] for i in ids]
        predictions.append(p)
        targets.append(y)
    predictions, targets = np.concatenate(predictions), np.concatenate(targets)
    threshold = task.choose_threshold(predictions, targets)
    name = "predictions_out_of_fold.csv" if folds else "predictions_val.csv"
    write_predictions(run.file(name), cases, predictions, plan.labels)
    record = {"threshold": threshold, "chosen_on": "out-of-fold validation" if folds else "validation"}
    run.write(runs.THRESHOLD, {**record, "rule": "Youden's J", **({"folds": len(folds)} if folds else {})}, indent=None)
    return threshold


def evaluate_run(job: EvaluationJob, task) -> dict:
    """Threshold on validation -> metrics, predictions CSV and report for ``job.split``."""
    plan, splits, cached, out_dir, seed = job.plan, job.splits, job.cached, job.out, job.seed
    threshold = choose_threshold(job, task)
    evaluated = job.split if cached.get(job.split) else "val"
    models = _models(job, job.run.weights())
    predictions, targets = predict_cached(models, cached[evaluated])
    metrics = task.evaluate(predictions, targets, threshold, seed=seed)
    write_predictions(out_dir / f"predictions_{evaluated}.csv", splits[evaluated], predictions, plan.labels)
    train_pool = splits.get("train", []) + splits.get("val", [])
    baseline = size_baseline_on_split(train_pool, splits[evaluated], seed=seed)
    if baseline and predictions.shape[1] == 2:
        baseline["comparison"] = paired_auc_difference(
            targets, predictions[:, 1], np.asarray(baseline["scores"]), seed=seed
        )
    stored = {k: v for k, v in metrics.items() if k not in ("roc", "reliability")}
    payload = {
        "split": evaluated,
        "precision": job.precision,
        "metrics": stored,
        "baseline": baseline
        and {k: baseline[k] for k in ("name", "auc", "auc_ci", "n", "comparison") if k in baseline},
    }
    RunFolder(out_dir).write(runs.METRICS, payload)  # before any figure or report
    plots = optional("the evaluation plots", task.plots, metrics, plan.labels, baseline) or {}
    examples = PatchDataset(cached[evaluated], plan, task, train=False)
    network = load_network(plan, job.run.weights()[-1], job.dropout, job.device)  # Grad-CAM needs the module
    plots.update(
        optional("the example figures", task.examples, network, plan, examples, predictions, targets, threshold) or {}
    )
    if job.history:
        plots["training"] = optional("the training curves", training_curves, job.history, job.monitor)
    plots = {name: png for name, png in plots.items() if png is not None}
    notes = [
        f"dataset {plan.dataset}: {len(splits.get('train', []))} training, {len(splits.get('val', []))} validation, "
        f"{len(splits[evaluated])} {evaluated} cases, split by patient",
        f"network {plan.network} (width {plan.network_width}), input {plan.input_mode}, patch {plan.patch_size}, "
        f"spacing {plan.target_spacing} mm",
        *plan.notes,
    ]
    if job.history:
        best = max(job.history, key=lambda h: h["val"].get(job.monitor, float("-inf")))
        notes.append(
            f"trained {len(job.history)} epochs; best validation {job.monitor} {best['val'].get(job.monitor):.3f} "
            f"at epoch {best['epoch'] + 1}"
        )
    notes += provenance.report_notes(job.run.path)
    report = optional(
        "the HTML report",
        classification_report,
        out_dir / "report.html",
        title=f"medmap evaluation: {plan.dataset} ({evaluated})",
        metrics=metrics,
        labels=plan.labels,
        plots=plots,
        notes=notes,
        cases_csv=f"predictions_{evaluated}.csv",
        baseline=baseline,
    )
    return {"metrics": stored, "baseline": payload["baseline"], "report": str(report or ""), "split": evaluated}
