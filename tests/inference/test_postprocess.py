"""Post-processing fills removed components from their border; vectorised, it must decide as one
component at a time does (the reference below, the implementation before it was vectorised)."""

import numpy as np
import pytest
from scipy import ndimage

from medmap.inference import postprocess
from medmap.inference.postprocess import PostProcessing


def one_component_at_a_time(labels: np.ndarray, remove: np.ndarray) -> None:
    components, _ = postprocess._components(remove)
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        piece = components[grown] == index
        border = ndimage.binary_dilation(piece) & ~piece & ~remove[grown]
        values = labels[grown][border]
        labels[grown][piece] = np.bincount(values).argmax() if values.size else 0


@pytest.mark.parametrize("trial", range(12))
def test_fill_decides_as_one_component_at_a_time(trial):
    rng = np.random.default_rng(trial)
    shape = (12, 30, 30) if trial % 3 else (40, 50)
    labels = rng.integers(0, 4, shape).astype(np.uint8)
    if trial % 2:
        labels = ndimage.median_filter(labels, 3)  # regions, not noise
    remove = rng.random(shape) < 0.05 + 0.6 * (trial % 4) / 4
    expected, got = labels.copy(), labels.copy()
    one_component_at_a_time(expected, remove)
    postprocess._fill(got, remove)
    assert np.array_equal(expected, got)


def test_small_specks_take_their_surroundings():
    labels = np.ones((9, 9, 9), np.uint8)
    labels[4, 4, 4] = 2  # a one-voxel tumour speck inside liver
    labels[0, 0, 0] = 2  # and one in a corner, still surrounded by liver
    out = PostProcessing(min_volume_mm3={2: 5.0}).apply(labels, spacing=(1.0, 1.0, 1.0))
    assert (out == 1).all()
