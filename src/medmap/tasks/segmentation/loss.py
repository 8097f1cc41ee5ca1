"""Segmentation losses: Dice + cross-entropy (default), Dice, Dice + focal, Tversky, with deep supervision;
Dice pooled over the global batch across training processes (`BatchDice`); Dice + CE and Dice marginal
over the labels a case did not annotate (`MarginalLoss`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medmap.errors import ConfigError


class BatchDice(nn.Module):
    """Soft Dice over the whole global batch, foreground classes averaged: MONAI's ``DiceLoss(softmax=True,
    to_onehot_y=True, include_background=False, batch=True)`` to the last digit with one process.

    Written here because batch Dice pools its sums over the batch: with several training processes each
    holds a share of it, and MONAI's loss would average per-share Dice (another loss). While training
    (gradients on) the sums are added across the ranks with their gradient, as nnU-Net's DDP batch Dice
    does, so N processes train on the loss one process would; evaluation passes stay per process."""

    smooth = 1e-5  # MONAI's smooth_nr and smooth_dr

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(logits, 1)[:, 1:]
        if target.shape[1] == logits.shape[1] > 1:  # one-hot already (MONAI's DiceFocalLoss hands it so)
            truth = target[:, 1:].to(probabilities.dtype)
        else:
            classes = torch.arange(1, logits.shape[1], device=logits.device).view(1, -1, *[1] * (logits.dim() - 2))
            truth = (target == classes).to(probabilities.dtype)  # one-hot, background dropped ([B, 1, ...] target)
        return batch_dice_loss(truth, probabilities, self.smooth)


def batch_dice_loss(truth: torch.Tensor, probabilities: torch.Tensor, smooth: float) -> torch.Tensor:
    """1 - soft Dice per foreground class over the whole global batch (``[B, K-1, ...]`` one-hot truth and
    probabilities), classes averaged; the sums are added across training processes while training."""
    axes = [0, *range(2, truth.dim())]
    sums = torch.stack([(truth * probabilities).sum(axes), truth.sum(axes), probabilities.sum(axes)])
    if torch.is_grad_enabled():
        sums = _summed_over_processes(sums)
    intersection, ground, predicted = sums
    return (1 - (2 * intersection + smooth) / (ground + predicted + smooth)).mean()


class MarginalLoss(nn.Module):
    """Dice + CE (or Dice) that reads partial annotation from the target (`medmap.data.annotation`).

    A target with no unknown voxel goes to ``exact`` (MONAI's loss, as always). Otherwise, the marginal
    loss of Shi et al. (2021, "Marginal loss and exclusion loss for partially supervised multi-organ
    segmentation"): at an unknown background voxel the probabilities of background and of the case's
    unannotated labels are summed before the log (predicting an unannotated organ there costs nothing),
    and the batch Dice of a label leaves out the unknown voxels of the cases that did not annotate it.
    With every label annotated both terms equal MONAI's Dice + CE (a test checks)."""

    smooth = BatchDice.smooth

    def __init__(self, exact: nn.Module, with_ce: bool) -> None:
        super().__init__()
        self.exact, self.with_ce = exact, with_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # target [B, 1, ...]
        if not bool((target < 0).any()):
            return self.exact(logits, target)
        from medmap.data.annotation import allowed

        target = target[:, 0]
        may_be = allowed(target, logits.shape[1])
        log_p = torch.log_softmax(logits.float(), 1)
        probabilities = log_p.exp()[:, 1:]
        known = may_be.sum(1, keepdim=True) == 1  # annotated voxels: exactly one class allowed
        scored = (known | ~may_be)[:, 1:]  # class k is scored where the voxel is known, or known not to be k
        truth = (may_be & known)[:, 1:].to(probabilities.dtype)
        loss = batch_dice_loss(truth, probabilities * scored, self.smooth)
        if self.with_ce:
            loss = loss - log_p.masked_fill(~may_be, float("-inf")).logsumexp(1).mean()
        return loss


def _summed_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the training processes, differentiable; the identity for one process (no group)."""
    distributed = torch.distributed
    if not (distributed.is_available() and distributed.is_initialized()) or distributed.get_world_size() == 1:
        return tensor
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(tensor)


PARTIAL_LOSSES = ("dice_ce", "dice")  # the losses with a marginal form (`MarginalLoss`)


class SegmentationLoss(nn.Module):
    """A MONAI loss on ``(logits [B, K, ...], labels [B, ...])``; with deep supervision the network returns
    ``[B, S, K, ...]`` (S decoder levels, upsampled) and each level's loss is weighted by MONAI's
    ``DeepSupervisionLoss`` (halving per level)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        from monai.losses import DeepSupervisionLoss, DiceCELoss, DiceFocalLoss, DiceLoss, TverskyLoss

        common = {"to_onehot_y": True, "softmax": True, "include_background": False, "batch": True}
        losses = {
            "dice_ce": lambda: DiceCELoss(**common),
            "dice": lambda: DiceLoss(**common),
            "dice_focal": lambda: DiceFocalLoss(**common, gamma=2.0),
            # alpha weighs false positives, beta false negatives: beta > alpha favours finding small lesions
            "tversky": lambda: TverskyLoss(**{k: v for k, v in common.items() if k != "batch"}, alpha=0.3, beta=0.7),
        }
        if kind not in losses:
            raise ConfigError(f"loss {kind!r}: choose one of {', '.join(losses)} for segmentation")
        self.kind = kind
        self.loss = losses[kind]()
        if kind == "dice":
            self.loss = BatchDice()
        elif hasattr(self.loss, "dice"):  # Dice + CE / focal: MONAI's second term, medmap's global batch Dice
            self.loss.dice = BatchDice()
        self.partial = kind in PARTIAL_LOSSES
        if self.partial:
            self.loss = MarginalLoss(self.loss, with_ce=kind == "dice_ce")
        self.deep = DeepSupervisionLoss(self.loss, weight_mode="exp")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.unsqueeze(1)
        if not self.partial and bool((target < 0).any()):
            raise ConfigError(
                f"partial annotation (cases that did not annotate every label) trains with the loss "
                f"{' or '.join(PARTIAL_LOSSES)}, not {self.kind}"
            )
        if logits.dim() == target.dim() + 1:  # deep supervision: [B, S, K, ...]
            return self.deep(list(torch.unbind(logits, dim=1)), target)
        return self.loss(logits, target)


def dice_per_class(predictions: np.ndarray, targets: np.ndarray, classes: list[int]) -> dict[int, float]:
    """Dice of each class over all voxels of all the given label maps pooled (NaN where absent from both);
    the unknown voxels of a case that did not annotate a class are left out of that class's Dice."""
    from medmap.data.annotation import decidable

    out = {}
    for value in classes:
        p, t = (predictions == value) & decidable(targets, value), targets == value
        total = int(np.count_nonzero(p)) + int(np.count_nonzero(t))
        out[value] = 2 * int(np.count_nonzero(p & t)) / total if total else float("nan")
    return out
