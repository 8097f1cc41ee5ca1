"""What a search varies, derived from the plan the planner made for this dataset, in one readable place.

A candidate is the default plan with a few overrides (``--set`` values) and training settings, so every
candidate is an ordinary medmap run. Trial 0 is the default plan itself, so the leaderboard always says
what the search bought over it.

Both tasks vary the network family and width, the optimiser (AdamW or nnU-Net's SGD) and its peak
learning rate (a factor on that optimiser's default, so one range suits both), and the augmentation
strength. Segmentation adds the loss and, for the DynUNet, deep supervision; classification adds label
smoothing. Detection is not searched yet (its anchors and its FROC selection would need their own space).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from medmap.errors import ConfigError
from medmap.plan import Plan
from medmap.training.config import TrainConfig
from medmap.training.optimisation import peak_learning_rate

SEGMENTERS = ("unet", "resunet18", "resunet34", "deeplabv3plus")
CLASSIFIERS = ("smallcnn", "resnet18", "resnet34", "densenet121")
LOSSES = ("dice_ce", "dice_focal", "tversky")
PARTIAL_LOSSES = ("dice_ce", "dice")  # cases with unannotated labels train only with these (marginal forms)
WIDTHS = (0.5, 1.0, 2.0)  # times the plan's first-level width
OPTIMIZERS = ("adamw", "sgd")
LEARNING_RATE_FACTORS = (0.25, 3.0)  # times the chosen optimiser's default peak learning rate
STRENGTHS = (0.5, 1.5)  # augmentation strength (the plan's is 1)
LABEL_SMOOTHING = (0.0, 0.2)
SEARCHED = ("segmentation", "classification")


@dataclass(frozen=True)
class Candidate:
    """Plan overrides and training settings (TrainConfig fields) of one trial."""

    overrides: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)  # what the sampler chose, as the leaderboard shows it

    def config(self, base: TrainConfig) -> TrainConfig:
        return replace(base, **self.settings)


def searchable(task: str) -> None:
    """Refuse, with the reason and before any planning, a task the search does not cover yet."""
    if task not in SEARCHED:
        raise ConfigError(
            f"medmap tune searches {' and '.join(SEARCHED)} plans; {task} is not searched yet "
            "(train it with medmap train)"
        )


def networks(plan: Plan) -> tuple[str, ...]:
    family = SEGMENTERS if plan.task == "segmentation" else CLASSIFIERS
    return family if plan.network in family else (plan.network, *family)


def default_params(plan: Plan, config: TrainConfig) -> dict:
    """The default plan as a point of the space: trial 0, enqueued, so the sampler learns from it too."""
    params = {
        "network": plan.network,
        "width": 1.0,
        "optimizer": config.optimizer,
        "learning_rate_factor": 1.0,
        "augmentation_strength": plan.augmentation.strength,
    }
    if plan.task == "classification":
        params["label_smoothing"] = config.label_smoothing
        return params
    params["loss"] = "dice_ce" if plan.loss == "default" else plan.loss
    if plan.network == "unet":
        params["deep_supervision"] = plan.deep_supervision
    return params


def suggest(trial, plan: Plan, task, config: TrainConfig, partial: bool) -> Candidate:
    """The candidate Optuna's sampler picks for ``trial`` (the default plan's values for trial 0)."""
    network = trial.suggest_categorical("network", networks(plan))
    width = trial.suggest_categorical("width", WIDTHS)
    optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
    factor = trial.suggest_float("learning_rate_factor", *LEARNING_RATE_FACTORS, log=True)
    strength = trial.suggest_float("augmentation_strength", *STRENGTHS)
    base = replace(config, optimizer=optimizer)
    settings: dict = {"optimizer": optimizer, "learning_rate": factor * peak_learning_rate(base, task)}
    overrides = [
        f"network={network}",
        f"network_width={max(4, round(plan.network_width * width))}",
        f"augmentation.strength={strength:.3f}",
    ]
    if plan.task == "classification":
        settings["label_smoothing"] = trial.suggest_float("label_smoothing", *LABEL_SMOOTHING)
    else:
        loss = trial.suggest_categorical("loss", PARTIAL_LOSSES if partial else LOSSES)
        overrides.append(f"loss={loss}")
        if network == "unet":  # deep supervision is the DynUNet's
            deep = trial.suggest_categorical("deep_supervision", (False, True))
            overrides.append(f"deep_supervision={str(deep).lower()}")
    return Candidate(tuple(overrides), settings, dict(trial.params))
