"""Figures in words: intervals as a model card or report prints them (NaN and missing bounds print nothing)."""

from __future__ import annotations


def interval(values, digits: int = 3) -> str:
    """``0.812-0.930``; empty when there is no interval or a bound is NaN."""
    ok = values and all(isinstance(v, float | int) and v == v for v in values)  # v == v: not NaN
    return f"{values[0]:.{digits}f}-{values[1]:.{digits}f}" if ok else ""


def ci(values, digits: int = 3) -> str:
    """`` (95% CI 0.812-0.930)``, or empty (see `interval`)."""
    return f" (95% CI {interval(values, digits)})" if interval(values, digits) else ""


def margin_verdict(delta_ci) -> str:
    """What a paired interval of model minus baseline says, in the CLI's words: the model is better (the
    whole interval above 0), worse (below 0), or the data cannot tell (it holds 0)."""
    low, high = delta_ci
    if low > 0:
        return "supported"
    if high < 0:
        return "the model is WORSE than the baseline (interval below 0)"
    return "NOT supported (interval includes 0)"
