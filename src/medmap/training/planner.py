"""Fingerprint + compute budget -> `Plan`. One small function per decision, each saying why.

Read top to bottom, this file is the whole of medmap's automatic configuration (in the spirit of
nnU-Net's experiment planner, without environment variables or global state). Every number it picks
can be overridden afterwards with ``Plan.with_overrides`` / ``medmap plan --set``.
"""

from __future__ import annotations

import math

import numpy as np

from medmap.data import laterality
from medmap.data.dataset import Dataset
from medmap.data.fingerprint import Fingerprint
from medmap.errors import DatasetError
from medmap.plan import Augmentation, Inference, Normalization, Plan

XRAY_MODALITIES = {"CR", "DX", "MG", "RF", "XA", "IO", "PX"}
CPU_BUDGET_MB, GPU_BUDGET_MB = 2_000, 12_000
# Compute caps on voxels per patch: memory is rarely the limit on a CPU, time is.
MAX_PATCH_VOXELS = {"cpu": 2**18, "cuda": 2**22}
# A 2-D step on a CPU holds at most 2^16 pixels a patch and 2^17 a batch (256 x 256 x 2): at CPU budgets
# the number of optimiser steps decides, not the pixels each step sees. Chosen on validation cases only:
# CHASE_DB1 fundus photographs (999 x 960), 4 minutes, 3 seeds: 512 x 512 x 2 (the earlier plan, ~80
# steps) 0.537 validation Dice, 256 x 256 x 8 (~115 steps) 0.676, 256 x 256 x 2 (~500 steps) 0.756;
# MNI152 slices (240 x 192), 205 s, 3 seeds: batch 11 (~140 steps) 0.905, batch 2 (~700 steps) 0.943,
# ahead on every seed (docs/benchmarks.md, "Small 2-D steps on a CPU").
CPU_2D_PATCH_PIXELS, CPU_2D_BATCH_PIXELS = 2**16, 2**17
LIVE_MAPS = {"segmentation": 24, "detection": 24, "classification": 12}  # maps alive per voxel per base feature
DENSE = ("segmentation", "detection")  # tasks that label voxels (a detector here is a voxel labeller + components)


def sample_mb(patch, width: int, task: str) -> float:
    """Rough training memory of one sample: float32 activations, ``LIVE_MAPS`` maps per base feature."""
    return float(np.prod(patch)) * width * 4 * LIVE_MAPS[task] / 1e6


ANISOTROPY_RATIO = 3.0  # nnU-Net's threshold: beyond it the coarse axis keeps a coarser target spacing


def decide_target_spacing(fp: Fingerprint, device: str) -> tuple[tuple[float, float, float], str]:
    median = np.asarray(fp.median_spacing)
    spacings = np.asarray(fp.spacings)
    if fp.is_2d and fp.task in DENSE:
        # outlines are scored at full resolution: coarser pixels cost thin structures more than the
        # larger image costs time (MNI152 slices at 1.8 mm instead of 1 mm: grey-matter Dice -0.1 and more)
        return tuple(median), "2-D segmentation: the median pixel size (nnU-Net's 2d configuration)"
    if fp.is_2d:
        # Whole 2-D pictures: keep the median pixel size, coarsened so the median image fits the input
        # size the device can afford (128 px on CPU, 256 on GPU).
        limit = 128 if device == "cpu" else 256
        factor = max(1.0, max(fp.median_shape[1:]) / limit)
        target = (1.0, median[1] * factor, median[2] * factor)
        return (
            target,
            f"2-D images: median pixel {median[1]:.3g} mm x {factor:.3g} so the median image is <= {limit} px",
        )
    if fp.task == "detection":
        # findings, not outlines: a small finding needs about 3 voxels across, and every voxel more costs
        # sliding-window time over whole scans (nnDetection also plans detection coarser than segmentation)
        small = float(np.percentile(fp.lesion_diameters_mm, 10)) if fp.lesion_diameters_mm else 6.0
        iso = max(float(min(median)), small / 3)
        return (iso, iso, iso), (
            f"detection: isotropic {iso:.3g} mm, a third of the 10th-percentile finding diameter ({small:.3g} mm) "
            "and no finer than the images"
        )
    if fp.lesion_cases:
        iso = float(min(median[1:]))
        return (iso, iso, iso), (
            f"lesion patches: isotropic {iso:.3g} mm (median in-plane spacing), so the three "
            "orthogonal views of a lesion are alike"
        )
    target = median.copy()
    coarse = int(np.argmax(median))
    if median[coarse] > ANISOTROPY_RATIO * median.min():
        target[coarse] = float(np.percentile(spacings[:, coarse], 10))
        return tuple(target), (
            f"anisotropic (axis {coarse}: {median[coarse]:.3g} mm vs {median.min():.3g} mm): median "
            "spacing, 10th percentile on the coarse axis (nnU-Net rule)"
        )
    return tuple(median), "median spacing of the training images"


def decide_normalization(fp: Fingerprint) -> tuple[Normalization, str]:
    modality = fp.modality.upper()
    if modality == "CT":
        low, high = fp.intensity.p00_5, fp.intensity.p99_5
        return (
            Normalization(
                scheme="ct", clip_low=low, clip_high=high, mean=fp.intensity.mean, std=max(fp.intensity.std, 1e-3)
            ),
            f"CT: clip to foreground 0.5/99.5 percentiles [{low:.0f}, {high:.0f}] HU, then z-score with the "
            f"dataset's foreground mean {fp.intensity.mean:.1f} / std {fp.intensity.std:.1f}",
        )
    stats = fp.intensity
    if not modality and stats.integer_valued and stats.min >= 0 and stats.max <= 255:
        # 8-bit images without a modality (MedMNIST npz, PNG patches): brightness is the signal (a per-image
        # min-max would stretch a uniformly dark patch to full contrast), so one scaling for the dataset.
        return (
            Normalization(scheme="fixed", mean=stats.mean, std=max(stats.std, 1e-3)),
            f"8-bit images without a modality: absolute intensities kept, z-score with the dataset's mean "
            f"{stats.mean:.1f} / std {stats.std:.1f} (the same for every image)",
        )
    if modality in XRAY_MODALITIES or (fp.is_2d and not modality):
        return Normalization(scheme="per_image"), "projection images: per-image min-max to [0, 1]"
    return Normalization(scheme="zscore"), f"{modality or 'unknown modality'}: per-image z-score over the foreground"


def decide_input_mode(fp: Fingerprint) -> tuple[str, str]:
    if fp.is_2d:
        return "2d", "every image has one slice"
    if fp.task == "classification" and not fp.lesion_cases:
        return "3d", "whole-volume classification"
    return "3d", "volumes: 3-D patches"


def _multiple(value: float, step: int, low: int, high: int) -> int:
    return int(min(max(step * round(value / step), low), high))


def decide_patch_size(fp: Fingerprint, spacing, budget_mb: int, device: str) -> tuple[tuple[int, int, int], str]:
    if fp.is_2d:
        shape = np.asarray(fp.median_shape[1:]) * np.asarray(fp.median_spacing[1:]) / np.asarray(spacing[1:])
        side = np.array([_multiple(s, 16, 32, 512) for s in shape])
        why = "the median image at target spacing (multiple of 16)"
        if device == "cpu" and fp.task in DENSE and side.prod() > CPU_2D_PATCH_PIXELS:
            while side.prod() > CPU_2D_PATCH_PIXELS:
                side[int(np.argmax(side))] -= 16
            why += f", cut (longer side first) to {CPU_2D_PATCH_PIXELS} pixels: on a CPU more steps beat larger ones"
        return (1, int(side[0]), int(side[1])), why
    if fp.lesion_cases:
        diameters = fp.lesion_diameters_mm or [10.0]
        extent_mm = 2.5 * float(np.percentile(diameters, 90))
        side = _multiple(extent_mm / spacing[0], 8, 24, 96)
        return (side, side, side), f"2.5 x the 90th-percentile lesion diameter ({extent_mm:.0f} mm of context)"
    if fp.task == "detection":
        # a finding with its surroundings, not the whole image: a smaller patch lets a batch hold more
        # findings per step (decide_batch_size fills the CPU's voxels per batch); measured on the demo
        # nodules, 48^3 x 4 reached validation Dice 0.55 in 125 steps where 64^3 x 2 reached 0.03 in 100
        # (a vessel tells itself from a nodule only over a few centimetres: nnDetection's LUNA16 patches span
        # 9-12 cm; hence at least 8 cm)
        diameters = fp.lesion_diameters_mm or [10.0]
        extent_mm = max(80.0, 5 * float(np.percentile(diameters, 90)))
        side = _multiple(extent_mm / spacing[0], 16, 32, 96)
        return (side, side, side), (
            f"detection: {extent_mm:.0f} mm across (5 x the 90th-percentile finding diameter, at least 80 mm)"
        )
    shape = np.asarray(fp.median_shape) * np.asarray(fp.median_spacing) / np.asarray(spacing)
    patch = np.array([_multiple(s, 16, 16, 256) for s in shape])
    width = 16 if device == "cpu" else 32
    # at least two samples per batch within the budget, and within the device's compute cap
    while (
        2 * sample_mb(patch, width, fp.task) > budget_mb or patch.prod() > MAX_PATCH_VOXELS[device]
    ) and patch.max() > 16:
        axis = int(np.argmax(patch * np.asarray(spacing)))  # shrink the axis covering the most mm
        patch[axis] -= 16
    return tuple(int(v) for v in patch), (
        f"the median image at target spacing, shrunk (largest extent in mm first) "
        f"to fit 2 samples in {budget_mb} MB and {MAX_PATCH_VOXELS[device]} voxels"
    )


def decide_network(fp: Fingerprint, patch, device: str) -> tuple[str, int, int, str]:
    if fp.task in DENSE:
        depth = int(min(5, max(3, math.log2(max(min(p for p in patch if p > 1), 8) / 4) + 1)))  # DynUNet: >= 3
        width = 16 if device == "cpu" else 32
        return "unet", width, depth, f"U-Net, {depth} levels (coarsest >= 4 voxels), {width} base features"
    width = 32 if device == "cpu" else 64
    return "resnet18", width, 4, f"ResNet-18 ({width} base features on {device})"


CPU_BATCH_VOXELS = 2**19  # a segmentation batch on a CPU holds at most this many voxels (see decide_batch_size)


def decide_batch_size(patch, width: int, budget_mb: int, task: str, device: str) -> tuple[int, str]:
    per_sample_mb = sample_mb(patch, width, task)
    batch = int(min(64, max(2, budget_mb // max(per_sample_mb, 1e-3))))
    why = f"{budget_mb} MB budget / ~{per_sample_mb:.0f} MB per sample"
    limit = CPU_2D_BATCH_PIXELS if patch[0] == 1 else CPU_BATCH_VOXELS
    cap = max(2, limit // int(np.prod(patch)))
    if task in DENSE and device == "cpu" and batch > cap:
        # On a CPU memory is not the limit, time is, and past ~2^19 voxels a batch falls out of the caches:
        # seconds per sample measured 1.25 at 2 vs 1.9 at 5 (3-D 32x80x96), 0.14 at 8 vs 0.22 at 16
        # (2-D 240x192). Smaller batches also mean more optimiser steps per hour (2-D: CPU_2D_BATCH_PIXELS).
        return cap, why + f"; at most {limit} voxels per batch on a CPU (more optimiser steps per hour)"
    return batch, why


def decide_iterations(fp: Fingerprint, batch: int, device: str) -> tuple[int, str]:
    """An epoch is a number of steps: the unit of validation, checkpoints and patience."""
    if fp.task in DENSE:
        steps = 250 if device == "cuda" else 25
        return steps, (
            f"{steps} steps per epoch ("
            + ("nnU-Net's 250" if device == "cuda" else "validation and a checkpoint about every minute on a CPU")
            + ")"
        )
    steps = max(8, math.ceil(3 * fp.n_cases / batch))
    return steps, f"{steps} steps per epoch (each case about 3 times, at least 8 batches)"


FIXED_DIRECTION_MODALITIES = {"US": 1}  # modality -> array axis it is acquired along (the transducer at the top)


def decide_sides(fp: Fingerprint, labels: dict[int, str]) -> tuple[bool, str]:
    """Whether the labels are lateralised, so that mirroring across the patient's left-right is forbidden."""
    named = laterality.lateral_names(labels)
    if named:
        listed = ", ".join(f"{labels[k]} ({side})" for k, side in sorted(named.items()))
        return True, f"labels name a side ({listed})"
    if fp.mirror_pairs:
        listed = ", ".join(f"{labels.get(a, a)} / {labels.get(b, b)}" for a, b in fp.mirror_pairs)
        return True, f"labels lie as mirror images on fixed sides of the patient ({listed})"
    return False, ""


def decide_augmentation(fp: Fingerprint, input_mode: str, spacing, labels: dict[int, str]) -> tuple[Augmentation, str]:
    anisotropic = max(spacing) > ANISOTROPY_RATIO * min(spacing)
    strength = 1.0 if fp.n_cases >= 50 else 1.3
    axes = (1, 2) if input_mode == "2d" or anisotropic else (0, 1, 2)
    why = [f"strength {strength} ({fp.n_cases} training and validation cases)"]
    if anisotropic:
        why.append("in-plane mirroring only (anisotropic)")
    fixed = FIXED_DIRECTION_MODALITIES.get(fp.modality.upper())
    if fixed is not None and fixed in axes:
        axes = tuple(a for a in axes if a != fixed)
        why.append(f"{fp.modality} is acquired from the top of the image down: never mirrored top to bottom")
    keep_sides, reason = decide_sides(fp, labels)
    if keep_sides:
        lr = sorted({a for per_image in fp.lateral_axes for a in per_image})
        axes = tuple(a for a in axes if a not in lr)
        why.append(
            f"{reason}: never mirrored across the patient's left-right (array axes {lr} carry it in the "
            "training images; test-time mirroring leaves out each image's own)"
        )
    why.append(f"mirroring on array axes {list(axes)}" if axes else "no mirroring")
    return Augmentation(strength=strength, flip_axes=axes, keep_sides=keep_sides), "; ".join(why)


def decide_pixel_size(fp: Fingerprint) -> str | None:
    """A note, not a decision: where images carry no physical pixel size, every mm in the run is a pixel."""
    if not fp.images_without_spacing:
        return None
    return (
        f"{fp.images_without_spacing} of {fp.n_images} images carry no physical pixel size (pictures or "
        "arrays): 1 pixel is taken as 1 mm, so spacings, patch extents and distances in mm (HD95, surface "
        "distances, diameters) are in pixels"
    )


def decide_inference(device: str) -> tuple[Inference, str]:
    if device == "cpu":
        return Inference(overlap=0.5, mirror=False, batch_size=2), (
            "windows overlap by half; no mirroring on a CPU (it multiplies inference time by 8 for a small gain)"
        )
    return Inference(overlap=0.5, mirror=True, batch_size=4), (
        "windows overlap by half; mirrored on the flip axes (never across a lateralised image's left-right)"
    )


def decide_foreground_oversample(fp: Fingerprint) -> tuple[float, str]:
    """Share of training patches centred on a target voxel (the rest are drawn anywhere)."""
    if fp.task == "detection":
        return 0.67, (
            "two thirds of the patches centred on a finding (findings fill about 0.1 % of a scan; the rest "
            "are drawn anywhere and hold the look-alikes: vessels, walls)"
        )
    return 0.33, "a third of the patches centred on a labelled voxel (nnU-Net's rule)"


def decide_partial_annotation(fp: Fingerprint, labels: dict[int, str]) -> str | None:
    """Whether some cases leave labels unannotated (RTSTRUCTs without every structure): they train with
    the marginal loss (`medmap.data.annotation`). A label no training case annotates cannot be learnt."""
    counts, total = fp.annotated_images, fp.labelled_images
    never = [f"{v} ({labels[v]})" for v, k in counts.items() if k == 0]
    if never:
        raise DatasetError(
            f"{fp.dataset}: label {', '.join(never)} is annotated in none of the {total} training and validation "
            "images: nothing to learn it from (remove it from the labels or check its spellings: medmap dataset check)"
        )
    if all(k == total for k in counts.values()):
        return None
    shares = ", ".join(f"{labels[v]} {k}/{total}" for v, k in counts.items())
    return (
        f"training and validation cases annotating each label: {shares}; a label a case did not annotate is "
        "unknown there, not background: left out of that case's loss (marginal Dice + cross-entropy) and of its metrics"
    )


def plan_dataset(dataset: Dataset, fp: Fingerprint, *, device: str = "cpu", budget_mb: int | None = None) -> Plan:
    budget = budget_mb or (CPU_BUDGET_MB if device == "cpu" else GPU_BUDGET_MB)
    notes = []
    if why := decide_partial_annotation(fp, dataset.labels):
        notes.append(f"partial_annotation: {why}")
    input_mode, why = decide_input_mode(fp)
    notes.append(f"input_mode: {why}")
    spacing, why = decide_target_spacing(fp, device)
    notes.append(f"target_spacing: {why}")
    normalization, why = decide_normalization(fp)
    notes.append(f"normalization: {why}")
    patch, why = decide_patch_size(fp, spacing, budget, device)
    notes.append(f"patch_size: {why}")
    network, width, depth, why = decide_network(fp, patch, device)
    notes.append(f"network: {why}")
    batch, why = decide_batch_size(patch, width, budget, fp.task, device)
    notes.append(f"batch_size: {why}")
    iterations, why = decide_iterations(fp, batch, device)
    notes.append(f"iterations_per_epoch: {why}")
    augmentation, why = decide_augmentation(fp, input_mode, spacing, dataset.labels)
    notes.append(f"augmentation: {why}")
    if why := decide_pixel_size(fp):
        notes.append(f"pixel_size: {why}")
    inference, why = decide_inference(device)
    if fp.task in DENSE:
        notes.append(f"inference: {why}")
    oversample, why = decide_foreground_oversample(fp)
    if fp.task in DENSE:
        notes.append(f"foreground_oversample: {why}")
    return Plan(
        dataset=dataset.name,
        task=dataset.task,
        modality=fp.modality,
        channels=fp.channels,
        labels=dataset.labels,
        input_mode=input_mode,
        lesion_level=fp.task == "classification" and bool(fp.lesion_cases),
        target_spacing=tuple(float(s) for s in spacing),
        normalization=normalization,
        patch_size=patch,
        batch_size=batch,
        iterations_per_epoch=iterations,
        network=network,
        network_width=width,
        network_depth=depth,
        augmentation=augmentation,
        inference=inference,
        foreground_oversample=oversample,
        device=device,
        memory_budget_mb=budget,
        notes=notes,
    )
