"""Cache, patch sampling and batched augmentation."""

import numpy as np
import pytest
import torch

from medmap.data.augment import BatchAugmenter
from medmap.data.cache import PreprocessedCache
from medmap.data.layouts import read_dataset, write_msd
from medmap.data.loader import AugmentingLoader, PatchDataset
from medmap.plan import Augmentation, Normalization, Plan
from medmap.tasks.segmentation import SegmentationTask
from tests.builders import small_plan, volume

SEGMENTATION = SegmentationTask()


def seg_plan(**kw) -> Plan:
    ct = Normalization(scheme="ct", clip_low=-1000, clip_high=2000, mean=0, std=100)
    fields = {"labels": {0: "bg", 1: "organ", 2: "lesion"}, "target_spacing": (2.0, 1.0, 1.0), "normalization": ct}
    return small_plan(**{"dataset": "T", "batch_size": 4, "network_depth": 2, **fields, **kw})


@pytest.fixture
def seg_dataset(tmp_path):
    cases = []
    for i in range(3):
        img = volume(shape=(10, 96, 88), spacing=(2.0, 1.0, 1.0), seed=i)
        mask = np.zeros(img.shape, np.uint8)
        mask[3:7, 20:70, 16:66] = 1
        mask[5, 40, 40] = 2  # a one-voxel lesion: oversampling must still find it
        cases.append((f"c{i}", img, img.with_array(mask)))
    write_msd(tmp_path / "T", "T", {0: "bg", 1: "organ", 2: "lesion"}, "CT", cases)
    return read_dataset(tmp_path / "T")


def test_cache_is_built_once_and_reused(tmp_path, seg_dataset):
    cache = PreprocessedCache(tmp_path / "cache", seg_plan(), SEGMENTATION)
    cached = cache.build(seg_dataset.cases, workers=1)
    stamps = [c.image.stat().st_mtime_ns for c in cached]
    image, mask = cached[0].arrays()
    assert image.shape[0] == 1 and image.dtype == np.float32 and isinstance(image, np.memmap)
    assert set(np.unique(mask)) == {0, 1, 2} and "2" in cached[0].meta["class_locations"]
    again = PreprocessedCache(tmp_path / "cache", seg_plan(batch_size=8), SEGMENTATION).build(
        seg_dataset.cases, workers=2
    )
    assert [c.image.stat().st_mtime_ns for c in again] == stamps  # batch size does not invalidate the cache
    other = PreprocessedCache(tmp_path / "cache", seg_plan(target_spacing=(2.0, 2.0, 2.0)), SEGMENTATION)
    assert other.folder != cache.folder and not other.is_cached(seg_dataset.cases[0])


def test_foreground_oversampling_finds_a_one_voxel_lesion(tmp_path, seg_dataset):
    cached = PreprocessedCache(tmp_path / "cache", seg_plan(), SEGMENTATION).build(seg_dataset.cases, workers=1)
    always = PatchDataset(cached, seg_plan(foreground_oversample=1.0), SEGMENTATION, train=True, samples_per_epoch=60)
    never = PatchDataset(cached, seg_plan(foreground_oversample=0.0), SEGMENTATION, train=True, samples_per_epoch=60)
    hits_always = sum(int((always[i]["target"] == 2).any()) for i in range(60))
    hits_never = sum(int((never[i]["target"] == 2).any()) for i in range(60))
    assert hits_always >= 20 and hits_always > 3 * max(hits_never, 1)


def test_sampling_is_deterministic_per_epoch_and_index(tmp_path, seg_dataset):
    cached = PreprocessedCache(tmp_path / "cache", seg_plan(), SEGMENTATION).build(seg_dataset.cases, workers=1)
    a = PatchDataset(cached, seg_plan(), SEGMENTATION, train=True, samples_per_epoch=8, seed=3)
    b = PatchDataset(cached, seg_plan(), SEGMENTATION, train=True, samples_per_epoch=8, seed=3)
    assert torch.equal(a[5]["image"], b[5]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[5]["image"], b[5]["image"])
    runs = []
    for workers in (0, 2):  # two full epochs each, no augmentation: only patch sampling can differ
        dataset = PatchDataset(cached, seg_plan(), SEGMENTATION, train=True, samples_per_epoch=8, seed=3)
        loader = AugmentingLoader(dataset, 4, workers=workers, seed=1, augment=False)
        epochs = [list(loader) for _epoch in range(2)]  # whole epochs: the epoch advances at the end of one
        runs.append([batches[0]["image"] for batches in epochs])
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])  # whatever the workers
    assert not torch.equal(runs[1][0], runs[1][1])  # and each epoch draws new patches, in workers too


def test_augmentation_keeps_masks_aligned_with_images():
    # image = 100 x mask: after any spatial transform the relation must still hold voxel by voxel
    mask = torch.zeros(6, 12, 24, 24, dtype=torch.int64)
    mask[:, 3:9, 6:18, 4:14] = 1
    mask[:, 5:7, 10:14, 14:20] = 2
    images = (mask.float() * 100).unsqueeze(1)
    aug = Augmentation(probability=1.0, elastic=True, noise_std=0.0, gamma=(1.0, 1.0), contrast=(1.0, 1.0))
    out, out_mask = BatchAugmenter(aug, (2.0, 1.0, 1.0), seed=0)(images, mask)
    assert out.shape == images.shape and out_mask.shape == mask.shape
    assert not torch.equal(out_mask, mask)  # something moved
    inside = (out[:, 0] > 190) & (out[:, 0] < 210)
    agreement = (out_mask[inside] == 2).float().mean()
    assert agreement > 0.95


def test_strength_zero_is_identity_and_2d_batches_work():
    x = torch.randn(4, 1, 32, 32)
    off = BatchAugmenter(Augmentation(strength=0.0), (1.0, 1.0, 1.0))
    assert torch.equal(off(x)[0], x)
    on = BatchAugmenter(Augmentation(probability=1.0), (1.0, 1.0, 1.0), seed=1)
    y, _ = on(x)
    assert y.shape == x.shape and not torch.equal(y, x)


def test_ranks_share_every_global_batch_and_augment_it_as_one_process_would():
    """Distributed training: rank r holds rows r*b..(r+1)*b of each global batch, augmented exactly as
    the single process augments those rows (every random number is drawn for the global batch)."""
    from medmap.data.loader import EpochSampler

    class Items:
        epoch, length = 3, 20

        def __len__(self):
            return self.length

    whole = list(EpochSampler(Items()))
    shares = [list(EpochSampler(Items(), rank=r, world=2, global_batch=8)) for r in range(2)]
    batches = [shares[0][i : i + 4] + shares[1][i : i + 4] for i in range(0, len(shares[0]), 4)]
    assert [i for b in batches for i in b] == whole[:16]  # the 20 - 16 left over make no full batch

    aug = Augmentation(probability=0.5, elastic=True)
    images = torch.randn(8, 1, 6, 12, 12)
    masks = (torch.rand(8, 6, 12, 12) > 0.5).long()
    one = BatchAugmenter(aug, (2.0, 1.0, 1.0), seed=3)
    ranks = [BatchAugmenter(aug, (2.0, 1.0, 1.0), seed=3, share=(r, 2)) for r in range(2)]
    for _ in range(3):  # the generators stay in step batch after batch
        expected, expected_masks = one(images, masks)
        parts = [r(images[4 * i : 4 * i + 4], masks[4 * i : 4 * i + 4]) for i, r in enumerate(ranks)]
        assert torch.equal(expected, torch.cat([p[0] for p in parts]))
        assert torch.equal(expected_masks, torch.cat([p[1] for p in parts]))
