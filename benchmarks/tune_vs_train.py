"""Does the search buy anything? `medmap tune` against `medmap train` (the default plan) at the same budget.

    python benchmarks/tune_vs_train.py --datasets liver nodules chase pneumonia --seeds 0 1 2 --budget 240
    python benchmarks/tune_vs_train.py --quick        # one seed of a 16x16 classification set (the suite)

Each arm is run as a user runs it, from the command line, on the same dataset with the same ``--seed``
(so the same patient split): ``medmap train DATA -o RUN --budget B --seed S`` and ``medmap tune DATA -o
RUNS --budget B --seed S``. The budgets are not quite equal in the search's favour: tune's budget covers
everything (planning, caching, scoring candidates on the validation cases), train's covers training
alone; both wall-clocks are in the table. Both are scored on the test cases afterwards with the task's
search statistic (`medmap.tuning.scoring`: mean Dice per case, or AUC), the default run's test evaluation
and the search winner's, each made once. The difference is paired by case within a seed; across seeds
it is the mean of the per-seed differences, with a bootstrap that resamples the cases within each seed.

Datasets (``liver``, ``nodules``, ``chase``, ``pneumonia``, ``isic``): as `campaign.prepare` writes them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from campaign import ROOT, across_seeds, medmap, prepare, verdict
from campaign import save as save_campaign


def run_pair(name, path: Path, task: str, seed: int, budget: float, trial_budget: float | None, work: Path, sets=()):
    from medmap.tuning.leaderboard import paired_difference
    from medmap.tuning.scoring import scoring_for

    scoring = scoring_for(task)
    default_run, search = work / "runs" / f"{name}-s{seed}-train", work / "runs" / f"{name}-s{seed}-tune"
    common = ["--seed", seed, "--budget", f"{budget:.0f}s", *(a for s in sets for a in ("--set", s))]
    task_option = ["--task", task]
    for folder in (default_run, search):  # the benchmark's own folders: a fresh run and a fresh study
        shutil.rmtree(folder, ignore_errors=True)
    default_wall = medmap("train", path, "-o", default_run, *task_option, *common)
    trial = ["--trial-budget", f"{trial_budget:.0f}s"] if trial_budget else []
    tune_wall = medmap("tune", path, "-o", search, *task_option, *common, *trial)
    board = json.loads((search / "leaderboard.json").read_text())
    winner = search / board["winner"]["run"]
    tuned, default = scoring.read(winner, "test"), scoring.read(default_run, "test")
    return {
        "dataset": name,
        "seed": seed,
        "metric": scoring.metric,
        "default": {"test": scoring.statistic(list(default.values())), "wall_seconds": round(default_wall, 1)},
        "tuned": {
            "test": scoring.statistic(list(tuned.values())),
            "wall_seconds": round(tune_wall, 1),
            "winner": board["winner"],
            "winner_is_default_plan": board["winner"]["number"] == 0,
            "candidates": len(board["candidates"]),
            "completed": sum(c["state"] == "complete" for c in board["candidates"]),
            "pruned": sum(c["state"] == "pruned" for c in board["candidates"]),
            "val_over_default": board.get("over_default"),
        },
        "test_difference": paired_difference(tuned, default, seed, scoring.statistic),
        "values": {"tuned": tuned, "default": default},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["liver", "nodules", "chase", "pneumonia"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds, each arm")
    parser.add_argument("--trial-budget", type=float, default=None, help="seconds, one candidate [budget / 4]")
    parser.add_argument("--budget-for", nargs="*", default=[], metavar="NAME=SECONDS[/TRIAL]",
                        help="a dataset's own budget (and candidate budget), e.g. chase=330/115")  # fmt: skip
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "tune_vs_train")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--set", action="append", default=[], help="a plan value both arms keep (key=value)")
    parser.add_argument("--quick", action="store_true", help="one seed, a 16x16 classification set, 40 s arms")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.seeds, args.budget, args.trial_budget = ["quick"], [0], 40.0, 10.0
        args.set = ["batch_size=16", "iterations_per_epoch=4"]  # short epochs: three fit a candidate on a busy CI
        args.work = args.out / "tune_vs_train-work"
    from medmap.tuning.scoring import scoring_for

    rows, summary, failures = [], [], []
    for name in args.datasets:
        path, task = prepare(name, args.data, args.work)
        budget, trial_budget = budgets(args, name)
        pairs = []
        for seed in args.seeds:
            try:
                row = run_pair(name, path, task, seed, budget, trial_budget, args.work, args.set)
            except RuntimeError as exc:  # one failed arm is reported, the campaign goes on
                failures.append({"dataset": name, "seed": seed, "error": str(exc)})
                print(f"{name} seed {seed}: {exc}", flush=True)
                save(args, {"partial": True, "summary": summary, "runs": rows, "failures": failures})
                continue
            rows.append(row)
            save(args, {"partial": True, "summary": summary, "runs": rows, "failures": failures})  # kept as measured
            pairs.append((row["values"]["tuned"], row["values"]["default"]))
            d = row["test_difference"]
            ci = f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d["ci"] else "(no interval)"
            print(
                f"{name} seed {seed}: default {row['default']['test']:.3f}, tuned {row['tuned']['test']:.3f} "
                f"({row['tuned']['candidates']} candidates, winner trial {row['tuned']['winner']['number']}): "
                f"{d['mean']:+.3f} {ci} on {d['n']} test cases",
                flush=True,
            )
        if not pairs:
            continue
        scoring = scoring_for(task)
        overall = across_seeds(pairs, scoring.statistic)
        seeds = [r for r in rows if r["dataset"] == name]
        summary.append(
            {
                "dataset": name,
                "task": task,
                "metric": scoring.metric,
                "seeds": args.seeds,
                "budget_seconds": budget,
                "trial_budget_seconds": trial_budget or budget / 4,
                "default_test_mean": float(np.mean([r["default"]["test"] for r in seeds])),
                "tuned_test_mean": float(np.mean([r["tuned"]["test"] for r in seeds])),
                "difference": overall,
                "verdict": verdict(overall, "tuned", "default"),
                "default_plan_won_search": sum(r["tuned"]["winner_is_default_plan"] for r in seeds),
                "candidates_mean": float(np.mean([r["tuned"]["candidates"] for r in seeds])),
                "wall_seconds": {
                    "train": float(np.mean([r["default"]["wall_seconds"] for r in seeds])),
                    "tune": float(np.mean([r["tuned"]["wall_seconds"] for r in seeds])),
                },
            }
        )
    print()
    print(f"{'dataset':<10} {'metric':<9} {'default':>8} {'tuned':>8} {'tuned - default [95% CI]':>28}  verdict")
    for s in summary:
        d = s["difference"]
        ci = f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d["ci"] else ""
        print(
            f"{s['dataset']:<10} {s['metric']:<9} {s['default_test_mean']:>8.3f} {s['tuned_test_mean']:>8.3f} "
            f"{d['mean']:>+8.3f} {ci:>19}  {s['verdict']}"
        )
    print(f"wrote {save(args, {'summary': summary, 'runs': rows, 'failures': failures})}")
    if failures:
        raise SystemExit(f"{len(failures)} arm(s) failed (in the JSON): {failures[0]['error'][:300]}")


def save(args, results: dict) -> Path:
    return save_campaign(args.out, "tune_vs_train", args.quick, results)


def budgets(args, name: str) -> tuple[float, float | None]:
    """The budget of each arm and of one candidate for a dataset (``--budget-for`` over the defaults)."""
    for item in args.budget_for:
        key, _, value = item.partition("=")
        if key == name:
            budget, _, trial = value.partition("/")
            return float(budget), float(trial) if trial else None
    return args.budget, args.trial_budget


if __name__ == "__main__":
    main()
