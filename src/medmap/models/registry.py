"""Network name -> builder. MONAI provides the networks; this maps a Plan onto their arguments.

``Plan.network`` names the family (``smallcnn``, ``resnet18/34/50``, ``densenet121``), ``network_width``
the features of the first stage (ResNets double them per stage, as torchvision's do from 64), and
the input mode picks 2-D or 3-D. ``dropout`` applies before the classification layer.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from medmap.errors import ConfigError
from medmap.plan import Plan


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages with pooling, then global pooling and a linear head: a quick baseline."""

    def __init__(self, dims: int, in_channels: int, num_classes: int, width: int = 16, dropout: float = 0.2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        layers, channels = [], in_channels
        for stage in range(4):
            out = width * 2**stage
            layers += [conv(channels, out, 3, padding=1, bias=False), norm(out), nn.ReLU(inplace=True)]
            if stage < 3:
                layers.append(pool(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


_RESNET_LAYOUT = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(dims: int, in_channels: int, num_classes: int, width: int, dropout: float) -> nn.Module:
        from monai.networks.nets import ResNet

        block, layers = _RESNET_LAYOUT[depth]
        net = ResNet(
            block,
            layers,
            [width, 2 * width, 4 * width, 8 * width],
            spatial_dims=dims,
            n_input_channels=in_channels,
            num_classes=num_classes,
            conv1_t_stride=2,
            shortcut_type="B",
        )
        net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
        return net

    return build


def _densenet121(dims: int, in_channels: int, num_classes: int, width: int, dropout: float) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=num_classes,
        init_features=width,
        growth_rate=max(width // 2, 8),
        dropout_prob=dropout,
    )


CLASSIFIERS: dict[str, Callable[..., nn.Module]] = {
    "smallcnn": lambda dims, c, n, width, dropout: SmallCNN(dims, c, n, width, dropout),
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "densenet121": _densenet121,
}


def build_classifier(plan: Plan, dropout: float = 0.2) -> nn.Module:
    builder = CLASSIFIERS.get(plan.network)
    if builder is None:
        raise ConfigError(f"network {plan.network!r}: choose one of {', '.join(sorted(CLASSIFIERS))}")
    return builder(plan.spatial_dims, plan.input_channels, len(plan.labels), plan.network_width, dropout)


# The layer whose activations Grad-CAM weighs: the last convolutional stage of each family.
CAM_LAYERS = {
    "smallcnn": "features",
    "resnet18": "layer4",
    "resnet34": "layer4",
    "resnet50": "layer4",
    "densenet121": "class_layers.relu",
}

# The attribute holding each family's classification head (replaced by a projection when pretraining).
HEADS = {"smallcnn": "head.2", "resnet18": "fc", "resnet34": "fc", "resnet50": "fc", "densenet121": "class_layers.out"}


def replace_head(model: nn.Module, plan: Plan, new: nn.Module) -> None:
    """Swap the final classification layer (``HEADS``) for ``new``; pooling before it stays."""
    path = HEADS.get(plan.network)
    if path is None:
        raise ConfigError(f"network {plan.network!r} has no known classification head")
    *parents, last = path.split(".")
    owner = model
    for name in parents:
        owner = getattr(owner, name) if not name.isdigit() else owner[int(name)]
    if last.isdigit():
        owner[int(last)] = new
    else:
        setattr(owner, last, new)
