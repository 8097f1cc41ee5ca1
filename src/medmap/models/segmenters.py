"""Segmentation networks: nnU-Net-style U-Net (MONAI DynUNet), a U-Net on a ResNet encoder, DeepLabV3+.

``Plan.network`` picks the family:

- ``unet``: MONAI's DynUNet laid out the nnU-Net way (`unet_layout`): per level, an axis is
  downsampled only while its spacing is within 2x of the finest axis, and an axis that coarse gets a
  kernel of 1 (so a 5 mm slice axis is not mixed with 0.8 mm in-plane pixels at full resolution).
  Optional deep supervision.
- ``resunet18/34/50``: a MONAI ResNet encoder (the very module the classifiers use, so its weights load
  from a torchvision/MONAI/medmap ResNet file with ``--pretrained``) and a U-Net decoder.
- ``deeplabv3plus``: DeepLabV3+ (Chen et al. 2018), built here from MONAI parts: a ResNet-18 backbone
  whose last stage is dilated (output stride 16), MONAI's ``SimpleASPP``, and the V3+ decoder that joins
  the ASPP output with stride-4 low-level features. MONAI has the blocks, not the network.

Every network maps ``[B, C, *patch]`` to logits ``[B, classes, *patch]`` for any patch size (decoders
upsample to their skip connection's exact size), 2-D or 3-D from the plan's input mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medmap.errors import ConfigError
from medmap.plan import Plan

MAX_FEATURES = 320  # nnU-Net's cap on features per level


def unet_layout(patch, spacing, depth: int) -> tuple[list[list[int]], list[list[int]]]:
    """(kernel sizes, strides) per level, nnU-Net's rule; the first level never downsamples."""
    size = [float(p) for p in patch]
    spacing = [float(s) for s in spacing]
    axes = [a for a in range(len(size)) if size[a] > 1]  # 2-D inputs come as (1, rows, columns)
    kernels, strides = [], []
    for level in range(depth):
        finest = min(spacing[a] for a in axes)
        if level == 0:
            stride = [1] * len(axes)
        else:
            stride = [2 if spacing[a] <= 2 * finest and size[a] >= 8 else 1 for a in axes]
        for a, s in zip(axes, stride, strict=True):
            size[a] /= s
            spacing[a] *= s
        finest = min(spacing[a] for a in axes)  # the kernel sees the level's (pooled) spacing
        kernels.append([3 if spacing[a] <= 2 * finest else 1 for a in axes])
        strides.append(stride)
    return kernels, strides


def _dynunet(plan: Plan, dims: int, in_channels: int, classes: int, dropout: float) -> nn.Module:
    from monai.networks.nets import DynUNet

    if plan.network_depth < 3:
        raise ConfigError(f"network_depth {plan.network_depth}: the U-Net needs at least 3 levels")
    kernels, strides = unet_layout(plan.patch_size, plan.target_spacing, plan.network_depth)
    if dims == 2:
        kernels, strides = [k[-2:] for k in kernels], [s[-2:] for s in strides]
    filters = [min(plan.network_width * 2**i, MAX_FEATURES) for i in range(plan.network_depth)]
    return DynUNet(
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=classes,
        kernel_size=kernels,
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=filters,
        dropout=dropout or None,
        norm_name=("instance", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=plan.deep_supervision,
        deep_supr_num=max(1, min(2, plan.network_depth - 2)),
    )


def _conv_block(dims: int, cin: int, cout: int) -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    norm = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
    layers = []
    for c in (cin, cout):
        layers += [conv(c, cout, 3, padding=1, bias=False), norm(cout, affine=True), nn.LeakyReLU(0.01, inplace=True)]
    return nn.Sequential(*layers)


def _upsample_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    return F.interpolate(x, size=like.shape[2:], mode=mode, align_corners=False)


def _resnet_encoder(depth: int, dims: int, in_channels: int, width: int) -> nn.Module:
    from medmap.models.registry import CLASSIFIERS

    encoder = CLASSIFIERS[f"resnet{depth}"](dims, in_channels, 2, width, 0.0)
    encoder.fc = None  # the classifier head has no place in an encoder (and its weights are skipped)
    return encoder


def _stage_channels(encoder: nn.Module) -> list[int]:
    """Output channels of layer1..layer4 (BasicBlock: planes; Bottleneck: 4 x planes)."""
    out = []
    for name in ("layer1", "layer2", "layer3", "layer4"):
        convs = [m for m in getattr(encoder, name).modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
        last_block = list(getattr(encoder, name).children())[-1]
        block_convs = [m for m in last_block.modules() if isinstance(m, nn.Conv2d | nn.Conv3d)]
        out.append((block_convs or convs)[-1].out_channels)
    return out


class ResNetUNet(nn.Module):
    """U-Net whose encoder is a ResNet (``self.encoder``, names as in the classifiers)."""

    def __init__(self, depth: int, dims: int, in_channels: int, classes: int, width: int, dropout: float) -> None:
        super().__init__()
        self.encoder = _resnet_encoder(depth, dims, in_channels, width)
        stages = _stage_channels(self.encoder)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.stem = _conv_block(dims, in_channels, width // 2)  # full-resolution features for the last skip
        skips = [width, *stages[:-1]]  # conv1 (stride 2), layer1 (4), layer2 (8), layer3 (16)
        self.decoder = nn.ModuleList()
        channels = stages[-1]
        for skip in reversed(skips):
            self.decoder.append(_conv_block(dims, channels + skip, skip))
            channels = skip
        self.final = _conv_block(dims, channels + width // 2, width // 2)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = conv(width // 2, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        full = self.stem(x)
        c1 = e.act(e.bn1(e.conv1(x)))
        l1 = e.layer1(e.maxpool(c1))
        l2 = e.layer2(l1)
        l3 = e.layer3(l2)
        y = e.layer4(l3)
        for block, skip in zip(self.decoder, (l3, l2, l1, c1), strict=True):
            y = block(torch.cat([_upsample_to(y, skip), skip], dim=1))
        y = self.final(torch.cat([_upsample_to(y, full), full], dim=1))
        return self.head(self.dropout(y))


def _dilate_last_stage(stage: nn.Module) -> None:
    """Output stride 32 -> 16: the last ResNet stage keeps its resolution and dilates its 3x3 kernels."""
    for module in stage.modules():
        if isinstance(module, nn.Conv2d | nn.Conv3d):
            module.stride = (1,) * len(module.stride)
            if module.kernel_size[0] == 3:
                module.dilation = (2,) * len(module.dilation)
                module.padding = (2,) * len(module.padding)


class DeepLabV3Plus(nn.Module):
    """ResNet backbone (output stride 16) + ASPP + the V3+ decoder with stride-4 low-level features."""

    def __init__(self, dims: int, in_channels: int, classes: int, width: int, dropout: float, depth: int = 18):
        super().__init__()
        from monai.networks.blocks import SimpleASPP

        self.encoder = _resnet_encoder(depth, dims, in_channels, width)
        _dilate_last_stage(self.encoder.layer4)
        stages = _stage_channels(self.encoder)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        norm = nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d
        aspp_channels = 2 * width
        self.aspp = SimpleASPP(dims, stages[-1], aspp_channels, norm_type="INSTANCE", acti_type="LEAKYRELU")
        self.project = nn.Sequential(
            conv(4 * aspp_channels, 4 * width, 1, bias=False), norm(4 * width, affine=True), nn.LeakyReLU(0.01, True)
        )
        low = max(width, 12)
        self.reduce = nn.Sequential(
            conv(stages[0], low, 1, bias=False), norm(low, affine=True), nn.LeakyReLU(0.01, True)
        )
        self.decoder = _conv_block(dims, 4 * width + low, 2 * width)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = conv(2 * width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        low = e.layer1(e.maxpool(e.act(e.bn1(e.conv1(x)))))
        high = e.layer4(e.layer3(e.layer2(low)))
        y = self.project(self.aspp(high))
        y = self.decoder(torch.cat([_upsample_to(y, low), self.reduce(low)], dim=1))
        return _upsample_to(self.head(self.dropout(y)), x)


def build_segmenter(plan: Plan, dropout: float = 0.0) -> nn.Module:
    dims, channels, classes = plan.spatial_dims, plan.input_channels, len(plan.labels)
    name = plan.network
    if name == "unet":
        return _dynunet(plan, dims, channels, classes, dropout)
    if name in ("resunet18", "resunet34", "resunet50"):
        return ResNetUNet(int(name[7:]), dims, channels, classes, plan.network_width, dropout)
    if name == "deeplabv3plus":
        return DeepLabV3Plus(dims, channels, classes, plan.network_width, dropout)
    raise ConfigError(f"network {name!r}: choose one of {', '.join(SEGMENTERS)} for segmentation")


SEGMENTERS = ("unet", "resunet18", "resunet34", "resunet50", "deeplabv3plus")
