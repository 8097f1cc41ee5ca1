"""Training-patch throughput: medmap's cached, augmented loader vs MONAI's reference pipeline.

    python benchmarks/pipeline.py                # 12 generated abdominal CTs, patch 32x64x64, batch 4
    python benchmarks/pipeline.py --cases 6 --epochs 2

Both sides get the same generated MSD data, the same target spacing, intensity normalisation,
foreground crop, patch size, batch size, foreground share (1/3), worker count and augmentations with
the same probabilities: rotation +-15 degrees, scaling 0.85-1.15, gamma 0.8-1.25, contrast 0.85-1.15,
Gaussian noise, random mirroring on each axis.

- medmap: `PreprocessedCache` (plan-keyed .npy cache, memory-mapped) + `PatchDataset` in worker
  processes + `BatchAugmenter` on whole batches.
- MONAI: `CacheDataset` (deterministic transforms cached in memory) + `RandCropByPosNegLabeld`,
  `RandAffined`, `RandAdjustContrastd`, `RandScaleIntensityd`, `RandGaussianNoised`, `RandFlipd` per
  sample in `DataLoader` workers, as MONAI's tutorials do.

Reported: time to build each cache, and steady-state patches per second (after one warm-up epoch).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PATCH = (32, 64, 64)  # (slice, row, column)
BATCH = 4
WORKERS = 2
PROB = 0.3


def make_data(root: Path, cases: int) -> Path:
    from medmap.data.layouts import write_msd
    from medmap.data.phantoms import abdomen_ct

    training = []
    rng = np.random.default_rng(0)
    for i in range(cases):  # varied spacing, as in real data: both pipelines must resample
        thickness, pixel = float(rng.choice([3.0, 4.0, 5.0])), float(rng.uniform(1.7, 2.1))
        case = abdomen_ct((round(200 / thickness), 160, 160), (thickness, pixel, pixel), seed=100 + i)
        training.append((f"liver_{i:03d}", case.image, case.label))
    return write_msd(root / "liver", "BenchLiver", {0: "background", 1: "liver", 2: "tumour"}, "CT", training)


def medmap_plan(dataset_root: Path):
    from medmap.data.fingerprint import compute_fingerprint
    from medmap.data.layouts import read_dataset
    from medmap.training.planner import plan_dataset

    dataset = read_dataset(dataset_root)
    plan = plan_dataset(dataset, compute_fingerprint(dataset))
    plan = plan.with_overrides(
        [
            f"patch_size={list(PATCH)}",
            f"batch_size={BATCH}",
            "foreground_oversample=0.3333",
            f"augmentation.probability={PROB}",
            "augmentation.strength=1.0",
            "augmentation.flip_axes=[0,1,2]",
            "augmentation.elastic=false",
        ]
    )
    return dataset, plan


def run_medmap(dataset, plan, cache_root: Path, epochs: int, samples: int) -> dict:
    from medmap.data.cache import PreprocessedCache
    from medmap.data.loader import AugmentingLoader, PatchDataset
    from medmap.tasks import task_for

    t0 = time.perf_counter()
    cached = PreprocessedCache(cache_root, plan, task_for(plan)).build(dataset.cases, workers=WORKERS)
    build = time.perf_counter() - t0
    loader = AugmentingLoader(
        PatchDataset(cached, plan, task_for(plan), train=True, samples_per_epoch=samples),
        BATCH,
        workers=WORKERS,
        seed=0,
    )
    return {"cache_s": build, **_throughput(loader, epochs)}


def run_monai(dataset, plan, epochs: int, samples: int) -> dict:
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        RandAdjustContrastd,
        RandAffined,
        RandCropByPosNegLabeld,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        ScaleIntensityRanged,
        Spacingd,
    )

    n = plan.normalization
    keys = ["image", "label"]
    xyz = tuple(reversed(PATCH))  # MONAI's NIfTI arrays are (x, y, z)
    rotate = np.deg2rad(plan.augmentation.rotate_deg)
    transforms = Compose(
        [
            LoadImaged(keys),
            EnsureChannelFirstd(keys),
            Spacingd(keys, pixdim=tuple(reversed(plan.target_spacing)), mode=("bilinear", "nearest")),
            ScaleIntensityRanged(
                "image",
                a_min=n.clip_low,
                a_max=n.clip_high,
                b_min=(n.clip_low - n.mean) / n.std,
                b_max=(n.clip_high - n.mean) / n.std,
                clip=True,
            ),
            CropForegroundd(keys, source_key="image", select_fn=lambda x: x > (-500 - n.mean) / n.std, margin=2),
            RandCropByPosNegLabeld(keys, "label", spatial_size=xyz, pos=1, neg=2, num_samples=1),
            RandAffined(
                keys,
                prob=PROB,
                rotate_range=(rotate,) * 3,
                scale_range=(0.15,) * 3,
                mode=("bilinear", "nearest"),
                padding_mode="border",
            ),
            RandAdjustContrastd("image", prob=PROB, gamma=(0.8, 1.25)),
            RandScaleIntensityd("image", factors=0.15, prob=PROB),
            RandGaussianNoised("image", prob=PROB, std=0.05),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
        ]
    )
    files = [{"image": str(c.images[0]), "label": str(c.mask)} for c in dataset.cases]
    repeats = max(1, samples // len(files))
    t0 = time.perf_counter()
    data = CacheDataset(files, transforms, cache_rate=1.0, num_workers=WORKERS, progress=False)
    build = time.perf_counter() - t0
    # one epoch = `samples` patches, as for medmap: repeat the cached cases
    epoch = torch.utils.data.ConcatDataset([data] * repeats)
    loader = DataLoader(
        epoch, batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=True, drop_last=True
    )
    return {"cache_s": build, **_throughput(loader, epochs)}


def _throughput(loader, epochs: int) -> dict:
    for _ in loader:  # warm-up epoch: workers start, pages come into memory
        pass
    t0, patches = time.perf_counter(), 0
    for _ in range(epochs):
        for batch in loader:
            patches += batch["image"].shape[0]
    seconds = time.perf_counter() - t0
    return {
        "patches": patches,
        "seconds": seconds,
        "patches_per_s": patches / seconds,
        "batch_shape": list(batch["image"].shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=96, help="patches per epoch")
    parser.add_argument("--quick", action="store_true", help="a small run that proves the benchmark works (tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.epochs, args.samples = 3, 1, 8
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_data(Path(tmp), args.cases)
        dataset, plan = medmap_plan(root)
        results = {
            "medmap": run_medmap(dataset, plan, Path(tmp) / "cache", args.epochs, args.samples),
            "monai": run_monai(dataset, plan, args.epochs, args.samples),
        }
    m, r = results["medmap"], results["monai"]
    print(
        f"\nTraining patches {PATCH} (z, y, x), batch {BATCH}, {WORKERS} workers, {args.cases} generated CTs, "
        f"{args.epochs} epochs x {args.samples} patches after a warm-up epoch\n"
    )
    print(f"{'pipeline':10} {'cache build s':>14} {'patches/s':>10} {'batch':>22}")
    for name, res in results.items():
        print(f"{name:10} {res['cache_s']:14.2f} {res['patches_per_s']:10.1f} {res['batch_shape']!s:>22}")
    print(
        f"\nmedmap / MONAI: {m['patches_per_s'] / r['patches_per_s']:.2f}x patches per second; cache build time "
        f"medmap / MONAI: {m['cache_s'] / r['cache_s']:.2f} (medmap's cache is on disk, reused by later runs)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "patch": PATCH,
        "batch": BATCH,
        "workers": WORKERS,
        "cases": args.cases,
        "results": results,
        "ratio_patches_per_s": m["patches_per_s"] / r["patches_per_s"],
    }
    (args.out / "pipeline.json").write_text(json.dumps(payload, indent=2))
    print(f"JSON: {args.out / 'pipeline.json'}")


if __name__ == "__main__":
    main()
