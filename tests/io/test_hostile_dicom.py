"""Broken and hostile DICOM: every class of damage the fuzzer found either loads with pydicom's values or
is refused with one line naming the file. Never a traceback, never a wrong value, never a hang."""

import os
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

import medmap
from medmap.errors import CorruptFileError, MedmapError, SeriesError
from tests.builders import defined_length_nesting, volume, write_ct
from tests.reference import pydicom_reference


def load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return medmap.load(path, **kwargs)


def refused(path, match: str) -> str:
    with pytest.raises(MedmapError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and message.isprintable()
    assert match in message, message
    return message


def series(tmp_path, **kwargs) -> list:
    return write_ct(volume(shape=(5, 12, 10), **kwargs), tmp_path / "s")


def edit(path, **values) -> None:
    ds = pydicom.dcmread(path)
    for keyword, value in values.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)


def raw(path, keyword: str, vr: str, value: bytes) -> None:
    """Write a value's bytes as they are (pydicom would refuse to encode most hostile values)."""
    ds = pydicom.dcmread(path)
    tag = Tag(tag_for_keyword(keyword))
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    ds.save_as(path)


def test_big_endian_series_with_a_rescale_loads_with_pydicoms_values(tmp_path):
    paths = series(tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
        ds.PixelData = stored.astype(stored.dtype.newbyteorder(">")).tobytes()
        pydicom.dcmwrite(path, ds, little_endian=False, implicit_vr=False, force_encoding=True)
    image = load(tmp_path / "s")
    expected = np.stack([pydicom_reference(p)[0] for p in paths])
    assert float(pydicom.dcmread(paths[0]).RescaleIntercept) == -1024
    np.testing.assert_array_equal(image.array, expected)


def _store_as(path, syntax) -> None:
    """Re-encode one instance in another transfer syntax, its values unchanged (as a PACS may store it)."""
    ds = pydicom.dcmread(path)
    stored = ds.pixel_array
    if syntax == pydicom.uid.RLELossless:
        ds.compress(syntax, stored, encoding_plugin="pydicom")
        pydicom.dcmwrite(path, ds, little_endian=True, implicit_vr=False, force_encoding=True)
        return
    big = syntax == pydicom.uid.ExplicitVRBigEndian
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = stored.astype(stored.dtype.newbyteorder(">" if big else "<")).tobytes()
    implicit = syntax == pydicom.uid.ImplicitVRLittleEndian
    pydicom.dcmwrite(path, ds, little_endian=not big, implicit_vr=implicit, force_encoding=True)


@pytest.mark.parametrize(
    "syntax",
    [
        pydicom.uid.ImplicitVRLittleEndian,
        pydicom.uid.ExplicitVRLittleEndian,
        pydicom.uid.DeflatedExplicitVRLittleEndian,
        pydicom.uid.RLELossless,
    ],
)
@pytest.mark.parametrize("which", [0, 2, 4])
def test_a_big_endian_series_with_one_instance_in_another_syntax_keeps_every_value(tmp_path, syntax, which):
    """Byte order is each instance's own: a big-endian series with one slice re-encoded by a PACS (a fuzz
    campaign's report: such a slice came back byte-swapped, 8,704 for -986 HU)."""
    paths = series(tmp_path)
    for path in paths:
        _store_as(path, pydicom.uid.ExplicitVRBigEndian)
    _store_as(paths[which], syntax)
    image = load(tmp_path / "s")
    expected = np.stack([pydicom_reference(p)[0] for p in paths])
    np.testing.assert_array_equal(image.array, expected)
    assert image.array.min() < -500  # HU, not byte-swapped stored values


@pytest.mark.parametrize("change", ["8-bit", "rgb", "no PixelRepresentation"])
def test_a_slice_in_another_pixel_format_is_refused_naming_both_files(tmp_path, change):
    paths = series(tmp_path)
    ds = pydicom.dcmread(paths[0])  # the first slice decided the output dtype before
    small = (ds.pixel_array % 256).astype(np.uint8)
    if change == "no PixelRepresentation":
        del ds.PixelRepresentation
        ds.save_as(paths[0])
        refused(tmp_path / "s", "PixelRepresentation is missing")
        return
    if change == "rgb":
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        small = np.repeat(small[..., None], 3, axis=-1)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = small.tobytes()
    ds.save_as(paths[0])
    message = refused(tmp_path / "s", "mixed pixel formats")
    assert paths[0].name in message


@pytest.mark.parametrize(
    ("keyword", "value", "match"),
    [
        ("RescaleSlope", "inf", "RescaleSlope 'inf' is not 1 finite numbers"),
        ("RescaleIntercept", "nan", "RescaleIntercept 'nan'"),
        ("RescaleSlope", "0", "rescale slope 0"),
        ("RescaleSlope", "abc", "RescaleSlope 'abc'"),
        ("SliceThickness", "inf", "SliceThickness 'inf'"),
        ("SliceThickness", "-2", "SliceThickness -2 mm is not a positive length"),
        ("ImageOrientationPatient", "1\\0\\0\\0\\nan\\0", "ImageOrientationPatient"),
        ("ImageOrientationPatient", "1\\1\\0\\0\\1\\0", "not two orthogonal unit vectors"),
        ("ImagePositionPatient", "1e300\\0\\0", "more than 1 km from the origin"),
        ("PixelSpacing", "0\\0.7", "is not two positive lengths"),
        ("Rows", "-1", None),
        ("BitsStored", "0", None),
    ],
)
def test_damaged_geometry_and_rescale_are_errors_not_defaults(tmp_path, keyword, value, match):
    paths = series(tmp_path)
    vr = pydicom.datadict.dictionary_VR(tag_for_keyword(keyword))
    data = value.encode()
    if vr == "US":
        data = struct.pack("<h", int(value))
    raw(paths[2], keyword, vr, data + (b" " if len(data) % 2 else b""))
    message = refused(tmp_path / "s", match or paths[2].name)
    assert paths[2].name in message


def test_repeated_sop_instance_uid_is_refused(tmp_path):
    paths = series(tmp_path)
    edit(paths[3], SOPInstanceUID=pydicom.dcmread(paths[1]).SOPInstanceUID)
    message = refused(tmp_path / "s", "the same SOP Instance UID")
    assert paths[1].name in message and paths[3].name in message


def test_a_damaged_end_slice_keeps_the_series_from_loading_short(tmp_path):
    paths = series(tmp_path)
    data = paths[-1].read_bytes()
    paths[-1].write_bytes(data[: len(data) - 50])  # the last slice: no gap would show it missing
    message = refused(tmp_path / "s", "truncated")
    assert paths[-1].name in message


def test_an_unreadable_file_beside_a_series_keeps_it_from_loading(tmp_path):
    series(tmp_path)
    (tmp_path / "s" / "zz.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    refused(tmp_path / "s", "may be one of its slices")


def test_fifo_and_sparse_file_in_a_folder_neither_block_nor_stall(tmp_path):
    paths = series(tmp_path)
    os.mkfifo(tmp_path / "s" / "pipe")
    image = load(tmp_path / "s")  # the FIFO is skipped, not opened (open() would block forever)
    assert image.shape[0] == len(paths)
    sparse = tmp_path / "s" / "sparse.dcm"
    sparse.write_bytes(bytes(128) + b"DICM")
    os.truncate(sparse, 3 * 1024**3)  # a hole: no disk used, pydicom alone reads it for minutes
    refused(tmp_path / "s", "sparse.dcm")


def test_zero_filled_tail_after_pixel_data_is_refused(tmp_path):
    paths = series(tmp_path)
    os.truncate(paths[2], paths[2].stat().st_size + 2 * 1024**3)
    refused(tmp_path / "s", "bytes after the pixel data are not DICOM elements")


@pytest.mark.parametrize(("frames", "match"), [("999999999", "out of range"), ("3", "truncated")])
def test_number_of_frames_is_checked_against_the_bytes_before_anything_is_allocated(tmp_path, frames, match):
    path = tmp_path / "ct.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    raw(path, "NumberOfFrames", "IS", frames.encode() + (b" " if len(frames) % 2 else b""))
    refused(path, match)


def test_sequences_nested_deeper_than_python_recurses_are_an_error(tmp_path):
    path = tmp_path / "deep.dcm"
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    start = struct.pack("<HH", 0x0009, 0x1010) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    ends = (struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)) * 2000
    meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    path.write_bytes(data[:meta_end] + (start + item) * 2000 + ends + data[meta_end:])
    refused(path, "deep.dcm")


@pytest.mark.parametrize("descriptor", [b"\x00\x01", b"ab", b"\x00\x01\x00\x00\x07\x00"])
def test_damaged_palette_descriptors_are_errors(tmp_path, descriptor):
    path = tmp_path / "palette.dcm"
    shutil.copy(get_testdata_file("examples_palette.dcm"), path)
    raw(path, "RedPaletteColorLookupTableDescriptor", "US", descriptor)
    refused(path, "palette.dcm")


def test_enhanced_without_window_and_with_an_empty_shared_group_loads(tmp_path):
    from tests.builders import write_enhanced_ct

    path = write_enhanced_ct(volume(shape=(4, 8, 8)), tmp_path / "mf.dcm")
    ds = pydicom.dcmread(path)
    for groups in ds.PerFrameFunctionalGroupsSequence:  # everything per frame, nothing shared
        for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
            if keyword in ds.SharedFunctionalGroupsSequence[0]:
                setattr(groups, keyword, ds.SharedFunctionalGroupsSequence[0][keyword].value)
    ds.SharedFunctionalGroupsSequence = pydicom.sequence.Sequence([])
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(path)
    image = load(path)
    assert image.shape == (4, 8, 8) and image.meta.window_center is None


def test_unknown_vr_bytes_and_wrong_length_values_are_one_line_errors(tmp_path):
    path = tmp_path / "vr.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    raw(path, "Modality", "ZZ", b"CT")
    refused(path, "vr.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    raw(path, "Rows", "US", b"\x80\x00\x00")  # three bytes for a two-byte value
    refused(path, "vr.dcm")


def test_info_and_convert_refuse_what_the_loader_refuses(tmp_path):
    from tests.test_cli import medmap_cli

    paths = series(tmp_path)
    raw(paths[1], "RescaleSlope", "DS", b"nan ")
    for command in (("info", tmp_path / "s"), ("convert", tmp_path / "s", tmp_path / "out.nii.gz")):
        done = medmap_cli(*command)
        assert done.returncode == 1
        (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
        assert paths[1].name in line and "RescaleSlope" in line
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_corrupt_error_class_is_a_medmap_error():
    assert issubclass(CorruptFileError, MedmapError) and issubclass(SeriesError, MedmapError)


def _with_private_block(blob: bytes) -> bytes:
    """CT_small (explicit VR little endian) with ``blob``, a (0009,1010) element, placed where that tag belongs
    (tags ascending; the file holds the private creator (0009,0010))."""
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    pos = 132 + 12 + struct.unpack("<I", data[140:144])[0]
    while (lambda g, e: g << 16 | e)(*struct.unpack("<HH", data[pos : pos + 4])) < 0x00091010:
        if data[pos + 4 : pos + 6] in (b"OB", b"OW", b"SQ", b"UN", b"UT", b"UC", b"UR", b"OF", b"OD", b"OL"):
            pos += 12 + struct.unpack("<I", data[pos + 8 : pos + 12])[0]
        else:
            pos += 8 + struct.unpack("<H", data[pos + 6 : pos + 8])[0]
    return data[:pos] + blob + data[pos:]


@pytest.mark.timeout(120)
def test_defined_length_nesting_50000_deep_is_refused_at_once(tmp_path):
    """Fuzz finding: nesting past Python's recursion made pydicom format a traceback per level (a hang)."""
    path = tmp_path / "deep.dcm"
    path.write_bytes(_with_private_block(defined_length_nesting(50_000)))
    assert "nested" in refused(path, "deep.dcm")


@pytest.mark.timeout(120)
def test_per_frame_functional_groups_nested_3000_deep_are_refused_at_once(tmp_path):
    """The campaign's finding as it was: the nesting inside an enhanced CT's per-frame functional groups."""
    from tests.builders import write_enhanced_ct

    path = write_enhanced_ct(volume(shape=(3, 8, 8)), tmp_path / "e.dcm")
    ds = pydicom.dcmread(path)
    groups = ds["PerFrameFunctionalGroupsSequence"]
    groups.is_undefined_length = True  # so that bytes put into its first item need no lengths changed
    for item in groups.value:
        item.is_undefined_length_sequence_item = True
    marker = b"NESTING HERE"
    groups.value[0].add_new(0x00091010, "OB", marker)
    ds.save_as(path)
    data = path.read_bytes()
    placeholder = struct.pack("<HH", 0x0009, 0x1010) + b"OB\x00\x00" + struct.pack("<I", len(marker)) + marker
    assert data.count(placeholder) == 1
    path.write_bytes(data.replace(placeholder, defined_length_nesting(3000)))
    assert "nested" in refused(path, "e.dcm")


def test_nesting_a_real_object_uses_is_read(tmp_path):
    """Ten levels (more than enhanced multi-frame or SR objects use) load as before."""
    path = tmp_path / "ten.dcm"
    path.write_bytes(_with_private_block(defined_length_nesting(10)))
    assert load(path).shape == (1, 128, 128)
