"""The `Plan`: every decision training and inference share, as data (pydantic, saved as JSON).

No logic lives here beyond validation and overrides: the planner (`medmap.training.planner`) derives a
Plan from a dataset fingerprint, preprocessing reads it, training and inference both obey it. Axis
orders follow `medmap.io.image`: (slice, row, column).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medmap.errors import ConfigError

Triple = tuple[float, float, float]
IntTriple = tuple[int, int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Normalization(_Strict):
    """How intensities become network inputs.

    ``ct``: clip to [clip_low, clip_high] (foreground 0.5/99.5 percentiles of the dataset), then
    (x - mean) / std with the dataset's foreground statistics, the same for every image.
    ``fixed``: (x - mean) / std with the dataset's statistics, the same for every image, no clipping
    (8-bit patches without a modality: their absolute intensity means something).
    ``zscore``: per image, over its foreground (MR). ``per_image``: per image min-max to [0, 1] (X-ray).
    """

    scheme: Literal["ct", "fixed", "zscore", "per_image", "none"]
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None


class Augmentation(_Strict):
    """Random transforms applied to training batches; ``strength`` 0 turns them all off."""

    strength: float = Field(1.0, ge=0.0, le=2.0)
    flip_axes: tuple[int, ...] = (1, 2)  # array axes (slice=0, row=1, column=2) that may be mirrored
    # lateralised labels (Parotid_L / Parotid_R): never mirror across the patient's left-right axis, in
    # training (the planner leaves those axes out of flip_axes) or at test time (checked per image)
    keep_sides: bool = False
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    elastic: bool = False
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.05
    contrast: tuple[float, float] = (0.85, 1.15)
    probability: float = Field(0.3, ge=0.0, le=1.0)  # each transform's chance per sample


class Inference(_Strict):
    """How a segmentation network is applied to a whole volume (see `medmap.inference.sliding_window`)."""

    overlap: float = Field(0.5, ge=0.0, lt=1.0)  # fraction of the patch shared by neighbouring windows
    mirror: bool = False  # test-time augmentation: average over mirrored copies (2^axes forward passes)
    batch_size: int = Field(2, ge=1)  # windows per forward pass


class Plan(_Strict):
    """Everything decided from the data. Every field can be overridden (``medmap plan --set k=v``)."""

    version: int = 1
    dataset: str
    task: Literal["classification", "segmentation", "detection"]
    modality: str
    channels: int = 1
    labels: dict[int, str]  # segmentation: label value -> name; classification: class index -> name
    lesion_level: bool = False  # classification of a lesion at a given position (else of the whole image)
    input_mode: Literal["2d", "2.5d", "3d"]  # 2.5d: three orthogonal planes through the lesion as channels
    target_spacing: Triple  # mm, (slice, row, column)
    normalization: Normalization
    patch_size: IntTriple  # voxels at target spacing; 2-D inputs use (1, rows, columns)
    batch_size: int = Field(ge=1)
    iterations_per_epoch: int | None = Field(None, ge=1)  # optimiser steps per epoch (None: older plans' rule)
    network: str
    network_width: int = Field(ge=4)  # features of the first level
    network_depth: int = Field(ge=1)  # resolution levels (segmentation) or stages (classification)
    loss: Literal["default", "dice", "dice_ce", "dice_focal", "tversky"] = "default"  # default: the task's own
    deep_supervision: bool = False  # segmentation U-Net: losses at coarser decoder levels too
    inference: Inference = Field(default_factory=Inference)
    foreground_oversample: float = Field(0.33, ge=0.0, le=1.0)  # share of patches forced onto foreground
    augmentation: Augmentation = Field(default_factory=Augmentation)
    device: Literal["cpu", "cuda"] = "cpu"
    memory_budget_mb: int = 2000
    notes: list[str] = Field(default_factory=list)  # why each decision was taken
    overrides: list[str] = Field(default_factory=list)  # the --set values applied, in order

    @property
    def spatial_dims(self) -> int:
        """Dimensions the network convolves over: 2 for ``2d`` and ``2.5d`` input, else 3."""
        return 2 if self.input_mode in ("2d", "2.5d") else 3

    @property
    def input_channels(self) -> int:
        """Channels the network reads: the image's, three times over in ``2.5d`` (one per plane)."""
        return self.channels * (3 if self.input_mode == "2.5d" else 1)

    def preprocessing_key(self) -> str:
        """A short hash of the fields that change preprocessed arrays (names the on-disk cache)."""
        import hashlib

        fields = {k: getattr(self, k) for k in ("dataset", "task", "target_spacing", "normalization", "channels")}
        text = json.dumps(fields, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.model_dump_json(indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such plan file") from None
        except ValidationError as exc:
            raise ConfigError(f"{path}: invalid plan: {_first_error(exc)}") from None

    def with_overrides(self, assignments: list[str]) -> Plan:
        """A copy with ``key=value`` assignments applied; dotted keys reach nested fields.

        Values are parsed as JSON where they can be (``patch_size=[1,128,128]``, ``batch_size=4``,
        ``augmentation.elastic=true``) and taken as strings otherwise (``network=resnet18``).
        """
        data = self.model_dump()
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set {item!r}: expected key=value")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            target = data
            parts = key.strip().split(".")
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"--set {item!r}: {part!r} is not a group of settings")
                target = target[part]
            if parts[-1] not in target:
                raise ConfigError(f"--set {item!r}: unknown setting {key!r}")
            target[parts[-1]] = value
        data["overrides"] = [*self.overrides, *assignments]
        try:
            return Plan.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"--set: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}"
