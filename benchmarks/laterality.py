"""Left and right: a pair of identical left/right organs trained with the planner's mirroring (never across
the patient's left-right when labels are lateralised) against mirroring on every in-plane axis (as
before issue 27), same data, split and budget.

    python benchmarks/laterality.py --seeds 0 1 2 --epochs 4     # the figure in docs/benchmarks.md
    python benchmarks/laterality.py --quick                      # one seed, one short epoch (the test suite)

The data are generated (`tests.builders.paired_organs_case`: a symmetric body, two identical discs,
labels ``Parotid_L`` / ``Parotid_R``): only the side tells the two organs apart, as with real parotids.
Scored on each run's own test split: Dice per organ, and the share of the voxels that truth and
prediction both call an organ whose label names the other side. The difference is paired by case
(each seed's test cases; the bootstrap resamples those pairs).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARMS = {
    "planner (sides kept)": [],
    "every in-plane axis mirrored": ["augmentation.flip_axes=[1,2]", "augmentation.keep_sides=false"],
}
LABELS = {0: "background", 1: "Parotid_L", 2: "Parotid_R"}


def write_pairs(root: Path, n: int) -> Path:
    from tests.builders import paired_organs_case

    from medmap.data.layouts import write_msd

    cases = [(f"pair_{i:02d}", *paired_organs_case(i)) for i in range(n)]
    return write_msd(root, "Pairs", LABELS, "MR", cases, [])


def score_run(run: Path, split: str, dataset) -> dict[str, dict]:
    """Per case: mean Dice of the two organs and the wrong-side share."""
    from medmap.io.load import load

    dice: dict[str, list[float]] = {}
    with open(run / f"cases_{split}.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            dice.setdefault(row["case_id"], []).append(float(row["dice"]))
    out = {}
    for case in dataset.cases:
        path = run / f"predictions_{split}" / f"{case.case_id}.nii.gz"
        if case.case_id not in dice or not path.exists():
            continue
        truth, guess = case.load_mask().array, load(path).array
        both = (truth > 0) & (guess > 0)
        out[case.case_id] = {
            "dice": float(np.mean(dice[case.case_id])),
            "wrong_side": float((both & (truth != guess)).sum() / max(int(both.sum()), 1)),
        }
    return out


def paired_interval(differences: list[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    d = np.asarray(differences)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_boot)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def main(argv: list[str] | None = None) -> int:
    from medmap.data.layouts import read_dataset
    from medmap.evaluation.wording import margin_verdict
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    seeds, epochs, n = ([0], 1, 12) if args.quick else (args.seeds, args.epochs, args.cases)
    results: dict[str, dict] = {arm: {} for arm in ARMS}
    seconds: dict[str, float] = dict.fromkeys(ARMS, 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_pairs(Path(tmp) / "pairs", n)
        dataset = read_dataset(root)
        for seed in seeds:
            for arm, overrides in ARMS.items():
                config = TrainConfig(
                    epochs=epochs, seed=seed, workers=0, **({"samples_per_epoch": 16} if args.quick else {})
                )
                run = Path(tmp) / f"run-{seed}-{len(overrides)}"
                start = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    summary = train_run(root, run, overrides=overrides, config=config)
                seconds[arm] += time.perf_counter() - start
                for case, row in score_run(run, summary["split"], dataset).items():
                    results[arm][f"{seed}/{case}"] = row
    arms = list(ARMS)
    common = sorted(set(results[arms[0]]) & set(results[arms[1]]))
    diff = [results[arms[0]][k]["dice"] - results[arms[1]][k]["dice"] for k in common]
    interval = paired_interval(diff) if diff else (float("nan"), float("nan"))
    print(f"{len(seeds)} seed(s) x {len(common) // max(len(seeds), 1)} test cases, {epochs} epochs each")
    print("| arm | mean Dice (both organs) | wrong-side share of organ voxels | training s |")
    print("|---|---:|---:|---:|")
    summary_rows = {}
    for arm in arms:
        dice = float(np.mean([results[arm][k]["dice"] for k in common])) if common else float("nan")
        wrong = float(np.mean([results[arm][k]["wrong_side"] for k in common])) if common else float("nan")
        summary_rows[arm] = {"mean_dice": dice, "wrong_side": wrong, "seconds": seconds[arm]}
        print(f"| {arm} | {dice:.3f} | {100 * wrong:.1f} % | {seconds[arm]:.0f} |")
    mean_diff = float(np.mean(diff)) if diff else float("nan")
    print(f"planner minus every-axis: {mean_diff:+.3f} ({interval[0]:+.3f} to {interval[1]:+.3f}), "
          f"{margin_verdict(interval)}")  # fmt: skip
    payload = {
        "date": time.strftime("%Y-%m-%d"),
        "quick": args.quick,
        "seeds": seeds,
        "epochs": epochs,
        "arms": summary_rows,
        "paired_difference": {"mean": mean_diff, "ci": interval, "pairs": len(diff)},
        "cases": results,
    }
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
