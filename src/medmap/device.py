"""The compute device a user asked for, checked once, before any work: one line when it cannot be had.

Without this, ``--device cuda`` on a CPU-only install failed deep inside torch (a 65-line traceback from
predict; a node that started and then failed every job; a training run that planned and cached first).
"""

from __future__ import annotations

import os

import torch

from medmap.errors import ConfigError


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a torch device if this machine has it (``cpu``, ``cuda``, ``cuda:N``), else ConfigError."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device {name}: not a device name (use cpu, cuda or cuda:N)") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"--device {name}: medmap runs on cpu or cuda")
    if not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise ConfigError(f"--device {name}: no CUDA GPU is available here (torch {torch.__version__}, {build})")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(f"--device {name}: this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    return device


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
