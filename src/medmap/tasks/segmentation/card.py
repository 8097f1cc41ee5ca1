"""The segmentation evaluation section of a model card (`medmap.inference.model_card`): the evaluated
split's figures with their intervals, and what they show to be weak, said in words."""

from __future__ import annotations

from medmap.evaluation.wording import ci as _ci

POOR_DICE = 0.7  # below this a class's mean Dice is called weak on the card
MANY_FALSE_POSITIVES = 0.5  # per case


def card_evaluation(metrics: dict, baseline: dict | None, split: str) -> tuple[list[str], list[str]]:
    lines = [
        f"On the {split} split ({metrics.get('n')} volumes), mean over cases with 95% bootstrap CI:",
        "",
        "| class | Dice | HD95 (mm) | surface Dice |",
        "|---|---|---|---|",
    ]
    failures = []
    for name, entry in metrics.get("classes", {}).items():

        def cell(key, entry=entry) -> str:
            value, digits = entry[key], 1 if key.endswith("_mm") else 3  # millimetres to a tenth
            return "-" if value["mean"] is None else f"{value['mean']:.{digits}f}{_ci(value['ci'], digits)}"

        lines.append(f"| {name} | {cell('dice')} | {cell('hd95_mm')} | {cell('nsd')} |")
        dice = entry["dice"]["mean"]
        if dice is not None and dice < POOR_DICE:
            failures.append(f"{name}: mean Dice {dice:.2f} is weak; check its outlines before any use")
    for name, d in metrics.get("lesions", {}).items():
        recall = f"{d['recall']:.2f}{_ci(d.get('recall_ci'), 2)}" if d["recall"] is not None else "-"
        lines.append(
            f"\n{name} lesions: {d['detected']} of {d['lesions']} found (recall {recall}), "
            f"{d['false_positives_per_case']:.2f} false-positive components per case."
        )
        if d["false_positives_per_case"] > MANY_FALSE_POSITIVES:
            failures.append(f"{name}: {d['false_positives_per_case']:.1f} false-positive components per case")
        if d["recall"] is not None and d["recall"] < 1:
            missed = d["lesions"] - d["detected"]
            failures.append(f"{name}: missed {missed} of {d['lesions']} lesions on the test split")
    return lines, failures


def summary_lines(summary: dict) -> list[str]:
    """What `medmap train` and `medmap evaluate` print about the evaluated split."""
    m, lines = summary["metrics"], []
    lines.append(f"{summary['split']} set: {m['n']} cases scored")
    for name, entry in m["classes"].items():
        d, h, s = entry["dice"], entry["hd95_mm"], entry["nsd"]
        if d["mean"] is None:
            lines.append(f"  {name}: absent from every case")
            continue
        hd95 = f"{h['mean']:.1f} mm" if h["mean"] is not None else "-"
        lines.append(
            f"  {name}: Dice {d['mean']:.3f} (95% CI {d['ci'][0]:.3f}-{d['ci'][1]:.3f}), HD95 {hd95}, "
            f"surface Dice {s['mean']:.3f}"
        )
    for name, lesions in m["lesions"].items():
        recall = "-" if lesions["recall"] is None else f"{lesions['recall']:.2f}"
        lines.append(
            f"  {name} lesions: {lesions['detected']}/{lesions['lesions']} detected (recall {recall}), "
            f"{lesions['false_positives_per_case']:.2f} false positives per case"
        )
    lines.append(f"label maps: {summary['predictions']}")
    lines.append(f"report: {summary['report']}")
    return lines
