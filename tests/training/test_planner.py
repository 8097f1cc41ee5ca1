"""The planner's decisions, each checked on a fingerprint built to provoke it; Plan overrides."""

import numpy as np
import pytest

from medmap.data.dataset import Dataset
from medmap.data.fingerprint import Fingerprint, IntensityStats, compute_fingerprint
from medmap.data.layouts import write_msd
from medmap.errors import ConfigError
from medmap.plan import Plan
from medmap.training.planner import MAX_PATCH_VOXELS, plan_dataset, sample_mb
from tests.builders import volume


def fingerprint(**kw) -> Fingerprint:
    base = dict(
        dataset="d",
        task="segmentation",
        modality="CT",
        channels=1,
        n_cases=20,
        n_images=20,
        spacings=[(1.0, 0.8, 0.8)] * 20,
        shapes=[(100, 256, 256)] * 20,
        intensity=IntensityStats(mean=50, std=20, p00_5=-20, p99_5=180, min=-1000, max=2000),
        class_frequencies={0: 0.9, 1: 0.1},
    )
    base.update(kw)
    return Fingerprint(**base)


def dataset(task="segmentation") -> Dataset:
    return Dataset("d", None, task, "msd", {0: "background", 1: "organ"}, [])


def test_anisotropic_data_keep_a_coarse_axis_at_its_10th_percentile():
    spacings = [(5.0, 0.8, 0.8)] * 15 + [(2.0, 0.8, 0.8)] * 5
    plan = plan_dataset(dataset(), fingerprint(spacings=spacings))
    assert plan.target_spacing == pytest.approx((2.0, 0.8, 0.8))
    assert any("anisotropic" in n for n in plan.notes)
    thick = plan_dataset(dataset(), fingerprint(spacings=[(5.0, 0.8, 0.8)] * 20))
    assert thick.target_spacing == pytest.approx((5.0, 0.8, 0.8))
    assert thick.augmentation.flip_axes == (1, 2)  # no mirroring across thick slices


def test_ct_normalisation_from_foreground_percentiles():
    plan = plan_dataset(dataset(), fingerprint())
    n = plan.normalization
    assert (n.scheme, n.clip_low, n.clip_high, n.mean, n.std) == ("ct", -20, 180, 50, 20)
    assert plan_dataset(dataset(), fingerprint(modality="MR")).normalization.scheme == "zscore"


def test_patch_fits_memory_and_compute_budget_and_pools_cleanly():
    plan = plan_dataset(dataset(), fingerprint(), budget_mb=1000)
    assert all(p % 16 == 0 for p in plan.patch_size)
    assert np.prod(plan.patch_size) <= MAX_PATCH_VOXELS["cpu"]
    assert 2 * sample_mb(plan.patch_size, plan.network_width, "segmentation") <= 1000
    assert plan.batch_size >= 2 and plan.network == "unet"
    bigger = plan_dataset(dataset(), fingerprint(), device="cuda")
    assert np.prod(bigger.patch_size) > np.prod(plan.patch_size) and bigger.network_width == 32


def test_two_d_pictures_and_lesion_patches():
    xray = plan_dataset(
        dataset("classification"),
        fingerprint(task="classification", modality="DX", spacings=[(1.0, 0.5, 0.5)] * 5, shapes=[(1, 512, 512)] * 5),
    )
    assert xray.input_mode == "2d" and xray.patch_size == (1, 128, 128) and xray.target_spacing[1] == pytest.approx(2.0)
    assert xray.normalization.scheme == "per_image"
    lesions = plan_dataset(
        dataset("classification"),
        fingerprint(
            task="classification",
            lesion_cases=True,
            lesion_diameters_mm=[4.0, 8.0, 20.0],
            spacings=[(2.5, 0.7, 0.7)] * 5,
        ),
    )
    assert lesions.target_spacing == pytest.approx((0.7, 0.7, 0.7))
    side = lesions.patch_size[0]
    assert lesions.patch_size == (side, side, side) and side % 8 == 0 and side * 0.7 >= 2.5 * 17


def test_fingerprint_of_a_real_dataset(tmp_path):
    cases = []
    for i in range(3):
        img = volume(shape=(5, 16, 12), seed=i)
        mask = img.with_array((img.array > 1500).astype(np.uint8))
        cases.append((f"c{i}", img, mask))
    from medmap.data.layouts import read_dataset

    write_msd(tmp_path / "T", "T", {0: "background", 1: "bright"}, "CT", cases)
    fp = compute_fingerprint(read_dataset(tmp_path / "T"))
    assert fp.n_cases == 3 and fp.median_shape == (5, 16, 12) and fp.modality == "CT"
    assert sum(fp.class_frequencies.values()) == pytest.approx(1.0)
    assert fp.intensity.min > 1500  # statistics come from the foreground only


def test_overrides_and_json_round_trip(tmp_path):
    plan = plan_dataset(dataset(), fingerprint())
    changed = plan.with_overrides(
        ["batch_size=7", "patch_size=[16,32,32]", "augmentation.elastic=true", "network=dynunet"]
    )
    assert (changed.batch_size, changed.patch_size, changed.augmentation.elastic, changed.network) == (
        7,
        (16, 32, 32),
        True,
        "dynunet",
    )
    assert changed.overrides[-1] == "network=dynunet"
    assert Plan.load(changed.save(tmp_path / "p.json")) == changed
    for bad, message in (
        ("nope=1", "unknown setting"),
        ("batch_size=0", "batch_size"),
        ("augmentation=3", "unknown setting|augmentation"),
        ("batch_size", "key=value"),
    ):
        with pytest.raises(ConfigError, match=message):
            plan.with_overrides([bad])
    assert plan.preprocessing_key() == changed.preprocessing_key()  # batch size does not change preprocessing
    assert plan.preprocessing_key() != plan.with_overrides(["target_spacing=[1,1,1]"]).preprocessing_key()


def test_eight_bit_images_without_a_modality_keep_their_absolute_intensity():
    """A MedMNIST patch's brightness is its class cue: one dataset-wide scaling, not a per-image min-max."""
    stats = IntensityStats(mean=120, std=40, p00_5=3, p99_5=250, min=0, max=255, integer_valued=True)
    kw = dict(task="classification", modality="", spacings=[(1.0, 1.0, 1.0)] * 5, shapes=[(1, 28, 28)] * 5)
    patches = plan_dataset(dataset("classification"), fingerprint(intensity=stats, **kw))
    assert patches.normalization.scheme == "fixed" and patches.normalization.mean == 120
    floats = stats.model_copy(update={"integer_valued": False, "max": 1.0})
    assert plan_dataset(dataset("classification"), fingerprint(intensity=floats, **kw)).normalization.scheme == (
        "per_image"
    )
    from medmap.data.preprocess import normalize

    dark, bright = np.full((1, 4, 4), 40.0), np.full((1, 4, 4), 200.0)
    a, b = (normalize(x, patches.normalization) for x in (dark, bright))
    assert a.max() < 0 < b.min()  # a uniformly dark patch stays dark


def test_three_d_segmentation_on_a_cpu_takes_more_smaller_steps():
    plan = plan_dataset(dataset(), fingerprint())
    assert plan.batch_size == 2 and plan.iterations_per_epoch == 25
    assert any(n.startswith("iterations_per_epoch") for n in plan.notes)
    gpu = plan_dataset(dataset(), fingerprint(), device="cuda")
    assert gpu.iterations_per_epoch == 250


def test_ultrasound_is_never_mirrored_top_to_bottom():
    two_d = dict(spacings=[(1.0, 0.2, 0.2)] * 20, shapes=[(1, 300, 400)] * 20)
    us = plan_dataset(dataset(), fingerprint(modality="US", **two_d))
    assert us.augmentation.flip_axes == (2,)  # the row axis (top to bottom) is never mirrored
    assert any("top to bottom" in n for n in us.notes)
    assert plan_dataset(dataset(), fingerprint(modality="MR", **two_d)).augmentation.flip_axes == (1, 2)


def test_pictures_without_pixel_size_say_so_in_the_plan():
    plan = plan_dataset(dataset(), fingerprint(images_without_spacing=20, modality=""))
    note = next(n for n in plan.notes if n.startswith("pixel_size:"))
    assert "20 of 20 images" in note and "in pixels" in note
    assert not any(n.startswith("pixel_size:") for n in plan_dataset(dataset(), fingerprint()).notes)


def test_large_two_d_images_train_in_small_patches_and_batches_on_a_cpu():
    """Fundus photographs at 999 x 960: on a CPU 256 x 256 x 2 (more steps per hour), on a GPU whole."""
    photos = dict(spacings=[(1.0, 1.0, 1.0)] * 20, shapes=[(1, 960, 999)] * 20, modality="")
    cpu = plan_dataset(dataset(), fingerprint(**photos))
    assert cpu.patch_size == (1, 256, 256) and cpu.batch_size == 2
    assert any("more steps beat larger ones" in n for n in cpu.notes)
    assert plan_dataset(dataset(), fingerprint(**photos), device="cuda").patch_size == (1, 512, 512)
    slices = plan_dataset(dataset(), fingerprint(spacings=[(1.0, 1.0, 1.0)] * 20, shapes=[(1, 240, 192)] * 20))
    assert slices.patch_size == (1, 240, 192) and slices.batch_size == 2
    wide = plan_dataset(dataset(), fingerprint(spacings=[(1.0, 1.0, 1.0)] * 20, shapes=[(1, 200, 600)] * 20))
    assert np.prod(wide.patch_size) <= 2**16 and wide.patch_size[2] > wide.patch_size[1]
    pictures = plan_dataset(dataset("classification"), fingerprint(task="classification", **photos))
    assert pictures.batch_size > 2  # whole pictures for a classifier are planned by their own rule
