"""Each layout read from a small example written here; dataset check catches each listed problem."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

import medmap
from medmap.data.check import check_dataset
from medmap.data.layouts import read_dataset, write_msd
from medmap.errors import DatasetError
from medmap.io.image import Image
from medmap.tasks import task_for
from tests.builders import volume, write_ct


def seg_pair(seed=0, shape=(6, 12, 10)):
    img = volume(shape=shape, seed=seed)
    mask = img.with_array((np.arange(np.prod(shape)).reshape(shape) % 3).astype(np.uint8))
    return img, mask


def test_msd_round_trip(tmp_path):
    training = [(f"c{i}", *seg_pair(i)) for i in range(3)]
    write_msd(
        tmp_path / "Task",
        "Demo",
        {0: "background", 1: "liver", 2: "tumour"},
        "CT",
        training,
        [("t0", volume(shape=(6, 12, 10)))],
    )
    ds = read_dataset(tmp_path / "Task")
    assert (ds.layout, ds.task, ds.modality) == ("msd", "segmentation", "CT")
    assert [c.case_id for c in ds.cases] == ["c0", "c1", "c2", "t0"]
    assert ds.cases[-1].split == "test" and ds.cases[-1].mask is None
    assert np.array_equal(ds.cases[1].load_mask().array, training[1][2].array)
    assert ds.cases[0].load_image().same_geometry(training[0][1], tol=1e-5)
    assert check_dataset(ds, task_for(ds.task)) == []


def test_nnunet_raw_with_two_channels(tmp_path):
    root = tmp_path / "Dataset001_Brain"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    for cid in ("case_a", "case_b"):
        img, mask = seg_pair()
        medmap.save(img, root / "imagesTr" / f"{cid}_0000.nii.gz")
        medmap.save(img.with_array(img.array * 2), root / "imagesTr" / f"{cid}_0001.nii.gz")
        medmap.save(mask, root / "labelsTr" / f"{cid}.nii.gz")
    medmap.save(seg_pair()[0], root / "imagesTs" / "case_c_0000.nii.gz")
    medmap.save(seg_pair()[0], root / "imagesTs" / "case_c_0001.nii.gz")
    spec = {
        "channel_names": {"0": "T1", "1": "T2"},
        "labels": {"background": 0, "edema": 1, "tumor": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    ds = read_dataset(root)
    assert (
        ds.layout == "nnunet"
        and ds.channel_names == ["T1", "T2"]
        and ds.labels == {0: "background", 1: "edema", 2: "tumor"}
    )
    assert [(c.case_id, c.split) for c in ds.cases] == [("case_a", None), ("case_b", None), ("case_c", "test")]
    image = ds.cases[0].load_image()
    assert image.channels == 2 and np.array_equal(image.array[..., 1], image.array[..., 0] * 2)
    assert check_dataset(ds, task_for(ds.task)) == []


@pytest.mark.parametrize("shape", [(28, 28), (28, 28, 3), (28, 28, 28)])
def test_medmnist_npz(tmp_path, shape):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 5)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 3, (n, 1))
    np.savez(tmp_path / "organmnist.npz", **arrays)
    ds = read_dataset(tmp_path / "organmnist.npz")
    assert ds.task == "classification" and len(ds.cases) == 19 and len(ds.split("val")) == 4
    case = ds.split("test")[2]
    image = case.load_image()
    expected = arrays["test_images"][2]
    assert np.array_equal(image.array.reshape(expected.shape), expected)
    assert case.label == int(arrays["test_labels"][2, 0])
    assert check_dataset(ds, task_for(ds.task)) == []


def write_manifest(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_csv_lesion_manifest_and_class_order(tmp_path):
    img = volume()
    write_ct(img, tmp_path / "ct")
    centre = img.index_to_world([4, 12, 10])
    rows = [
        {"image": "ct", "x": centre[0], "y": centre[1], "z": centre[2], "label": lab, "patient_id": "P1"}
        for lab in ("malignant", "benign")
    ]
    ds = read_dataset(write_manifest(tmp_path / "lesions.csv", rows))
    assert ds.labels == {0: "benign", 1: "malignant"}
    assert [c.label for c in ds.cases] == [1, 0] and ds.cases[0].lesion.position == pytest.approx(
        tuple(centre), abs=1e-6
    )
    assert check_dataset(ds, task_for(ds.task)) == []


def problems_of(tmp_path, rows, sidecar=None):
    if sidecar:
        (tmp_path / "labels.json").write_text(json.dumps(sidecar))
    dataset = read_dataset(write_manifest(tmp_path / "m.csv", rows))
    return [str(p) for p in check_dataset(dataset, task_for(dataset.task))]


def test_check_finds_each_problem(tmp_path):
    img, mask = seg_pair()
    medmap.save(img, tmp_path / "img.nii.gz")
    medmap.save(mask, tmp_path / "ok.nii.gz")
    medmap.save(mask.with_array(mask.array * 3), tmp_path / "bad_values.nii.gz")  # values 0, 3, 6
    shifted = Image(mask.array, mask.spacing, (0.0, 0.0, 99.0), mask.direction)
    medmap.save(shifted, tmp_path / "shifted.nii.gz")
    rows = [
        {"image": "img.nii.gz", "mask": "ok.nii.gz", "patient_id": "A", "split": "train"},
        {"image": "img.nii.gz", "mask": "missing.nii.gz", "patient_id": "B", "split": "train"},
        {"image": "img.nii.gz", "mask": "bad_values.nii.gz", "patient_id": "C", "split": "train"},
        {"image": "img.nii.gz", "mask": "shifted.nii.gz", "patient_id": "D", "split": "train"},
        {"image": "nowhere.nii.gz", "mask": "ok.nii.gz", "patient_id": "E", "split": "train"},
        {"image": "img.nii.gz", "mask": "ok.nii.gz", "patient_id": "A", "split": "test"},
    ]
    found = problems_of(tmp_path, rows, sidecar={"0": "background", "1": "a", "2": "b"})
    text = "\n".join(found)
    assert "missing.nii.gz is missing" in text
    assert "label values [3, 6] not declared" in text
    assert "geometry differs" in text
    assert "nowhere.nii.gz is missing" in text
    assert "patient A: appears in several splits: test, train" in text
    assert len(found) == 5


def test_check_lesion_outside_image_and_missing_label(tmp_path):
    img = volume()
    write_ct(img, tmp_path / "ct")
    inside, outside = img.index_to_world([4, 12, 10]), img.index_to_world([4, 12, 40])
    rows = [
        {"image": "ct", "x": p[0], "y": p[1], "z": p[2], "label": lab, "patient_id": "P"}
        for p, lab in ((inside, "benign"), (outside, "malignant"), (inside, ""))
    ]
    found = problems_of(tmp_path, rows)
    assert len(found) == 2
    assert "lies outside the image" in found[0] and found[1].endswith("no label")


def test_bad_dataset_paths_and_manifests(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset"):
        read_dataset(tmp_path)
    (tmp_path / "x.csv").write_text("path,label\na,1\n")
    with pytest.raises(DatasetError, match="'image' column"):
        read_dataset(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text("image,x,y,z,label\na,1,two,3,benign\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_dataset(tmp_path / "y.csv")


def test_nifti_files_written_by_msd_writer_have_the_affine(tmp_path):
    img, mask = seg_pair()
    write_msd(tmp_path / "T", "T", {0: "bg", 1: "a", 2: "b"}, "CT", [("c", img, mask)])
    assert np.allclose(
        nib.load(tmp_path / "T" / "labelsTr" / "c.nii.gz").affine,
        nib.load(tmp_path / "T" / "imagesTr" / "c.nii.gz").affine,
    )


def test_a_lesion_table_read_for_detection_holds_every_finding_of_an_image(tmp_path):
    from medmap.errors import DatasetError

    rows = "image,x,y,z,diameter_mm,patient_id\nct/a,1,2,3,8,P1\nct/a,4,5,6,5.5,P1\nct/b,,,,,P2\n"
    (tmp_path / "t.csv").write_text(rows)
    dataset = read_dataset(tmp_path / "t.csv", "detection")
    assert dataset.task == "detection" and dataset.labels == {0: "background", 1: "nodule"}
    a, b = dataset.cases
    assert [f.position for f in a.lesions] == [(1.0, 2.0, 3.0), (4.0, 5.0, 6.0)] and a.patient_id == "P1"
    assert b.lesions == [] and b.patient_id == "P2"  # a scan without findings: a negative
    (tmp_path / "bad.csv").write_text("image,x,y,z,diameter_mm\nct/a,1,2,3,0\n")
    with pytest.raises(DatasetError, match=r"line 2 .*diameter_mm 0.0 must be above 0"):
        read_dataset(tmp_path / "bad.csv", "detection")
    (tmp_path / "cols.csv").write_text("image,x,y,z\nct/a,1,2,3\n")
    with pytest.raises(DatasetError, match="diameter_mm"):
        read_dataset(tmp_path / "cols.csv", "detection")


def test_luna16_annotations_are_read_as_they_are(tmp_path):
    """LUNA16's annotations.csv (seriesuid, coordX..Z in world mm, diameter_mm): a series is the MetaImage
    named by its UID or the DICOM series of that UID; an unknown UID names its line and UID."""
    import SimpleITK as sitk

    from medmap.io.load import load

    image = volume(shape=(9, 24, 20))
    (tmp_path / "subset0").mkdir()
    medmap.save(image, tmp_path / "volume.mha")
    sitk_image = sitk.ReadImage(str(tmp_path / "volume.mha"))
    sitk.WriteImage(sitk_image, str(tmp_path / "subset0" / "1.2.3.4.mhd"))  # LUNA16's form: .mhd + .raw
    centre = sitk_image.TransformContinuousIndexToPhysicalPoint((10.0, 12.0, 4.0))  # ITK's world: LPS mm
    write_ct(volume(seed=1), tmp_path / "dicom" / "b")
    dicom_uid = load(tmp_path / "dicom" / "b").meta.series_uid
    (tmp_path / "annotations.csv").write_text(
        "seriesuid,coordX,coordY,coordZ,diameter_mm\n"
        f"1.2.3.4,{centre[0]},{centre[1]},{centre[2]},6.5\n"
        f"{dicom_uid},1,2,3,4\n"
    )
    dataset = read_dataset(tmp_path / "annotations.csv", "detection")
    mhd, dicom = dataset.cases
    assert mhd.images == [tmp_path / "subset0" / "1.2.3.4.mhd"] and mhd.patient_id == "1.2.3.4"
    assert np.allclose(mhd.lesions[0].position, centre) and mhd.lesions[0].diameter_mm == 6.5
    assert np.allclose(mhd.load_image().world_to_index(np.asarray(centre)), (4.0, 12.0, 10.0))  # (z, y, x)
    assert dicom.series_uid == dicom_uid and dicom.images == [tmp_path / "dicom" / "b"]
    (tmp_path / "unknown.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n9.9.9,1,2,3,4\n")
    with pytest.raises(DatasetError, match=r"line 2: series 9\.9\.9 not found"):
        read_dataset(tmp_path / "unknown.csv", "detection")


def test_the_detector_holds_out_the_patients_the_classifier_of_the_same_table_holds_out(tmp_path):
    """Find-then-classify is scored on patients neither model saw: with classed findings, the detection
    split puts each patient where the classification split of the same table and seed does."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(30):
        for _ in range(int(rng.integers(1, 5))):
            label = "malignant" if rng.random() < 0.4 else "benign"
            rows.append(
                {"image": f"ct/P{p}", "x": 1, "y": 2, "z": 3, "diameter_mm": 6, "label": label, "patient_id": f"P{p}"}
            )
    rows.append({"image": "ct/N0", "x": "", "y": "", "z": "", "diameter_mm": "", "label": "", "patient_id": "N0"})
    table = write_manifest(tmp_path / "nodules.csv", rows)
    for seed in (0, 1):
        classes = read_dataset(table)  # the negative scan's row holds no lesion to classify
        by_class = task_for("classification").split(classes.cases, seed)
        by_scan = task_for("detection").split(read_dataset(table, "detection").cases, seed)
        for name in ("train", "val", "test"):
            assert {c.patient_id for c in by_scan[name]} - {"N0"} == {c.patient_id for c in by_class[name]}
        assert sum("N0" in {c.patient_id for c in by_scan[n]} for n in by_scan) == 1  # the negative scan kept


def test_a_task_medmap_does_not_have_is_refused_before_reading(tmp_path):
    """The name is checked first (nothing at the path is read) and by the same rule as the task lookup."""
    from medmap.errors import ConfigError
    from medmap.tasks import task_for

    message = r"task 'registration': medmap trains classification, segmentation and detection"
    with pytest.raises(ConfigError, match=message):
        read_dataset(tmp_path / "does-not-exist", task="registration")
    with pytest.raises(ConfigError, match=message):
        task_for("registration")
