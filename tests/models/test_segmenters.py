"""Segmentation networks: output shapes in 2-D and 3-D for awkward patch sizes, the nnU-Net layout rule,
and ResNet weights loading into the ResNet-encoder U-Net and DeepLabV3+."""

import pytest
import torch

from medmap.models.pretrained import load_pretrained
from medmap.models.registry import build_classifier
from medmap.models.segmenters import SEGMENTERS, build_segmenter, unet_layout
from tests.builders import small_plan


def plan(network, input_mode="3d", patch=(16, 32, 40), spacing=(3.0, 1.0, 1.0)):
    return small_plan(
        "segmentation" if network in SEGMENTERS else "classification",
        labels={0: "background", 1: "liver", 2: "tumour"},
        input_mode=input_mode,
        target_spacing=spacing,
        patch_size=patch,
        network=network,
    )


@pytest.mark.parametrize("network", SEGMENTERS)
@pytest.mark.parametrize("input_mode", ["2d", "3d"])
def test_logits_have_the_input_size(network, input_mode):
    patch = (1, 48, 40) if input_mode == "2d" else (16, 32, 40)
    net = build_segmenter(plan(network, input_mode, patch)).eval()
    shape = patch[1:] if input_mode == "2d" else patch
    with torch.no_grad():
        out = net(torch.randn(2, 1, *shape))
    assert out.shape == (2, 3, *shape)


def test_unet_layout_follows_nnunet_on_anisotropic_spacing():
    kernels, strides = unet_layout((32, 80, 96), (4.0, 1.96, 1.96), 4)
    assert strides[0] == [1, 1, 1]
    assert strides[1] == [1, 2, 2]  # the 4 mm axis waits until in-plane spacing has caught up
    assert kernels[0] == [1, 3, 3] and kernels[1] == [3, 3, 3]
    assert strides[2] == [2, 2, 2]


def test_deep_supervision_returns_every_level_in_training():
    p = plan("unet").model_copy(update={"deep_supervision": True})
    net = build_segmenter(p)
    out = net.train()(torch.randn(2, 1, 16, 32, 40))
    assert out.dim() == 6 and out.shape[1] >= 2 and out.shape[2] == 3
    assert net.eval()(torch.randn(2, 1, 16, 32, 40)).dim() == 5


@pytest.mark.parametrize("network", ["resunet18", "deeplabv3plus"])
def test_resnet_weights_load_into_the_encoder(tmp_path, network):
    source = build_classifier(plan("resnet18", "2d", (1, 32, 32)))
    path = tmp_path / "resnet18.pt"
    torch.save(source.state_dict(), path)
    target = build_segmenter(plan(network, "3d"))
    report = load_pretrained(target, path)
    assert len(report.loaded) > 20 and all(k.startswith("encoder.") for k in report.loaded)
    assert report.adapted  # 2-D kernels inflated to 3-D
    conv = target.state_dict()["encoder.conv1.weight"]
    expected = source.state_dict()["conv1.weight"]
    torch.testing.assert_close(conv.sum(dim=2), expected)  # inflation: the depth sum is the 2-D kernel
