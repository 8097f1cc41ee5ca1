"""The classification evaluation section of a model card (`medmap.inference.model_card`): the evaluated
split's figures with their intervals, and what they show to be weak, said in words."""

from __future__ import annotations

from medmap.evaluation.wording import ci as _ci
from medmap.evaluation.wording import interval as _interval
from medmap.evaluation.wording import margin_verdict

POOR_CALIBRATION = 0.1  # expected calibration error above which probabilities are not to be read as risks


def card_evaluation(metrics: dict, baseline: dict | None, split: str) -> tuple[list[str], list[str]]:
    m = metrics
    rows = [
        ("AUC", m.get("auc"), m.get("auc_ci")),
        ("sensitivity", m.get("sensitivity"), m.get("sensitivity_ci")),
        ("specificity", m.get("specificity"), m.get("specificity_ci")),
        ("positive predictive value", m.get("ppv"), m.get("ppv_ci")),
        ("negative predictive value", m.get("npv"), m.get("npv_ci")),
        ("accuracy", m.get("accuracy"), m.get("accuracy_ci")),
        ("balanced accuracy", m.get("balanced_accuracy"), None),
        ("expected calibration error", m.get("ece"), None),
    ]
    lines = [
        f"On the {split} split ({m.get('n')} cases, {m.get('positives', '?')} positive), at the decision threshold "
        f"{m.get('threshold', float('nan')):.3f} chosen on validation:",
        "",
        "| metric | value | 95% CI |",
        "|---|---|---|",
        *[f"| {name} | {v:.3f} | {_interval(ci)} |" for name, v, ci in rows if v is not None],
    ]
    failures = []
    if baseline:
        d = baseline.get("comparison")
        lines += ["", f"Baseline, {baseline['name']}: AUC {baseline['auc']:.3f}{_ci(baseline.get('auc_ci'))}."]
        if d is not None:
            verdict = (
                "the margin is supported by the data"
                if d["supported"]
                else "**the model is worse than this baseline**: the whole interval lies below no difference"
                if d["delta_ci"][1] < 0
                else "**the model does not beat this baseline**: the interval includes no difference"
            )
            lines.append(
                f"Model minus baseline: AUC {d['delta_auc']:+.3f} (paired bootstrap 95% CI {d['delta_ci'][0]:+.3f} "
                f"to {d['delta_ci'][1]:+.3f}); {verdict}."
            )
            if not d["supported"]:
                failures.append(f"does not beat {baseline['name']} on its own test set")
    if m.get("ece") is not None and m["ece"] > POOR_CALIBRATION:
        failures.append(f"probabilities are not calibrated (ECE {m['ece']:.3f}): read them as scores, not as risks")
    if "fn" in m:
        negatives = m["n"] - m.get("positives", 0)
        failures.append(
            f"at the threshold it missed {m['fn']} of {m.get('positives')} positives and flagged {m['fp']} of "
            f"{negatives} negatives on the test split"
        )
    return lines, failures


def summary_lines(summary: dict) -> list[str]:
    """What `medmap train` and `medmap evaluate` print about the evaluated split."""
    m, lines = summary["metrics"], []
    lo, hi = m.get("auc_ci", [float("nan")] * 2)
    lines.append(
        f"{summary['split']} set: {m['n']} cases, AUC {m['auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
        f"accuracy {m['accuracy']:.3f}, balanced accuracy {m['balanced_accuracy']:.3f}"
    )
    if "sensitivity" in m:
        lines.append(
            f"  at threshold {m['threshold']:.3f} (chosen on validation): sensitivity {m['sensitivity']:.3f}, "
            f"specificity {m['specificity']:.3f}, PPV {m['ppv']:.3f}, NPV {m['npv']:.3f}, ECE {m['ece']:.3f}"
        )
    if summary.get("baseline"):
        b = summary["baseline"]
        lines.append(f"  {b['name']}: AUC {b['auc']:.3f} (95% CI {b['auc_ci'][0]:.3f}-{b['auc_ci'][1]:.3f})")
        if "comparison" in b:
            d = b["comparison"]
            verdict = margin_verdict(d["delta_ci"])
            lines.append(
                f"  model - baseline: AUC {d['delta_auc']:+.3f} (paired 95% CI {d['delta_ci'][0]:+.3f} to "
                f"{d['delta_ci'][1]:+.3f}): {verdict}"
            )
    lines.append(f"report: {summary['report']}")
    return lines
