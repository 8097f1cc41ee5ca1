"""Does self-supervised pretraining help when labels are scarce? Scratch against SimCLR starts, same budget.

    python benchmarks/transfer_learning.py --datasets pneumonia --seeds 0 1 2     # real chest X-rays
    python benchmarks/transfer_learning.py --data data/nodules.csv --seeds 0      # any classification set
    python benchmarks/transfer_learning.py --quick                                # the suite: a generated set

Split by patient as `medmap train` does (train / validation / test, the seed choosing it). With 10 % and
100 % of the training patients' labels, the plan's network is trained (a) from scratch, (b) from SimCLR
weights pretrained (`medmap.training.pretrain`) with the strong views (the plan's augmentation at 1.5x:
size, brightness and contrast changed) and (c) with geometric views (flips and rotations only, the
cues of size and density kept), each pretrained on the *unlabelled rest* of the training images (for
100 %, on the same training images with their labels ignored). Same epochs, same samples per epoch,
same seed, same validation and test cases for every arm. Reported per arm: test AUC (mean over seeds),
and against scratch the paired difference across seeds with its bootstrap interval (cases resampled
within each seed, `campaign.across_seeds`); "ahead" only where the interval excludes zero.

Datasets: ``pneumonia`` (PneumoniaMNIST, real) and ``isic`` (ISIC dermoscopy, real) as
`campaign.prepare` writes them, ``--data PATH`` for any other, ``quick`` (generated) for the suite.
There is no ImageNet file to start from here (nothing is downloaded); `--pretrained` reading one in
torchvision's names is tested in tests/models.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from campaign import ROOT, across_seeds, prepare, verdict
from campaign import save as save_campaign
from medmap.data.cache import PreprocessedCache
from medmap.data.layouts import read_dataset
from medmap.data.loader import PatchDataset
from medmap.data.splits import kfold, train_val_test
from medmap.tasks import task_for
from medmap.training.config import TrainConfig
from medmap.training.pretrain import pretrain
from medmap.training.run import prepare_plan
from medmap.training.trainer import Trainer
from medmap.tuning.scoring import auc

ARMS = ("scratch", "SimCLR, strong views", "SimCLR, geometric views")
VIEWS = {"SimCLR, strong views": "strong", "SimCLR, geometric views": "geometric"}


def labelled_subset(train, fraction: float, seed: int):
    """A patient-grouped, class-stratified ``fraction`` of the training cases (the rest: unlabelled)."""
    if fraction >= 1.0:
        return train, []
    k = max(2, round(1 / fraction))
    fold = kfold(train, k, seed=seed)[0]
    return fold.val, fold.train


def run_one(plan, train, val, test, run_dir, epochs, samples, seed, pretrained=None) -> dict:
    config = TrainConfig(epochs=epochs, samples_per_epoch=samples, seed=seed, patience=epochs,
                         pretrained=str(pretrained) if pretrained else None)  # fmt: skip
    started = time.perf_counter()
    trainer = Trainer(task_for(plan), plan, config, run_dir)
    result = trainer.fit(train, val)
    model = trainer.task.build_network(plan, config.dropout)
    model.load_state_dict(torch.load(run_dir / "checkpoints" / "best.pt"))
    probabilities, labels = trainer.predict(model, PatchDataset(test, plan, task_for(plan), train=False))
    values = {c.case_id: [float(y), *map(float, p)] for c, y, p in zip(test, labels, probabilities, strict=True)}
    curve = [h["val"].get("auc", float("nan")) for h in result["history"]]
    best = float(np.nanmax(curve)) if np.isfinite(curve).any() else float("nan")  # one class in val: no AUC
    reach = next((i + 1 for i, v in enumerate(curve) if v >= 0.95 * best), None)
    return {
        "test_auc": auc(list(values.values())),
        "best_val_auc": best,
        "best_epoch": result["best_epoch"] + 1,
        "epochs_to_95pct_of_best": reach,
        "val_curve": curve,
        "seconds": round(time.perf_counter() - started, 1),
        "values": values,
    }


def run_seed(dataset, seed: int, fractions, epochs: int, pretrain_epochs: int, work: Path) -> list[dict]:
    plan = prepare_plan(dataset, overrides=[], device="cpu", progress=False)
    splits = train_val_test(dataset.cases, seed=seed)
    cache = PreprocessedCache(work / "cache", plan, task_for(plan))
    cached = {c.case_id: c for c in cache.build([c for s in splits.values() for c in s])}
    pick = lambda cases: [cached[c.case_id] for c in cases]  # noqa: E731
    val, test = pick(splits["val"]), pick(splits["test"])
    samples = max(3 * len(splits["train"]), 8 * plan.batch_size)  # the same budget for every run
    rows = []
    for fraction in fractions:
        labelled, unlabelled = labelled_subset(splits["train"], fraction, seed)
        source = unlabelled or splits["train"]
        for arm in ARMS:
            weights = None
            pretrain_seconds = 0.0
            if arm in VIEWS:
                weights = work / f"simclr-{VIEWS[arm]}-{fraction}-s{seed}.pt"
                started = time.perf_counter()
                pretrain(pick(source), plan, weights, views=VIEWS[arm], epochs=pretrain_epochs, seed=seed, workers=2)
                pretrain_seconds = round(time.perf_counter() - started, 1)
            row = run_one(plan, pick(labelled), val, test, work / f"{arm}-{fraction}-s{seed}", epochs, samples, seed,
                          weights)  # fmt: skip
            row.update(arm=arm, seed=seed, label_fraction=fraction, labelled_cases=len(labelled),
                       pretrain_cases=len(source) if weights else 0, pretrain_seconds=pretrain_seconds)  # fmt: skip
            rows.append(row)
            print(f"seed {seed}, {fraction:>4.0%} labels ({len(labelled)} cases), {arm:24} test AUC "
                  f"{row['test_auc']:.3f}  best val AUC {row['best_val_auc']:.3f} at epoch {row['best_epoch']}",
                  flush=True)  # fmt: skip
    return rows


def summarise(name: str, rows: list[dict]) -> list[dict]:
    out = []
    for fraction in sorted({r["label_fraction"] for r in rows}):
        at = [r for r in rows if r["label_fraction"] == fraction]
        scratch = {r["seed"]: r for r in at if r["arm"] == "scratch"}
        for arm in ARMS:
            mine = {r["seed"]: r for r in at if r["arm"] == arm}
            entry = {"dataset": name, "label_fraction": fraction, "arm": arm, "seeds": sorted(mine),
                     "labelled_cases": [mine[s]["labelled_cases"] for s in sorted(mine)],
                     "test_auc_mean": float(np.mean([r["test_auc"] for r in mine.values()])),
                     "test_auc_per_seed": [mine[s]["test_auc"] for s in sorted(mine)]}  # fmt: skip
            if arm != "scratch":
                pairs = [(mine[s]["values"], scratch[s]["values"]) for s in sorted(mine) if s in scratch]
                entry["minus_scratch"] = across_seeds(pairs, auc)
                entry["verdict"] = verdict(entry["minus_scratch"], arm, "scratch")
            out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["pneumonia"], help="names campaign.prepare knows")
    parser.add_argument("--data", type=Path, help="any classification dataset instead of --datasets")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--quick", action="store_true", help="a generated set, one seed, one epoch (the suite)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.seeds, args.epochs, args.pretrain_epochs, args.fractions = ["quick"], [0], 1, 1, [0.5]
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        names = [str(args.data)] if args.data else args.datasets
        named = [(n, args.data) if args.data else (n, prepare(n, args.real, work)[0]) for n in names]
        for name, path in named:
            dataset = read_dataset(path)
            mine = []
            for seed in args.seeds:
                seed_rows = run_seed(dataset, seed, args.fractions, args.epochs, args.pretrain_epochs, work / name)
                mine += seed_rows
                rows += seed_rows
                save_campaign(args.out, "transfer_learning", args.quick, {"partial": True, "summary": summary,
                                                                            "rows": rows})  # fmt: skip
            summary += summarise(name, mine)
    print(f"\n{'dataset':<12} {'labels':>6} {'start':<24} {'test AUC':>8} {'minus scratch [95% CI]':>26}  verdict")
    for s in summary:
        d = s.get("minus_scratch")
        ci = f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d and d["ci"] else ""
        print(f"{Path(s['dataset']).stem:<12} {s['label_fraction']:>6.0%} {s['arm']:<24} {s['test_auc_mean']:8.3f} "
              f"{ci:>26}  {s.get('verdict', '')}")  # fmt: skip
    path = save_campaign(args.out, "transfer_learning", args.quick,
                         {"epochs": args.epochs, "pretrain_epochs": args.pretrain_epochs, "summary": summary,
                          "rows": rows})  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
