"""One self-contained HTML report (plots embedded as PNG data URIs) from an evaluation's results."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from medmap import __version__

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .8em; border-bottom: 1px solid #eee;
text-align: right; } th:first-child, td:first-child { text-align: left; }
.plots img { margin: .3em; border: 1px solid #eee; } .note { color: #555; font-size: .9em; }
"""


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
    rows = [("cases", metrics["n"])]
    keys = (
        "auc",
        "auc_ci",
        "accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "ppv",
        "npv",
        "f1",
        "threshold",
        "ece",
    )
    rows += [(k.replace("_", " "), metrics[k]) for k in keys if k in metrics]
    table = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in rows)
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
    images = "".join(_img(png, name) for name, png in plots.items())
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    link = (
        f'<p>Per-case predictions: <a href="{html.escape(cases_csv)}">{html.escape(cases_csv)}</a></p>'
        if cases_csv
        else ""
    )
    classes = ", ".join(f"{k}: {html.escape(v)}" for k, v in labels.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">medmap {__version__}. Classes {classes}. The decision threshold was chosen on the validation
cases (Youden's J), never on the cases evaluated here; the AUC interval is a 95% percentile bootstrap over cases.</p>
<h2>Metrics</h2><table>{table}</table>{base}
<h2>Plots</h2><div class="plots">{images}</div>
<h2>How this was produced</h2><ul>{notes_html}</ul>{link}
</body></html>"""
    path.write_text(page)
    return path
