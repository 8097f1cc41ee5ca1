"""What a search varies, derived from the plan the planner made for this dataset, in one readable place.

A candidate is the default plan with a few overrides (``--set`` values) and training settings, so every
candidate is an ordinary medmap run. Trial 0 is the default plan itself, so the leaderboard always says
what the search bought over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from medmap.errors import ConfigError
from medmap.plan import Plan

NETWORKS = ("unet", "resunet18", "resunet34", "deeplabv3plus")
LOSSES = ("dice_ce", "dice_focal", "tversky")
PARTIAL_LOSSES = ("dice_ce", "dice")  # cases with unannotated labels train only with these (marginal forms)
WIDTHS = (0.5, 1.0, 2.0)  # times the plan's first-level width
LEARNING_RATE_RANGE = (0.25, 3.0)  # times the task's default peak learning rate


@dataclass(frozen=True)
class Candidate:
    """Plan overrides and training settings of one trial (``learning_rate`` None: the task's default)."""

    overrides: tuple[str, ...] = ()
    learning_rate: float | None = None
    params: dict = field(default_factory=dict)  # what the sampler chose, as the leaderboard shows it


def searchable(plan: Plan) -> None:
    """Refuse, with the reason, a plan the search does not cover yet."""
    if plan.task != "segmentation":
        raise ConfigError(
            f"medmap tune searches segmentation plans; {plan.task} is not searched yet (train it with medmap train)"
        )


def networks(plan: Plan) -> tuple[str, ...]:
    return NETWORKS if plan.network in NETWORKS else (plan.network, *NETWORKS)


def default_params(plan: Plan, default_lr: float) -> dict:
    """The default plan as a point of the space: trial 0, enqueued, so the sampler learns from it too."""
    params = {
        "network": plan.network,
        "loss": "dice_ce" if plan.loss == "default" else plan.loss,
        "width": 1.0,
        "learning_rate": default_lr,
        "augmentation_strength": plan.augmentation.strength,
    }
    if plan.network == "unet":
        params["deep_supervision"] = plan.deep_supervision
    return params


def suggest(trial, plan: Plan, default_lr: float, partial: bool) -> Candidate:
    """The candidate Optuna's sampler picks for ``trial`` (the default plan's values for trial 0)."""
    network = trial.suggest_categorical("network", networks(plan))
    losses = PARTIAL_LOSSES if partial else LOSSES
    loss = trial.suggest_categorical("loss", losses)
    width = trial.suggest_categorical("width", WIDTHS)
    low, high = LEARNING_RATE_RANGE
    lr = trial.suggest_float("learning_rate", default_lr * low, default_lr * high, log=True)
    strength = trial.suggest_float("augmentation_strength", 0.5, 1.5)
    overrides = [
        f"network={network}",
        f"loss={loss}",
        f"network_width={max(4, round(plan.network_width * width))}",
        f"augmentation.strength={strength:.3f}",
    ]
    if network == "unet":  # deep supervision is the DynUNet's
        deep = trial.suggest_categorical("deep_supervision", (False, True))
        overrides.append(f"deep_supervision={str(deep).lower()}")
    return Candidate(tuple(overrides), lr, dict(trial.params))
