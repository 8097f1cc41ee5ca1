"""Inference precision: ``auto`` follows the hardware, bfloat16 really runs in bfloat16 and returns float32
logits, engines that cannot run it say so, and the CLI refuses an unknown precision in one line."""

import pytest
import torch

from medmap.errors import ConfigError
from medmap.inference.precision import native_bfloat16, resolve_precision, with_precision
from tests.helpers import assert_one_line_error, medmap_cli


def test_auto_follows_the_hardware_and_explicit_choices_are_kept():
    assert resolve_precision("auto") == ("bfloat16" if native_bfloat16("cpu") else "float32")
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"  # emulated where not native: slower, still correct


def test_exported_engines_run_float32_and_refuse_bfloat16():
    assert resolve_precision("auto", engine="onnx") == "float32"
    with pytest.raises(ConfigError, match="runs on the torch engine"):
        resolve_precision("bfloat16", engine="onnx")
    with pytest.raises(ConfigError, match="choose one of auto, float32, bfloat16"):
        resolve_precision("half")


def test_bfloat16_runs_in_bfloat16_and_returns_float32_logits():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.InstanceNorm3d(8), torch.nn.LeakyReLU(), torch.nn.Conv3d(8, 3, 1)
    ).eval()
    x = torch.randn(2, 1, 8, 16, 16)
    with torch.inference_mode():
        exact = with_precision(net, "float32")(x)
        fast = with_precision(net, "bfloat16")(x)
    assert fast.dtype == torch.float32
    assert not torch.equal(fast, exact)  # the convolutions did run in bfloat16 ...
    torch.testing.assert_close(fast, exact, atol=0.05, rtol=0.05)  # ... to bfloat16's 8-bit mantissa


def test_cli_refuses_an_unknown_precision(tmp_path):
    result = medmap_cli("predict", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "out"), "--precision", "half")
    assert_one_line_error(result, "--precision half")


@pytest.mark.parametrize("network", ["unet", "resunet18"])
def test_bfloat16_segmenters_stay_finite_and_agree_down_to_their_smallest_level(network):
    """medmap's segmenters under `with_precision("bfloat16")` on a small patch, whose deepest levels are 1-2
    voxels wide (where bfloat16 kernels have failed before): float32 logits come back, finite, and the
    labels agree with float32's. (Weight gradients there are sometimes NaN with torch 2.13's oneDNN, which
    is why training stays float32.)"""
    from medmap.tasks import task_for
    from tests.builders import small_plan

    patch = (8, 16, 16) if network == "unet" else (32, 64, 64)  # a ResNet encoder halves every axis 5 times
    plan = small_plan(network=network, patch_size=patch, network_depth=4)
    torch.manual_seed(0)
    model = task_for(plan).build_network(plan, None).eval()
    x = torch.randn(2, 1, *patch)
    with torch.no_grad():
        exact = model(x)
        fast = with_precision(model, "bfloat16")(x)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all()
    assert (fast.argmax(1) == exact.argmax(1)).float().mean() > 0.95
