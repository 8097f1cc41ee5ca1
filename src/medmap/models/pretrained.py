"""Pretrained weights from a local file onto medmap's networks (nothing is downloaded, ever).

Accepted: a state dict saved with ``torch.save`` (optionally wrapped as ``{"state_dict": ...}`` or
``{"model": ...}``, with ``module.`` prefixes from DataParallel), from torchvision/timm ResNets, MONAI
networks, medmap runs or ``medmap pretrain``. Mapping rules, applied per tensor:

- names: torchvision's ResNet names equal MONAI's (``conv1``, ``bn1``, ``layerN.M.convK``,
  ``downsample.0/1``); the classifier ``fc.*`` becomes medmap's ``fc.1.*`` (dropout sits at ``fc.0``);
- input channels: a 3-channel (RGB) first convolution is folded to 1 channel by summing its
  kernels (keeps the response to a grey image), or repeated/averaged to the channels needed;
- dimensions: a 2-D kernel ``[o, i, k, k]`` is inflated to 3-D ``[o, i, d, k, k]`` by repeating it
  along depth and dividing by ``d`` (I3D inflation: a constant volume gives the same response);
- anything else whose shape does not match (a classifier head for other classes) is skipped.

`load_pretrained` returns what loaded and what did not, with the reason, so the user can see it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from medmap.errors import ConfigError, InputNotFoundError


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # loaded after folding channels or inflating 2-D -> 3-D
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, why)
    missing: list[str] = field(default_factory=list)  # network tensors the file did not provide

    def summary(self) -> str:
        return (
            f"pretrained weights: {len(self.loaded)} tensors loaded ({len(self.adapted)} adapted), "
            f"{len(self.skipped)} skipped, {len(self.missing)} of the network's left as initialised"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise ConfigError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "encoder"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _rename(key: str, targets: dict[str, torch.Tensor]) -> str:
    if key in targets:
        return key
    if key.startswith("fc.") and f"fc.1.{key[3:]}" in targets:  # torchvision head -> behind medmap's dropout
        return f"fc.1.{key[3:]}"
    if key.startswith("encoder.") and key[8:] in targets:  # medmap pretrain saves an encoder
        return key[8:]
    if f"encoder.{key}" in targets:  # a ResNet's weights onto a segmenter's ResNet encoder
        return f"encoder.{key}"
    return key


def _adapt(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """``source`` reshaped to ``target``'s shape by channel folding and/or 2-D -> 3-D inflation, or None."""
    s = source
    if s.dim() == 4 and target.dim() == 5:  # inflate: [o, i, k, k] -> [o, i, d, k, k]
        depth = target.shape[2]
        s = s.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
    if s.dim() != target.dim() or s.shape[0] != target.shape[0]:
        return None
    if s.dim() >= 3 and s.shape[1] != target.shape[1]:  # input channels of a convolution
        if target.shape[1] == 1:
            s = s.sum(dim=1, keepdim=True)
        else:
            s = s.mean(dim=1, keepdim=True).repeat(1, target.shape[1], *[1] * (s.dim() - 2)) * (
                s.shape[1] / target.shape[1]
            )
    if s.shape[2:] != target.shape[2:] and s.dim() == 5 and s.shape[3:] == target.shape[3:]:
        s = s.mean(dim=2, keepdim=True).repeat(1, 1, target.shape[2], 1, 1)  # depth differs after inflation
    return s if s.shape == target.shape else None


def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy every tensor of the file that fits (after renaming and adapting) into ``model``."""
    source = read_state_dict(path)
    targets = model.state_dict()
    report, new_state, used = LoadReport(), {}, set()
    for key, tensor in source.items():
        name = _rename(key, targets)
        if name not in targets:
            report.skipped.append((key, "no such tensor in the network"))
            continue
        target = targets[name]
        if tensor.shape == target.shape:
            new_state[name] = tensor.to(target.dtype)
            report.loaded.append(name)
        elif (adapted := _adapt(tensor.float(), target)) is not None:
            new_state[name] = adapted.to(target.dtype)
            report.loaded.append(name)
            report.adapted.append(name)
        else:
            report.skipped.append((key, f"shape {tuple(tensor.shape)} does not fit {tuple(target.shape)}"))
            continue
        used.add(name)
    report.missing = [k for k in targets if k not in used and not k.endswith("num_batches_tracked")]
    if not report.loaded:
        raise ConfigError(f"{path}: none of its {len(source)} tensors fit the network (names or shapes differ)")
    model.load_state_dict(new_state, strict=False)
    return report
