"""Left and right: sides read from names and from where the labels lie, the axes that carry the patient's
left-right, and a generated pair of left/right organs that must never be named on the wrong side."""

import numpy as np
import pytest
import torch

from medmap.data.augment import BatchAugmenter
from medmap.data.laterality import lateral_axes, lateral_names, mirror_pairs, placements, side_of
from medmap.data.layouts import write_msd
from medmap.inference.segment import mirror_axes_at_test_time
from medmap.io.image import Image
from medmap.training.planner import plan_dataset
from tests.builders import AXIAL, ball_case, paired_organs_case, rotation, small_plan

SAGITTAL = np.column_stack([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # normal along x: slices run left-right


@pytest.mark.parametrize(
    ("name", "side"),
    [
        ("Parotid_L", "L"),
        ("L Parotid", "L"),
        ("PAROTID LT", "L"),
        ("Lung-Left", "L"),
        ("Lt Lung", "L"),
        ("ParotidRight", "R"),
        ("kidney_right", "R"),
        ("Femur_Head_R", "R"),
        ("rene dx", "R"),
        ("Brainstem", None),
        ("SpinalCord", None),
        ("L1 vertebra", None),  # a vertebra's name, not a side
        ("Lungs L+R", None),  # both sides named: no single side
    ],
)
def test_side_from_name(name, side):
    assert side_of(name) == side


def test_lateral_names_skip_background():
    assert lateral_names({0: "left background", 1: "Parotid_L", 2: "Parotid_R", 3: "Brainstem"}) == {1: "L", 2: "R"}


def test_lateral_axes_follow_the_direction_cosines():
    assert lateral_axes(AXIAL, (30, 64, 64)) == (2,)  # axial: along a row
    assert lateral_axes(SAGITTAL, (30, 64, 64)) == (0,)  # sagittal: across the slices
    assert set(lateral_axes(rotation(0.0, 0.0, np.radians(40)), (30, 64, 64))) == {1, 2}  # oblique in-plane
    assert lateral_axes(np.eye(3), (1, 40, 56)) == (2,)  # a picture: columns run across the patient
    assert lateral_axes(np.eye(3), (20, 40, 56)) == (0,)  # a volume's identity direction is geometry


def test_mirror_pairs_found_from_the_masks_and_not_from_nested_labels():
    pairs = [placements(paired_organs_case(i)[1]) for i in range(5)]
    assert mirror_pairs(pairs) == [(1, 2)]
    nested = [placements(ball_case(i)[1]) for i in range(5)]  # a core inside a ball: same place, no pair
    assert mirror_pairs(nested) == []


def _paired_dataset(tmp_path, names, n=12):
    from medmap.data.fingerprint import compute_fingerprint
    from medmap.data.layouts import read_dataset

    cases = [(f"pair_{i:02d}", *paired_organs_case(i)) for i in range(n)]
    root = write_msd(tmp_path / "pairs", "Pairs", {0: "background", **names}, "MR", cases, [])
    dataset = read_dataset(root)
    return root, dataset, compute_fingerprint(dataset)


@pytest.mark.parametrize("names", [{1: "Parotid_L", 2: "Parotid_R"}, {1: "organ a", 2: "organ b"}])
def test_planner_never_mirrors_lateralised_labels_across_left_right(tmp_path, names):
    """Sides named or only seen in the masks: the column axis (the patient's left-right here) is left out."""
    _, dataset, fp = _paired_dataset(tmp_path, names)
    plan = plan_dataset(dataset, fp)
    assert plan.augmentation.keep_sides
    assert 2 not in plan.augmentation.flip_axes and plan.augmentation.flip_axes == (1,)
    note = next(n for n in plan.notes if n.startswith("augmentation:"))
    assert "left-right" in note and "[2]" in note
    assert ("name a side" in note) == (names[1] == "Parotid_L")


def test_planner_mirrors_labels_without_sides_on_every_axis(tmp_path):
    training = [(f"ball_{i:02d}", *ball_case(i, shape=(16, 16, 16), spacing=(1.5, 1.5, 1.5))) for i in range(4)]
    root = write_msd(tmp_path / "balls", "Balls", {0: "background", 1: "ball", 2: "core"}, "MR", training, [])
    from medmap.data.fingerprint import compute_fingerprint
    from medmap.data.layouts import read_dataset

    dataset = read_dataset(root)
    plan = plan_dataset(dataset, compute_fingerprint(dataset))
    assert not plan.augmentation.keep_sides and plan.augmentation.flip_axes == (0, 1, 2)


def test_test_time_mirroring_leaves_out_each_images_own_left_right():
    plan = small_plan(augmentation={"flip_axes": (0, 1, 2), "keep_sides": True})
    axial, sagittal = Image(np.zeros((8, 16, 16)), direction=AXIAL), Image(np.zeros((8, 16, 16)), direction=SAGITTAL)
    assert mirror_axes_at_test_time(plan, axial) == [0, 1]
    assert mirror_axes_at_test_time(plan, sagittal) == [1, 2]  # its left-right runs across the slices
    free = small_plan(augmentation={"flip_axes": (0, 1, 2)})
    assert mirror_axes_at_test_time(free, sagittal) == [0, 1, 2]


def test_training_batches_never_show_a_left_organ_on_the_right(tmp_path):
    """The root cause, checked where it acts: every augmented batch keeps label 1 (left) at larger columns
    than label 2 (right) in every sample, over many draws."""
    _, dataset, fp = _paired_dataset(tmp_path, {1: "kidney_left", 2: "kidney_right"})
    plan = plan_dataset(dataset, fp)
    augment = BatchAugmenter(plan.augmentation.model_copy(update={"probability": 1.0}), plan.target_spacing, seed=3)
    pairs = [paired_organs_case(i) for i in range(8)]
    images = torch.from_numpy(np.stack([p[0].array[0] for p in pairs]))[:, None]
    masks = torch.from_numpy(np.stack([p[1].array[0] for p in pairs])).long()
    for _ in range(20):
        _, out = augment(images, masks)
        for sample in out:
            left, right = (torch.nonzero(sample == k)[:, 1].float().mean() for k in (1, 2))
            assert left > right


def test_a_trained_pair_of_organs_is_never_named_on_the_wrong_side(tmp_path):
    """Train as a user would (the planner's augmentation untouched); on the evaluated cases, no voxel that
    both truth and prediction call an organ carries the other side's label."""
    from medmap.io.load import load
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run

    root, dataset, _ = _paired_dataset(tmp_path, {1: "Parotid_L", 2: "Parotid_R"}, n=16)
    config = TrainConfig(epochs=3, samples_per_epoch=160, workers=0, learning_rate=3e-3, warmup_epochs=1)
    summary = train_run(root, tmp_path / "run", overrides=["batch_size=8", "network_width=8"], config=config)
    predicted = sorted((tmp_path / "run" / f"predictions_{summary['split']}").glob("*.nii.gz"))
    assert predicted
    both = swapped = 0
    for path in predicted:
        case = next(c for c in dataset.cases if c.case_id == path.name.removesuffix(".nii.gz"))
        truth, guess = case.load_mask().array, load(path).array
        organ = (truth > 0) & (guess > 0)
        both += int(organ.sum())
        swapped += int((organ & (truth != guess)).sum())
    assert both > 0.5 * sum(
        int((c.load_mask().array > 0).sum())
        for c in dataset.cases
        if c.case_id in {p.name.removesuffix(".nii.gz") for p in predicted}
    )
    assert swapped == 0, f"{swapped} of {both} organ voxels named on the wrong side"
