"""DICOM SEG as labels: medmap's own SEG reads back voxel for voxel (corrected model output can become
training data), on an axial series and an oblique one; overlaps follow the stated rule; a SEG on another
frame of reference or outside the image names itself."""

import numpy as np
import pytest

import medmap
from medmap.dicomout.codes import meaning_of
from medmap.dicomout.seg import write_segmentation
from medmap.errors import DatasetError, MedmapWarning
from medmap.io.image import Image, ImageMeta
from medmap.io.labels.objects import load_label_object
from medmap.io.labels.seg import read_seg, seg_label_map
from tests.builders import AXIAL, ball_case, rotation, write_ct


def _seg(tmp_path, direction=AXIAL):
    image, truth = ball_case(5)
    ct = Image(np.rint(image.array * 10).astype(np.int16), image.spacing, image.origin, direction,
               ImageMeta(modality="CT"))  # fmt: skip
    write_ct(ct, tmp_path / "ct")
    source = medmap.load(tmp_path / "ct")
    segments = [(1, "ball", meaning_of("lesion")), (2, "core", meaning_of("neoplasm"))]
    path = write_segmentation(
        source.with_array(truth.array), source, segments, tmp_path / "seg.dcm", algorithm="t", algorithm_version="1"
    )
    return path, source, truth


@pytest.mark.parametrize("direction", [AXIAL, rotation(0.3, 0.2, -0.1)], ids=["axial", "oblique"])
def test_medmaps_own_seg_reads_back_voxel_for_voxel(tmp_path, direction):
    path, source, truth = _seg(tmp_path, direction)
    labels, names, match = load_label_object(path)  # its series found beside it
    assert labels.same_geometry(source) and names == {0: "background", 1: "ball", 2: "core"}
    np.testing.assert_array_equal(labels.array, truth.array)
    assert match.unmatched == () and match.missing == ()


def test_overlapping_segments_follow_the_stated_rule():
    """A SEG may hold overlapping segments: the smaller keeps the shared voxels, with a warning; or refuse."""
    from medmap.io.labels.rtstruct import paint

    image = Image(np.zeros((4, 10, 10), np.int16))
    whole, core = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    whole[:, 2:8, 2:8], core[:, 4:6, 4:6] = True, True
    with pytest.warns(MedmapWarning, match=r"seg.dcm: 'whole' and 'core' overlap in 16 voxels, labelled 'core'"):
        labels, names = paint({"core": core, "whole": whole}, {"whole": 1, "core": 2}, image, source="seg.dcm")
    assert (labels.array == 2).sum() == 16 and (labels.array == 1).sum() == 4 * 36 - 16
    assert names == {0: "background", 1: "whole", 2: "core"}
    with pytest.raises(DatasetError, match="overlaps"):
        paint({"core": core, "whole": whole}, {"whole": 1, "core": 2}, image, source="seg.dcm", overlap="error")


def test_a_seg_on_another_frame_of_reference_or_outside_the_image_names_itself(tmp_path):
    path, source, _ = _seg(tmp_path)
    segments = read_seg(path)
    meta = ImageMeta(frame_of_reference_uid="1.2")
    other = Image(source.array, source.spacing, source.origin, source.direction, meta)
    with pytest.raises(DatasetError, match=r"seg\.dcm: segments are on frame of reference"):
        seg_label_map(segments, other, {"ball": 1})
    far = Image(source.array, source.spacing, tuple(np.asarray(source.origin) + 900), source.direction, source.meta)
    with pytest.raises(DatasetError, match=r"seg\.dcm: segment 1 lies outside the image"):
        seg_label_map(segments, far, {"ball": 1})
