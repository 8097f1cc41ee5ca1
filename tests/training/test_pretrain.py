"""SimCLR pretraining runs on unlabelled patches and its output loads into the classifier."""

import math

import torch

from medmap.data.cache import PreprocessedCache
from medmap.models.pretrained import load_pretrained
from medmap.models.registry import build_classifier
from medmap.tasks import task_for
from medmap.training.config import TrainConfig
from medmap.training.pretrain import nt_xent, pretrain
from medmap.training.trainer import Trainer
from tests.builders import blobs_plan


def test_nt_xent_prefers_matching_views():
    z = torch.randn(8, 16)
    matched = nt_xent(z, z + 0.01 * torch.randn(8, 16))
    shuffled = nt_xent(z, z[torch.randperm(8)])
    assert matched < shuffled


def test_pretrained_encoder_loads_into_the_classifier_and_training(blobs, tmp_path):
    plan = blobs_plan()
    unlabelled = PreprocessedCache(tmp_path / "cache", plan, task_for(plan)).build(
        [c for c in blobs.cases if c.split == "train"], workers=1
    )
    result = pretrain(unlabelled, plan, tmp_path / "simclr.pt", epochs=2, workers=0, samples_per_epoch=32)
    assert all(math.isfinite(h["loss"]) for h in result["history"])
    model = build_classifier(plan)
    report = load_pretrained(model, tmp_path / "simclr.pt")
    assert report.missing == ["head.2.weight", "head.2.bias"] and not report.skipped
    val = PreprocessedCache(tmp_path / "cache", plan, task_for(plan)).build(
        [c for c in blobs.cases if c.split == "val"], workers=1
    )
    config = TrainConfig(epochs=1, workers=0, samples_per_epoch=16, pretrained=str(tmp_path / "simclr.pt"))
    Trainer(task_for(plan), plan, config, tmp_path / "run").fit(unlabelled, val)
    assert (tmp_path / "run" / "pretrained.json").is_file()


def test_geometric_views_keep_size_and_brightness():
    """The geometric views only flip and rotate: with rotation off, a view of a patch holds exactly the
    patch's values (a permutation of them), while the strong views change brightness and scale, the cues
    that separate nodules and lesions."""
    import pytest

    from medmap.data.augment import BatchAugmenter
    from medmap.errors import ConfigError
    from medmap.training.pretrain import view_augmentation

    plan = blobs_plan()
    plan = plan.model_copy(update={"augmentation": plan.augmentation.model_copy(update={"rotate_deg": 0.0})})
    x = torch.rand(16, 1, *plan.patch_size[1:])
    moved = {}
    for views in ("strong", "geometric"):
        augmenter = BatchAugmenter(view_augmentation(plan, views), plan.target_spacing, seed=0)
        first, _ = augmenter(x.clone())
        moved[views] = float((first.flatten(1).sort(1).values - x.flatten(1).sort(1).values).abs().max())
    assert moved["geometric"] < 1e-4 and moved["strong"] > 0.05, moved
    with pytest.raises(ConfigError, match="views 'soft'"):
        view_augmentation(plan, "soft")
