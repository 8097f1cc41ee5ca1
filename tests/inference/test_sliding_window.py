"""The sliding window: whole-image equality, the slab accumulator against a naive one, padding, mirroring,
and segmentation back onto the input's exact grid."""

import numpy as np
import pytest
import torch
from torch import nn

from medmap.inference.segment import segment_image
from medmap.inference.sliding_window import gaussian_1d, sliding_window, window_starts
from tests.builders import rotation, small_plan, volume


def small_net(seed=0, dims=3):
    torch.manual_seed(seed)
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    return nn.Sequential(conv(1, 6, 3, padding=1), nn.ReLU(), conv(6, 3, 3, padding=1)).eval()


def naive(image, net, window, overlap):
    """Whole-volume accumulators, weights stored explicitly: the textbook algorithm."""
    x = torch.from_numpy(image)
    shape = x.shape[1:]
    starts = [window_starts(s, w, overlap) for s, w in zip(shape, window, strict=True)]
    g = np.einsum("i,j,k->ijk", *[gaussian_1d(w) for w in window])
    acc, weight = np.zeros((3, *shape)), np.zeros(shape)
    for z in starts[0]:
        for y in starts[1]:
            for xs in starts[2]:
                sl = (slice(z, z + window[0]), slice(y, y + window[1]), slice(xs, xs + window[2]))
                with torch.no_grad():
                    p = torch.softmax(net(x[(slice(None), *sl)][None]), 1)[0].numpy()
                acc[(slice(None), *sl)] += p * g
                weight[sl] += g
    return acc / weight


def test_one_window_equals_a_whole_image_forward_pass():
    net = small_net()
    image = np.random.default_rng(0).normal(size=(1, 16, 24, 20)).astype(np.float32)
    result = sliding_window(image, net, (16, 24, 20), return_probabilities=True)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(image)[None]), 1)[0].numpy()
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)
    np.testing.assert_array_equal(result.labels, expected.argmax(0))


@pytest.mark.parametrize("overlap", [0.25, 0.5])
def test_slab_accumulator_equals_whole_volume_accumulation(overlap):
    net = small_net(1)
    image = np.random.default_rng(1).normal(size=(1, 37, 29, 33)).astype(np.float32)
    window = (12, 16, 16)
    result = sliding_window(image, net, window, overlap=overlap, batch_size=3, return_probabilities=True)
    expected = naive(image, net, window, overlap)
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    agree = (result.labels == expected.argmax(0)).mean()
    assert agree > 0.9999  # arg-max ties aside


def test_volume_smaller_than_the_window_is_padded_not_refused():
    net = small_net()
    image = np.random.default_rng(2).normal(size=(1, 5, 9, 40)).astype(np.float32)
    result = sliding_window(image, net, (8, 16, 16), return_probabilities=True)
    assert result.labels.shape == (5, 9, 40)
    assert result.probabilities.shape == (3, 5, 9, 40)
    np.testing.assert_allclose(result.probabilities.sum(0), 1, atol=1e-5)


def test_mirroring_changes_nothing_for_a_mirror_symmetric_network():
    torch.manual_seed(0)
    pointwise = nn.Conv3d(1, 3, 1).eval()  # a 1x1x1 convolution commutes with flips
    image = np.random.default_rng(3).normal(size=(1, 20, 20, 20)).astype(np.float32)
    plain = sliding_window(image, pointwise, (10, 10, 10), return_probabilities=True)
    mirrored = sliding_window(image, pointwise, (10, 10, 10), mirror_axes=(0, 1, 2), return_probabilities=True)
    np.testing.assert_allclose(mirrored.probabilities, plain.probabilities, atol=1e-6)


def test_mirroring_averages_flipped_passes():
    net = small_net(4)
    image = np.random.default_rng(4).normal(size=(1, 12, 12, 12)).astype(np.float32)
    result = sliding_window(image, net, (12, 12, 12), mirror_axes=(2,), return_probabilities=True)
    x = torch.from_numpy(image)[None]
    with torch.no_grad():
        a = torch.softmax(net(x), 1)
        b = torch.flip(torch.softmax(net(torch.flip(x, [4])), 1), [4])
    np.testing.assert_allclose(result.probabilities, ((a + b) / 2)[0].numpy(), atol=1e-6)


def test_two_d_network_runs_slice_by_slice():
    net = small_net(dims=2)
    image = np.random.default_rng(5).normal(size=(1, 4, 20, 20)).astype(np.float32)
    result = sliding_window(image, net, (1, 20, 20), spatial_dims=2, return_probabilities=True)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(image)[0][:, None]), 1).permute(1, 0, 2, 3).numpy()
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-6)


class Threshold(nn.Module):
    """Logits that make 'bright' (class 1) wherever the input is above 50: a known answer."""

    def forward(self, x):
        return torch.cat([50 - x, x - 50], dim=1)


def seg_plan(spacing):
    return small_plan(modality="MR", labels={0: "background", 1: "bright"}, target_spacing=spacing)


@pytest.mark.parametrize("target", [(2.5, 0.7, 0.8), (3.0, 1.1, 1.3)])
def test_segment_image_returns_the_input_grid_exactly(target):
    image = volume(shape=(9, 24, 20), spacing=(2.5, 0.7, 0.8), direction=rotation(0.2, -0.3, 0.1))
    arr = np.full(image.shape, -1.0, np.float32)
    arr[2:7, 5:18, 4:15] = 100.0
    image = image.with_array(arr)
    labels = segment_image(image, seg_plan(target), Threshold())
    assert labels.shape == image.shape
    assert labels.spacing == image.spacing and labels.origin == image.origin
    np.testing.assert_array_equal(labels.direction, image.direction)
    assert labels.array.dtype == np.uint8
    if target == image.spacing:  # no resampling: the known answer exactly
        np.testing.assert_array_equal(labels.array, (arr > 50).astype(np.uint8))
    else:  # resampled to a coarser grid and back: errors only within two voxels of the block's surface
        from scipy import ndimage

        truth = arr > 50
        band = ndimage.binary_dilation(truth, iterations=2) & ~ndimage.binary_erosion(truth, iterations=2)
        wrong = labels.array.astype(bool) != truth
        assert wrong.any() and not (wrong & ~band).any()
