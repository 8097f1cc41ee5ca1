"""One training run's settings (`TrainConfig`): what the loop is asked to do, checked when it is made, and
read back from a run's ``config.json`` to resume it."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from medmap.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly")


@dataclass
class TrainConfig:
    epochs: int = 30
    learning_rate: float | None = None  # None: SGD 1e-2 (nnU-Net); AdamW the task's own (Task.learning_rate)
    weight_decay: float = 1e-4
    warmup_epochs: int = 2  # linear warm-up, capped at WARMUP_CAP of all steps
    patience: int = 10  # epochs without a better validation metric before stopping
    samples_per_epoch: int | None = None  # default: the plan's iterations_per_epoch x batch size
    optimizer: str = "adamw"  # or "sgd": nnU-Net's SGD, Nesterov momentum 0.99
    schedule: str = "cosine"  # or "poly": (1 - step/steps) ** 0.9, nnU-Net's
    budget_seconds: float | None = None  # training wall-clock budget: epochs are planned to fit it
    min_epochs: int = 1  # a budgeted run's epochs are shortened to give at least this many validations
    dropout: float | None = None  # None: the task's default (classification 0.2, segmentation none, as nnU-Net)
    label_smoothing: float = 0.05
    balanced_sampling: bool = True
    workers: int = 2
    seed: int = 0
    device: str = "cpu"
    pretrained: str | None = None  # local weights file (see medmap.models.pretrained)
    freeze_encoder_epochs: int = 0  # train only the head for this many epochs, then everything
    backbone_lr_factor: float = 0.1  # learning rate of pretrained layers relative to the head's
    # precision of validation and evaluation passes (medmap.inference.precision); float32 by default so
    # a run's metrics do not depend on the machine; `medmap evaluate --precision bfloat16` checks bfloat16
    evaluation_precision: str = "float32"

    def __post_init__(self) -> None:
        problems = [
            (self.epochs < 1, f"epochs {self.epochs}: at least 1"),
            (
                self.learning_rate is not None and not self.learning_rate > 0,
                f"learning rate {self.learning_rate}: must be > 0",
            ),
            (not self.weight_decay >= 0, f"weight decay {self.weight_decay}: must be >= 0"),
            (self.patience < 1, f"patience {self.patience}: at least 1"),
            (self.samples_per_epoch is not None and self.samples_per_epoch < 1, "samples per epoch: at least 1"),
            (self.optimizer not in OPTIMIZERS, f"optimizer {self.optimizer!r}: one of {', '.join(OPTIMIZERS)}"),
            (self.schedule not in SCHEDULES, f"schedule {self.schedule!r}: one of {', '.join(SCHEDULES)}"),
            (self.budget_seconds is not None and not self.budget_seconds > 0, "budget: must be > 0"),
            (self.workers < 0, f"workers {self.workers}: must be >= 0"),
            (self.freeze_encoder_epochs < 0, "freeze-encoder epochs: must be >= 0"),
            (self.min_epochs < 1, f"minimum epochs {self.min_epochs}: at least 1"),
        ]
        for failed, message in problems:
            if failed:
                raise ConfigError(message)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """A run's saved config; settings this version no longer has are dropped (older runs still resume)."""
        data = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
