"""Evaluate a detection run on whole scans, as LUNA16 scores detectors.

1. The operating threshold (at most one false positive per scan) is chosen on the validation scans,
   each found by a model that never trained on it, and kept in ``threshold.json`` with the factor from
   the detector's drawn diameters to the nodules' (measured on the nodules found there).
2. Every scan of the evaluated split goes through `medmap.inference.models.Models` (the probability map
   `medmap predict` reads its findings from), its findings are matched to the truth
   (`medmap.evaluation.detection`), and the classical blob detector runs on the same scans: FROC with
   bootstrap intervals by scan, CPM, the paired bootstrap interval of the CPM difference, AP at box IoU 0.1
   (nnDetection's metric), sensitivity at the chosen threshold, overall and by nodule size.
3. ``metrics.json``, ``cases_<split>.csv`` (one row per finding: true positives, false positives, missed),
   ``predictions_<split>/<case>.json`` (the findings in LPS mm), ``report.html`` with the FROC curves and
   galleries of the missed nodules and the false positives at the threshold.
"""

from __future__ import annotations

import csv
import html
import json

import numpy as np

from medmap import provenance
from medmap import run_folder as runs
from medmap.evaluation.blob_detector import detect_blobs
from medmap.evaluation.detection import (
    Nodule,
    Scan,
    average_precision,
    by_size,
    froc_with_ci,
    hits,
    match,
    paired_cpm_difference,
)
from medmap.evaluation.optional import optional
from medmap.evaluation.plots import finding_gallery, froc_plot, training_curves
from medmap.evaluation.report import write_page
from medmap.inference.models import Models
from medmap.progress import track
from medmap.run_folder import RunFolder
from medmap.tasks.base import EvaluationJob
from medmap.tasks.detection.findings import MIN_MATCHED, diameter_scale, findings, operating_threshold, rescaled
from medmap.tasks.detection.gallery import crops

N_BOOT = 1000


def _models(job: EvaluationJob, weights) -> Models:
    return Models.load(job.plan, weights, device=job.device, precision=job.precision, dropout=job.dropout)


def _truth(case) -> list[Nodule]:
    return [Nodule(tuple(f.position), float(f.diameter_mm)) for f in case.lesions]


def choose_threshold(job: EvaluationJob) -> tuple[float, float]:
    """(operating threshold, diameter factor), chosen on validation scans once and kept in the run."""
    run = job.run
    if run.file(runs.THRESHOLD).is_file():
        return run.threshold, run.diameter_scale
    by_id = {c.case_id: c for name in job.splits for c in job.splits[name]}
    folds = run.fold_folders()
    groups = [(fold.split_ids["val"], [fold.checkpoints / runs.BEST]) for fold in folds]
    if not folds:
        groups = [([c.case_id for c in job.splits["val"]], run.weights())]
    scans = []
    for ids, weights in groups:
        models = _models(job, weights)
        for i in track(ids, "choosing the operating point", enabled=job.progress):
            case = by_id[i]
            scans.append(Scan(i, _truth(case), findings(models.class_probability(case.load_image(), 1))))
    threshold = operating_threshold(scans, 1.0)
    scale, measured = diameter_scale(scans, threshold)
    chosen = "out-of-fold validation" if folds else "validation"
    run.write(
        runs.THRESHOLD,
        {
            "threshold": threshold,
            "chosen_on": chosen,
            "rule": "at most 1 false positive per scan",
            "diameter_scale": scale,
            "diameter_scale_from": f"median true / drawn diameter of the {measured} {chosen} nodules found"
            + ("" if measured >= MIN_MATCHED else " (too few: sizes left as drawn)"),
        },
    )
    return threshold, scale


def _diameter_check(scans: list[Scan], threshold: float, scale: float) -> dict:
    """How the reported diameters (already scaled by the validation factor) compare with the truth here."""
    ratio, measured = diameter_scale(scans, threshold)
    return {
        "scale_from_validation": scale,
        "median_true_over_reported": ratio if measured >= MIN_MATCHED else float("nan"),
        "nodules_measured": measured,
    }


def evaluate_run(job: EvaluationJob) -> dict:
    plan, splits, out_dir = job.plan, job.splits, job.out
    threshold, scale = choose_threshold(job)
    evaluated = job.split if splits.get(job.split) else "val"
    models = _models(job, job.run.weights())
    predictions_dir = out_dir / f"predictions_{evaluated}"
    predictions_dir.mkdir(parents=True, exist_ok=True)
    scans, blobs, pictures = [], [], []
    for case in track(splits[evaluated], f"detecting in {evaluated} scans", enabled=job.progress):
        image = case.load_image()
        found = rescaled(findings(models.class_probability(image, 1)), scale)
        scans.append(Scan(case.case_id, _truth(case), found))
        blobs.append(Scan(case.case_id, _truth(case), detect_blobs(image)))
        pictures += crops(image, scans[-1], threshold)
        listed = [{"position_lps_mm": list(f.centre), "diameter_mm": f.diameter_mm, "score": f.score} for f in found]
        (predictions_dir / f"{case.case_id}.json").write_text(
            json.dumps({"coordinates": "LPS mm", "threshold": threshold, "findings": listed}, indent=1)
        )
    model = froc_with_ci(scans, n_boot=N_BOOT, seed=job.seed)
    baseline = froc_with_ci(blobs, n_boot=N_BOOT, seed=job.seed)
    comparison = paired_cpm_difference(scans, blobs, job.seed, N_BOOT)
    found_at, false_at, rows = 0, 0, []
    for scan in scans:
        best, false_scores = match(scan)
        found_at += int(np.sum(best >= threshold))
        false_at += int(np.sum(false_scores >= threshold))
        for nodule, score in zip(scan.nodules, best, strict=True):
            hit = not np.isnan(score) and score >= threshold
            rows.append(
                [scan.case_id, "nodule", *nodule.centre, nodule.diameter_mm, "" if np.isnan(score) else score, hit]
            )
        rows += [
            [scan.case_id, "false positive", *d.centre, d.diameter_mm, d.score, d.score >= threshold]
            for d in scan.detections
            if not hits(d, scan.nodules)
        ]
    with open(out_dir / f"cases_{evaluated}.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case_id", "kind", "x_lps_mm", "y_lps_mm", "z_lps_mm", "diameter_mm", "score", "at_threshold"])
        writer.writerows(rows)
    total = max(model["nodules"], 1)
    metrics = {
        **{k: v for k, v in model.items() if k != "curve"},
        "n": len(scans),
        "threshold": threshold,
        "at_threshold": {
            "sensitivity": found_at / total,
            "fp_per_scan": false_at / max(len(scans), 1),
            "by_size": by_size(scans, threshold),
        },
        "ap_iou_0.1": average_precision(scans, 0.1),
        "diameter": _diameter_check(scans, threshold, scale),
        "baseline": {
            "name": "blob detector (LoG in the lungs)",
            **{k: v for k, v in baseline.items() if k != "curve"},
            "ap_iou_0.1": average_precision(blobs, 0.1),
        },
        "comparison": comparison,
    }
    if len(scans) < 20:
        metrics["sample_warning"] = f"{len(scans)} scans: fewer than 20, the intervals are wide"
    payload = {"split": evaluated, "precision": job.precision, "metrics": metrics}
    RunFolder(out_dir).write(runs.METRICS, payload)  # before any figure or report
    curves = {"model": model, "blob baseline": baseline}
    plots = {"froc": optional("the FROC plot", froc_plot, curves)}
    window = (-600.0, 1500.0) if plan.modality == "CT" else None  # a lung window; others by percentiles
    for kind in ("missed", "false positive"):
        shown = [c for c in pictures if c.kind == kind][:24]
        if shown:
            title = f"{kind} at the threshold {threshold:.3f} ({len([c for c in pictures if c.kind == kind])} in all)"
            plots[kind] = optional(f"the {kind} gallery", finding_gallery, shown, title, window)
    if job.history:
        plots["training"] = optional("the training curves", training_curves, job.history, job.monitor)
    plots = {name: png for name, png in plots.items() if png is not None}
    lo, hi = model["cpm_ci"]
    body = (
        f"<h2>Detection on {len(scans)} {html.escape(evaluated)} scans ({model['nodules']} findings)</h2>"
        f"<p>CPM {model['cpm']:.3f} ({lo:.3f}-{hi:.3f}); blob baseline {baseline['cpm']:.3f}; difference "
        f"{comparison['delta_cpm']:+.3f} ({comparison['delta_ci'][0]:+.3f} to {comparison['delta_ci'][1]:+.3f}): "
        + ("supported" if comparison["supported"] else "<b>not supported: the model does not beat the baseline</b>")
        + f". At the validation-chosen threshold {threshold:.3f}: sensitivity {found_at}/{model['nodules']}, "
        f"{false_at / max(len(scans), 1):.2f} false positives per scan. AP at box IoU 0.1: "
        f"{metrics['ap_iou_0.1']:.3f} (baseline {metrics['baseline']['ap_iou_0.1']:.3f}).</p>"
        "<table><tr><th>nodule size</th><th>found at the threshold</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(name)}</td><td>{d['found']} of {d['nodules']}</td></tr>"
            for name, d in metrics["at_threshold"]["by_size"].items()
        )
        + "</table>"
    )
    notes = [
        "LUNA16 criterion: a finding hits a nodule when its centre lies within the nodule's radius (LPS mm)",
        f"network {plan.network} (width {plan.network_width}), patch {plan.patch_size} at spacing "
        f"{tuple(round(s, 3) for s in plan.target_spacing)} mm",
        *plan.notes,
        *provenance.report_notes(job.run.path),
    ]
    report = optional(
        "the HTML report",
        write_page,
        out_dir / "report.html",
        f"medmap evaluation: {plan.dataset} ({evaluated})",
        "Positions are LPS millimetres.",
        body,
        plots,
        notes,
        f"cases_{evaluated}.csv",
    )
    return {"metrics": metrics, "report": str(report or ""), "split": evaluated, "predictions": str(predictions_dir)}
