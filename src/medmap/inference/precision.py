"""Numeric precision of inference: float32, or bfloat16 where the hardware computes it natively.

Why this exists: on the CPU, 3-D segmentation and classification networks spend 75-90 % of their time in
float32 convolutions, and no engine makes those much faster (ONNX Runtime's and oneDNN's kernels are
within 15 % of each other here, `benchmarks/engines.py`). A CPU with AVX512-BF16 or AMX, and every
recent GPU, multiplies bfloat16 at twice the float32 rate or more; running the network under
``torch.autocast`` in bfloat16 (normalisation layers and the softmax stay float32) gave 2.7x on the demo
liver U-Net with 99.8 % of voxels labelled the same as float32 on random input. Where the hardware has
no native bfloat16 (it would be emulated and slower), ``auto`` stays float32.

``auto`` is the default of ``medmap predict`` and ``medmap serve``; ``float32`` reproduces the exact
float32 result; the precision used is written into every ``result.json``.
"""

from __future__ import annotations

import contextlib

import torch

from medmap.errors import ConfigError

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively (not emulated)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu  # these probes are private in torch 2.x: absent, they count as "no"
        probes = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
        return any(probe() for probe in probes if probe is not None)
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu", engine: str = "torch") -> str:
    """``float32`` or ``bfloat16`` for a requested precision (``auto`` decides by the hardware)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if engine != "torch":  # exported graphs are float32; autocast applies to torch's own operators
        if precision == "bfloat16":
            raise ConfigError(f"--precision bfloat16 runs on the torch engine, not --engine {engine}")
        return "float32"
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


def autocast(precision: str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """The context the networks run in for a resolved ``precision``."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def with_precision(network, precision: str, device: str | torch.device = "cpu"):
    """``network`` (``x -> logits``) run in ``precision``, returning float32 logits."""
    if precision == "float32":
        return network

    def run(x: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            return network(x).float()

    return run
