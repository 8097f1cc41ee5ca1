"""The generated demo data: deterministic, valid, and lesions exactly where the manifests say."""

import csv
import filecmp

import numpy as np
import pytest

import medmap
from medmap.data.check import check_dataset
from medmap.data.demo import write_demo_data
from medmap.data.layouts import read_dataset
from medmap.errors import OutputError
from medmap.tasks import task_for
from tests.builders import tiny_demo_size

TINY = tiny_demo_size()


@pytest.fixture
def demo(tiny_demo):
    return tiny_demo


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_dataset_passes_check(demo):
    for name in ("nodules.csv", "liver", "radiographs.csv"):
        ds = read_dataset(demo / name)
        assert check_dataset(ds, task_for(ds.task)) == [], name
    assert len(read_dataset(demo / "liver").split("test")) == 1


def test_nodules_are_where_the_manifest_says(demo):
    rows = read_rows(demo / "nodules.csv")
    assert len(rows) == 6 and {r["label"] for r in rows} <= {"benign", "malignant"}
    images = {}
    for r in rows:
        img = images.setdefault(r["image"], medmap.load(demo / r["image"]))
        k, j, i = np.rint(img.world_to_index([float(r["x"]), float(r["y"]), float(r["z"])])).astype(int)
        centre = img.array[k, j - 1 : j + 2, i - 1 : i + 2].mean()
        assert centre > -300, f"no nodule at {r}"  # soft tissue or calcium, not lung
        # 16 points on a circle 4 mm outside the nodule: mostly lung (median robust to a vessel)
        radius = (float(r["diameter_mm"]) / 2 + 4) / img.spacing[1]
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        jj = np.clip(np.rint(j + radius * np.sin(angles)).astype(int), 0, img.shape[1] - 1)
        ii = np.clip(np.rint(i + radius * np.cos(angles)).astype(int), 0, img.shape[2] - 1)
        assert np.median(img.array[k, jj, ii]) < -500, f"nodule not surrounded by lung: {r}"


def test_liver_labels_and_dicom_test_series(demo):
    ds = read_dataset(demo / "liver")
    mask = ds.cases[0].load_mask().array
    assert set(np.unique(mask)) <= {0, 1, 2} and (mask == 1).sum() > 1000
    test_nifti = medmap.load(demo / "liver" / "imagesTs" / "liver_003.nii.gz")
    test_dicom = medmap.load(demo / "liver_dicom" / "liver_003")
    assert np.array_equal(test_nifti.array, test_dicom.array)
    assert test_dicom.same_geometry(test_nifti, tol=1e-4)


def test_radiographs_read_brighter_where_denser_whatever_the_photometric(demo):
    rows = read_rows(demo / "radiographs.csv")
    photometrics = set()
    for r in rows:
        img = medmap.load(demo / r["image"])
        photometrics.add(img.meta.photometric)
        a = img.array[0].astype(float)
        n = a.shape[1]
        assert a[n // 2, n // 2] > a[n // 2, n // 4]  # mediastinum denser than the lung field
    assert len(rows) >= 4


def test_same_seed_same_data_and_no_overwrite(demo, tmp_path):
    again = tmp_path / "again"
    write_demo_data(again, seed=7, size=TINY)
    assert filecmp.cmp(demo / "nodules.csv", again / "nodules.csv", shallow=False)
    a = medmap.load(demo / "liver" / "imagesTr" / "liver_000.nii.gz").array
    b = medmap.load(again / "liver" / "imagesTr" / "liver_000.nii.gz").array
    assert np.array_equal(a, b)
    other = tmp_path / "other"
    write_demo_data(other, seed=8, size=TINY)
    assert not filecmp.cmp(demo / "nodules.csv", other / "nodules.csv", shallow=False)
    with pytest.raises(OutputError, match="not empty"):
        write_demo_data(again, seed=7, size=TINY)
