"""Partial annotation: a structure a case's RTSTRUCT does not hold is unknown in that case, not background.
It stays out of that case's loss (marginal Dice + CE) and metrics; a label no case annotates is refused."""

import json

import numpy as np
import pytest
import torch

from medmap.data.annotation import allowed, annotates, as_target, decidable
from medmap.data.layouts import read_dataset
from medmap.errors import ConfigError, DatasetError
from medmap.evaluation.segmentation import case_metrics
from medmap.inference.postprocess import mean_dice
from medmap.tasks.segmentation.loss import SegmentationLoss, dice_per_class
from tests.builders import kidneys_export
from tests.helpers import medmap_cli


def test_the_target_marks_unknown_background_and_only_there():
    mask = np.array([0, 1, 0, 2])
    target = as_target(mask, (2,))
    assert target.tolist() == [-(1 + 4), 1, -(1 + 4), 2]
    assert as_target(mask, ()).tolist() == mask.tolist()
    assert decidable(target, 1).all() and decidable(target, 2).tolist() == [False, True, False, True]
    assert annotates(target, 1) and not annotates(target, 2)
    may_be = allowed(torch.from_numpy(target)[None], 3)[0]  # [K, N]
    assert may_be[:, 0].tolist() == [True, False, True] and may_be[:, 1].tolist() == [False, True, False]
    with pytest.raises(DatasetError, match="case P7: partial annotation works for label values 1-30"):
        as_target(mask, (31,), "P7")


def _logits(shape=(2, 3, 6, 8, 8), seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 2


def test_with_every_label_annotated_the_marginal_loss_is_monais_dice_ce():
    from monai.losses import DiceCELoss

    logits = _logits()
    labels = torch.randint(0, 3, (2, 6, 8, 8), generator=torch.Generator().manual_seed(1))
    monai = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    expected = float(monai(logits, labels.unsqueeze(1)))
    # "-1": background with no label unannotated, which sends the loss through its marginal branch
    coded = torch.where(labels == 0, torch.tensor(-1), labels)
    loss = SegmentationLoss("dice_ce")
    assert float(loss(logits, coded)) == pytest.approx(expected, rel=1e-5)
    assert float(loss(logits, labels)) == pytest.approx(expected, rel=1e-5)


def test_an_unannotated_organ_predicted_where_it_may_be_costs_nothing():
    """Case 1 did not annotate label 2: at its background, "label 2" and "background" cost the same, while
    a loss that took the missing organ for background would punish the network for finding it."""
    labels = torch.zeros(2, 6, 8, 8, dtype=torch.long)
    labels[:, :, 2:5, 2:5] = 1
    labels[0, :, 5:8, 5:8] = 2  # case 0 annotates label 2; case 1 holds the organ there but did not draw it
    target = torch.from_numpy(np.stack([as_target(labels[0].numpy(), ()), as_target(labels[1].numpy(), (2,))]))
    sure = torch.full((2, 3, 6, 8, 8), -8.0)
    sure.scatter_(1, labels.unsqueeze(1), 8.0)  # right everywhere, background in case 1's organ
    finds = sure.clone()
    finds[1, :, :, 5:8, 5:8] = torch.tensor([-8.0, -8.0, 8.0]).view(3, 1, 1, 1)  # finds case 1's unannotated organ
    loss = SegmentationLoss("dice_ce")
    assert float(loss(finds, target)) == pytest.approx(float(loss(sure, target)), abs=1e-4)
    as_background = torch.where(target < 0, torch.tensor(0), target)
    assert float(loss(finds, as_background)) > float(loss(sure, as_background)) + 0.05
    wrong = sure.clone()
    wrong[1, :, :, 2:5, 2:5] = torch.tensor([8.0, -8.0, -8.0]).view(3, 1, 1, 1)  # misses an annotated organ
    assert float(loss(wrong, target)) > float(loss(sure, target)) + 0.05
    assert dice_per_class(finds.argmax(1).numpy(), target.numpy(), [1, 2]) == {1: 1.0, 2: 1.0}


def test_losses_without_a_marginal_form_refuse_partial_targets():
    target = torch.from_numpy(as_target(np.zeros((1, 4, 4, 4), int), (1,)))
    with pytest.raises(ConfigError, match=r"partial annotation .* trains with the loss dice_ce or dice, not tversky"):
        SegmentationLoss("tversky")(_logits((1, 2, 4, 4, 4)), target)


def test_metrics_leave_an_unannotated_label_out_of_its_case():
    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 1:4, 1:4] = 1
    pred = truth.copy()
    pred[:, 5:8, 5:8] = 2  # the model finds an organ the case did not draw
    scored = case_metrics(pred, truth, (1, 1, 1), {0: "bg", 1: "liver", 2: "kidney"}, unannotated=(2,))
    assert scored["classes"]["liver"]["dice"] == 1.0 and np.isnan(scored["classes"]["kidney"]["dice"])
    assert scored["pixel_accuracy"] == 1.0 and scored["unannotated"] == ["kidney"]
    assert case_metrics(pred, truth, (1, 1, 1), {0: "bg", 1: "liver", 2: "kidney"})["classes"]["kidney"]["dice"] == 0
    coded = as_target(truth, (2,), dtype=np.int32)
    assert mean_dice([(pred, coded)], [1, 2]) == 1.0 and mean_dice([(pred, truth)], [1, 2]) == 0.5


def _export(root, n=6, partial=(1, 3)):
    for i in range(n):
        kidneys_export(root / f"P{i}", i, uncontoured=("Kidney_R",) if i in partial else ())
    (root / "labels.json").write_text(json.dumps({"1": "Kidney_L", "2": "Kidney_R"}))
    return root


def test_a_case_without_a_structure_records_it_as_unannotated(tmp_path):
    dataset = read_dataset(_export(tmp_path / "export", n=2, partial=(1,)))
    full, partial = sorted(dataset.cases, key=lambda c: c.case_id)
    assert full.load_target()[1] == ()
    mask, unannotated = partial.load_target()
    assert unannotated == (2,) and set(np.unique(mask.array)) == {0, 1}
    (tmp_path / "export" / "labels.json").write_text(json.dumps({"1": "Liver"}))
    expected = r"case PATIENT-0-1: .*rtstruct.dcm annotates none of the labels 1 \(Liver\)"
    with pytest.raises(DatasetError, match=expected):
        read_dataset(tmp_path / "export").cases[0].load_target()


def test_dataset_check_refuses_a_label_no_case_annotates_and_accepts_partial_ones(tmp_path):
    root = _export(tmp_path / "export", n=2, partial=(1,))
    result = medmap_cli("dataset", "check", str(root))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cases annotating each label: Kidney_L 2/2, Kidney_R 1/2" in result.stdout
    (root / "labels.json").write_text(json.dumps({"1": "Kidney_L", "2": "Kidney_R", "3": "Liver"}))
    result = medmap_cli("dataset", "check", str(root))
    assert result.returncode == 1
    assert "label 3 (Liver): none of the 2 label objects annotates it" in result.stdout


PARTIAL = ("PATIENT-1-1", "PATIENT-4-1")


def test_partially_annotated_rtstructs_train_and_are_scored_on_what_they_annotate(tmp_path):
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run

    root = _export(tmp_path / "export", partial=(1, 4))  # seed 0 trains on PATIENT-1 and tests on PATIENT-4
    config = TrainConfig(epochs=2, samples_per_epoch=16, workers=0)
    overrides = ["patch_size=[8,32,32]", "batch_size=4", "network_width=4", "network_depth=3"]
    summary = train_run(root, tmp_path / "run", overrides=overrides, config=config, cache_root=tmp_path / "cache")
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    note = next(n for n in plan["notes"] if n.startswith("partial_annotation:"))
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    planned = split["train"] + split["val"]  # what the plan saw; the test cases never inform it
    k, n = len(planned) - sum(c in PARTIAL for c in planned), len(planned)
    assert f"cases annotating each label: Kidney_L {n}/{n}, Kidney_R {k}/{n}" in note
    assert set(PARTIAL) & set(split["train"]) and set(PARTIAL) & set(split["test"])
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("PATIENT-*.json")]
    cached = {m["case_id"]: m for m in metas}
    assert cached["PATIENT-1-1"]["unannotated"] == [2] and cached["PATIENT-0-1"]["unannotated"] == []
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for case_id, scored in metrics["cases"].items():
        unscored = np.isnan(scored["classes"]["Kidney_R"]["dice"])
        assert unscored == (case_id in PARTIAL)
    annotated_test = sum(c not in PARTIAL for c in metrics["cases"])
    assert summary["metrics"]["classes"]["Kidney_R"]["dice"]["n"] == annotated_test
