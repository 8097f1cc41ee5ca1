"""The search's ranking and its page: every candidate with its configuration, validation curve, score
with interval, time spent and why it stopped; the winner and what it bought over the default plan.

Ranking is on the validation cases only: each completed candidate's score over them (the task's
`medmap.tuning.scoring`: mean Dice, or AUC), a bootstrap interval over cases, and the paired interval of
its difference from the leader (both scored on the same resampled cases). A
candidate whose paired interval holds zero is tied with the leader; among the tied, the cheaper model
(fewer parameters) wins. With fewer than `MIN_CASES_FOR_INTERVAL` validation cases there is no interval
worth the name: the leader by mean wins, and the page says so.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medmap.tuning.scoring import Scoring, mean

MIN_CASES_FOR_INTERVAL = 5
N_BOOT = 2000
STILL_RISING = 0.01  # the default plan's validation metric gained more than this over its last third of training


def paired_difference(a: dict, b: dict, seed: int = 0, statistic: Callable[[list], float] = mean) -> dict:
    """``statistic(a) - statistic(b)`` over their common cases and its percentile bootstrap 95 % interval
    (each resample of cases scored for both; resamples where the statistic is undefined left out)."""
    common = sorted(set(a) & set(b))
    if not common:
        return {"mean": None, "ci": None, "n": 0}
    first, second = [a[c] for c in common], [b[c] for c in common]
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(N_BOOT):
        pick = rng.integers(0, len(common), len(common))
        boots.append(statistic([first[i] for i in pick]) - statistic([second[i] for i in pick]))
    return {"mean": float(statistic(first) - statistic(second)), "ci": percentile_interval(boots), "n": len(common)}


def percentile_interval(boots) -> list[float] | None:
    """The percentile 95 % interval of bootstrap values, leaving out resamples with no value (NaN)."""
    boots = np.asarray(boots, dtype=float)
    boots = boots[~np.isnan(boots)]
    return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))] if len(boots) else None


def _interval(scores: dict, seed: int, statistic: Callable[[list], float]) -> list[float] | None:
    values = list(scores.values())
    if len(values) < 2:
        return None
    rng = np.random.default_rng(seed)
    return percentile_interval(
        [statistic([values[i] for i in rng.integers(0, len(values), len(values))]) for _ in range(N_BOOT)]
    )


def _parameters(run: Path) -> int | None:
    from medmap.plan import Plan
    from medmap.tasks import task_for

    try:
        plan = Plan.load(run / "plan.json")
        network = task_for(plan).build_network(plan, None)
    except Exception:  # a candidate that never planned: no size to compare
        return None
    return int(sum(p.numel() for p in network.parameters()))


def rank(study, request, scoring: Scoring) -> dict:
    """The leaderboard as data (written as leaderboard.json; the page shows the same)."""
    seed, statistic = request.config.seed, scoring.statistic
    candidates = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "FAIL" and "resumed by a later trial" in t.user_attrs.get("stopped", ""):
            continue  # its run folder lives on in the trial that resumed it
        scores = t.user_attrs.get("val_cases") or {}
        entry = {
            "number": t.number,
            "run": t.user_attrs.get("run"),
            "state": t.state.name.lower(),
            "default": bool(t.user_attrs.get("default")),
            "params": t.params,
            "settings": t.user_attrs.get("settings", {}),
            "budget_seconds": t.user_attrs.get("budget_seconds"),
            "trained_seconds": t.user_attrs.get("trained_seconds"),
            "stopped": t.user_attrs.get("stopped", "running" if t.state.name == "RUNNING" else ""),
            "history": t.user_attrs.get("history", []),
            "resumes": t.user_attrs.get("resumes"),
            "val_cases": scores,
        }
        if scores and t.state.name == "COMPLETE":
            entry["score"] = statistic(list(scores.values()))
            entry["ci"] = _interval(scores, seed, statistic)
            entry["parameters"] = _parameters(request.runs / entry["run"])
        candidates.append(entry)
    scored = [c for c in candidates if "score" in c and not np.isnan(c["score"])]
    board = {
        "study": request.study,
        "metric": scoring.metric,
        "budget_seconds": request.budget_seconds,
        "candidates": candidates,
    }
    if not scored:
        board["winner"] = None
        return board
    leader = max(scored, key=lambda c: c["score"])
    n_cases = len(leader["val_cases"])
    board["intervals"] = n_cases >= MIN_CASES_FOR_INTERVAL
    for c in scored:
        c["vs_leader"] = paired_difference(c["val_cases"], leader["val_cases"], seed, statistic)
        ci = c["vs_leader"]["ci"]
        c["tied_with_leader"] = c is leader or (board["intervals"] and ci is not None and ci[0] <= 0 <= ci[1])
    tied = [c for c in scored if c["tied_with_leader"]]
    winner = min(tied, key=lambda c: (c["parameters"] or 0, -c["score"])) if board["intervals"] else leader
    board["winner"] = {k: winner[k] for k in ("number", "run", "params", "score", "ci", "parameters")}
    board["winner"]["why"] = (
        f"the highest validation {scoring.metric}"
        if winner is leader
        else f"tied with the leader (trial {leader['number']}) within the paired interval, and smaller"
    )
    if not board["intervals"]:
        board["winner"]["why"] += (
            f"; only {n_cases} validation cases: too few for an interval, so no difference here is "
            "established and the ranking is by the mean alone"
        )
    default = next((c for c in scored if c["default"]), None)
    if default is not None:
        board["over_default"] = paired_difference(winner["val_cases"], default["val_cases"], seed, statistic)
        board["over_default"]["default_trial"] = default["number"]
        rising = still_rising(default["history"])
        if rising is not None:
            before, best = rising
            board["undertrained"] = (
                f"the default plan's validation {scoring.metric} was still rising at the end of its "
                f"{default['trained_seconds'] or 0:.0f} s of training ({before:.3f} -> {best:.3f} over its last "
                "third): candidates this short are undertrained, so the winner is likely to trail one medmap "
                "train run given the whole budget; search with a --trial-budget several times longer, or train"
            )
    return board


def still_rising(history: list) -> tuple[float, float] | None:
    """(best before the last third of training time, best overall) of a ``[[seconds, value], ...]`` curve
    when the last third gained more than STILL_RISING; None when it had levelled off (or is too short)."""
    values = [(s, v) for s, v in history if v is not None and v == v]
    if len(values) < 3:
        return None
    elapsed = np.cumsum([s for s, _ in values])
    cut = elapsed[-1] * 2 / 3
    before = max((v for (_, v), t in zip(values, elapsed, strict=True) if t <= cut), default=None)
    best = max(v for _, v in values)
    if before is None or best - before <= STILL_RISING:
        return None
    return float(before), float(best)


def write_leaderboard(runs: Path, board: dict) -> Path:
    """``leaderboard.json`` first (the data), then ``leaderboard.html`` (a failing figure is a warning)."""
    from medmap.evaluation.optional import optional

    (runs / "leaderboard.json").write_text(json.dumps(board, indent=1, default=str))
    figure = optional("the leaderboard's curves", curves_png, board["candidates"], board.get("metric", ""))
    page = runs / "leaderboard.html"
    page.write_text(_page(board, figure))
    return page


def curves_png(candidates: list[dict], metric: str) -> bytes:
    """The validation metric against training time, one line per candidate (stopped ones dashed)."""
    from medmap.evaluation.plots import _figure, _png

    fig, ax = _figure(6.4, 3.8)
    for c in candidates:
        if not c["history"]:
            continue
        seconds = np.cumsum([h[0] for h in c["history"]])
        values = [np.nan if h[1] is None else h[1] for h in c["history"]]
        style = "-" if c["state"] == "complete" else "--"
        label = f"{c['number']}{' (default)' if c['default'] else ''}"
        ax.plot(seconds, values, style, marker=".", label=label)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"validation {metric.removeprefix('mean ')} (per epoch)")
    ax.legend(fontsize=7, ncol=2, title="trial", title_fontsize=7)
    return _png(fig)


def _fmt(value, digits=3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _page(board: dict, figure: bytes | None) -> str:
    rows = []
    for c in board["candidates"]:
        ci = c.get("ci")
        vs = c.get("vs_leader") or {}
        vs_text = ""
        if vs.get("mean") is not None:
            vs_text = f"{vs['mean']:+.3f}" + (f" [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]" if vs.get("ci") else "")
            vs_text += " tie" if c.get("tied_with_leader") and vs["mean"] != 0 else ""
        config = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in c["params"].items())
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(str(v))}</td>"
                for v in (
                    f"{c['number']}{' (default plan)' if c['default'] else ''}",
                    c["state"],
                    config,
                    _fmt(c.get("score")) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""),
                    vs_text,
                    _fmt(c.get("trained_seconds"), 0),
                    c.get("parameters") or "",
                    c["stopped"],
                )
            )
            + "</tr>"
        )
    winner = board.get("winner")
    lines = []
    if winner:
        lines.append(
            f"Winner: trial {winner['number']} ({html.escape(winner['run'])}), validation {board['metric']} "
            f"{winner['score']:.3f}: {html.escape(winner['why'])}."
        )
        over = board.get("over_default")
        if over and over.get("mean") is not None:
            interval = f" [{over['ci'][0]:+.3f}, {over['ci'][1]:+.3f}]" if over.get("ci") else ""
            held = over.get("ci") and (over["ci"][0] > 0 or over["ci"][1] < 0) and board.get("intervals")
            lines.append(
                f"Over the default plan (trial {over['default_trial']}): {over['mean']:+.3f}{interval} on "
                f"{over['n']} validation cases: " + ("a difference the interval supports." if held else "a tie.")
            )
    else:
        lines.append("No candidate has completed yet.")
    if board.get("test"):
        lines.append(f"The winner's test evaluation (run once, after the search): {html.escape(str(board['test']))}")
    if board.get("undertrained"):
        lines.append("<strong>Warning:</strong> " + html.escape(board["undertrained"]) + ".")
    if board.get("note"):
        lines.append(html.escape(board["note"]))
    image = (
        f'<img alt="validation curves" src="data:image/png;base64,{base64.b64encode(figure).decode()}">'
        if figure
        else ""
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("trial", "state", "configuration", f"val {board['metric']} [95% CI]", "vs leader (paired)",
                  "trained s",
                  "parameters", "why it stopped")
    )  # fmt: skip
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>medmap tune: leaderboard</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>medmap tune: {html.escape(board['study'])}</h1>"
        + "".join(f"<p>{line}</p>" for line in lines)
        + f"<table><tr>{head}</tr>{''.join(rows)}</table>{image}"
        + "<p>Scores are on the validation cases only; no test case informs the search.</p></body></html>"
    )
