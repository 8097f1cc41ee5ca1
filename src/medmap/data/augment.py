"""Training-time augmentation on whole batches, in torch.

Why batched and not per sample (as MONAI's Rand* dictionary transforms are): one ``grid_sample`` call
resamples every rotated/scaled sample of the batch at once, and intensity transforms are a few tensor
ops over the batch; per-sample Python overhead disappears and the same code runs on the GPU. Each
transform is applied to each sample with probability ``Augmentation.probability``; ``strength`` scales
every range (0 turns augmentation off).

Rotations and scalings are built in millimetres and converted to the normalised coordinates
``grid_sample`` uses, so a patch with anisotropic voxels is rotated, not sheared.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from medmap.plan import Augmentation


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles about the z, y, x axes -> (B, 3, 3) rotation matrices in (z, y, x) coordinates."""
    cz, sz = torch.cos(angles[:, 0]), torch.sin(angles[:, 0])
    cy, sy = torch.cos(angles[:, 1]), torch.sin(angles[:, 1])
    cx, sx = torch.cos(angles[:, 2]), torch.sin(angles[:, 2])
    one, zero = torch.ones_like(cz), torch.zeros_like(cz)
    rz = torch.stack([one, zero, zero, zero, cz, -sz, zero, sz, cz], -1).view(-1, 3, 3)  # about z: mixes y, x
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rx = torch.stack([cx, -sx, zero, sx, cx, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


class BatchAugmenter:
    """Callable on ``(images [B, C, *spatial], masks [B, *spatial] or None)``; returns augmented copies.

    ``share=(rank, world)``: this process holds rows ``rank * B`` to ``(rank + 1) * B`` of a global batch
    of ``world * B`` (distributed training). Every random number is drawn for the whole global batch, from
    the same seeded generator on every rank, and the rows of this share are kept: N processes augment
    each sample exactly as one process would (the per-voxel noise comes from a seed per sample)."""

    def __init__(
        self, aug: Augmentation, spacing: tuple[float, float, float], *, seed: int = 0, share: tuple[int, int] = (0, 1)
    ) -> None:
        self.aug = aug
        self.spacing = torch.tensor(spacing, dtype=torch.float32)
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world = share
        self.rows = slice(0, 0)

    # Random parameters are drawn on the CPU from one seeded generator (reproducible whatever the
    # device) and moved to the batch's device; only the per-voxel noise is drawn on that device.
    device: torch.device = torch.device("cpu")

    @property
    def _global_batch(self) -> int:
        return (self.rows.stop - self.rows.start) * self.world

    def _chosen(self) -> torch.Tensor:
        drawn = torch.rand(self._global_batch, generator=self.generator) < self.aug.probability
        return drawn[self.rows].to(self.device)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(n, generator=self.generator)).to(self.device)

    def _per_sample(self, low: float, high: float) -> torch.Tensor:
        """One uniform number per sample of the global batch; this share's rows."""
        return self._uniform(self._global_batch, low, high)[self.rows]

    def _noise(self, shape) -> torch.Tensor:
        if self.device.type == "cpu":
            return torch.randn(shape, generator=self.generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        return torch.randn(shape, generator=torch.Generator(self.device).manual_seed(seed), device=self.device)

    def _sample_noise(self, shape, chosen: torch.Tensor) -> torch.Tensor:
        """Per-voxel noise for the ``chosen`` samples (zero elsewhere), one seed per sample of the global
        batch, so that a share draws its own samples' noise and nobody else's."""
        seeds = torch.randint(0, 2**62, (self._global_batch,), generator=self.generator)[self.rows]
        out = torch.zeros(shape, device=self.device)
        for i in chosen.nonzero().flatten().tolist():
            generator = torch.Generator(self.device).manual_seed(int(seeds[i]))
            out[i] = torch.randn(shape[1:], generator=generator, device=self.device)
        return out

    def _widen(self, bounds: tuple[float, float]) -> tuple[float, float]:
        s = self.aug.strength
        return 1 + (bounds[0] - 1) * s, 1 + (bounds[1] - 1) * s

    def __call__(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        if self.aug.strength == 0:
            return images, masks
        self.device = images.device
        self.rows = slice(self.rank * images.shape[0], (self.rank + 1) * images.shape[0])
        two_d = images.dim() == 4
        if two_d:  # treat [B, C, H, W] as one-slice volumes
            images = images.unsqueeze(2)
            masks = masks.unsqueeze(1) if masks is not None else None
        images, masks = self._spatial(images.float(), masks)
        images = self._intensity(images)
        images, masks = self._flip(images, masks)
        if two_d:
            images = images.squeeze(2)
            masks = masks.squeeze(1) if masks is not None else None
        return images, masks

    def _spatial(self, images: torch.Tensor, masks: torch.Tensor | None):
        everywhere = torch.rand(self._global_batch, generator=self.generator) < self.aug.probability
        if self.aug.elastic:  # a second chance: elastic deformation is drawn on its own
            everywhere = everywhere | (torch.rand(self._global_batch, generator=self.generator) < self.aug.probability)
        drawn = everywhere.nonzero().flatten()  # samples of the global batch to transform
        n = len(drawn)
        spatial = images.shape[2:]
        limit = math.radians(self.aug.rotate_deg * self.aug.strength)
        angles = self._uniform(n * 3, -limit, limit).view(n, 3)
        if spatial[0] == 1:  # one slice: rotate in-plane only
            angles[:, 1:] = 0
        scale = self._uniform(n, *self._widen(self.aug.scale))
        coarse = self._noise((n, 3, 4, 4, 4)) * 0.03 * self.aug.strength if self.aug.elastic and n else None
        mine = ((drawn >= self.rows.start) & (drawn < self.rows.stop)).to(self.device)  # this share's rows
        if not mine.any():
            return images, masks
        idx = (drawn.to(self.device)[mine] - self.rows.start).long()
        angles, scale, n = angles[mine], scale[mine], int(mine.sum())
        half_mm = (torch.tensor(spatial, dtype=torch.float32) * self.spacing / 2).to(self.device)
        # normalised -> mm (zyx), rotate & scale, mm -> normalised; then reorder to grid_sample's (x, y, z)
        matrix = torch.diag(1 / half_mm) @ (_rotation(angles) / scale.view(n, 1, 1)) @ torch.diag(half_mm)
        theta = torch.zeros(n, 3, 4, device=self.device)
        theta[:, :, :3] = matrix.flip(1).flip(2)
        grid = F.affine_grid(theta, (n, 1, *spatial), align_corners=False)
        if coarse is not None:
            grid = grid + F.interpolate(coarse[mine], size=spatial, mode="trilinear", align_corners=False).permute(
                0, 2, 3, 4, 1
            )
        images = images.clone()
        images[idx] = F.grid_sample(images[idx], grid, mode="bilinear", padding_mode="border", align_corners=False)
        if masks is not None:
            masks = masks.clone()
            warped = F.grid_sample(
                masks[idx].unsqueeze(1).float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
            )
            masks[idx] = warped.squeeze(1).to(masks.dtype)
        return images, masks

    def _intensity(self, images: torch.Tensor) -> torch.Tensor:
        batch = images.shape[0]
        view = (batch,) + (1,) * (images.dim() - 1)
        dims = tuple(range(1, images.dim()))
        gamma = self._chosen()
        g = self._per_sample(*self._widen(self.aug.gamma)).view(view)
        if gamma.any():
            lo, hi = images.amin(dim=dims, keepdim=True), images.amax(dim=dims, keepdim=True)
            unit = ((images - lo) / (hi - lo).clamp_min(1e-6)).clamp(0, 1)
            images = torch.where(gamma.view(view), unit.pow(g) * (hi - lo) + lo, images)
        contrast = self._chosen()
        c = self._per_sample(*self._widen(self.aug.contrast)).view(view)
        if contrast.any():
            mean = images.mean(dim=dims, keepdim=True)
            images = torch.where(contrast.view(view), (images - mean) * c + mean, images)
        noise = self._chosen()
        sigma = self._per_sample(0, self.aug.noise_std * self.aug.strength).view(view) * noise.view(view)
        if self.aug.noise_std > 0:
            images = images + self._sample_noise(images.shape, noise) * sigma
        return images

    def _flip(self, images: torch.Tensor, masks: torch.Tensor | None):
        for axis in self.aug.flip_axes:
            flip = (torch.rand(self._global_batch, generator=self.generator) < 0.5)[self.rows].to(self.device)
            if images.shape[2 + axis] == 1 or not flip.any():
                continue
            images = torch.where(flip.view(-1, 1, 1, 1, 1), images.flip(2 + axis), images)
            if masks is not None:
                masks = torch.where(flip.view(-1, 1, 1, 1), masks.flip(1 + axis), masks)
        return images, masks
