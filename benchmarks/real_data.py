"""medmap on real patients' images and human labels, beside what a user would otherwise pick, at equal time.

    python benchmarks/real_data.py                          # CHASE_DB1, PneumoniaMNIST, ISIC; seeds 0 1 2
    python benchmarks/real_data.py --datasets chase --seeds 0 --budget-for chase=240
    python benchmarks/real_data.py --quick                  # generated stand-ins, one seed (the suite)

Every arm trains on the same cases and is scored on the same test cases: medmap is run as a user runs it
(``medmap train DATA -o RUN --budget B --seed S``, its split chosen by the seed) and every other arm is
given that run's ``split.json``. The budget is training seconds (medmap's ``--budget`` covers training
and its validations; so does each peer's clock). Per seed the difference medmap - arm is paired by test
case; across seeds it is the mean of the per-seed differences with a bootstrap that resamples the cases
within each seed (``campaign.across_seeds``). "medmap ahead" / "<arm> ahead" only where that interval
excludes zero; otherwise a tie.

Arms, segmentation (mean foreground Dice per test image):
- **medmap**: the default plan.
- **MONAI UNet, tutorial loop**: MONAI's 2-D segmentation tutorial as it is written
  (``2d_segmentation/torch/unet_training_dict.py``): ``ScaleIntensityd``, ``RandCropByPosNegLabeld``
  (96x96, pos 1, neg 1, 4 samples), ``RandRotate90d``; ``UNet(channels=(16, 32, 64, 128, 256), strides 2,
  num_res_units=2)``; ``DiceLoss(sigmoid=True)``; Adam 1e-3; batch 2 images; validation every 2 epochs
  by sliding-window Dice on the validation images, the best kept; test by sliding window (96x96, 4 a batch),
  sigmoid > 0.5. Only the input channels changed (3 for a colour photograph).
- **nnU-Net v2, 2d** (where ``.bench/nnunet`` is installed: ``python benchmarks/vs_nnunet.py --setup``;
  ``--no-nnunet`` leaves it out): the run's train and val cases written as nnU-Net raw pictures (RGB PNG,
  0/1 labels; the test cases only in ``imagesTs``, so its fingerprint never sees them), planned and
  preprocessed by ``nnUNetv2_plan_and_preprocess``, fold 0 of ``splits_final.json`` set to the run's own
  train / val, trained by vs_nnunet's budget trainer for the same seconds, predicted with its default
  test-time mirroring. Two configurations: its own plan (``2d``: 1024x1024 x 2 on CHASE_DB1) and one at
  medmap's CPU step size (256x256 x 2, a plans entry inheriting from ``2d`` as nnU-Net's docs describe,
  the U-Net cut to the stages its topology rule gives that patch). Not run: its cross-validated
  post-processing (the budget trainer skips the validation it is chosen from). nnU-Net takes no seed.
  ``--nnunet-onto JSON`` adds these arms to an earlier campaign's rows without training the rest again.
- **classical floor**: a black top-hat of the green channel (vessels are dark there; disc radius
  width / 120), each image's top p % of its field of view called vessel, p chosen on the training images.
- **second observer** (CHASE_DB1's ``*_2ndHO.png``): the human reference, scored against the first.

Arms, classification (AUC over the test cases):
- **medmap**: the default plan.
- **MONAI DenseNet-121, tutorial loop**: MONAI's MedNIST tutorial (``2d_classification/mednist_tutorial``)
  as it is written: ``DenseNet121``, ``RandRotate(pi/12)``, ``RandFlip(axis 0)``, ``RandZoom(0.9-1.1)``,
  cross-entropy, Adam, validation AUC after every epoch with the best kept, argmax for accuracy. Two
  departures, both in the peer's favour: its learning rate is the tutorial's 1e-5 and 1e-3, each trained
  for the whole budget and the one with the better validation AUC reported (both are in the JSON); its
  batch is the one medmap's plan took on this machine (the tutorial's 300 is sized for a GPU). Inputs
  under 32 pixels a side (PneumoniaMNIST's 28) take MONAI's ResNet-18 instead, MedMNIST's own baseline
  (DenseNet-121 pools 28 pixels to nothing). The peer reads the same normalised, resized inputs medmap's
  network sees (its cache), so the comparison is about training.
- **logistic regression on the pixels** (scikit-learn): the floor.

Datasets: as `campaign.prepare` writes them (``chase``, ``pneumonia``, ``isic``; ``quick-vessels`` and
``quick`` for the suite). BraTS (6 volumes: a test split of one or two) and the pyradiomics lesions (four
volumes of four organs) are too small to hold a paired interval and are left out.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from campaign import ROOT, across_seeds, medmap, prepare, second_observers, verdict
from campaign import save as save_campaign
from classifiers import arrays, logistic_probabilities

BUDGETS = {"chase": 240.0, "pneumonia": 90.0, "isic": 120.0, "quick-vessels": 12.0, "quick": 10.0}
QUICK_SETS = ["batch_size=8", "iterations_per_epoch=4"]  # short epochs, so that a busy CI still validates


# --- medmap -----------------------------------------------------------------------------------------
def run_medmap(name: str, path: Path, task: str, seed: int, budget: float, work: Path, sets) -> tuple[Path, dict]:
    from medmap.run_folder import RunFolder
    from medmap.tuning.scoring import scoring_for

    run = work / "runs" / f"{name}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    extra = [a for s in sets for a in ("--set", s)]
    wall = medmap("train", path, "-o", run, "--task", task, "--seed", seed, "--budget", f"{budget:.0f}s", *extra)
    train_seconds = sum(h["seconds"] for h in RunFolder(run).history)
    arm = {"values": scoring_for(task).read(run, "test"), "train_seconds": train_seconds, "wall_seconds": wall}
    return run, arm


def split_cases(path: Path, run: Path) -> dict[str, list]:
    """The run's train / val / test cases, in its split's order."""
    from medmap.data.layouts import read_dataset
    from medmap.run_folder import RunFolder

    by_id = {c.case_id: c for c in read_dataset(path).cases}
    return {split: [by_id[i] for i in ids] for split, ids in RunFolder(run).split_ids.items()}


# --- segmentation peers -----------------------------------------------------------------------------
def loaded(cases) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(case id, image [C, H, W] float32, mask [1, H, W] float32) of 2-D cases, as read from their files."""
    out = []
    for case in cases:
        image = case.load_image()
        mask = case.load_mask(image)
        pixels = image.array[0].astype(np.float32)
        pixels = pixels.transpose(2, 0, 1) if pixels.ndim == 3 else pixels[None]
        out.append((case.case_id, pixels, (mask.array[0] > 0)[None].astype(np.float32)))
    return out


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    total = prediction.sum() + truth.sum()
    return float(2 * np.logical_and(prediction, truth).sum() / total) if total else float("nan")


def monai_unet(train, val, test, seconds: float, seed: int) -> dict:
    """MONAI's 2-D segmentation tutorial loop for ``seconds`` of training (validations included)."""
    from monai.data import DataLoader, Dataset, list_data_collate
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceLoss
    from monai.networks.nets import UNet
    from monai.transforms import Compose, RandCropByPosNegLabeld, RandRotate90d, ScaleIntensityd
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    transform = Compose(
        [
            ScaleIntensityd(keys="img"),
            RandCropByPosNegLabeld(
                keys=["img", "seg"], label_key="seg", spatial_size=[96, 96], pos=1, neg=1, num_samples=4
            ),
            RandRotate90d(keys=["img", "seg"], prob=0.5, spatial_axes=[0, 1]),
        ]
    )
    items = [{"img": image, "seg": mask} for _, image, mask in train]
    loader = DataLoader(Dataset(items, transform), batch_size=2, shuffle=True, num_workers=0,
                        collate_fn=list_data_collate)  # fmt: skip
    model = UNet(spatial_dims=2, in_channels=train[0][1].shape[0], out_channels=1,
                 channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)  # fmt: skip
    loss_function, optimizer = DiceLoss(sigmoid=True), torch.optim.Adam(model.parameters(), 1e-3)

    def predict(image: np.ndarray) -> np.ndarray:
        scaled = (image - image.min()) / max(float(image.max() - image.min()), 1e-8)  # ScaleIntensity
        with torch.no_grad():
            logits = sliding_window_inference(torch.from_numpy(scaled[None]), (96, 96), 4, model)
        return (torch.sigmoid(logits)[0] > 0.5).numpy()

    def validation_dice() -> float:
        model.eval()
        score = float(np.nanmean([dice(predict(image), mask) for _, image, mask in val]))
        model.train()
        return score

    start, steps, epochs, best, best_state = time.perf_counter(), 0, 0, -1.0, None
    model.train()
    while time.perf_counter() - start < seconds:
        for batch in loader:
            optimizer.zero_grad()
            loss_function(model(batch["img"]), batch["seg"]).backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
        epochs += 1
        if epochs % 2 == 0 or time.perf_counter() - start >= seconds:  # the tutorial's val_interval = 2
            score = validation_dice()
            if score > best:
                best, best_state = score, copy.deepcopy(model.state_dict())
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    model.eval()
    values = {cid: dice(predict(image), mask) for cid, image, mask in test}
    return {"values": values, "train_seconds": train_seconds, "steps": steps, "epochs": epochs, "val_dice": best}


def top_hat_floor(train, test) -> dict:
    """Black top-hat of the green channel; each image's top p % of its field of view, p fitted on train."""
    started = time.perf_counter()
    fractions = np.arange(0.02, 0.301, 0.01)
    responses = {cid: _top_hat(image) for cid, image, _ in [*train, *test]}

    def segmented(cid: str, fraction: float) -> np.ndarray:
        response, field = responses[cid]
        return field & (response >= np.quantile(response[field], 1 - fraction))

    fitted = [np.nanmean([dice(segmented(cid, f), mask[0]) for cid, _, mask in train]) for f in fractions]
    best = float(fractions[int(np.nanargmax(fitted))])
    values = {cid: dice(segmented(cid, best), mask[0]) for cid, _, mask in test}
    return {"values": values, "train_seconds": time.perf_counter() - started, "fraction": best}


def _top_hat(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    green = image[1] if image.shape[0] == 3 else image[0]
    radius = max(2, round(image.shape[2] / 120))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    closed = ndimage.grey_closing(green, footprint=yy**2 + xx**2 <= radius**2)
    field = image.mean(axis=0) > 0.1 * float(image.max())  # the camera's disc, not the black surround
    return ndimage.gaussian_filter(closed - green, 1.0), field


def observer(masks: dict[str, Path], test) -> dict:
    from PIL import Image as PILImage

    values = {cid: dice(np.asarray(PILImage.open(masks[cid])) > 0, mask[0]) for cid, _, mask in test}
    return {"values": values, "train_seconds": 0.0}


def segmentation_peers(path: Path, run: Path, budget: float, seed: int, work: Path, with_nnunet: bool) -> dict:
    cases = split_cases(path, run)
    train, val, test = (loaded(cases[s]) for s in ("train", "val", "test"))
    peers = {"MONAI UNet, tutorial loop": monai_unet(train, val, test, budget, seed)}
    if with_nnunet:
        peers.update(nnunet_arms(cases, budget, seed, work))
    peers["classical floor (top-hat)"] = top_hat_floor([*train, *val], test)
    masks = second_observers(path)
    if all(masks[cid].is_file() for cid, _, _ in test):
        peers["second observer"] = observer(masks, test)
    return peers


# --- nnU-Net v2 (its own environment, .bench/nnunet) -------------------------------------------------
NNUNET_CPU_PATCH = (256, 256)  # medmap's 2-D step rule on a CPU (CPU_2D_PATCH_PIXELS), given to nnU-Net too
NNUNET_CPU_BATCH = 2


def nnunet_installed() -> bool:
    from vs_nnunet import VENV

    return (VENV / ".installed").is_file()


def write_nnunet_pictures(cases: dict[str, list], raw: Path, dataset_id: int) -> Path:
    """The run's train + val cases as nnU-Net raw 2-D pictures (RGB PNG ``_0000``, 0/1 PNG labels), its
    test cases in ``imagesTs``; test cases never enter ``imagesTr``, so nnU-Net's fingerprint never sees them."""
    import json

    from PIL import Image as PILImage

    root = raw / f"Dataset{dataset_id:03d}_Vessels"
    shutil.rmtree(root, ignore_errors=True)
    for split, folder in (("train", "Tr"), ("val", "Tr"), ("test", "Ts")):
        (root / f"images{folder}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{folder}").mkdir(parents=True, exist_ok=True)
        for case in cases[split]:
            picture = PILImage.open(str(case.images[0])).convert("RGB")
            picture.save(root / f"images{folder}" / f"{case.case_id}_0000.png")
            mask = (np.asarray(PILImage.open(str(case.mask)).convert("L")) > 0).astype(np.uint8)
            PILImage.fromarray(mask).save(root / f"labels{folder}" / f"{case.case_id}.png")
    spec = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "vessel": 1},
            "numTraining": len(cases["train"]) + len(cases["val"]), "file_ending": ".png",
            "name": "Vessels"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(spec, indent=1))
    return root


def add_cpu_configuration(plans_file: Path) -> str:
    """A configuration in nnU-Net's plans file, written the way its docs describe (a new entry that
    ``inherits_from`` the planned 2d): the planned pipeline at medmap's CPU step size, its U-Net cut to the
    stages nnU-Net's own topology rule gives that patch (pooling while the bottleneck keeps 4 pixels a side)."""
    import json

    plans = json.loads(plans_file.read_text())
    architecture = copy.deepcopy(plans["configurations"]["2d"]["architecture"])
    kwargs = architecture["arch_kwargs"]
    stages, size = 1, np.array(NNUNET_CPU_PATCH)
    for stride in kwargs["strides"][1:]:
        if (size // np.array(stride) < 4).any():
            break
        stages, size = stages + 1, size // np.array(stride)
    for key in ("features_per_stage", "kernel_sizes", "strides", "n_conv_per_stage"):
        kwargs[key] = kwargs[key][:stages]
    kwargs["n_conv_per_stage_decoder"] = kwargs["n_conv_per_stage_decoder"][: stages - 1]
    kwargs["n_stages"] = stages
    plans["configurations"]["2d_cpu"] = {"inherits_from": "2d", "patch_size": list(NNUNET_CPU_PATCH),
                                         "batch_size": NNUNET_CPU_BATCH, "architecture": architecture}  # fmt: skip
    plans_file.write_text(json.dumps(plans, indent=1))
    return "2d_cpu"


def nnunet_arms(cases: dict[str, list], budget: float, seed: int, work: Path) -> dict:
    """nnU-Net v2 trained on the run's own train / val cases (``splits_final.json`` fold 0 set to them) for
    ``budget`` seconds, in its planned 2d configuration and at medmap's CPU step size; predicted with its
    default test-time mirroring. nnU-Net takes no seed: its runs are not reproducible."""
    import json
    import os

    from PIL import Image as PILImage

    from vs_nnunet import STEPS_PER_EPOCH, TRAINER, checked, setup

    bin_dir = setup()
    dataset_id = 950 + seed
    folder = work / "nnunet" / f"s{seed}"
    root = write_nnunet_pictures(cases, folder / "raw", dataset_id)
    env = {**os.environ, "nnUNet_raw": str(folder / "raw"), "nnUNet_preprocessed": str(folder / "preprocessed"),
           "nnUNet_results": str(folder / "results"), "nnUNet_n_proc_DA": "1",
           "MEDMAP_BUDGET_SECONDS": str(budget), "MEDMAP_STEPS_PER_EPOCH": str(STEPS_PER_EPOCH)}  # fmt: skip
    shutil.rmtree(folder / "preprocessed", ignore_errors=True)
    shutil.rmtree(folder / "results", ignore_errors=True)
    checked([bin_dir / "nnUNetv2_plan_and_preprocess", "-d", dataset_id, "-c", "2d", "-np", "2"], env=env)
    preprocessed = folder / "preprocessed" / root.name
    splits = [{"train": [c.case_id for c in cases["train"]], "val": [c.case_id for c in cases["val"]]}]
    (preprocessed / "splits_final.json").write_text(json.dumps(splits))
    configurations = ["2d", add_cpu_configuration(preprocessed / "nnUNetPlans.json")]
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())["configurations"]
    arms = {}
    for configuration in configurations:
        started = time.perf_counter()
        checked([bin_dir / "nnUNetv2_train", dataset_id, configuration, "0", "-tr", TRAINER, "-device", "cpu"],
                env=env)  # fmt: skip
        trained = time.perf_counter() - started
        out = folder / f"predictions-{configuration}"
        checked([bin_dir / "nnUNetv2_predict", "-i", root / "imagesTs", "-o", out, "-d", dataset_id, "-c",
                 configuration, "-f", "0", "-tr", TRAINER, "-device", "cpu", "-chk", "checkpoint_final.pth",
                 "-npp", "1", "-nps", "1"], env=env)  # fmt: skip
        log = sorted((folder / "results").rglob(f"*__{configuration}/fold_0/training_log_*.txt"))
        text = log[-1].read_text() if log else ""
        steps = sum(int(n) for n in re.findall(r"medmap budget: (\d+) training steps", text))
        values = {}
        for case in cases["test"]:
            predicted = np.asarray(PILImage.open(out / f"{case.case_id}.png")) > 0
            values[case.case_id] = dice(predicted, np.asarray(PILImage.open(str(case.mask)).convert("L")) > 0)
        settings = plans.get(configuration, {})
        name = "nnU-Net 2d, its plan" if configuration == "2d" else "nnU-Net 2d, CPU step size"
        arms[name] = {"values": values, "train_seconds": trained, "steps": steps or None,
                      "patch_size": settings.get("patch_size", plans["2d"]["patch_size"]),
                      "batch_size": settings.get("batch_size", plans["2d"]["batch_size"])}  # fmt: skip
    return arms


# --- classification peers ---------------------------------------------------------------------------
def class_arrays(run: Path, path: Path, split: str, cache: Path):
    from medmap.run_folder import RunFolder

    x, y = arrays(run, path, split, cache)
    return x, y, RunFolder(run).split_ids[split]


def per_case(ids, labels, probabilities) -> dict:
    return {cid: [float(label), *map(float, p)] for cid, label, p in zip(ids, labels, probabilities, strict=True)}


def monai_classifier(train, val, test, seconds: float, seed: int, learning_rate: float, batch: int) -> dict:
    """MONAI's MedNIST tutorial loop for ``seconds`` of training (validations included)."""
    from monai.networks.nets import DenseNet121, resnet18
    from monai.transforms import Compose, RandFlip, RandRotate, RandZoom
    from monai.utils import set_determinism

    from medmap.tuning.scoring import auc

    set_determinism(seed=seed)
    (x, y, _), (xv, yv, _), (xt, yt, ids) = train, val, test
    classes = int(max(y.max(), yv.max(), yt.max())) + 1
    if min(x.shape[2:]) >= 32:
        model = DenseNet121(spatial_dims=2, in_channels=x.shape[1], out_channels=classes)
    else:
        model = resnet18(spatial_dims=2, n_input_channels=x.shape[1], num_classes=classes)
    transform = Compose([RandRotate(range_x=np.pi / 12, prob=0.5, keep_size=True), RandFlip(spatial_axis=0, prob=0.5),
                         RandZoom(min_zoom=0.9, max_zoom=1.1, prob=0.5)])  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), learning_rate)
    rng = np.random.default_rng(seed)

    def probabilities(images: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = [model(torch.from_numpy(images[i : i + 256])).softmax(1) for i in range(0, len(images), 256)]
        model.train()
        return torch.cat(out).numpy()

    def validation_auc() -> float:
        return auc(list(per_case(range(len(yv)), yv, probabilities(xv)).values()))

    start, steps, epochs, best, best_state = time.perf_counter(), 0, 0, -1.0, None
    model.train()
    while time.perf_counter() - start < seconds:
        order = rng.permutation(len(x))
        for first in range(0, len(order), batch):
            picked = order[first : first + batch]
            images = torch.stack([torch.as_tensor(transform(torch.from_numpy(x[i]))) for i in picked]).float()
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), torch.from_numpy(y[picked]).long()).backward()
            optimizer.step()
            steps += 1
            if time.perf_counter() - start >= seconds:
                break
        epochs += 1
        score = validation_auc()
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    values = per_case(ids, yt, probabilities(xt))
    return {"values": values, "train_seconds": train_seconds, "steps": steps, "epochs": epochs, "val_auc": best,
            "learning_rate": learning_rate, "batch": batch}  # fmt: skip


def classification_peers(path: Path, run: Path, budget: float, seed: int, work: Path) -> dict:
    from medmap.plan import Plan

    cache = work / "cache" / run.name
    train, val, test = (class_arrays(run, path, s, cache) for s in ("train", "val", "test"))
    batch = Plan.load(run / "plan.json").batch_size
    tried = [monai_classifier(train, val, test, budget, seed, rate, batch) for rate in (1e-5, 1e-3)]
    chosen = max(tried, key=lambda r: r["val_auc"])  # chosen on validation, never on the test cases
    chosen = {**chosen, "tried": [{k: r[k] for k in ("learning_rate", "val_auc", "steps")} for r in tried]}
    started = time.perf_counter()
    probabilities = logistic_probabilities(np.concatenate([train[0], val[0]]), np.concatenate([train[1], val[1]]),
                                           test[0])  # fmt: skip
    floor = {"values": per_case(test[2], test[1], probabilities), "train_seconds": time.perf_counter() - started}
    return {"MONAI DenseNet-121, tutorial loop": chosen, "logistic regression (pixels)": floor}


# --- the campaign -----------------------------------------------------------------------------------
def run_seed(name: str, path: Path, task: str, seed: int, budget: float, work: Path, sets, with_nnunet) -> dict:
    run, medmap_arm = run_medmap(name, path, task, seed, budget, work, sets)
    if task == "segmentation":
        peers = segmentation_peers(path, run, budget, seed, work, with_nnunet)
    else:
        peers = classification_peers(path, run, budget, seed, work)
    arms = scored(task, {"medmap": medmap_arm, **peers})
    return {"dataset": name, "seed": seed, "task": task, "budget_seconds": budget, "arms": arms}


def scored(task: str, arms: dict) -> dict:
    """Each arm with its test figure and the commit it was measured at."""
    from campaign import commit
    from medmap.tuning.scoring import scoring_for

    statistic = scoring_for(task).statistic
    for arm in arms.values():
        arm["test"] = statistic(list(arm["values"].values()))
        arm.setdefault("measured", {"date": time.strftime("%Y-%m-%d"), "commit": commit()})
    return arms


def add_nnunet(row: dict, path: Path, work: Path) -> dict:
    """nnU-Net's arms added to a row measured earlier, on that row's own split (its medmap run folder)."""
    run = work / "runs" / f"{row['dataset']}-s{row['seed']}"
    cases = split_cases(path, run)
    if {c.case_id for c in cases["test"]} != set(row["arms"]["medmap"]["values"]):
        raise SystemExit(f"{run}: its split is not the one of the {row['dataset']} seed {row['seed']} row")
    added = scored(row["task"], nnunet_arms(cases, row["budget_seconds"], row["seed"], work))
    return {**row, "arms": {**row["arms"], **added}}


def measured(row: dict, arm: str) -> str:
    """When and at which commit an arm of a row was measured (rows before 12-04 carry it for all arms)."""
    stamp = row["arms"][arm].get("measured") or row.get("measured") or {}
    return f"{stamp.get('date', '?')} {stamp.get('commit', '?')}"


def summarise(name: str, task: str, rows: list[dict]) -> dict:
    from medmap.tuning.scoring import scoring_for

    scoring = scoring_for(task)
    arms = {}
    for arm in rows[0]["arms"]:
        entry = {
            "test_mean": float(np.mean([r["arms"][arm]["test"] for r in rows])),
            "per_seed": [r["arms"][arm]["test"] for r in rows],
            "train_seconds": float(np.mean([r["arms"][arm]["train_seconds"] for r in rows])),
            "measured": sorted({measured(r, arm) for r in rows}),
        }
        if arm != "medmap":
            pairs = [(r["arms"]["medmap"]["values"], r["arms"][arm]["values"]) for r in rows]
            entry["medmap_minus_arm"] = across_seeds(pairs, scoring.statistic)
            entry["verdict"] = verdict(entry["medmap_minus_arm"], "medmap", arm)
        arms[arm] = entry
    test_cases = [len(r["arms"]["medmap"]["values"]) for r in rows]
    return {"dataset": name, "task": task, "metric": scoring.metric, "seeds": [r["seed"] for r in rows],
            "budget_seconds": rows[0]["budget_seconds"], "test_cases": test_cases, "arms": arms}  # fmt: skip


NNUNET_MISSING = "not installed (python benchmarks/vs_nnunet.py --setup installs it into .bench/nnunet)"


def nnunet_onto(results: Path, datasets: list[str], data: Path, work: Path) -> tuple[list, list, list]:
    """An earlier campaign's rows, nnU-Net's arms added to those of ``datasets``, and the summaries redone."""
    import json

    if not nnunet_installed():
        raise SystemExit(f"nnU-Net {NNUNET_MISSING}")
    earlier = json.loads(results.read_text())
    rows = []
    for row in earlier["runs"]:
        if row["dataset"] in datasets and row["task"] == "segmentation":
            path, _ = prepare(row["dataset"], data, work)
            row = add_nnunet(row, path, work)
            tests = ", ".join(f"{arm} {a['test']:.3f}" for arm, a in row["arms"].items() if arm.startswith("nnU"))
            print(f"{row['dataset']} seed {row['seed']}: {tests}", flush=True)
        rows.append(row)
    names = list(dict.fromkeys(r["dataset"] for r in rows))
    summary = []
    for name in names:
        mine = [r for r in rows if r["dataset"] == name]
        summary.append(summarise(name, mine[0]["task"], mine))
    return rows, summary, earlier.get("failures", [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["chase", "pneumonia", "isic"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget-for", nargs="*", default=[], metavar="NAME=SECONDS",
                        help=f"a dataset's training budget per arm (defaults {BUDGETS})")  # fmt: skip
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "real_data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="generated stand-ins, one seed, seconds per arm")
    parser.add_argument("--no-nnunet", action="store_true", help="leave nnU-Net out even where it is installed")
    parser.add_argument("--nnunet-onto", type=Path, metavar="JSON",
                        help="add nnU-Net's arms to the segmentation rows of an earlier campaign's JSON, on their "
                        "own splits (their medmap runs kept in --work), and rewrite it")  # fmt: skip
    args = parser.parse_args()
    budgets = dict(BUDGETS) | {k: float(v) for k, _, v in (item.partition("=") for item in args.budget_for)}
    sets = []
    if args.quick:
        args.datasets, args.seeds, sets = ["quick-vessels", "quick"], [0], QUICK_SETS
        args.work = args.out / "real_data-work"

    def save(results: dict) -> Path:
        return save_campaign(args.out, "real_data", args.quick, results)

    with_nnunet = nnunet_installed() and not args.no_nnunet
    nnunet = "run" if with_nnunet else "not run: " + ("--no-nnunet" if args.no_nnunet else NNUNET_MISSING)
    print(f"nnU-Net v2: {nnunet}", flush=True)
    if args.nnunet_onto:
        rows, summary, failures = nnunet_onto(args.nnunet_onto, args.datasets, args.data, args.work)
        args.out = args.nnunet_onto.parent
    else:
        rows, summary, failures = [], [], []
    for name in [] if args.nnunet_onto else args.datasets:
        path, task = prepare(name, args.data, args.work)
        done = []
        for seed in args.seeds:
            try:
                row = run_seed(name, path, task, seed, budgets[name], args.work, sets, with_nnunet)
            except RuntimeError as exc:  # one failed run is reported, the campaign goes on
                failures.append({"dataset": name, "seed": seed, "error": str(exc)})
                print(f"{name} seed {seed}: {exc}", flush=True)
                continue
            rows.append(row)
            done.append(row)
            tests = ", ".join(f"{arm} {a['test']:.3f}" for arm, a in row["arms"].items())
            print(f"{name} seed {seed}: {tests}", flush=True)
            save({"partial": True, "nnunet": nnunet, "summary": summary, "runs": rows, "failures": failures})
        if done:
            summary.append(summarise(name, task, done))
    print("\nreal data, equal training budgets; medmap - arm paired by test case across seeds [95% CI]")
    print(f"{'dataset':<14} {'metric':<9} {'arm':<34} {'test':>6} {'train s':>8} {'medmap - arm':>24}  verdict")
    for s in summary:
        for arm, a in s["arms"].items():
            d = a.get("medmap_minus_arm")
            ci = f"{d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]" if d and d["ci"] else ""
            print(f"{s['dataset']:<14} {s['metric']:<9} {arm:<34} {a['test_mean']:6.3f} {a['train_seconds']:8.0f} "
                  f"{ci:>24}  {a.get('verdict', '')}")  # fmt: skip
    print(f"wrote {save({'nnunet': nnunet, 'summary': summary, 'runs': rows, 'failures': failures})}")
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed (in the JSON): {failures[0]['error'][:300]}")


if __name__ == "__main__":
    main()
