"""Training and evaluation samples from the preprocessed cache, as torch batches.

Sampling is deterministic: item ``i`` of epoch ``e`` draws from a generator seeded with
``(seed, e, i)``, so a run reproduces whatever the number of worker processes. Which case an item comes
from is decided here (uniformly, or class-balanced for labelled cases); how a sample is cut from it is
the task's (`Task.sample`: oversampled segmentation patches, shifted lesion patches, 2.5-D planes).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from medmap.data.augment import BatchAugmenter
from medmap.data.cache import CachedCase
from medmap.plan import Plan


class PatchDataset(TorchDataset):
    def __init__(
        self,
        cases: list[CachedCase],
        plan: Plan,
        task,
        *,
        train: bool,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        balanced: bool = False,
    ) -> None:
        """``task``: the plan's `medmap.tasks.Task`, which cuts each sample from its case (``sample``)."""
        self.cases, self.plan, self.task, self.train, self.seed = cases, plan, task, train, seed
        self.length = samples_per_epoch or len(cases)
        self.epoch = 0
        # class-balanced sampling (labelled cases, training): a class first, uniformly, then one of its cases
        self.by_class: list[list[int]] = []
        if train and balanced:
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
        sample = self.task.sample(case, self.plan, rng, self.train)
        if self.plan.spatial_dims == 2 and sample["image"].dim() == 4:  # [C, 1, Y, X] -> [C, Y, X]
            sample["image"] = sample["image"][:, 0]
            if sample["target"].dim() == 3:  # a label map [1, Y, X]
                sample["target"] = sample["target"][0]
        return sample


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
        for batch in self.loader:
            if self.augmenter is not None:
                spatial = batch["target"].dim() == batch["image"].dim() - 1  # a label map moves with its image
                images, masks = self.augmenter(batch["image"], batch["target"] if spatial else None)
                batch["image"] = images
                if spatial:
                    batch["target"] = masks
            yield batch
        self.dataset.set_epoch(self.dataset.epoch + 1)
