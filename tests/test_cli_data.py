"""The dataset commands as a user runs them: demo-data, dataset check, plan, preprocess."""

import json

import numpy as np
import pytest

from medmap.data.layouts import read_dataset
from tests.helpers import assert_one_line_error, medmap_cli


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo


def test_demo_data_command_prints_the_baseline(tmp_path):
    r = medmap_cli("demo-data", tmp_path / "d", "--small")
    assert r.returncode == 0, r.stderr
    assert "size-only baseline" in r.stdout and "AUC" in r.stdout
    liver = read_dataset(tmp_path / "d" / "liver")  # what the command wrote is a dataset medmap reads
    assert liver.task == "segmentation" and set(liver.labels.values()) == {"background", "liver", "tumour"}
    assert all(c.mask is not None for c in liver.cases if c.split != "test")


def test_dataset_check_clean_and_broken(demo, tmp_path):
    assert medmap_cli("dataset", "check", demo / "liver").returncode == 0
    rows = (demo / "nodules.csv").read_text().splitlines()
    x = rows[1].split(",")
    x[1] = "5000"  # a nodule far outside its image
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join([rows[0], ",".join(x), *rows[2:]]).replace("chest_ct/", f"{demo}/chest_ct/"))
    r = medmap_cli("dataset", "check", broken)
    assert_one_line_error(r, "1 problem(s) found")
    assert "lies outside the image" in r.stdout


def test_plan_with_overrides_then_preprocess(demo, tmp_path):
    plan_path = tmp_path / "plan.json"
    r = medmap_cli(
        "plan", demo / "liver", "-o", plan_path, "--set", "batch_size=3", "--set", "augmentation.elastic=true"
    )
    assert r.returncode == 0, r.stderr
    plan = json.loads(plan_path.read_text())
    assert plan["batch_size"] == 3 and plan["augmentation"]["elastic"] is True and plan["task"] == "segmentation"
    assert "target_spacing:" in r.stdout  # the reasons are printed
    bad = medmap_cli("plan", demo / "liver", "-o", tmp_path / "x.json", "--set", "nonsense=1")
    assert_one_line_error(bad, "unknown setting")
    r = medmap_cli("preprocess", demo / "liver", "--plan", plan_path, "--cache", tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert "3 preprocessed now" in r.stdout
    again = medmap_cli("preprocess", demo / "liver", "--plan", plan_path, "--cache", tmp_path / "cache")
    assert "0 preprocessed now, 3 reused" in again.stdout
    arrays = sorted((tmp_path / "cache").rglob("liver_000*.npy"))
    assert len(arrays) == 2 and np.load(arrays[0]).dtype == np.float32


def test_lesion_patches_in_3d_and_2_5d(demo, tmp_path):
    from medmap.data.cache import PreprocessedCache
    from medmap.data.fingerprint import compute_fingerprint
    from medmap.data.layouts import read_dataset
    from medmap.data.loader import PatchDataset
    from medmap.tasks import task_for
    from medmap.training.planner import plan_dataset

    ds = read_dataset(demo / "nodules.csv")
    plan = plan_dataset(ds, compute_fingerprint(ds))
    cached = PreprocessedCache(tmp_path / "c", plan, task_for(plan)).build(ds.cases, workers=1)
    side = plan.patch_size[0]
    item = PatchDataset(cached, plan, task_for(plan), train=False)[0]
    assert item["image"].shape == (1, side, side, side) and item["target"].item() in (0, 1)
    # the nodule (denser than lung) is at the centre of an evaluation patch
    centre = item["image"][
        0, side // 2 - 1 : side // 2 + 2, side // 2 - 1 : side // 2 + 2, side // 2 - 1 : side // 2 + 2
    ]
    assert centre.mean() > item["image"][0].mean()
    planes = PatchDataset(cached, plan.with_overrides(["input_mode=2.5d"]), task_for(plan), train=False)[0]["image"]
    assert planes.shape == (3, side, side)
    assert np.allclose(planes[0].numpy(), item["image"][0, side // 2].numpy())  # axial plane through the centre


def test_pretrain_then_train_with_its_weights(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 24), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n)[:, None] % 2
    np.savez(tmp_path / "tiny.npz", **arrays)
    r = medmap_cli(
        "pretrain",
        tmp_path / "tiny.npz",
        "-o",
        tmp_path / "w" / "simclr.pt",
        "--epochs",
        "1",
        "--model",
        "smallcnn",
        "--set",
        "network_width=8",
        "--workers",
        "0",
    )
    assert r.returncode == 0, r.stderr
    assert "contrastive loss" in r.stdout and (tmp_path / "w" / "simclr.pt").is_file()
    r = medmap_cli(
        "train",
        tmp_path / "tiny.npz",
        "-o",
        tmp_path / "run",
        "--model",
        "smallcnn",
        "--set",
        "network_width=8",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--pretrained",
        tmp_path / "w" / "simclr.pt",
    )
    assert r.returncode == 0, r.stderr
    assert "pretrained weights:" in r.stderr and "AUC" in r.stdout
    assert "tracked in MLflow" in r.stdout and (tmp_path / "mlflow.db").is_file()  # on by default, beside the run
    again = medmap_cli("pretrain", tmp_path / "tiny.npz", "-o", tmp_path / "w" / "simclr.pt")
    assert_one_line_error(again, "exists")


def test_plan_and_check_read_a_lesion_table_per_image_with_task_detection(tmp_path):
    """`medmap dataset check --task detection` and `medmap plan --task detection` plan and check findings
    per scan; a task the layout contradicts, or an unknown one, is one line."""
    from tests.builders import volume, write_ct

    image = volume(shape=(12, 40, 40), spacing=(2.0, 1.0, 1.0))
    write_ct(image, tmp_path / "ct" / "a")
    x, y, z = (float(v) for v in image.index_to_world([6, 20, 20]))
    (tmp_path / "t.csv").write_text(f"image,x,y,z,diameter_mm\nct/a,{x},{y},{z},8\nct/a,{x + 500},{y},{z},6\n")
    checked = medmap_cli("dataset", "check", tmp_path / "t.csv", "--task", "detection")
    assert checked.returncode == 1 and "detection, 1 cases" in checked.stdout
    assert "a: finding at" in checked.stdout and "lies outside its image" in checked.stdout
    (tmp_path / "ok.csv").write_text(f"image,x,y,z,diameter_mm\nct/a,{x},{y},{z},8\n")
    planned = medmap_cli("plan", tmp_path / "ok.csv", "--task", "detection", "-o", tmp_path / "plan.json")
    assert planned.returncode == 0, planned.stderr
    assert json.loads((tmp_path / "plan.json").read_text())["task"] == "detection"
    (tmp_path / "classes.csv").write_text(f"image,x,y,z,diameter_mm,label\nct/a,{x},{y},{z},8,benign\n")
    contradicted = medmap_cli("plan", tmp_path / "classes.csv", "--task", "segmentation")
    assert_one_line_error(contradicted, "--task segmentation", "is a classification dataset")
    assert_one_line_error(medmap_cli("dataset", "check", tmp_path / "ok.csv", "--task", "boxes"), "task 'boxes'")
