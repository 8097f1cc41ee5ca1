"""A torchvision-named ResNet-18 state dict, written by the test, loads onto medmap's 2-D and 3-D networks."""

import pytest
import torch
from monai.networks.nets import ResNet

from medmap.errors import ConfigError
from medmap.models.pretrained import load_pretrained
from medmap.models.registry import build_classifier
from medmap.plan import Plan
from tests.builders import small_plan


def torchvision_resnet18_keys() -> set[str]:
    """torchvision.models.resnet18().state_dict().keys(), spelled out (torchvision is not installable here)."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", *(f"bn1.{b}" for b in bn), "fc.weight", "fc.bias"}
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys |= {
                f"{p}.conv1.weight",
                f"{p}.conv2.weight",
                *(f"{p}.bn1.{b}" for b in bn),
                *(f"{p}.bn2.{b}" for b in bn),
            }
            if layer > 1 and block == 0:
                keys |= {f"{p}.downsample.0.weight", *(f"{p}.downsample.1.{b}" for b in bn)}
    return keys


@pytest.fixture
def imagenet_like(tmp_path):
    torch.manual_seed(0)
    net = ResNet(
        "basic",
        [2, 2, 2, 2],
        [64, 128, 256, 512],
        spatial_dims=2,
        n_input_channels=3,
        num_classes=1000,
        shortcut_type="B",
    )
    # MONAI's shortcut convolutions have a bias, torchvision's do not: drop it to write torchvision's file
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("downsample.0.bias")}
    assert set(state) == torchvision_resnet18_keys()  # the file really is in torchvision's naming
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "resnet18.pth")
    return tmp_path / "resnet18.pth", state


def plan(input_mode: str) -> Plan:
    return small_plan(
        "classification",
        input_mode=input_mode,
        patch_size=(32, 32, 32) if input_mode == "3d" else (1, 64, 64),
        network="resnet18",
        network_width=64,
        network_depth=4,
    )


def test_2d_grey_network_gets_folded_first_convolution(imagenet_like):
    path, state = imagenet_like
    model = build_classifier(plan("2d"))
    report = load_pretrained(model, path)
    conv1 = model.state_dict()["conv1.weight"]
    assert torch.allclose(conv1, state["conv1.weight"].sum(dim=1, keepdim=True))
    assert "conv1.weight" in report.adapted
    assert torch.equal(model.state_dict()["layer3.0.downsample.0.weight"], state["layer3.0.downsample.0.weight"])
    assert sorted(k for k, _ in report.skipped) == ["fc.bias", "fc.weight"]  # 1000 ImageNet classes do not fit 2
    assert len(report.loaded) == len(state) - 2
    assert "layer2.0.downsample.0.bias" in report.missing


def test_3d_network_gets_inflated_kernels(imagenet_like):
    path, state = imagenet_like
    model = build_classifier(plan("3d"))
    report = load_pretrained(model, path)
    w = model.state_dict()["layer1.0.conv1.weight"]  # [64, 64, 3, 3, 3] from [64, 64, 3, 3]
    assert w.shape == (64, 64, 3, 3, 3)
    assert torch.allclose(w.sum(dim=2), state["layer1.0.conv1.weight"], atol=1e-6)
    assert "layer1.0.conv1.weight" in report.adapted and "fc.1.weight" in report.missing
    assert report.summary().startswith(f"pretrained weights: {len(report.loaded)} tensors loaded")


def test_nothing_fits_is_an_error(tmp_path):
    torch.save({"encoder.something": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="none of its 1 tensors fit"):
        load_pretrained(build_classifier(plan("2d")), tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(ConfigError, match="not a PyTorch weights file"):
        load_pretrained(build_classifier(plan("2d")), tmp_path / "junk.pt")
