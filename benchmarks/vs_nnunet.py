"""medmap against nnU-Net v2 at equal wall-clock training budgets, scored by the same code on the same cases.

    python benchmarks/vs_nnunet.py --budgets 300,900      # MNI152 slices (2-D), demo liver and MNI152 (3-D)
    python benchmarks/vs_nnunet.py --quick                # what the test suite runs (medmap side only
                                                          # unless .bench/nnunet exists)

nnU-Net is a peer here, never a dependency: ``--setup`` installs nnunetv2 2.8.1 into its own virtual
environment (``.bench/nnunet``) from PyPI: torch pinned to 2.13.0 (the CPU build) with torchvision
pinned beside it so pip cannot pull a CUDA torch, then torchvision removed (its PyPI build is CUDA-
linked and the standard trainer does not need it). A budget trainer (`TRAINER_SOURCE`) is written at the
top of ``nnunetv2/training/nnUNetTrainer/`` (the stock short trainers live beside variants that import
timm and crash on lookup): it times its second and third steps and, after its first epoch, sets the
epoch count, and with it the poly schedule, so that training ends within the budget, as ``medmap train
--budget`` does from its timed steps. Both tools get 25 steps per epoch on a CPU (nnU-Net's 250 would
not finish one epoch in a short 3-D budget); where fewer than five such epochs fit, nnU-Net's epochs are
shortened to a fifth of the steps that fit (one 25-step epoch of its 3-D liver plan outlasts a 5-minute
budget on 2 cores), so that it always has a model and a decayed schedule at the end. No test-time
mirroring; nnU-Net trains fold 0 of its 5 (80 % of the training cases), medmap its own 80/20 split. Each
dataset is written once in nnU-Net raw layout, which both read; every prediction on the test images is
scored by `medmap.evaluation.segmentation.case_metrics` against ``labelsTs``.

On 3-D data nnU-Net is trained in both configurations a user would try on a CPU: its default 3d_fullres
and its 2d (``--configurations`` picks; ``--tools nnU-Net`` adds a configuration to an earlier run's
medmap figure without training medmap again).

Datasets: the demo liver (3-D CT, liver + tumour: Dice, HD95, tumour lesion recall and false-positive
components per case), MNI152 axial slices (2-D MR in (X, Y, 1) NIfTI, grey and white matter) and
MNI152 whole brains, each deformed and acquired its own way (3-D MR at 2 mm, the same labels).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from brain_data import slice_set, volume_set
from medmap import run_folder as runs
from medmap.evaluation.segmentation import case_metrics
from medmap.io.load import load
from medmap.run_folder import RunFolder

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "nnunet"
NNUNET = "nnunetv2==2.8.1"
STEPS_PER_EPOCH = 25
TRAINER = "nnUNetTrainer_medmapBudget"
LESION_CLASSES = {"tumour"}  # classes scored lesion by lesion too (recall, false-positive components)
TRAINER_SOURCE = '''"""Written by medmap's benchmarks/vs_nnunet.py: nnU-Net's trainer with a wall-clock budget."""
import os
import time

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_medmapBudget(nnUNetTrainer):
    def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
        # nnU-Net reads the subclass's own argument names back (locals()), so they are spelled out
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget = float(os.environ["MEDMAP_BUDGET_SECONDS"])
        self.num_iterations_per_epoch = int(os.environ.get("MEDMAP_STEPS_PER_EPOCH", "250"))
        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
        self.num_epochs = 100000  # replaced after the first epoch

    def run_training(self):
        # Steps 2-3 are timed (the first carries the loaders' start). Where the budget holds fewer than
        # five epochs of the set length, epochs are shortened to a fifth of the steps that fit, so that
        # the poly schedule still decays within the budget; after the first epoch its real time (with
        # validation) sets the epoch count and the schedule's length.
        self.on_train_start()
        started = time.perf_counter()
        epoch = self.current_epoch
        while epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            outputs = []
            while len(outputs) < self.num_iterations_per_epoch:
                outputs.append(self.train_step(next(self.dataloader_train)))
                if epoch == 0 and len(outputs) == 1:
                    first_step_done = time.perf_counter()
                if epoch == 0 and len(outputs) == 3:
                    per_step = (time.perf_counter() - first_step_done) / 2 * 1.1  # 10 % for validation
                    fits = int(self.budget // per_step)
                    if fits < 5 * self.num_iterations_per_epoch:
                        self.num_iterations_per_epoch = max(3, fits // 5)
                        self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
            self.print_to_log_file(f"medmap budget: {len(outputs)} training steps this epoch")
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                steps = range(self.num_val_iterations_per_epoch)
                self.on_validation_epoch_end([self.validation_step(next(self.dataloader_val)) for _ in steps])
            self.on_epoch_end()
            epoch += 1
            if epoch == 1:
                spent = time.perf_counter() - started
                per_epoch = spent / len(outputs) * self.num_iterations_per_epoch
                self.num_epochs = 1 + max(0, int((self.budget - spent) // per_epoch))
                self.lr_scheduler.max_steps = self.num_epochs
        self.on_train_end()

    def perform_actual_validation(self, *args, **kwargs):
        pass  # the benchmark scores the test images itself
'''


def setup() -> Path:
    """The nnU-Net environment (created once) with the budget trainer in place; its ``bin`` folder."""
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").is_file():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "torch==2.13.0"], check=True)
        constraints = VENV / "constraints.txt"
        constraints.write_text("torch==2.13.0\ntorchvision==0.28.0\n")
        subprocess.run([*pip, "-c", str(constraints), NNUNET], check=True)
        subprocess.run([str(python), "-m", "pip", "uninstall", "--quiet", "-y", "torchvision"], check=True)
        (VENV / ".installed").write_text(NNUNET)
    found = subprocess.run(
        [str(python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    )
    target = Path(found.stdout.strip()) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    if not target.is_file() or target.read_text() != TRAINER_SOURCE:
        target.write_text(TRAINER_SOURCE)
    return VENV / "bin"


def to_nnunet_raw(msd: Path, raw: Path, dataset_id: int, name: str) -> Path:
    """An MSD folder (medmap's writer) as nnU-Net raw ``DatasetNNN_Name`` (imagesTs and labelsTs kept)."""
    spec = json.loads((msd / "dataset.json").read_text())
    root = raw / f"Dataset{dataset_id:03d}_{name}"
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for entry in spec["training"]:
        case = Path(entry["image"]).name.removesuffix(".nii.gz")
        shutil.copy(msd / entry["image"], root / "imagesTr" / f"{case}_0000.nii.gz")
        shutil.copy(msd / entry["label"], root / "labelsTr" / f"{case}.nii.gz")
    for entry in spec["test"]:
        case = Path(entry).name.removesuffix(".nii.gz")
        shutil.copy(msd / entry, root / "imagesTs" / f"{case}_0000.nii.gz")
        shutil.copy(msd / "labelsTs" / f"{case}.nii.gz", root / "labelsTs" / f"{case}.nii.gz")
    labels = {v: int(k) for k, v in spec["labels"].items()}
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": spec["modality"]["0"]},
                "labels": labels,
                "numTraining": len(spec["training"]),
                "file_ending": ".nii.gz",
                "name": name,
            },
            indent=1,
        )
    )
    return root


def score(predictions: Path, dataset: Path) -> dict:
    """Mean test Dice / HD95 per class and lesion counts, by medmap's metric code, for any tool's output."""
    labels = {int(v): k for k, v in json.loads((dataset / "dataset.json").read_text())["labels"].items()}
    cases = {}
    for truth_path in sorted((dataset / "labelsTs").glob("*.nii.gz")):
        truth = load(truth_path)
        predicted = load(predictions / truth_path.name)
        cases[truth_path.name] = case_metrics(predicted.array, truth.array, truth.spacing, labels)
    out = {}
    for name in [labels[k] for k in sorted(labels) if k]:
        dice = [c["classes"][name]["dice"] for c in cases.values()]
        hd95 = [c["classes"][name]["hd95_mm"] for c in cases.values()]
        out[name] = {
            "dice": round(float(np.nanmean(dice)), 4),
            "hd95_mm": round(float(np.nanmean([h for h in hd95 if h is not None])), 2) if any(hd95) else None,
        }
        lesions = [c["lesions"][name] for c in cases.values() if name in c["lesions"]]
        if lesions and name in LESION_CLASSES:
            found = sum(lesion["detected"] for lesion in lesions)
            total = sum(lesion["lesions"] for lesion in lesions)
            out[name]["lesion_recall"] = round(found / total, 3) if total else None
            out[name]["false_positives_per_case"] = round(
                sum(lesion["false_positives"] for lesion in lesions) / len(lesions), 2
            )
    out["mean_dice"] = round(float(np.mean([v["dice"] for v in out.values()])), 4)
    return out


def checked(command: list, **kwargs) -> None:
    """Run a tool; on failure stop with the command and the end of what it printed, not a bare exit code."""
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise SystemExit(f"{Path(str(command[0])).name} failed (exit {done.returncode}):\n{tail}")


def run_medmap(dataset: Path, work: Path, budget: float, seed: int) -> dict:
    run = work / f"medmap-{int(budget)}"
    started = time.perf_counter()
    command = [
        sys.executable, "-m", "medmap", "train", str(dataset), "-o", str(run), "--budget", f"{budget}s",
        "--seed", str(seed), "--workers", "1",
    ]  # fmt: skip
    checked(command)
    folder = RunFolder(run)
    history = folder.history
    return {
        "train_seconds": round(sum(h["seconds"] for h in history), 1),
        "epochs": len(history),
        "steps": len(history) * folder.read(runs.BUDGET)["steps_per_epoch"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "test": score(run / "predictions_test", dataset),
    }


def run_nnunet(
    bin_dir: Path, dataset: Path, dataset_id: int, configuration: str, work: Path, budget: float, steps: int
) -> dict:
    env = {
        **os.environ,
        "nnUNet_raw": str(dataset.parent),
        "nnUNet_preprocessed": str(work / "nnunet_preprocessed"),
        "nnUNet_results": str(work / f"nnunet_results-{int(budget)}"),
        "nnUNet_n_proc_DA": "1",
        "MEDMAP_BUDGET_SECONDS": str(budget),
        "MEDMAP_STEPS_PER_EPOCH": str(steps),
    }
    started = time.perf_counter()
    if not (work / "nnunet_preprocessed" / dataset.name / f"nnUNetPlans_{configuration}").is_dir():
        checked(
            [bin_dir / "nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", "2"], env=env
        )
    t0 = time.perf_counter()
    checked(
        [bin_dir / "nnUNetv2_train", str(dataset_id), configuration, "0", "-tr", TRAINER, "-device", "cpu"], env=env
    )
    trained = time.perf_counter() - t0
    out = work / f"nnunet-pred-{configuration}-{int(budget)}"
    checked(
        [
            bin_dir / "nnUNetv2_predict", "-i", str(dataset / "imagesTs"), "-o", str(out), "-d", str(dataset_id),
            "-c", configuration, "-f", "0", "-tr", TRAINER, "-device", "cpu", "--disable_tta",
            "-chk", "checkpoint_final.pth", "-npp", "1", "-nps", "1",
        ],
        env=env,
    )  # fmt: skip
    results = work / f"nnunet_results-{int(budget)}" / dataset.name / f"{TRAINER}__nnUNetPlans__{configuration}"
    log = sorted(results.rglob("training_log_*.txt"))
    text = log[-1].read_text() if log else ""
    steps = [int(n) for n in re.findall(r"medmap budget: (\d+) training steps", text)]
    return {
        "train_seconds_incl_start": round(trained, 1),
        "epochs": text.count("Epoch time") or None,
        "steps": sum(steps) or None,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "test": score(out, dataset),
    }


def _liver(work: Path, quick: bool, seed: int) -> Path:
    from medmap.data.demo import SMALL, write_demo_data

    write_demo_data(work / "demo", seed=seed, **({"size": SMALL} if quick else {}))
    return work / "demo" / "liver"


# name: nnU-Net dataset id and name, the configurations a user would train (for 3-D data its 3d_fullres and
# its 2d: on a CPU the 2-D network's steps are far cheaper), and how the MSD folder is made
DATASETS = {
    "liver": (501, "DemoLiver", ["3d_fullres", "2d"], _liver),
    "brain2d": (
        502, "BrainSlices", ["2d"],
        lambda work, quick, seed: slice_set(
            work / "brain_msd", n_train=8 if quick else 40, n_test=3 if quick else 10, seed=seed
        ),
    ),
    "brain3d": (
        503, "BrainVolumes", ["3d_fullres", "2d"],
        lambda work, quick, seed: volume_set(
            work / "brain_msd", n_train=6 if quick else 16, n_test=2 if quick else 6, seed=seed
        ),
    ),
}  # fmt: skip


def build(name: str, work: Path, quick: bool, seed: int) -> tuple[Path, int, list[str]]:
    """The dataset in nnU-Net raw layout (made once per work folder: a later run adds to an earlier one's
    figures), its id, and the nnU-Net configurations to train on it."""
    if name not in DATASETS:
        raise SystemExit(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    dataset_id, nnunet_name, configurations, make = DATASETS[name]
    root = work / "nnunet_raw" / f"Dataset{dataset_id:03d}_{nnunet_name}"
    made = work / "nnunet_raw" / f"{root.name}.made.json"  # beside the dataset: nnU-Net reads its folder
    recipe = {"quick": quick, "seed": seed}
    if not (made.is_file() and json.loads(made.read_text()) == recipe):
        if root.exists():
            raise SystemExit(f"{root} exists and was made otherwise: choose another --work")
        to_nnunet_raw(make(work, quick, seed), work / "nnunet_raw", dataset_id, nnunet_name)
        made.write_text(json.dumps(recipe))
    return root, dataset_id, configurations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="300,900", help="training seconds, comma-separated")
    parser.add_argument("--datasets", default="brain2d,liver,brain3d")
    parser.add_argument("--setup", action="store_true", help="install nnU-Net into .bench/nnunet if missing")
    parser.add_argument("--quick", action="store_true", help="small data, one short budget (the test suite)")
    parser.add_argument("--tools", default="medmap,nnU-Net", help="which of medmap and nnU-Net to run")
    parser.add_argument("--configurations", default=None, help="nnU-Net's, comma-separated (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work", type=Path, default=None, help="keep the work folder here")
    args = parser.parse_args()
    budgets = [20.0] if args.quick else [float(b) for b in args.budgets.split(",")]
    tools = args.tools.split(",")
    bin_dir = setup() if "nnU-Net" in tools and (args.setup or (VENV / ".installed").is_file()) else None
    if bin_dir is None:
        print("nnU-Net not installed (run with --setup): medmap side only")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.datasets.split(","):
            dataset, dataset_id, configurations = build(name, work / name, args.quick, args.seed)
            if args.configurations:
                configurations = [c for c in configurations if c in args.configurations.split(",")]
            for budget in budgets:
                entry: dict = {"dataset": name, "budget_seconds": budget}
                if "medmap" in tools:
                    entry["medmap"] = run_medmap(dataset, work / name, budget, args.seed)
                for configuration in configurations if bin_dir is not None else []:
                    steps = 5 if args.quick else STEPS_PER_EPOCH  # quick: nnU-Net's one epoch would outlast 20 s
                    folder = work / name
                    run = run_nnunet(bin_dir, dataset, dataset_id, configuration, folder, budget, steps)
                    entry[f"nnU-Net {configuration}"] = run
                results.append(entry)
                print(json.dumps(entry))
    print(f"\n{'dataset':8} {'budget':>7} {'tool':18} {'steps':>6} {'mean Dice':>9}  per class")
    for entry in results:
        for tool in [k for k in entry if k == "medmap" or k.startswith("nnU-Net")]:
            r = entry[tool]
            classes = {k: v for k, v in r["test"].items() if k != "mean_dice"}
            detail = "; ".join(
                f"{k} {v['dice']:.3f}"
                + (
                    f" (recall {v['lesion_recall']}, FP/case {v['false_positives_per_case']})"
                    if "lesion_recall" in v
                    else ""
                )
                for k, v in classes.items()
            )
            print(
                f"{entry['dataset']:8} {entry['budget_seconds']:6.0f}s {tool:18} {r.get('steps') or '-':>6} "
                f"{r['test']['mean_dice']:9.3f}  {detail}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vs_nnunet.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
