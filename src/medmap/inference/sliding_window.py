"""Sliding-window inference: a patch-trained segmentation network applied to a volume of any size.

`sliding_window` tiles the volume with windows of the training patch size (``overlap`` shared between
neighbours), runs one or more networks (fold ensembles) on batches of windows, optionally also on
mirrored copies (test-time augmentation), and blends the softmax outputs with a Gaussian importance
weight so that window centres, where the network saw context on every side, count most.

Why not MONAI's ``sliding_window_inference``: it keeps a float32 accumulator of classes x the whole
volume plus a whole-volume weight map (4 x 300 MB for three classes on a 512 x 512 x 300 CT) and divides
at the end. Here:

- windows are visited slab by slab along the slice axis, so the accumulator holds only one slab of
  the patch's depth; slices that no later window touches are finished (arg-max) and dropped. Peak
  memory is the input, a uint8 label map and one slab, whatever the number of classes, and the slab
  is small enough to stay on the GPU (no whole-volume transfers);
- the Gaussian is a product of one 1-D Gaussian per axis and windows lie on a grid, so the sum of
  weights at a voxel is a product of three 1-D sums: no weight volume is stored, and the arg-max needs
  no normalisation at all (the weight is the same for every class).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

Predictor = Callable[[torch.Tensor], torch.Tensor]  # [B, C, *window] -> logits [B, K, *window]

SIGMA_SCALE = 1 / 8  # Gaussian sigma as a fraction of the window side (nnU-Net's choice)


@dataclass
class WindowResult:
    labels: np.ndarray  # uint8 [Z, Y, X]: arg-max class per voxel
    probabilities: np.ndarray | None  # float32 [K, Z, Y, X] when asked for


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Evenly spread window starts covering ``[0, size)`` with at least ``overlap`` shared between neighbours."""
    if size <= window:
        return [0]
    step = max(1, int(window * (1 - overlap)))
    count = math.ceil((size - window) / step) + 1
    return [round(i * (size - window) / (count - 1)) for i in range(count)]


def gaussian_1d(window: int) -> np.ndarray:
    """A Gaussian over ``window`` voxels, peak 1 at the centre (a window of 1 weighs 1)."""
    if window == 1:
        return np.ones(1)
    x = np.arange(window) - (window - 1) / 2
    return np.exp(-0.5 * (x / (window * SIGMA_SCALE)) ** 2)


def _weight_sum(size: int, window: int, starts: list[int]) -> np.ndarray:
    g, total = gaussian_1d(window), np.zeros(size)
    for s in starts:
        total[s : s + window] += g
    return total


def _mirrors(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of ``axes`` (spatial, 0-based), the empty one first: 2^n mirrored copies."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def sliding_window(
    image: np.ndarray | torch.Tensor,
    predictors: Predictor | Sequence[Predictor],
    window: Sequence[int],
    *,
    overlap: float = 0.5,
    batch_size: int = 2,
    mirror_axes: Sequence[int] = (),
    spatial_dims: int = 3,
    device: str | torch.device = "cpu",
    pad_value: float | None = None,
    return_probabilities: bool = False,
    progress: bool = False,
) -> WindowResult:
    """Segment ``image`` ``[C, Z, Y, X]`` with patch-trained networks.

    Args:
        image: the network-ready volume (normalised, at the training spacing), channels first.
        predictors: a network or several (their softmax outputs are averaged: a fold ensemble).
        window: the training patch size ``(z, y, x)``; ``(1, y, x)`` with ``spatial_dims=2`` runs a 2-D
            network slice by slice.
        overlap: fraction of a window shared with its neighbour along each axis (0.5: every voxel
            away from the border is seen about 2^3 times).
        batch_size: windows per forward pass.
        mirror_axes: spatial axes (0 = slice) to mirror for test-time augmentation; every subset is
            run, 2^len(axes) passes per window.
        device: where the networks and the slab accumulator live; the volume stays on the CPU.
        pad_value: fills volumes smaller than the window (default: the image minimum).
        return_probabilities: also return the blended class probabilities (float32, K x the volume).

    Returns:
        `WindowResult` with the uint8 label map (and the probabilities when asked for) shaped like the
        input's spatial dimensions.
    """
    predictors = list(predictors) if isinstance(predictors, Sequence) else [predictors]
    device = torch.device(device)
    volume = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image).float()
    shape = tuple(volume.shape[1:])
    window = tuple(int(w) for w in window)
    pad = [max(w - s, 0) for w, s in zip(window, shape, strict=True)]
    if any(pad):  # smaller than a window along some axis: pad at the far end, crop afterwards
        fill = float(volume.min()) if pad_value is None else pad_value
        volume = F.pad(volume, [p for a in reversed(pad) for p in (0, a)], value=fill)
    padded = tuple(volume.shape[1:])
    starts = [window_starts(s, w, overlap) for s, w in zip(padded, window, strict=True)]
    g = [torch.as_tensor(gaussian_1d(w), dtype=torch.float32, device=device) for w in window]
    mirrors = _mirrors(list(mirror_axes))
    # the Gaussian, divided once by the number of passes averaged per window
    importance = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :] / (len(predictors) * len(mirrors))
    weight = None
    if return_probabilities:
        sums = [_weight_sum(s, w, st) for s, w, st in zip(padded, window, starts, strict=True)]
        weight = torch.as_tensor(np.einsum("i,j,k->ijk", *sums), dtype=torch.float32)
    labels = np.zeros(padded, np.uint8)
    probabilities = None
    depth = window[0]
    slab = None  # [K, depth, Y, X] accumulator of the windows starting at the current slab
    in_plane = list(itertools.product(starts[1], starts[2]))
    z_starts = starts[0]

    def run(batch_x: torch.Tensor) -> torch.Tensor:
        total = None
        for predict, flip in itertools.product(predictors, mirrors):
            dims = [a + 2 for a in flip]
            x = torch.flip(batch_x, dims) if dims else batch_x
            if spatial_dims == 2:
                x = x[:, :, 0]
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                logits = predict(x)
            if spatial_dims == 2:
                logits = logits[:, :, None]
            p = torch.softmax(logits.float(), dim=1)
            p = torch.flip(p, dims) if dims else p
            total = p if total is None else total.add_(p)  # in place: no new window-sized buffers per pass
        return total.mul_(importance)

    from medmap.progress import track

    steps = [(zi, z) for zi, z in enumerate(z_starts)]
    with torch.inference_mode():
        for zi, z in track(steps, "sliding window", enabled=progress):
            for first in range(0, len(in_plane), batch_size):
                chunk = in_plane[first : first + batch_size]
                batch = torch.stack(
                    [volume[:, z : z + depth, y : y + window[1], x : x + window[2]] for y, x in chunk]
                ).to(device, non_blocking=True)
                out = run(batch)
                if slab is None:
                    slab = torch.zeros((out.shape[1], depth, *padded[1:]), dtype=torch.float32, device=device)
                    if return_probabilities:
                        probabilities = np.zeros((out.shape[1], *padded), np.float32)
                for (y, x), o in zip(chunk, out, strict=True):
                    slab[:, :, y : y + window[1], x : x + window[2]] += o
            # slices before the next window's start are final: arg-max them and move the slab on
            done = (z_starts[zi + 1] if zi + 1 < len(z_starts) else z + depth) - z
            labels[z : z + done] = slab[:, :done].argmax(0).to(torch.uint8).cpu().numpy()
            if probabilities is not None:
                probabilities[:, z : z + done] = (slab[:, :done].cpu() / weight[z : z + done]).numpy()
            if done < depth:
                slab[:, : depth - done] = slab[:, done:].clone()
            slab[:, depth - done :] = 0
    crop = tuple(slice(0, s) for s in shape)
    if probabilities is not None:
        probabilities = probabilities[(slice(None), *crop)]
    return WindowResult(labels[crop], probabilities)
