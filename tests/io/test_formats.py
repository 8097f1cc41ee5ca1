"""NIfTI/NRRD/MHA/PNG: geometry survives, and agrees with SimpleITK and nibabel read independently."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

import medmap
from medmap.errors import CorruptFileError, OutputError, UnsupportedFormatError
from medmap.io.image import Image
from tests.builders import rotation, volume, write_ct

OBLIQUE = rotation(0.3, -0.2, 0.45)


def expected_ras_affine(img: Image) -> np.ndarray:
    """NIfTI voxel (i, j, k) = (column, row, slice) to RAS, derived by hand from the LPS geometry."""
    a = np.eye(4)
    a[:3, 0] = img.direction[:, 2] * img.spacing[2]
    a[:3, 1] = img.direction[:, 1] * img.spacing[1]
    a[:3, 2] = img.direction[:, 0] * img.spacing[0]
    a[:3, 3] = img.origin
    return np.diag([-1, -1, 1, 1]) @ a


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip_preserves_affine_and_voxels(tmp_path, suffix):
    img = volume(direction=OBLIQUE, spacing=(2.0, 0.5, 0.8))
    path = medmap.save(img, tmp_path / f"v{suffix}")
    nii = nib.load(path)
    np.testing.assert_allclose(nii.affine, expected_ras_affine(img), atol=1e-5)
    np.testing.assert_allclose(nii.get_qform(), expected_ras_affine(img), atol=1e-5)
    assert np.array_equal(np.asarray(nii.dataobj)[3, 5, 2], img.array[2, 5, 3])
    back = medmap.load(path)
    assert np.array_equal(back.array, img.array) and back.array.dtype == img.array.dtype
    assert back.same_geometry(img, tol=1e-5)


def test_nifti_written_by_medmap_reads_the_same_in_simpleitk(tmp_path):
    img = volume(direction=OBLIQUE)
    medmap.save(img, tmp_path / "v.nii.gz")
    theirs = Image.from_sitk(sitk.ReadImage(str(tmp_path / "v.nii.gz")))
    assert theirs.same_geometry(img, tol=1e-4)
    assert np.array_equal(theirs.array, img.array)


def test_nifti_written_by_simpleitk_reads_the_same_in_medmap(tmp_path):
    img = volume(direction=OBLIQUE, spacing=(1.1, 0.9, 0.7))
    sitk.WriteImage(img.to_sitk(), str(tmp_path / "s.nii.gz"))
    ours = medmap.load(tmp_path / "s.nii.gz")
    assert ours.same_geometry(img, tol=1e-4)
    assert np.array_equal(ours.array, img.array)


def test_dicom_to_nifti_matches_simpleitk_conversion(tmp_path):
    img = volume(direction=OBLIQUE)
    write_ct(img, tmp_path / "dcm")
    medmap.save(medmap.load(tmp_path / "dcm"), tmp_path / "ours.nii.gz")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "dcm")))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "theirs.nii.gz"))
    ours, theirs = nib.load(tmp_path / "ours.nii.gz"), nib.load(tmp_path / "theirs.nii.gz")
    np.testing.assert_allclose(ours.affine, theirs.affine, atol=1e-4)
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))


def test_scaled_nifti_is_read_as_float(tmp_path):
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nii = nib.Nifti1Image(data, np.eye(4))
    nii.header.set_slope_inter(0.5, -3.0)
    nib.save(nii, tmp_path / "scaled.nii.gz")
    img = medmap.load(tmp_path / "scaled.nii.gz")
    assert img.array.dtype == np.float32
    assert img.array[1, 2, 0] == pytest.approx(data[0, 2, 1] * 0.5 - 3.0)


def test_four_d_nifti_becomes_channels(tmp_path):
    data = np.random.default_rng(0).random((4, 5, 6, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "mc.nii.gz")
    img = medmap.load(tmp_path / "mc.nii.gz")
    assert img.array.shape == (6, 5, 4, 2) and img.channels == 2
    assert img.array[5, 4, 3, 1] == data[3, 4, 5, 1]
    medmap.save(img, tmp_path / "again.nii.gz")
    assert np.array_equal(np.asarray(nib.load(tmp_path / "again.nii.gz").dataobj), data)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_formats_round_trip(tmp_path, suffix):
    img = volume(direction=OBLIQUE)
    back = medmap.load(medmap.save(img, tmp_path / f"v{suffix}"))
    assert back.same_geometry(img, tol=1e-6) and np.array_equal(back.array, img.array)


def test_png_grey_and_rgb(tmp_path):
    grey = (np.arange(48).reshape(6, 8) * 5).astype(np.uint8)
    PILImage.fromarray(grey).save(tmp_path / "g.png")
    rgb = np.dstack([grey, grey[::-1], 255 - grey])
    PILImage.fromarray(rgb).save(tmp_path / "c.png")
    deep = (np.arange(48).reshape(6, 8) * 1000).astype(np.uint16)
    PILImage.fromarray(deep).save(tmp_path / "d.png")
    g, c, d = (medmap.load(tmp_path / n) for n in ("g.png", "c.png", "d.png"))
    assert g.shape == (1, 6, 8) and np.array_equal(g.array[0], grey)
    assert c.channels == 3 and np.array_equal(c.array[0], rgb)
    assert d.array.dtype == np.uint16 and np.array_equal(d.array[0], deep)


def test_a_bit_map_png_holds_zero_and_one_as_its_labels_json_names_them(tmp_path):
    """CHASE_DB1's vessel masks are 1-bit PNGs: their values are 0 and 1 (Pillow's "L" conversion made 255,
    so a labels.json of {"0", "1"} was refused)."""
    from medmap.data.layouts import read_dataset

    bits = np.zeros((6, 8), bool)
    bits[2:4, 3:6] = True
    PILImage.fromarray(bits).convert("1").save(tmp_path / "m.png")
    PILImage.fromarray((bits * 200).astype(np.uint8)).save(tmp_path / "i.png")
    mask = medmap.load(tmp_path / "m.png")
    assert mask.array.dtype == np.uint8 and np.array_equal(mask.array[0], bits.astype(np.uint8))
    (tmp_path / "t.csv").write_text("image,mask\ni.png,m.png\n")
    (tmp_path / "labels.json").write_text('{"0": "background", "1": "vessel"}')
    (case,) = read_dataset(tmp_path / "t.csv").cases
    assert np.array_equal(case.load_mask().array, bits[None].astype(np.uint8))


def test_corrupt_and_unknown_files_name_the_file(tmp_path):
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CorruptFileError, match=r"bad\.nii\.gz"):
        medmap.load(tmp_path / "bad.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match=r"notes\.txt.*not DICOM"):
        medmap.load(tmp_path / "notes.txt")
    with pytest.raises(OutputError, match="cannot write"):
        medmap.save(volume(), tmp_path / "v.xyz")
