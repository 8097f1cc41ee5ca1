"""Series assembly: geometry equal to SimpleITK's, and every way a series can be broken."""

import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

import medmap
from medmap.errors import (
    CorruptFileError,
    InputNotFoundError,
    MedmapWarning,
    NotAnImageError,
    SeriesError,
)
from medmap.io.image import Image
from tests.builders import AXIAL, rotation, volume, write_ct, write_enhanced_ct


def sitk_series(folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return Image.from_sitk(reader.Execute())


def shuffle_names(paths):
    """Rename files so that neither names nor directory order follow slice order."""
    names = [p.with_name(f"x{random.Random(7).random():.6f}_{i}.dcm") for i, p in enumerate(paths)]
    order = list(range(len(paths)))
    random.Random(3).shuffle(order)
    for i, j in enumerate(order):
        paths[i].rename(names[j])


CASES = {
    "axial-shuffled": dict(direction=AXIAL, spacing=(2.5, 0.7, 0.8)),
    "oblique-anisotropic": dict(direction=rotation(0.35, -0.25, 0.6), spacing=(3.3, 0.45, 0.9)),
    "coronal": dict(direction=np.column_stack([[0, 1.0, 0], [0, 0, -1.0], [1.0, 0, 0]]), spacing=(1.0, 1.2, 0.6)),
    "sagittal": dict(direction=np.column_stack([[-1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]), spacing=(1.5, 1.0, 1.0)),
}


@pytest.mark.parametrize("case", CASES)
def test_series_geometry_and_voxels_equal_simpleitk(tmp_path, case):
    truth = volume(**CASES[case])
    paths = write_ct(truth, tmp_path / "s")
    shuffle_names(paths)
    ours = medmap.load(tmp_path / "s")
    theirs = sitk_series(tmp_path / "s")
    np.testing.assert_allclose(ours.spacing, theirs.spacing, atol=1e-4)
    np.testing.assert_allclose(ours.origin, theirs.origin, atol=1e-4)
    np.testing.assert_allclose(ours.direction, theirs.direction, atol=1e-4)
    assert np.array_equal(ours.array, theirs.array)
    # and both equal the volume that was written
    assert np.array_equal(ours.array, truth.array)
    assert ours.same_geometry(truth, tol=1e-4)
    assert ours.array.dtype == np.int16  # HU fit int16 even though the header allows wider values


def test_volume_with_reversed_slice_normal_round_trips_physically(tmp_path):
    # Slice axis pointing against row x column: the files are the same, the reader stacks them the
    # other way round; every voxel must still sit at the same place in the patient.
    truth = volume(direction=AXIAL * np.array([-1.0, 1.0, 1.0]))
    write_ct(truth, tmp_path / "s")
    loaded = medmap.load(tmp_path / "s")
    assert np.array_equal(loaded.array, truth.array[::-1])
    np.testing.assert_allclose(loaded.index_to_world([0, 3, 4]), truth.index_to_world([8, 3, 4]), atol=1e-4)


def test_enhanced_multiframe_equals_the_single_frame_series(tmp_path):
    truth = volume(direction=rotation(0.2, 0.1, -0.4), spacing=(2.0, 0.6, 0.75))
    write_ct(truth, tmp_path / "classic")
    order = list(range(truth.shape[0]))
    random.Random(1).shuffle(order)
    path = write_enhanced_ct(truth, tmp_path / "enhanced.dcm", frame_order=order)
    classic = medmap.load(tmp_path / "classic")
    enhanced = medmap.load(path)
    assert np.array_equal(enhanced.array, classic.array)
    assert enhanced.same_geometry(classic, tol=1e-4)
    # each slice knows which frame it came from, for SEG references later
    assert [s.frame for s in enhanced.meta.slices] == sorted(range(len(order)), key=lambda i: order[i])


def test_missing_slice_is_an_error_naming_the_neighbours(tmp_path):
    paths = write_ct(volume(), tmp_path / "s")
    paths[4].unlink()
    with pytest.raises(SeriesError, match=r"missing slice.*0004\.dcm.*0006\.dcm"):
        medmap.load(tmp_path / "s")


def test_mixed_sizes_is_an_error_naming_a_file(tmp_path):
    write_ct(volume(), tmp_path / "s")
    odd = pydicom.dcmread(tmp_path / "s" / "0003.dcm")
    small = volume(shape=(1, 10, 10))
    odd.Rows, odd.Columns = 10, 10
    odd.PixelData = (small.array + 1024).astype(np.uint16).tobytes()
    odd.save_as(tmp_path / "s" / "0003.dcm")
    with pytest.raises(SeriesError, match=r"mixed image sizes.*0003\.dcm"):
        medmap.load(tmp_path / "s")


def test_duplicate_positions_are_an_error(tmp_path):
    paths = write_ct(volume(), tmp_path / "s")
    dup = pydicom.dcmread(paths[2])
    dup.SOPInstanceUID = pydicom.uid.generate_uid()
    dup.save_as(tmp_path / "s" / "copy.dcm")
    with pytest.raises(SeriesError, match="share a position"):
        medmap.load(tmp_path / "s")


def test_gantry_tilt_warns_and_loads(tmp_path):
    paths = write_ct(volume(), tmp_path / "s")
    for k, p in enumerate(paths):  # shear: each slice shifted 0.5 mm posteriorly per slice
        ds = pydicom.dcmread(p)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.5 * k, z]
        ds.save_as(p)
    with pytest.warns(MedmapWarning, match=r"gantry tilt of 11\.\d+ degrees"):
        img = medmap.load(tmp_path / "s")
    assert img.shape[0] == len(paths)


def test_truncated_file_is_an_error_naming_it(tmp_path):
    paths = write_ct(volume(), tmp_path / "s")
    data = paths[5].read_bytes()
    paths[5].write_bytes(data[: len(data) - 300])
    with pytest.raises(CorruptFileError, match=r"0006\.dcm.*truncated"):
        medmap.load(tmp_path / "s")


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_jpeg_gdcm.dcm"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_compressed_file_is_an_error(tmp_path, name, keep):
    data = Path(get_testdata_file(name)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptFileError, match=r"cut\.dcm"):
        medmap.load(tmp_path / "cut.dcm")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="empty"):
        medmap.load(tmp_path / "empty")


def test_structured_report_is_not_an_image():
    sr = get_testdata_file("test-SR.dcm")
    with pytest.raises(NotAnImageError, match=r"test-SR\.dcm.*without pixel data"):
        medmap.load(sr)


def test_non_dicom_files_are_ignored_with_a_warning(tmp_path):
    write_ct(volume(), tmp_path / "s")
    (tmp_path / "s" / "README.txt").write_text("not an image")
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "s" / "report.dcm")
    with pytest.warns(MedmapWarning, match="ignored 2 file"):
        img = medmap.load(tmp_path / "s")
    assert img.shape[0] == 9


def test_folder_with_two_series_asks_which(tmp_path):
    a = write_ct(volume(seed=1), tmp_path / "study" / "a")
    write_ct(volume(seed=2), tmp_path / "study" / "b")
    with pytest.raises(SeriesError, match="holds 2 series"):
        medmap.load(tmp_path / "study")
    uid = pydicom.dcmread(a[0]).SeriesInstanceUID
    chosen = medmap.load(tmp_path / "study", series_uid=uid)
    assert np.array_equal(chosen.array, volume(seed=1).array)


def test_values_beyond_int16_widen_the_dtype(tmp_path):
    img = volume()
    img.array[0, 0, 0] = -1024
    paths = write_ct(img, tmp_path / "s")
    ds = pydicom.dcmread(paths[0])
    stored = np.frombuffer(ds.PixelData, dtype=np.uint16).copy()
    stored[1] = 60000  # 60000 - 1024 HU does not fit int16
    ds.PixelData = stored.tobytes()
    ds.save_as(paths[0])
    loaded = medmap.load(tmp_path / "s")
    assert loaded.array.dtype == np.int32
    assert loaded.array[0, 0, 1] == 60000 - 1024


def test_metadata_carries_uids_and_window_but_no_patient_identity(tmp_path):
    paths = write_ct(volume(), tmp_path / "s", window_center=40, window_width=400, body_part="ABDOMEN")
    img = medmap.load(tmp_path / "s")
    ds = pydicom.dcmread(paths[0])
    assert img.meta.series_uid == ds.SeriesInstanceUID and img.meta.study_uid == ds.StudyInstanceUID
    assert (img.meta.window_center, img.meta.window_width, img.meta.body_part) == (40.0, 400.0, "ABDOMEN")
    assert len(img.meta.slices) == 9 and img.meta.slices[0].sop_instance_uid == ds.SOPInstanceUID
    assert "PHANTOM" not in repr(img.meta)


def test_monochrome1_is_inverted_to_higher_is_brighter(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m2 = medmap.load(get_testdata_file("MR_small.dcm")).array.astype(np.int64)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    m1 = medmap.load(tmp_path / "m1.dcm").array.astype(np.int64)
    lo, hi = -(2**15), 2**15 - 1  # MR_small: 16 bits stored, signed
    assert np.array_equal(m1, lo + hi - m2)


def test_float_pixel_data_keeps_float_values(tmp_path):
    paths = write_ct(volume(shape=(1, 6, 5)), tmp_path / "s")
    ds = pydicom.dcmread(paths[0])
    del ds.PixelData
    for keyword in ("RescaleSlope", "RescaleIntercept", "RescaleType", "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(ds, keyword)
    values = np.linspace(-1.5, 2.75, 30, dtype=np.float32).reshape(6, 5)
    ds.BitsAllocated = 32
    ds.FloatPixelData = values.tobytes()
    ds.save_as(tmp_path / "float.dcm")
    img = medmap.load(tmp_path / "float.dcm")
    assert img.array.dtype == np.float32
    np.testing.assert_array_equal(img.array[0], values)


@pytest.mark.parametrize(
    ("slope", "intercept", "stored_dtype"), [(2, -3000, np.uint16), (1, 100, np.uint16), (3, 7, np.int16)]
)
def test_integer_rescale_is_exact(tmp_path, slope, intercept, stored_dtype):
    paths = write_ct(volume(), tmp_path / "s")
    rng = np.random.default_rng(0)
    stored = rng.integers(1600, 3000, size=(9, 24, 20)).astype(stored_dtype)
    for k, p in enumerate(sorted(paths)):
        ds = pydicom.dcmread(p)
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelRepresentation = 1 if stored_dtype == np.int16 else 0
        ds.PixelData = stored[k].tobytes()
        ds.save_as(p)
    img = medmap.load(tmp_path / "s")
    assert np.issubdtype(img.array.dtype, np.integer)
    assert np.array_equal(img.array.astype(np.int64), stored.astype(np.int64) * slope + intercept)
