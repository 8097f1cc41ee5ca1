"""medmap's default classifier against the loop a user would otherwise write, at equal training time.

    python benchmarks/classifiers.py                      # MNI152 patch set + demo nodules, 3 min each
    python benchmarks/classifiers.py --budget 60 --quick  # what the test suite runs

Contenders on each dataset, all trained on the same training split and scored on the same test split:

- **medmap**: ``train_run`` with its automatic plan and ``--budget`` (the time covers training only:
  planning, caching and evaluation are outside it, as they are for the others).
- **MONAI ResNet-18, plain loop**: ``monai.networks.nets.resnet18`` trained by a minimal well-tuned loop
  (Adam 1e-3, batch 128 for 2-D patches and 16 for 3-D cubes, random flips, cross-entropy) for the same
  wall-clock time, on the same inputs medmap feeds its network (the cached patches, so the comparison is
  about training, not input).
- **logistic regression on raw pixels** (scikit-learn): the floor any CNN must beat.

Datasets: a real-image 3-class 32x32 patch set in MedMNIST npz layout built from the MNI152 template
(`brain_data.patch_set`; brightness is the cue), and the demo lung nodules (3-D cubes around each nodule,
benign vs malignant, CSV manifest with positions). Accuracy and macro AUC on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from brain_data import patch_set
from medmap import run_folder as runs
from medmap.data.cache import PreprocessedCache
from medmap.data.layouts import read_dataset
from medmap.plan import Plan
from medmap.run_folder import RunFolder
from medmap.tasks import task_for
from medmap.tasks.classification.inputs import classifier_input
from medmap.training.config import TrainConfig
from medmap.training.run import train_run


def arrays(run: Path, data: Path, split: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """The inputs medmap's network sees for ``split`` of the run (normalised, cut, as float32) and labels."""
    plan = Plan.load(run / "plan.json")
    ids = json.loads((run / "split.json").read_text())[split]
    by_id = {c.case_id: c for c in read_dataset(data).cases}
    cases = PreprocessedCache(cache, plan, task_for(plan)).build([by_id[i] for i in ids], workers=0)
    x = np.stack([classifier_input(c.arrays()[0], plan) for c in cases]).astype(np.float32)
    if plan.input_mode in ("2d", "2.5d"):
        x = x[:, :, 0]
    return x, np.array([c.label for c in cases])


def plain_monai(train, test, seconds: float, seed: int) -> dict:
    from monai.networks.nets import resnet18

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    (x, y), (xt, yt) = train, test
    dims = x.ndim - 2
    classes = int(max(y.max(), yt.max())) + 1
    model = resnet18(spatial_dims=dims, n_input_channels=x.shape[1], num_classes=classes)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y).long()
    # 128 is the usual 2-D MedMNIST batch; for 3-D cubes on a CPU a batch of 128 buys two steps in a short
    # budget, so the loop a user would tune takes 16 (more, smaller steps)
    size = 128 if dims == 2 else 16
    start, steps = time.perf_counter(), 0
    model.train()
    while time.perf_counter() - start < seconds:
        idx = torch.from_numpy(rng.choice(len(xs), min(size, len(xs)), replace=False))
        batch = xs[idx]
        for axis in range(2, batch.dim()):  # random flips, per batch and axis
            if rng.random() < 0.5:
                batch = batch.flip(axis)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch), ys[idx]).backward()
        optimizer.step()
        steps += 1
    model.eval()
    with torch.no_grad():
        probs = torch.cat([model(torch.from_numpy(xt[i : i + 256])).softmax(1) for i in range(0, len(xt), 256)])
    elapsed = round(time.perf_counter() - start, 1)
    return scores(yt, probs.numpy()) | {"steps": steps, "batch": size, "train_seconds": elapsed}


def logistic(train, test) -> dict:
    (x, y), (xt, yt) = train, test
    start = time.perf_counter()
    probabilities = logistic_probabilities(x, y, xt)
    return scores(yt, probabilities) | {"train_seconds": round(time.perf_counter() - start, 1)}


def logistic_probabilities(x: np.ndarray, y: np.ndarray, xt: np.ndarray) -> np.ndarray:
    """Class probabilities of ``xt`` from logistic regression on the standardised raw pixels of ``x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    model.fit(x.reshape(len(x), -1), y)
    return model.predict_proba(xt.reshape(len(xt), -1))


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else roc_auc_score(y, probs, multi_class="ovr")
    return {"accuracy": round(float(np.mean(probs.argmax(1) == y)), 4), "auc": round(float(auc), 4)}


def compare(name: str, data: Path, work: Path, seconds: float, seed: int) -> dict:
    run, cache = work / f"{name}-run", work / f"{name}-cache"
    t0 = time.perf_counter()
    summary = train_run(data, run, config=TrainConfig(budget_seconds=seconds, seed=seed, epochs=1000), cache_root=cache)
    folder = RunFolder(run)
    budget = folder.read(runs.BUDGET)
    m = summary["metrics"]
    medmap = {
        "accuracy": round(float(m["accuracy"]), 4),
        "auc": round(float(m["auc"]), 4),
        "epochs": budget["epochs"],
        "samples": budget["samples"],
        "train_seconds": round(sum(h["seconds"] for h in folder.history), 1),
        "wall_seconds_all_steps": round(time.perf_counter() - t0, 1),
        "normalization": Plan.load(run / "plan.json").normalization.scheme,
    }
    train, test = arrays(run, data, "train", cache), arrays(run, data, "test", cache)
    return {
        "dataset": name,
        "train_cases": len(train[1]),
        "test_cases": len(test[1]),
        "budget_seconds": seconds,
        "results": {
            "medmap": medmap,
            "MONAI ResNet-18 plain loop": plain_monai(train, test, seconds, seed),
            "logistic regression (pixels)": logistic(train, test),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per contender")
    parser.add_argument("--quick", action="store_true", help="small sets and a short budget (the test suite)")
    parser.add_argument("--datasets", default="brain,nodules")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    budget = min(args.budget, 10.0) if args.quick else args.budget  # quick: the suite checks it runs, not figures
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.datasets.split(","):
            if name == "brain":
                counts = {"train": 60, "val": 20, "test": 30} if args.quick else None
                data = patch_set(work / "brain_patches.npz", per_class=counts, seed=args.seed)
            elif name == "nodules":
                from medmap.data.demo import SMALL, write_demo_data

                write_demo_data(work / "demo", seed=args.seed, **({"size": SMALL} if args.quick else {}))
                data = work / "demo" / "nodules.csv"
            else:
                raise SystemExit(f"unknown dataset {name!r}")
            out.append(compare(name, data, work, budget, args.seed))
    print(f"\nclassifiers at equal training time ({budget:.0f} s each), test split")
    print(f"{'dataset':10} {'contender':32} {'accuracy':>9} {'AUC':>7}")
    for entry in out:
        for contender, r in entry["results"].items():
            print(f"{entry['dataset']:10} {contender:32} {r['accuracy']:9.3f} {r['auc']:7.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classifiers.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
