"""One self-contained HTML report (plots embedded as PNG data URIs) from an evaluation's results."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from medmap import __version__
from medmap.evaluation.wording import margin_verdict
from medmap.run_folder import METRICS, RunFolder

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .8em; border-bottom: 1px solid #eee;
text-align: right; } th:first-child, td:first-child { text-align: left; }
.plots img { margin: .3em; border: 1px solid #eee; } .note { color: #555; font-size: .9em; }
.warning { color: #8a4b00; background: #fff4e0; text-align: left; }
"""

# Metric keys as a reader names them (metrics.json keeps the short keys).
METRIC_NAMES = (
    ("auc", "AUC (area under the ROC curve)"),
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("sensitivity", "sensitivity (recall)"),
    ("specificity", "specificity"),
    ("ppv", "positive predictive value (precision)"),
    ("npv", "negative predictive value"),
    ("f1", "F1 score"),
    ("threshold", "decision threshold (from validation)"),
    ("ece", "expected calibration error"),
)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"{value[0]:.3f} - {value[1]:.3f}"
    return html.escape(str(value))


def classification_report(
    path: str | Path,
    *,
    title: str,
    metrics: dict,
    labels: dict[int, str],
    plots: dict[str, bytes],
    notes: list[str],
    cases_csv: str | None = None,
    baseline: dict | None = None,
) -> Path:
    """Write the report. ``metrics``: from `binary_metrics` / `multiclass_metrics`; ``plots``: name -> PNG."""
    path = Path(path)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{_fmt(metrics[key])}</td>"
        f"<td>{_fmt(metrics[key + '_ci']) if key + '_ci' in metrics else ''}</td></tr>"
        for key, name in METRIC_NAMES
        if key in metrics
    )
    head = "<tr><th>metric</th><th>value</th><th>95% CI</th></tr>"
    table = f"{head}<tr><td>cases</td><td>{metrics['n']}</td><td></td></tr>{rows}"
    if metrics.get("sample_warning"):
        table += f'<tr><td colspan="3" class="warning">{html.escape(metrics["sample_warning"])}</td></tr>'
    base = ""
    if baseline:
        base = (
            f"<h2>Baseline</h2><p>{html.escape(baseline['name'])}: AUC {baseline['auc']:.3f} "
            f"(95% CI {baseline['auc_ci'][0]:.3f} - {baseline['auc_ci'][1]:.3f}) on the same cases.</p>"
        )
        if "comparison" in baseline:
            d = baseline["comparison"]
            base += (
                f"<p>Model minus baseline: AUC {d['delta_auc']:+.3f}, paired bootstrap 95% CI "
                f"{d['delta_ci'][0]:+.3f} to {d['delta_ci'][1]:+.3f}: the margin is "
                f"{'supported' if d['supported'] else 'not supported'} by the data.</p>"
            )
    intro = (
        f"Classes {', '.join(f'{k}: {html.escape(v)}' for k, v in labels.items())}. The decision threshold was "
        "chosen on the validation cases (Youden's J), never on the cases evaluated here. Intervals are 95%: for AUC a "
        "percentile bootstrap over cases, for rates the Wilson score interval."
    )
    return write_page(path, title, intro, f"<h2>Metrics</h2><table>{table}</table>{base}", plots, notes, cases_csv)


def write_page(
    path: str | Path, title: str, intro: str, body: str, plots: dict[str, bytes], notes: list[str], csv: str | None
) -> Path:
    """The page every report shares: title, an intro, the task's own body, plots, provenance, a CSV link."""
    path = Path(path)
    images = "".join(_img(png, name) for name, png in plots.items())
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    link = f'<p>Per-case results: <a href="{html.escape(csv)}">{html.escape(csv)}</a></p>' if csv else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">medmap {__version__}. {intro}</p>
{body}
<h2>Plots</h2><div class="plots">{images}</div>
<h2>How this was produced</h2><ul>{notes_html}</ul>{link}
</body></html>"""
    path.write_text(page)
    return path


SEGMENTATION_COLUMNS = (
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("sensitivity", "sensitivity"),
    ("precision", "precision"),
    ("hd95_mm", "HD95 (mm)"),
    ("msd_mm", "mean surface distance (mm)"),
    ("nsd", "surface Dice"),
)


def segmentation_report(
    path: str | Path,
    *,
    title: str,
    summary: dict,
    tolerance_mm: float,
    plots: dict[str, bytes],
    notes: list[str],
    cases_csv: str | None = None,
    viewer: str | None = None,
) -> Path:
    """Per class: mean and 95 % CI over cases of each metric; lesion detection; overlays among the plots;
    a link to the slice-by-slice case viewer (`medmap.evaluation.viewer`) when there is one."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in SEGMENTATION_COLUMNS)
    rows = []
    for name, entry in summary["classes"].items():
        cells = []
        for key, _ in SEGMENTATION_COLUMNS:
            m = entry[key]
            if m["mean"] is None:
                cells.append("<td>-</td>")
                continue
            digits = 1 if key.endswith("_mm") else 3  # millimetres to a tenth: finer is false precision
            ci = f"{m['ci'][0]:.{digits}f} - {m['ci'][1]:.{digits}f}"
            cells.append(f"<td>{m['mean']:.{digits}f}<br><small>{ci}</small></td>")
        rows.append(f"<tr><td>{html.escape(name)}</td>{''.join(cells)}</tr>")
    lesion_rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td>{d['lesions']}</td><td>{d['detected']}</td>"
        f"<td>{_fmt(d['recall']) if d['recall'] is not None else '-'}</td>"
        f"<td>{d['false_positives_per_case']:.2f}</td></tr>"
        for name, d in summary["lesions"].items()
    )
    lesions = (
        "<h2>Lesion detection</h2><table><tr><th>class</th><th>true lesions</th><th>detected</th><th>recall</th>"
        f"<th>false positives per case</th></tr>{lesion_rows}</table>"
        if lesion_rows
        else ""
    )
    warning = summary.get("sample_warning")
    body = (
        f"<h2>Metrics ({summary['n']} cases; pixel accuracy {_fmt(summary['pixel_accuracy'])})</h2>"
        + (f'<p class="warning">{html.escape(warning)}</p>' if warning else "")
        + f"<table><tr><th>class</th>{head}</tr>{''.join(rows)}</table>{lesions}"
        + (
            f'<p>Every case, slice by slice, prediction and truth: <a href="{html.escape(viewer)}">'
            f"{html.escape(viewer)}</a></p>"
            if viewer
            else ""
        )
    )
    intro = (
        "Metrics per case on the original image grid (spacing in mm), then the mean over cases with a 95% "
        f"bootstrap interval. Surface Dice at a tolerance of {tolerance_mm:g} mm. A lesion is detected when a "
        "predicted voxel of its class lies in it; a predicted component touching no true lesion is a false positive."
    )
    return write_page(path, title, intro, body, plots, notes, cases_csv)


def _summary_row(anchor: str, name: str, stored: dict | None) -> str:
    """One run in the summary table: its key figures with intervals, the baseline verdict, the evidence."""
    if not stored:
        return f'<tr><td><a href="#{anchor}">{html.escape(name)}</a></td><td colspan="5">no metrics.json</td></tr>'
    m, split = stored.get("metrics", {}), stored.get("split", "?")
    if "classes" in m:
        key = "; ".join(
            f"{cls} Dice {e['dice']['mean']:.3f} ({_fmt(e['dice']['ci'])})"
            for cls, e in m["classes"].items()
            if e["dice"]["mean"] is not None
        )
        extra = "; ".join(
            f"{cls}: {d['detected']}/{d['lesions']} lesions found, {d['false_positives_per_case']:.2f} FP/case"
            for cls, d in m.get("lesions", {}).items()
        )
    elif "cpm" in m:  # a detector
        key = f"CPM {m['cpm']:.3f} ({_fmt(m.get('cpm_ci', []))}); AP@0.1 {m.get('ap_iou_0.1', float('nan')):.3f}"
        base, comparison = m.get("baseline") or {}, m.get("comparison")
        extra = (
            ""
            if comparison is None
            else f"vs {base.get('name', 'baseline')} {comparison['delta_cpm']:+.3f} ({_fmt(comparison['delta_ci'])}): "
            + margin_verdict(comparison["delta_ci"])
        )
    else:
        key = f"AUC {m.get('auc', float('nan')):.3f} ({_fmt(m.get('auc_ci', []))})"
        comparison = (stored.get("baseline") or {}).get("comparison")
        extra = (
            ""
            if comparison is None
            else f"vs baseline {comparison['delta_auc']:+.3f} ({_fmt(comparison['delta_ci'])}): "
            + ("supported" if comparison["supported"] else "not supported")
        )
    evidence = "small test set" if m.get("sample_warning") else ""
    if split != "test":
        evidence = f"scored on {split} (optimistic)" + (f"; {evidence}" if evidence else "")
    return (
        f'<tr><td><a href="#{anchor}">{html.escape(name)}</a></td><td>{html.escape(split)}</td><td>{m.get("n")}</td>'
        f"<td>{html.escape(key)}</td><td>{html.escape(extra)}</td>"
        f'<td class="warning">{html.escape(evidence)}</td></tr>'
    )


def combine_reports(reports: list[Path], path: str | Path, title: str = "medmap evaluation") -> Path:
    """One page for several runs: a summary table (one row per model, key figures with intervals, the
    baseline verdict, weak evidence flagged, a link to its section), then each run's report. Links inside a
    run's report (its per-case CSV) are rewritten relative to the new page, so they keep working."""
    import os
    import re

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, sections = [], []
    for i, report in enumerate(map(Path, reports), start=1):
        anchor, run = f"run-{i}", report.parent
        stored = RunFolder(run).read(METRICS)
        rows.append(_summary_row(anchor, run.name, stored))
        text = report.read_text()
        body = re.search(r"<body>(.*)</body>", text, re.S)
        inner = body.group(1) if body else ""
        inner = inner.replace("<h1>", "<h2 class=run>").replace("</h1>", "</h2>")
        prefix = Path(os.path.relpath(run.resolve(), path.resolve().parent)).as_posix()
        inner = re.sub(
            r'href="(?![a-z]+:|#|/)([^"]+)"', lambda m, prefix=prefix: f'href="{prefix}/{m.group(1)}"', inner
        )
        sections.append(f'<section id="{anchor}"><p class="note">{html.escape(str(report))}</p>{inner}</section><hr>')
    table = (
        '<table id="summary"><tr><th>model</th><th>scored on</th><th>cases</th><th>key figures (95% CI)</th>'
        f"<th>baseline / lesions</th><th>evidence</th></tr>{''.join(rows)}</table>"
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE} h2.run {{ font-size: 1.4em; }} #summary td {{ text-align: left; }}</style></head><body>
<h1>{html.escape(title)}</h1><h2>Summary</h2>{table}
{"".join(sections)}</body></html>"""
    path.write_text(page)
    return path
