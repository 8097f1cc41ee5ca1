"""DICOM results for an Enhanced CT (one multi-frame instance, frames stored out of order, as the node may
receive them): the SEG references the source frames and decodes back onto the volume, the overlays name
their frame, the SR references the series; all pass dciodvfy."""

import numpy as np
import pydicom
import pytest

import medmap
from medmap.dicomout.codes import meaning_of
from medmap.dicomout.overlay import write_overlays
from medmap.dicomout.seg import write_segmentation
from medmap.dicomout.sr import LesionFinding, write_lesion_report
from tests.builders import ball_case, write_enhanced_ct
from tests.helpers import dciodvfy_errors

ORDER = [3, 0, 7, 1, 12, 5, 2, 9, 4, 13, 6, 11, 8, 10]  # the 14 slices' storage order in the file


@pytest.fixture(scope="session")  # session: built once even when xdist interleaves modules
def enhanced(tmp_path_factory):
    image, truth = ball_case(3)
    image = image.with_array(np.rint(image.array * 10).astype(np.int16))
    path = write_enhanced_ct(image, tmp_path_factory.mktemp("enhanced") / "ct.dcm", frame_order=ORDER)
    source = medmap.load(path)
    assert [ref.frame for ref in source.meta.slices] == sorted(range(len(ORDER)), key=lambda i: ORDER[i])
    return source, source.with_array(truth.array, modality="SEG")


def test_seg_of_an_enhanced_ct_decodes_onto_the_volume(enhanced, tmp_path):
    import highdicom as hd

    source, labels = enhanced
    segments = [(1, "ball", meaning_of("lesion")), (2, "core", meaning_of("neoplasm"))]
    path = write_segmentation(labels, source, segments, tmp_path / "seg.dcm", algorithm="test", algorithm_version="1")
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    sop = pydicom.dcmread(source.meta.slices[0].path).SOPInstanceUID
    frames = [ref.frame + 1 for ref in source.meta.slices]  # the volume's slices, as source frame numbers
    decoded = seg.get_pixels_by_source_frame(sop, frames, combine_segments=True)
    np.testing.assert_array_equal(decoded, labels.array)


def test_overlays_of_an_enhanced_ct_name_their_frame(enhanced, tmp_path):
    source, labels = enhanced
    paths = write_overlays(labels, source, tmp_path, [(1, "ball"), (2, "core")], algorithm="test")
    labelled = [z for z in range(labels.shape[0]) if labels.array[z].any()]
    assert len(paths) == len(labelled)
    assert dciodvfy_errors(paths[0]) == []
    for z, path in zip(labelled, paths, strict=True):
        reference = pydicom.dcmread(path).SourceImageSequence[0]
        assert reference.ReferencedFrameNumber == source.meta.slices[z].frame + 1


def test_sr_of_an_enhanced_ct(enhanced, tmp_path):
    source, labels = enhanced
    centre = source.index_to_world(np.argwhere(labels.array == 2).mean(axis=0))
    finding = LesionFinding(
        position_lps=tuple(float(v) for v in centre),
        finding_type=meaning_of("nodule").type,
        predicted_class=meaning_of("malignant").type,
        probability=0.8,
        probability_name="Probability of cancer",
    )
    path = write_lesion_report(source, [finding], tmp_path / "sr.dcm", algorithm="test", algorithm_version="1")
    assert dciodvfy_errors(path) == []
    assert pydicom.dcmread(path).StudyInstanceUID == pydicom.dcmread(source.meta.slices[0].path).StudyInstanceUID
