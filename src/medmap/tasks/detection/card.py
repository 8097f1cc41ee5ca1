"""The detection evaluation section of a model card and the CLI's summary: FROC operating points and CPM
with intervals, the blob baseline and whether the margin over it is supported."""

from __future__ import annotations

from medmap.evaluation.wording import ci as _ci
from medmap.evaluation.wording import margin_verdict


def card_evaluation(metrics: dict, baseline: dict | None, split: str) -> tuple[list[str], list[str]]:
    m = metrics
    rates = " | ".join(f"{r:g}" for r in m.get("rates", []))
    cells = " | ".join(f"{s:.3f}" for s in m.get("sensitivity_at", []))
    lines = [
        f"On the {split} split ({m.get('n')} scans, {m.get('nodules')} findings), LUNA16's criterion:",
        "",
        f"| false positives per scan | {rates} |",
        "|---|" + "---|" * len(m.get("rates", [])),
        f"| sensitivity | {cells} |",
        "",
        f"CPM {m.get('cpm', float('nan')):.3f}{_ci(m.get('cpm_ci'))}; AP at box IoU 0.1 "
        f"{m.get('ap_iou_0.1', float('nan')):.3f}.",
    ]
    sizes = m.get("at_threshold", {}).get("by_size", {})
    if sizes:
        lines.append(
            "Found at the operating threshold, by size: "
            + ", ".join(f"{name} {d['found']} of {d['nodules']}" for name, d in sizes.items())
            + "."
        )
    size = m.get("diameter")
    if size and size["median_true_over_reported"] == size["median_true_over_reported"]:  # not NaN: measured
        lines.append(
            f"Diameters are reported scaled by {size['scale_from_validation']:.2f} (measured on validation); "
            f"here the median true / reported diameter is {size['median_true_over_reported']:.2f} over "
            f"{size['nodules_measured']} found nodules."
        )
    failures = []
    base, comparison = m.get("baseline"), m.get("comparison")
    if base and comparison:
        lines.append(
            f"Baseline, {base['name']}: CPM {base['cpm']:.3f}{_ci(base.get('cpm_ci'))}; model minus baseline "
            f"{comparison['delta_cpm']:+.3f} (paired 95% CI {comparison['delta_ci'][0]:+.3f} to "
            f"{comparison['delta_ci'][1]:+.3f})."
        )
        if comparison["delta_ci"][1] < 0:
            failures.append(f"is worse than the {base['name']} (the whole interval of the difference is below 0)")
        elif not comparison["supported"]:
            failures.append(f"does not beat the {base['name']} by a margin its interval supports")
    at = m.get("at_threshold")
    if at:
        missed = m.get("nodules", 0) - round(at["sensitivity"] * m.get("nodules", 0))
        failures.append(
            f"at the operating threshold it missed {missed} of {m.get('nodules')} findings with "
            f"{at['fp_per_scan']:.2f} false positives per scan"
        )
    return lines, failures


def summary_lines(summary: dict) -> list[str]:
    m = summary["metrics"]
    lo, hi = m["cpm_ci"]
    lines = [
        f"{summary['split']} set: {m['n']} scans, {m['nodules']} findings; "
        f"CPM {m['cpm']:.3f} (95% CI {lo:.3f}-{hi:.3f})",
        "  sensitivity at "
        + ", ".join(f"{r:g}" for r in m["rates"])
        + " FP/scan: "
        + ", ".join(f"{s:.3f}" for s in m["sensitivity_at"]),
    ]
    base, comparison = m.get("baseline"), m.get("comparison")
    if base and comparison:
        verdict = margin_verdict(comparison["delta_ci"])
        lines.append(
            f"  {base['name']}: CPM {base['cpm']:.3f}; model - baseline {comparison['delta_cpm']:+.3f} "
            f"({comparison['delta_ci'][0]:+.3f} to {comparison['delta_ci'][1]:+.3f}): {verdict}"
        )
    lines += [f"findings: {summary['predictions']}", f"report: {summary['report']}"]
    return lines
