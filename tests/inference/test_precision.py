"""Inference precision: ``auto`` follows the hardware, bfloat16 really runs in bfloat16 and returns float32
logits, engines that cannot run it say so, and the CLI refuses an unknown precision in one line."""

import pytest
import torch

from medmap.errors import ConfigError
from medmap.inference.precision import native_bfloat16, resolve_precision, with_precision
from tests.test_cli import assert_one_line_error, medmap_cli


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


def test_bfloat16_convolutions_stay_finite_and_close_on_small_volumes():
    """A canary for the forward kernels bfloat16 inference relies on. (Their *weight gradients* are
    sometimes NaN on small volumes with torch 2.13's oneDNN, which is why training stays float32.)"""
    torch.manual_seed(0)
    for batch, channels, side in [(1, 32, 1), (2, 64, 2), (5, 128, 3), (20, 256, 2), (4, 32, 5)]:
        x, w = torch.randn(batch, channels, side, side, side), torch.randn(channels, channels, 3, 3, 3) * 0.02
        exact = torch.nn.functional.conv3d(x, w, padding=1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = torch.nn.functional.conv3d(x, w, padding=1).float()
        assert torch.isfinite(fast).all()
        assert (fast - exact).abs().max() <= 0.02 * exact.abs().max()
