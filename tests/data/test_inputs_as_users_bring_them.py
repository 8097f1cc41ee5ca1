"""Inputs as users bring them, each through the CSV a user would write: RGB JPEG photographs with 1-bit or
0/255 PNG masks and no labels.json, label maps with gaps, MR sequences of a case as channels, and a run
folder given to predict."""

import csv
import json
import warnings

import numpy as np
import pytest
from PIL import Image as PILImage

from medmap.data.layouts import read_dataset
from medmap.errors import ConfigError, DatasetError
from medmap.io.image import Image
from medmap.io.load import save
from tests.builders import fundus_photo


def _write_fundus_table(folder, n=10, bits="1", labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        rgb, vessels = fundus_photo(i)
        PILImage.fromarray(rgb).save(folder / f"eye_{i:02d}.jpg", quality=95)
        mask = PILImage.fromarray(vessels) if bits == "1" else PILImage.fromarray(vessels.astype(np.uint8) * 255)
        mask.save(folder / f"eye_{i:02d}_mask.png")
        rows.append({"image": f"eye_{i:02d}.jpg", "mask": f"eye_{i:02d}_mask.png", "patient_id": f"P{i // 2}"})
    with open(folder / "vessels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps(labels))
    return folder / "vessels.csv"


@pytest.mark.parametrize("bits", ["1", "L"])
def test_masks_without_labels_json_take_their_values_in_order(tmp_path, bits):
    table = _write_fundus_table(tmp_path / bits, bits=bits)
    stored = "0, 1" if bits == "1" else "0, 255"  # a bit map holds bits; an 8-bit mask its bytes
    with pytest.warns(Warning, match=rf"no labels.json.*values \[{stored}\].*labels.json to name them"):
        dataset = read_dataset(table)
    assert dataset.labels == {0: "background", 1: "foreground"}
    mask = dataset.cases[0].load_mask()
    assert sorted(np.unique(mask.array).tolist()) == [0, 1]
    assert dataset.cases[0].load_image().channels == 3  # the JPEG's colour kept as three channels


def test_declared_labels_with_gaps_are_mapped_to_consecutive_indices(tmp_path):
    table = _write_fundus_table(tmp_path / "d", bits="L", labels={"0": "background", "255": "vessel"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # declared: no warning
        dataset = read_dataset(table)
    assert dataset.labels == {0: "background", 1: "vessel"}
    assert dataset.cases[0].load_mask().array.max() == 1


def test_a_mask_value_nobody_declared_names_its_case(tmp_path):
    table = _write_fundus_table(tmp_path / "d", bits="L", labels={"0": "background", "255": "vessel"})
    stray = np.asarray(PILImage.open(tmp_path / "d" / "eye_03_mask.png")).copy()
    stray[0, 0] = 7
    PILImage.fromarray(stray).save(tmp_path / "d" / "eye_03_mask.png")
    case = next(c for c in read_dataset(table).cases if c.case_id == "eye_03")
    with pytest.raises(DatasetError, match=r"case eye_03: mask .*eye_03_mask.png has values \[7\]"):
        case.load_mask()


def test_mr_sequences_of_a_case_as_channels(tmp_path):
    rows = []
    for i in range(3):
        grid = Image(np.zeros((6, 12, 12), np.float32), (2.0, 1.0, 1.0), (0.0, 0.0, float(i)))
        for name, level in (("flair", 1.0), ("t1c", 2.0)):
            save(grid.with_array(np.full(grid.shape, level * (i + 1), np.float32)), tmp_path / f"c{i}_{name}.nii.gz")
        save(
            grid.with_array((np.arange(6 * 12 * 12).reshape(grid.shape) % 3 == 0).astype(np.uint8)),
            tmp_path / f"c{i}_seg.nii.gz",
        )
        rows.append(f"c{i}_flair.nii.gz,c{i}_t1c.nii.gz,c{i}_seg.nii.gz")
    (tmp_path / "labels.json").write_text('{"0": "background", "1": "tumour"}')
    (tmp_path / "mr.csv").write_text("image_flair,image_t1c,mask\n" + "\n".join(rows) + "\n")
    dataset = read_dataset(tmp_path / "mr.csv")
    assert dataset.channel_names == ["flair", "t1c"]
    image = dataset.cases[1].load_image()
    assert image.channels == 2 and image.array[..., 0].max() == 2.0 and image.array[..., 1].max() == 4.0
    (tmp_path / "both.csv").write_text("image,image_t1c,mask\na,b,c\n")
    with pytest.raises(DatasetError, match="not both"):
        read_dataset(tmp_path / "both.csv")


def test_photographs_with_thin_structures_train_and_predict_from_the_csv(tmp_path):
    """RGB JPEGs larger than the patch (sliding window in 2-D), 1-bit masks, no labels.json: trains as a user
    would, the vessels are found, and predict refuses the run folder with the command that makes a bundle."""
    from medmap.inference.bundle import create_bundle, load_bundle
    from medmap.io.load import load
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run
    from tests.helpers import medmap_cli

    table = _write_fundus_table(tmp_path / "eyes", n=12)
    config = TrainConfig(epochs=4, samples_per_epoch=96, workers=0, learning_rate=3e-3, warmup_epochs=1)
    overrides = ["patch_size=[1,32,32]", "batch_size=8", "network_width=8"]
    with pytest.warns(Warning, match="no labels.json"):
        summary = train_run(table, tmp_path / "run", overrides=overrides, config=config)
    vessel = summary["metrics"]["classes"]["foreground"]["dice"]["mean"]
    assert vessel > 0.5, summary["metrics"]["classes"]
    with pytest.raises(ConfigError, match="a training run, not a bundle: package it first with `medmap bundle create"):
        load_bundle(tmp_path / "run")
    bundle = create_bundle(tmp_path / "run", tmp_path / "bundle")
    result = medmap_cli("predict", str(bundle), str(tmp_path / "eyes" / "eye_11.jpg"), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    labels = load(next((tmp_path / "out").rglob("labels.nii.gz")))
    assert labels.shape == (1, 64, 80) and labels.array.max() == 1
