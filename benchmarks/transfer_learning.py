"""Does self-supervised pretraining help when labels are scarce? Scratch vs pretrained, same budget.

    python benchmarks/transfer_learning.py --data data/nodules.csv     # the default demo nodules

Split by patient as `medmap train` does (train / validation / test). With 10 % and 100 % of the
training patients' labels, train the plan's network (a) from scratch and (b) from SimCLR weights
pretrained (`medmap.training.pretrain`) on the *unlabelled rest* of the training images (for 100 %,
on the same training images with their labels ignored). Same epochs, same samples per epoch, same
seed, same validation and test patients. Reported: test AUC with its 95 % bootstrap CI, the epoch of
the best validation AUC, and the first epoch whose validation AUC reached 95 % of that run's best.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from medmap.data.cache import PreprocessedCache
from medmap.data.layouts import read_dataset
from medmap.data.loader import PatchDataset
from medmap.data.splits import kfold, train_val_test
from medmap.evaluation.metrics import binary_metrics
from medmap.tasks import task_for
from medmap.training.pretrain import pretrain
from medmap.training.run import prepare_plan
from medmap.training.trainer import TrainConfig, Trainer


def labelled_subset(train, fraction: float, seed: int):
    """A patient-grouped, class-stratified ``fraction`` of the training cases (the rest: unlabelled)."""
    if fraction >= 1.0:
        return train, []
    k = max(2, round(1 / fraction))
    fold = kfold(train, k, seed=seed)[0]
    return fold.val, fold.train


def run_one(name, plan, train, val, test, run_dir, epochs, samples, seed, pretrained=None) -> dict:
    config = TrainConfig(
        epochs=epochs,
        samples_per_epoch=samples,
        seed=seed,
        patience=epochs,
        pretrained=str(pretrained) if pretrained else None,
    )
    trainer = Trainer(task_for(plan), plan, config, run_dir)
    result = trainer.fit(train, val)
    model = trainer.task.build_network(plan, config.dropout)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "best.pt"))
    pred, y = trainer.predict(model, PatchDataset(test, plan, task_for(plan), train=False))
    metrics = binary_metrics(y, pred[:, 1], 0.5, seed=seed)
    curve = [h["val"].get("auc", float("nan")) for h in result["history"]]
    best = float(np.nanmax(curve)) if np.isfinite(curve).any() else float("nan")  # one class in val: no AUC
    reach = next((i + 1 for i, v in enumerate(curve) if v >= 0.95 * best), None)
    return {
        "name": name,
        "test_auc": metrics["auc"],
        "test_auc_ci": metrics["auc_ci"],
        "best_val_auc": best,
        "best_epoch": result["best_epoch"] + 1,
        "epochs_to_95pct_of_best": reach,
        "val_curve": curve,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="nodules.csv from `medmap demo-data`")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=15)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a small run that proves the benchmark works (tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.pretrain_epochs, args.fractions = 1, 1, [1.0]
    dataset = read_dataset(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = prepare_plan(dataset, overrides=[], device="cpu", progress=False)
        splits = train_val_test(dataset.cases, seed=args.seed)
        cache = PreprocessedCache(tmp / "cache", plan, task_for(plan))
        cached = {c.case_id: c for c in cache.build([c for s in splits.values() for c in s])}
        pick = lambda cases: [cached[c.case_id] for c in cases]  # noqa: E731
        val, test = pick(splits["val"]), pick(splits["test"])
        rows = []
        for fraction in args.fractions:
            labelled, unlabelled = labelled_subset(splits["train"], fraction, args.seed)
            source = unlabelled or splits["train"]
            samples = max(3 * len(splits["train"]), 8 * plan.batch_size)  # the same budget for every run
            weights = tmp / f"simclr-{fraction}.pt"
            pretrain(pick(source), plan, weights, epochs=args.pretrain_epochs, seed=args.seed, workers=2)
            for name, start in (("scratch", None), ("SimCLR-pretrained", weights)):
                row = run_one(
                    name,
                    plan,
                    pick(labelled),
                    val,
                    test,
                    tmp / f"{name}-{fraction}",
                    args.epochs,
                    samples,
                    args.seed,
                    start,
                )
                row.update({"label_fraction": fraction, "labelled_cases": len(labelled), "pretrain_cases": len(source)})
                rows.append(row)
                lo, hi = row["test_auc_ci"]
                print(
                    f"{fraction:>5.0%} labels ({len(labelled)} nodules)  {name:18} test AUC {row['test_auc']:.3f} "
                    f"({lo:.3f}-{hi:.3f})  best val AUC {row['best_val_auc']:.3f} at epoch {row['best_epoch']}, "
                    f"95% of it by epoch {row['epochs_to_95pct_of_best']}",
                    flush=True,
                )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transfer_learning.json").write_text(json.dumps({"epochs": args.epochs, "rows": rows}, indent=1))
    print(f"JSON: {args.out / 'transfer_learning.json'}")


if __name__ == "__main__":
    main()
