"""Every image among pydicom's bundled test files that pydicom can decode loads with pydicom's values."""

import warnings

import numpy as np
import pytest

import medmap
from tests.reference import PYDICOM_TEST_FILES, pydicom_reference

DECODABLE = [(p, ref) for p in PYDICOM_TEST_FILES if (ref := pydicom_reference(p)) is not None]


def test_the_bundled_files_are_all_there():
    # Guards the parametrised test below against silently testing nothing.
    assert len(DECODABLE) >= 80


@pytest.mark.parametrize(("path", "expected"), DECODABLE, ids=[p.name for p, _ in DECODABLE])
def test_pixels_equal_pydicom_after_rescale(path, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", medmap.errors.MedmapWarning)
        image = medmap.load(path)
    frames = [s.frame or 0 for s in image.meta.slices]
    assert sorted(frames) == list(range(expected.shape[0])), "every frame loaded exactly once"
    got = image.array.astype(np.float64)
    assert got.shape == expected[frames].shape
    np.testing.assert_allclose(got, expected[frames], rtol=1e-6, atol=1e-6)
