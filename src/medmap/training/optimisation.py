"""The optimiser and its learning rate: AdamW or nnU-Net's SGD, the peak rate, the per-step schedule (linear
warm-up, then cosine or poly decay to zero) and the head / backbone split a pretrained start needs."""

from __future__ import annotations

import math

import torch

from medmap.training.config import TrainConfig

WARMUP_CAP = 0.05  # warm-up never takes more than this share of the steps (short budgets)


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int, epochs: int):
    """Learning-rate factor per optimiser step: linear warm-up, then cosine or poly decay to zero."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(config.warmup_epochs * steps_per_epoch, int(WARMUP_CAP * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        if config.schedule == "poly":
            return (1 - progress) ** 0.9
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def peak_learning_rate(config: TrainConfig, task) -> float:
    if config.learning_rate is not None:
        return config.learning_rate
    return 1e-2 if config.optimizer == "sgd" else task.learning_rate


def build_optimizer(config: TrainConfig, head: list, backbone: list, lr: float, backbone_lr: float):
    groups = [{"params": head, "lr": lr}, {"params": backbone, "lr": backbone_lr}]
    if config.optimizer == "sgd":  # nnU-Net's: high momentum, Nesterov, small weight decay
        return torch.optim.SGD(groups, momentum=0.99, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


HEAD_NAMES = ("fc", "head", "class_layers")  # classifier layers of medmap's / MONAI's networks


def split_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(head parameters, backbone parameters): the head is what a pretrained file cannot provide."""
    head, backbone = [], []
    has_encoder = hasattr(model, "encoder")  # segmenters: the encoder is the pretrainable part, the rest is new
    for name, p in model.named_parameters():
        first = name.split(".")[0]
        is_head = first != "encoder" if has_encoder else first in HEAD_NAMES
        (head if is_head else backbone).append(p)
    return head, backbone
