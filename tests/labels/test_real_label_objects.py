"""Every RTSTRUCT and SEG in ../shared/data/real converts, or refuses in one line naming the object; the
structures land where they should. Runs only where that folder exists (never committed; the suite
passes without it), and says so when it does not."""

import warnings
from pathlib import Path

import numpy as np
import pytest

from medmap.errors import MedmapError
from medmap.io.labels.objects import load_label_object

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "real"
pytestmark = pytest.mark.skipif(
    not REAL.is_dir(), reason=f"real data not here ({REAL}): real label objects not checked"
)


def _convert(relative: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_label_object(REAL / relative)


def test_lung1_rtstruct_lands_on_its_ct_with_the_lungs_on_their_sides():
    labels, names, _ = _convert("nsclc_lung1_001/mask_rtstruct/1-1.dcm")
    value = {n: v for v, n in names.items()}
    left, right = (
        labels.index_to_world(np.argwhere(labels.array == value[n])[::97]).mean(0) for n in ("Lung-Left", "Lung-Right")
    )
    assert left[0] > 40 > -40 > right[0]  # LPS: +x is the patient's left
    assert all((labels.array == v).any() for v in value.values() if v)


def test_sts_tumour_has_one_volume_on_pet_and_on_mr():
    volumes = []
    for series in ("FDG_PET", "MR_T1", "MR_T2"):
        labels, names, _ = _convert(f"sts_001/{series}/mask/1-1.dcm")
        mass = next(v for v, n in names.items() if n == "GTV_Mass")
        volumes.append((labels.array == mass).sum() * np.prod(labels.spacing) / 1000)
    assert max(volumes) / min(volumes) < 1.15, volumes  # the same tumour, drawn on three series


def test_dcmqi_seg_matches_dcmqis_own_conversion_voxel_for_voxel():
    import medmap
    from medmap.data.preprocess import resample_like

    labels, _, _ = _convert("dcmqi_seg/data/segmentations/liver.dcm")
    reference = medmap.load(REAL / "dcmqi_seg/data/segmentations/liver_seg.nrrd")
    np.testing.assert_array_equal(labels.array > 0, resample_like(reference, labels, order="nearest").array > 0)
    overlaps, names, _ = _convert("dcmqi_seg/data/segmentations/partial_overlaps.dcm")
    assert len(names) == 6 and all((overlaps.array == v).any() for v in range(1, 6))


@pytest.mark.parametrize("relative", ["dcmqi_seg/data/sr-example/seg.dcm"])
def test_a_seg_whose_image_is_absent_says_so_in_one_line(relative):
    with pytest.raises(MedmapError, match=r"the series it references .* is not in") as err:
        _convert(relative)
    assert "\n" not in str(err.value) and relative.split("/")[-1] in str(err.value)


def test_dcmqis_sr_example_says_which_group_it_cannot_place():
    from medmap.io.labels.sr import read_lesion_report

    report = read_lesion_report(REAL / "dcmqi_seg/data/sr-example/sr.dcm")
    assert report.marks == () and not report.negative
    assert report.skipped == (
        "primary tumor: located by a segment of a SEG (medmap reads points, ellipses, ellipsoids, circles and lines)",
    )
