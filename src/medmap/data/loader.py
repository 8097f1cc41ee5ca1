"""Patches from the preprocessed cache, as torch batches.

Sampling is deterministic: item ``i`` of epoch ``e`` draws from a generator seeded with
``(seed, e, i)``, so a run reproduces whatever the number of worker processes. Segmentation patches are
foreground-oversampled: a ``Plan.foreground_oversample`` share of them is centred on a voxel of a
foreground class chosen uniformly among the classes present (small tumours get seen); the rest are
centred anywhere. Lesion patches are cut from the cached cube with a small random shift (training) or
exactly centred (evaluation); ``2.5d`` mode stacks the three orthogonal planes through the lesion centre
as channels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from medmap.data.augment import BatchAugmenter
from medmap.data.cache import CachedCase
from medmap.data.preprocess import extract_patch
from medmap.plan import Plan


class PatchDataset(TorchDataset):
    def __init__(
        self,
        cases: list[CachedCase],
        plan: Plan,
        *,
        train: bool,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        balanced: bool = False,
    ) -> None:
        self.cases, self.plan, self.train, self.seed = cases, plan, train, seed
        self.length = samples_per_epoch or len(cases)
        self.epoch = 0
        # class-balanced sampling (classification, training): a class first, uniformly, then one of its cases
        self.by_class: list[list[int]] = []
        if train and balanced and plan.task == "classification":
            labels = sorted({c.label for c in cases if c.label is not None})
            self.by_class = [[i for i, c in enumerate(cases) if c.label == label] for label in labels]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _split(self, index: int) -> tuple[int, int]:
        """Indices from `EpochSampler` carry their epoch (``epoch * len + i``): worker processes keep their
        own copy of the dataset, so an epoch set in the main process would never reach them."""
        if index >= self.length:
            return divmod(index, self.length)
        return self.epoch, index

    def _centre(self, case: CachedCase, shape, rng: np.random.Generator) -> np.ndarray:
        locations = case.meta.get("class_locations") or {}
        if self.train and locations and rng.random() < self.plan.foreground_oversample:
            points = locations[rng.choice(sorted(locations))]
            return np.asarray(points[rng.integers(len(points))], dtype=float)
        if not self.train:
            return (np.asarray(shape) - 1) / 2
        half = np.asarray(self.plan.patch_size) // 2
        low, high = np.minimum(half, np.asarray(shape) - 1), np.maximum(np.asarray(shape) - 1 - half, half)
        return np.array([rng.uniform(a, b) if b > a else a for a, b in zip(low, high, strict=True)])

    def __getitem__(self, index: int) -> dict:
        epoch, index = self._split(index)
        rng = np.random.default_rng([self.seed, epoch, index])
        if not self.train:
            case = self.cases[index % len(self.cases)]
        elif self.by_class:
            members = self.by_class[rng.integers(len(self.by_class))]
            case = self.cases[members[rng.integers(len(members))]]
        else:
            case = self.cases[rng.integers(len(self.cases))]
        image, mask = case.arrays()
        patch = self.plan.patch_size
        if self.plan.task == "segmentation":
            centre = self._centre(case, image.shape[1:], rng)
            x = extract_patch(image, centre, patch, float(image.min()))
            y = extract_patch(mask, centre, patch, 0) if mask is not None else np.zeros(patch, np.uint8)
            sample = {"image": torch.from_numpy(x), "target": torch.from_numpy(y.astype(np.int64))}
        else:
            shift = None
            if self.train and "lesion" in case.meta:  # small shifts keep the lesion near, not at, the centre
                jitter = np.asarray(patch) * 0.08 * self.plan.augmentation.strength
                shift = rng.uniform(-jitter, jitter) * (np.asarray(image.shape[1:]) > 1)
            x = classifier_input(image, self.plan, shift)
            sample = {
                "image": torch.from_numpy(np.ascontiguousarray(x)),
                "target": torch.tensor(-1 if case.label is None else case.label),
            }
        if self.plan.input_mode in ("2d", "2.5d") and sample["image"].dim() == 4:
            sample["image"] = sample["image"][:, 0]
            if self.plan.task == "segmentation":
                sample["target"] = sample["target"][0]
        return sample


def orthogonal_planes(image: np.ndarray, centre: np.ndarray, patch) -> np.ndarray:
    """2.5-D input: the axial, coronal and sagittal planes through ``centre`` as channels."""
    side = max(patch[1:])
    cube = extract_patch(image, centre, (side, side, side), float(image.min()))
    mid = side // 2
    planes = [cube[:, mid], cube[:, :, mid], cube[:, :, :, mid]]
    return np.concatenate(planes, axis=0)[:, np.newaxis]


def classifier_input(array: np.ndarray, plan: Plan, shift: np.ndarray | None = None) -> np.ndarray:
    """The patch a classifier sees from a cached array ``[C, Z, Y, X]`` (a lesion cube or a whole image):
    centred (plus ``shift`` voxels in training), or the three planes in 2.5-D mode. Training, evaluation
    and prediction all call this one function."""
    centre = (np.asarray(array.shape[1:]) - 1) / 2
    if shift is not None:
        centre = centre + shift
    if plan.input_mode == "2.5d":
        return orthogonal_planes(array, centre, plan.patch_size)
    return extract_patch(array, centre, plan.patch_size, float(array.min()))


class EpochSampler(Sampler[int]):
    """Yields ``epoch * n + i`` for ``i`` in ``range(n)``; the epoch advances after each full pass.

    With several training processes (``world`` > 1) each rank yields only its rows of every global batch
    of ``global_batch`` items (rank r: rows ``r * b`` to ``(r + 1) * b``, b = global_batch / world), so
    the ranks together see exactly the items one process would, batch by batch."""

    def __init__(self, dataset: PatchDataset, *, rank: int = 0, world: int = 1, global_batch: int = 1) -> None:
        self.dataset, self.rank, self.world, self.global_batch = dataset, rank, world, global_batch

    def __len__(self) -> int:
        if self.world == 1:
            return len(self.dataset)
        return (len(self.dataset) // self.global_batch) * (self.global_batch // self.world)

    def __iter__(self):
        start = self.dataset.epoch * len(self.dataset)
        if self.world == 1:
            yield from range(start, start + len(self.dataset))
            return
        share = self.global_batch // self.world
        for batch in range(len(self.dataset) // self.global_batch):
            first = start + batch * self.global_batch + self.rank * share
            yield from range(first, first + share)


class AugmentingLoader:
    """A DataLoader whose batches are augmented as whole batches (see `medmap.data.augment`)."""

    def __init__(
        self,
        dataset: PatchDataset,
        batch_size: int,
        *,
        workers: int = 2,
        augment: bool = True,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        """``batch_size`` is the global batch; with ``world`` processes this one loads and augments its
        ``rank``'s share of each (`EpochSampler`, `BatchAugmenter`'s ``share``)."""
        generator = torch.Generator().manual_seed(seed)
        self.dataset = dataset
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size // world,
            sampler=EpochSampler(dataset, rank=rank, world=world, global_batch=batch_size),
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=generator,
            drop_last=dataset.train,
        )
        plan = dataset.plan
        self.augmenter = (
            BatchAugmenter(plan.augmentation, plan.target_spacing, seed=seed, share=(rank, world)) if augment else None
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        segmentation = self.dataset.plan.task == "segmentation"
        for batch in self.loader:
            if self.augmenter is not None:
                images, masks = self.augmenter(batch["image"], batch["target"] if segmentation else None)
                batch["image"] = images
                if segmentation:
                    batch["target"] = masks
            yield batch
        self.dataset.set_epoch(self.dataset.epoch + 1)
