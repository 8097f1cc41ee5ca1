"""RTSTRUCTs as training targets and as a conversion on their own: structures matched to labels by name
whatever their spelling, the referenced series found beside the object (partial annotation:
test_partial_annotation)."""

import csv
import json

import numpy as np
import pytest

from medmap.data.layouts import read_dataset
from medmap.errors import DatasetError
from medmap.io.labels.names import match_names, name_key
from medmap.io.load import load
from tests.builders import kidneys_export
from tests.helpers import medmap_cli

SPELLINGS = [("Kidney_L", "Kidney_R"), ("L Kidney", "R Kidney"), ("KIDNEY LT", "KIDNEY RT"), ("LtKidney", "RtKidney")]


def test_name_keys_ignore_spelling_but_not_side():
    assert len({name_key(n) for n in ("Parotid_L", "L Parotid", "PAROTID LT", "Lt_Parotid", "ParotidLeft")}) == 1
    assert name_key("Parotid_L") != name_key("Parotid_R") != name_key("Parotid")
    match = match_names(["L Parotid", "Brainstem", "cord"], {1: ["Parotid_L"], 2: ["Parotid_R"], 3: ["BrainStem"]},
                        source="rt.dcm")  # fmt: skip
    assert match.values == {"L Parotid": 1, "Brainstem": 3} and match.unmatched == ("cord",) and match.missing == (2,)
    with pytest.raises(DatasetError, match=r"rt.dcm: structures 'Parotid_L' and 'L Parotid' both match label 1"):
        match_names(["Parotid_L", "L Parotid"], {1: ["Parotid_L"]}, source="rt.dcm")
    with pytest.raises(DatasetError, match="given to labels 1 and 2"):
        match_names(["x"], {1: ["Parotid_L"], 2: ["L Parotid"]}, source="rt.dcm")


def test_convert_finds_the_series_beside_the_rtstruct_and_names_each_value(tmp_path):
    rt = kidneys_export(tmp_path / "p", 0)
    result = medmap_cli("convert", str(rt), str(tmp_path / "labels.nii.gz"))
    assert result.returncode == 0, result.stderr
    labels = load(tmp_path / "labels.nii.gz")
    image = load(tmp_path / "p" / "image")
    assert labels.same_geometry(image)
    names = json.loads((tmp_path / "labels.labels.json").read_text())
    assert names == {"0": "background", "1": "Kidney_L", "2": "Kidney_R"}
    left = np.argwhere(labels.array == 1)[:, 2].mean()
    assert left > np.argwhere(labels.array == 2)[:, 2].mean()  # Kidney_L at larger columns: the patient's left
    original = rt.read_bytes()
    assert rt.read_bytes() == original  # nothing the user gave is changed


def _table(tmp_path, n=6, labels=True):
    rows = []
    for i in range(n):
        folder = tmp_path / f"P{i}"
        rt = kidneys_export(folder, i, names=SPELLINGS[i % len(SPELLINGS)])
        rows.append({"image": f"P{i}/image", "label_object": str(rt.relative_to(tmp_path)), "patient_id": f"P{i}"})
    with open(tmp_path / "kidneys.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if labels:
        (tmp_path / "labels.json").write_text(json.dumps({"1": "Kidney_L", "2": "Kidney_R"}))
    return tmp_path / "kidneys.csv"


def test_a_table_of_rtstructs_trains_with_no_conversion_step(tmp_path):
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run

    table = _table(tmp_path)
    dataset = read_dataset(table)
    assert dataset.labels == {0: "background", 1: "Kidney_L", 2: "Kidney_R"}
    for case in dataset.cases:  # every spelling lands on its label, on the right side
        mask = case.load_mask()
        assert np.argwhere(mask.array == 1)[:, 2].mean() > np.argwhere(mask.array == 2)[:, 2].mean()
    config = TrainConfig(epochs=2, samples_per_epoch=16, workers=0)
    overrides = ["patch_size=[8,32,32]", "batch_size=4", "network_width=4", "network_depth=3"]
    summary = train_run(table, tmp_path / "run", overrides=overrides, config=config)
    assert set(summary["metrics"]["classes"]) == {"Kidney_L", "Kidney_R"}


def test_label_objects_without_labels_json_say_what_to_write(tmp_path):
    table = _table(tmp_path, n=1, labels=False)
    expected = r'labels.json naming the structure of each label value, e.g. \{"1": "Kidney_L"'
    with pytest.raises(DatasetError, match=expected):
        read_dataset(table)


def test_a_folder_of_dicom_studies_with_rtstructs_trains_as_it_is(tmp_path):
    """Exports as they arrive: patient folders holding the CT series and its RTSTRUCT, one labels.json."""
    from medmap.data.check import check_dataset
    from medmap.tasks import task_for
    from medmap.training.config import TrainConfig
    from medmap.training.run import train_run

    root = tmp_path / "export"
    for i in range(6):
        kidneys_export(root / f"P{i}", i, names=SPELLINGS[i % len(SPELLINGS)])
    (root / "labels.json").write_text(json.dumps({"1": "Kidney_L", "2": "Kidney_R"}))
    dataset = read_dataset(root)
    assert dataset.layout == "dicom" and dataset.task == "segmentation" and dataset.modality == "CT"
    assert len(dataset.cases) == 6 and len({c.patient_id for c in dataset.cases}) == 6
    assert check_dataset(dataset, task_for("segmentation")) == []
    config = TrainConfig(epochs=1, samples_per_epoch=8, workers=0)
    overrides = ["patch_size=[8,32,32]", "batch_size=4", "network_width=4", "network_depth=3"]
    summary = train_run(root, tmp_path / "run", overrides=overrides, config=config)
    assert set(summary["metrics"]["classes"]) == {"Kidney_L", "Kidney_R"}


def test_dataset_check_lists_each_cases_structures_and_what_it_does_not_annotate(tmp_path):
    root = tmp_path / "export"
    for i in range(2):
        kidneys_export(root / f"P{i}", i, names=SPELLINGS[i + 1])
    (root / "labels.json").write_text(json.dumps({"1": "Kidney_L", "2": "Kidney_R", "3": "Liver"}))
    result = medmap_cli("dataset", "check", str(root))
    assert result.returncode == 1
    assert "PATIENT-0-1: Kidney_L <- L Kidney, Kidney_R <- R Kidney; not annotated: Liver" in result.stdout
    assert "cases annotating each label: Kidney_L 2/2, Kidney_R 2/2, Liver 0/2" in result.stdout
