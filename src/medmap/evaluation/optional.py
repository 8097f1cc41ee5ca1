"""Side steps after finished work: a figure or a report that fails must not lose what is already done.

Training and evaluation write their metrics, weights and label maps first; plots and the HTML report
come after and run through `optional`, which turns any failure into one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TypeVar

from medmap.errors import MedmapWarning
from medmap.io.guard import reason

T = TypeVar("T")


def optional(what: str, step: Callable[..., T], *args, **kwargs) -> T | None:
    """``step(*args, **kwargs)``, or None and a warning naming ``what`` if it fails."""
    try:
        return step(*args, **kwargs)
    except Exception as exc:
        warnings.warn(
            MedmapWarning(f"{what} failed ({reason(exc)}); the metrics, weights and label maps are written"),
            stacklevel=2,
        )
        return None
