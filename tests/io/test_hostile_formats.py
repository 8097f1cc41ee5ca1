"""Malformed NIfTI, NRRD/MHA, pictures, dataset layouts and CSV manifests: one line naming the file."""

import json
import os
import struct

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

import medmap
from medmap.data.layouts import read_dataset
from medmap.errors import MedmapError
from tests.helpers import medmap_cli


def nifti_bytes() -> bytes:
    arr = np.arange(8 * 9 * 10, dtype=np.int16).reshape(8, 9, 10)
    return nib.Nifti1Image(arr, np.eye(4)).to_bytes()


def patched(offset: int, fmt: str, *values, qform_off: bool = False) -> bytes:
    data = bytearray(nifti_bytes())
    struct.pack_into(fmt, data, offset, *values)
    if qform_off:  # make the sform the one read
        struct.pack_into("<h", data, 252, 0)
        struct.pack_into("<h", data, 254, 1)
    return bytes(data)


IMAGES = {
    "truncated.nii": lambda: nifti_bytes()[:1000],
    "header-only.nii": lambda: nifti_bytes()[:400],
    "random.nii": lambda: os.urandom(2000),
    "empty.nii": lambda: b"",
    "huge-dims.nii": lambda: patched(40, "<8h", 3, 30000, 30000, 30000, 1, 1, 1, 1),
    "bad-dtype.nii": lambda: patched(70, "<h", 1234),
    "nan-affine.nii": lambda: patched(280, "<f", float("nan"), qform_off=True),
    "inf-affine.nii": lambda: patched(280, "<f", float("inf"), qform_off=True),
    "zero-affine.nii": lambda: patched(280, "<4f", 0, 0, 0, 0, qform_off=True),
    "nan-voxels.nii": lambda: nib.Nifti1Image(np.full((4, 4, 4), np.nan, np.float32), np.eye(4)).to_bytes(),
    "gz-truncated.nii.gz": lambda: __import__("gzip").compress(nifti_bytes())[:300],
    "random.png": lambda: os.urandom(500),
    "empty.png": lambda: b"",
    "huge-dims.nrrd": lambda: (
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 99999 99999 99999\nendian: little\nencoding: raw\n\n" + bytes(100)
    ),
    "nan-spacing.mha": lambda: (
        b"ObjectType = Image\nNDims = 3\nDimSize = 10 10 10\nElementSpacing = nan 1 1\n"
        b"ElementType = MET_SHORT\nElementDataFile = LOCAL\n" + bytes(2000)
    ),
}


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_malformed_image_files_are_one_line_errors(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(IMAGES[name]())
    with pytest.raises(MedmapError) as info:
        medmap.load(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_truncated_and_bomb_pictures(tmp_path):
    ok = tmp_path / "ok.png"
    PILImage.fromarray((np.arange(400).reshape(20, 20) % 256).astype(np.uint8)).save(ok)
    (tmp_path / "cut.png").write_bytes(ok.read_bytes()[:60])
    PILImage.new("L", (20000, 20000)).save(tmp_path / "bomb.png")  # 400 megapixels: Pillow's bomb guard
    for name in ("cut.png", "bomb.png"):
        with pytest.raises(MedmapError, match=name.replace(".", r"\.")):
            medmap.load(tmp_path / name)


def test_nifti_errors_reach_the_cli_as_one_line_without_nibabel_chatter(tmp_path):
    path = tmp_path / "bad-dtype.nii"
    path.write_bytes(IMAGES["bad-dtype.nii"]())
    done = medmap_cli("convert", path, tmp_path / "out.nii.gz")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("error: ")


def test_a_valid_nrrd_still_loads(tmp_path):
    arr = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(tmp_path / "ok.nrrd"))
    np.testing.assert_array_equal(medmap.load(tmp_path / "ok.nrrd").array, arr)


def write(path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


DATASETS = {
    "msd-bad-json/dataset.json": ('{"name": ', "invalid JSON"),
    "msd-binary/dataset.json": (b"\xb9\xff" * 100, "invalid JSON"),
    "msd-list/dataset.json": ("[1, 2, 3]", "JSON object"),
    "msd-no-labels/dataset.json": (json.dumps({"name": "x", "training": []}), "labels"),
    "empty.csv": ("", "no rows"),
    "no-image-column.csv": ("foo,bar\n1,2\n", "'image' column"),
    "bad-number.csv": ("image,x,y,z,label\nimg.nii.gz,abc,1,2,1\n", "line 2"),
    "binary.csv": (b"image,label\n\xff\xfe\x00bad,1\n", "not UTF-8"),
    "unclosed-quote.csv": ('image,label\n"unterminated,1\n', "line 2"),
}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_malformed_datasets_are_one_line_errors(tmp_path, name):
    content, match = DATASETS[name]
    write(tmp_path / name, content)
    root = tmp_path / name.split("/")[0]
    with pytest.raises(MedmapError, match=match) as info:
        read_dataset(root)
    assert "\n" not in str(info.value) and str(root) in str(info.value)


def test_medmnist_npz_with_more_images_than_labels_is_refused(tmp_path):
    """zip() used to pair them silently and drop the rest."""
    path = tmp_path / "mismatch.npz"
    np.savez(path, train_images=np.zeros((10, 8, 8), np.uint8), train_labels=np.zeros((3, 1)))
    with pytest.raises(MedmapError, match="10 train_images but 3 train_labels"):
        read_dataset(path)


@pytest.mark.parametrize("content", [b"PK\x03\x04" + bytes(300), b"not a zip at all"])
def test_corrupt_npz_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(content)
    with pytest.raises(MedmapError, match=r"corrupt\.npz"):
        read_dataset(path)
