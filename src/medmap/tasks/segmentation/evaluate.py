"""Evaluate a segmentation run on whole volumes, in the images' own geometry.

1. Post-processing is chosen on the validation cases (out-of-fold when trained with ``--folds``):
   each case segmented by the model(s) that did not train on it, compared with its mask.
2. Every case of the evaluated split is segmented by the run's models (fold ensemble), post-processed,
   written as a NIfTI label map on the input's grid (``predictions_<split>/<case>.nii.gz``), and
   scored against its mask (`medmap.evaluation.segmentation`). Cases without a mask (a dataset's
   unlabelled test images) are predicted and written, not scored.
3. ``metrics.json``, ``cases_<split>.csv`` (one row per case and class) and ``report.html`` with the
   per-class table, box plots, lesion detection and overlays of the best, median and worst cases.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medmap import provenance
from medmap import run_folder as runs
from medmap.data.annotation import as_target
from medmap.data.dataset import Case, check_mask
from medmap.evaluation.optional import optional
from medmap.evaluation.plots import metric_boxplot, overlay_panel, training_curves
from medmap.evaluation.report import segmentation_report
from medmap.evaluation.segmentation import case_metrics, summarize
from medmap.evaluation.viewer import write_viewer
from medmap.inference.models import Models
from medmap.inference.postprocess import PostProcessing, choose_postprocessing
from medmap.io.load import save
from medmap.progress import track
from medmap.run_folder import RunFolder
from medmap.tasks.base import EvaluationJob

TOLERANCE_MM = 2.0  # surface Dice tolerance (a voxel or two of typical abdominal CT)


def _models(job: EvaluationJob, weights: list[Path], postprocessing: PostProcessing | None = None) -> Models:
    return Models.load(
        job.plan,
        weights,
        device=job.device,
        precision=job.precision,
        dropout=job.dropout,
        postprocessing=postprocessing,
    )


def _validation_pairs(job: EvaluationJob, weights: list[Path]):
    """(prediction, truth, spacing) of each validation case by a model that never trained on it."""
    by_id = {c.case_id: c for name in job.splits for c in job.splits[name]}
    assignments: list[tuple[Case, Path]] = []
    folds = job.run.fold_folders()
    if folds:
        for fold in folds:
            assignments += [(by_id[i], fold.checkpoints / runs.BEST) for i in fold.split_ids["val"]]
    else:
        assignments = [(c, weights[0]) for c in job.splits.get("val", [])]
    pairs, models = [], {}
    for case, weight in track(assignments, "choosing post-processing", enabled=job.progress):
        if case.mask is None:
            continue
        if weight not in models:
            models[weight] = _models(job, [weight])
        image = case.load_image()
        mask, unannotated = case.load_target(image)
        check_mask(case.case_id, image, mask, job.plan.labels)
        predicted = models[weight].segment(image)
        truth = as_target(mask.array, unannotated, case.case_id, np.int32) if unannotated else mask.array
        pairs.append((predicted.array, truth, image.spacing))
    return pairs


# the per-case CSV's metric columns, spelled as metrics.json spells them (nsd: normalised surface Dice)
CASE_METRICS = ("dice", "iou", "sensitivity", "precision", "hd95_mm", "msd_mm", "nsd")


def _case_rows(case_id: str, metrics: dict) -> list[list]:
    rows = []
    for name, m in metrics["classes"].items():
        lesions = metrics["lesions"].get(name, {})
        rows.append(
            [case_id, name]
            + [f"{m[k]:.4f}" for k in CASE_METRICS]
            + [f"{m['volume_ml_truth']:.2f}", f"{m['volume_ml_predicted']:.2f}", f"{metrics['pixel_accuracy']:.5f}"]
            + [lesions.get("lesions", ""), lesions.get("detected", ""), lesions.get("false_positives", "")]
        )
    return rows


CSV_HEADER = [
    "case_id",
    "class",
    *CASE_METRICS,
    "volume_ml_truth",
    "volume_ml_predicted",
    "pixel_accuracy",
    "lesions",
    "lesions_detected",
    "false_positive_components",
]


def evaluate_run(job: EvaluationJob) -> dict:
    plan, splits, split, out_dir, run_dir = job.plan, job.splits, job.split, job.out, job.run.path
    progress, precision, weights = job.progress, job.precision, job.run.weights()
    pp_file = run_dir / runs.POSTPROCESSING
    if pp_file.is_file():
        postprocessing = PostProcessing.load(pp_file)
    else:
        pairs = _validation_pairs(job, weights)
        postprocessing = PostProcessing()
        if pairs:
            postprocessing = choose_postprocessing([p[:2] for p in pairs], plan.labels, [p[2] for p in pairs])
        postprocessing.save(pp_file)
    labelled = [c for c in splits.get(split, []) if c.mask is not None]
    evaluated = split if labelled else "val"
    models = _models(job, weights, postprocessing)
    predictions_dir = out_dir / f"predictions_{evaluated}"
    predictions_dir.mkdir(parents=True, exist_ok=True)
    per_case, shown = {}, {}
    # images without labels (a test set scored elsewhere) are segmented and written with the scored ones
    cases = splits.get(evaluated, []) + splits.get("unlabelled", [])
    for case in track(cases, f"segmenting {evaluated} cases", enabled=progress):
        image = case.load_image()
        predicted = models.segment(image)
        save(predicted, predictions_dir / f"{case.case_id}.nii.gz")
        if case.mask is None:
            continue
        mask, unannotated = case.load_target(image)
        check_mask(case.case_id, image, mask, plan.labels)
        truth = mask.array
        per_case[case.case_id] = case_metrics(
            predicted.array, truth, image.spacing, plan.labels, tolerance_mm=TOLERANCE_MM, unannotated=unannotated
        )
        grey = image.array if image.channels == 1 else image.array[..., 0]
        shown[case.case_id] = (grey, truth, predicted.array, image.spacing)
    summary = summarize(per_case, plan.labels, seed=job.seed)
    with open(out_dir / f"cases_{evaluated}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_HEADER)
        for case_id, metrics in per_case.items():
            writer.writerows(_case_rows(case_id, metrics))
    names = [plan.labels[k] for k in sorted(plan.labels) if k != 0]
    payload = {
        "split": evaluated,
        "precision": precision,
        "metrics": summary,
        "cases": per_case,
        "tolerance_mm": TOLERANCE_MM,
    }
    RunFolder(out_dir).write(runs.METRICS, payload)  # before any figure or report
    plots = {}
    if per_case:
        plots["dice"] = optional("the Dice plot", metric_boxplot, per_case, "dice", names)
        plots["hd95"] = optional("the HD95 plot", metric_boxplot, per_case, "hd95_mm", names)
        ranking = sorted(per_case, key=lambda i: np.nanmean([per_case[i]["classes"][n]["dice"] for n in names]))
        picks = {"worst": ranking[0], "median": ranking[len(ranking) // 2], "best": ranking[-1]}
        rows = []
        for kind, case_id in picks.items():
            mean_dice = np.nanmean([per_case[case_id]["classes"][n]["dice"] for n in names])
            grey, truth, pred, spacing = shown[case_id]
            rows.append((f"{kind}: {case_id} (mean Dice {mean_dice:.3f})", grey, truth, pred, spacing))
        window = (60.0, 400.0) if plan.modality == "CT" else None  # MR and others: each image's percentiles
        plots["overlays"] = optional(
            "the overlay figure", overlay_panel, [r[:4] for r in rows], [r[4] for r in rows], plan.labels, window
        )
    viewer = None
    if per_case:
        captions = {
            case_id: f"{case_id}: "
            + ", ".join(
                f"{n} not annotated" if n in per_case[case_id].get("unannotated", ())
                else f"{n} Dice {per_case[case_id]['classes'][n]['dice']:.3f}"
                for n in names
            )
            for case_id in per_case
        }
        viewer = optional(
            "the case viewer",
            write_viewer,
            out_dir / f"viewer_{evaluated}.html",
            shown,
            plan.labels,
            captions,
            (60.0, 400.0) if plan.modality == "CT" else None,
            f"medmap {plan.dataset}: {evaluated} cases, slice by slice",
        )
    if job.history:
        plots["training"] = optional("the training curves", training_curves, job.history, job.monitor)
    plots = {name: png for name, png in plots.items() if png is not None}
    unlabelled = len(splits.get("unlabelled", []))
    notes = [
        f"dataset {plan.dataset}: {len(splits.get('train', []))} training, {len(splits.get('val', []))} validation, "
        f"{len(per_case)} {evaluated} cases scored"
        + (f"; {unlabelled} unlabelled images segmented, not scored" if unlabelled else ""),
        *(
            [
                f"scored on VALIDATION cases (no labelled {split} cases): they also chose the epoch and the "
                "post-processing, so these figures are optimistic; score the written test label maps elsewhere"
            ]
            if evaluated != split
            else []
        ),
        f"network {plan.network} (width {plan.network_width}, {plan.network_depth} levels), patch {plan.patch_size} "
        f"at spacing {tuple(round(s, 3) for s in plan.target_spacing)} mm; {len(weights)} model(s)",
        f"sliding window: overlap {plan.inference.overlap}, Gaussian weighting, mirroring "
        f"{'on' if plan.inference.mirror else 'off'}; labels resampled back to each image's own grid; "
        f"{precision}",
        *[f"post-processing: {line}" for line in postprocessing.log],
        *plan.notes,
        *provenance.report_notes(run_dir),
    ]
    report = optional(
        "the HTML report",
        segmentation_report,
        out_dir / "report.html",
        title=f"medmap evaluation: {plan.dataset} ({evaluated})",
        summary=summary,
        tolerance_mm=TOLERANCE_MM,
        plots=plots,
        notes=notes,
        cases_csv=f"cases_{evaluated}.csv",
        viewer=viewer.name if viewer else None,
    )
    return {"metrics": summary, "report": str(report or ""), "split": evaluated, "predictions": str(predictions_dir)}
