"""The training loop: one for every task (the `Task` supplies network, loss and metrics).

AdamW (decoupled weight decay, i.e. L2 regularisation done right), a cosine learning-rate schedule
with linear warm-up, early stopping on the task's validation metric, a checkpoint after every epoch
and ``resume`` that continues exactly: model, optimiser, scheduler, RNG and augmentation generator
states are all saved, and patch sampling is a pure function of (seed, epoch, index). AMP and
channels-last are used on CUDA only.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from medmap.data.cache import CachedCase
from medmap.data.loader import AugmentingLoader, PatchDataset
from medmap.errors import ConfigError
from medmap.inference.precision import autocast, resolve_precision
from medmap.plan import Plan


@dataclass
class TrainConfig:
    epochs: int = 30
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    patience: int = 10  # epochs without a better validation metric before stopping
    samples_per_epoch: int | None = None  # default: 3 x the training cases, at least 8 batches
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


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    learning_rate: float
    seconds: float
    val: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _schedule(config: TrainConfig):
    def factor(epoch: int) -> float:
        if epoch < config.warmup_epochs:
            return (epoch + 1) / (config.warmup_epochs + 1)
        progress = (epoch - config.warmup_epochs) / max(config.epochs - config.warmup_epochs, 1)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class Trainer:
    def __init__(self, task, plan: Plan, config: TrainConfig, run_dir: str | Path, *, progress: bool = False) -> None:
        self.task, self.plan, self.config = task, plan, config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = torch.device(config.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device cuda asked for, but no CUDA device is available")

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def _loaders(self, train: list[CachedCase], val: list[CachedCase]):
        cfg = self.config
        samples = cfg.samples_per_epoch or max(3 * len(train), 8 * self.plan.batch_size)
        samples = max(samples, self.plan.batch_size)  # at least one full batch: the last partial one is dropped
        train_set = PatchDataset(
            train, self.plan, train=True, samples_per_epoch=samples, seed=cfg.seed, balanced=cfg.balanced_sampling
        )
        loader = AugmentingLoader(train_set, self.plan.batch_size, workers=cfg.workers, seed=cfg.seed)
        val_set = PatchDataset(val, self.plan, train=False)
        return loader, val_set

    def predict(
        self, model: torch.nn.Module, dataset: PatchDataset, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Task predictions and targets for every item of an evaluation dataset, in order."""
        model.eval()
        outputs, targets = [], []
        batch = batch_size or self.plan.batch_size
        precision = resolve_precision(self.config.evaluation_precision, self.device)
        with torch.no_grad():
            for start in range(0, len(dataset), batch):
                items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
                x = torch.stack([it["image"] for it in items]).to(self.device)
                with autocast(precision, self.device):
                    logits = model(x).float()
                outputs.append(self.task.predictions(logits))
                targets.append(torch.stack([it["target"] for it in items]).numpy())
        return np.concatenate(outputs), np.concatenate(targets)

    def fit(self, train: list[CachedCase], val: list[CachedCase], *, resume: bool = False) -> dict:
        cfg = self.config
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        model = self.task.build_network(self.plan, cfg.dropout).to(self.device)
        if self.device.type == "cuda":
            model = model.to(
                memory_format=torch.channels_last if model_dims(self.plan) == 2 else torch.channels_last_3d
            )
        loss_fn = self.task.build_loss(self.plan, train, cfg.label_smoothing).to(self.device)
        if cfg.pretrained and not resume:
            from medmap.models.pretrained import load_pretrained

            report = load_pretrained(model, cfg.pretrained)
            (self.run_dir / "pretrained.json").write_text(json.dumps(asdict(report), indent=1))
            if self.progress:
                from rich.console import Console

                Console(stderr=True).print(report.summary(), highlight=False)
        head, backbone = _split_parameters(model)
        backbone_lr = cfg.learning_rate * (cfg.backbone_lr_factor if cfg.pretrained else 1.0)
        optimizer = torch.optim.AdamW(
            [{"params": head, "lr": cfg.learning_rate}, {"params": backbone, "lr": backbone_lr}],
            weight_decay=cfg.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg))
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        loader, val_set = self._loaders(train, val)
        history: list[dict] = []
        best, best_epoch, start = -math.inf, -1, 0
        if resume and (self.checkpoints / "last.pt").is_file():
            state = torch.load(self.checkpoints / "last.pt", map_location=self.device, weights_only=False)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            if loader.augmenter is not None:
                loader.augmenter.generator.set_state(state["augment_rng"])
            history, best, best_epoch, start = state["history"], state["best"], state["best_epoch"], state["epoch"] + 1
        from medmap.progress import track

        for epoch in track(range(start, cfg.epochs), "training", enabled=self.progress, total=cfg.epochs - start):
            if epoch - best_epoch > cfg.patience and best_epoch >= 0:
                break
            t0 = time.perf_counter()
            frozen = epoch < cfg.freeze_encoder_epochs
            for p in backbone:
                p.requires_grad_(not frozen)
            model.train()
            loader.dataset.set_epoch(epoch)
            losses = []
            for batch in loader:
                x = batch["image"].to(self.device)
                y = batch["target"].to(self.device)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
                    loss = loss_fn(model(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            predictions, targets = self.predict(model, val_set)
            metrics = self.task.validation_metrics(predictions, targets)
            record = EpochRecord(epoch, float(np.mean(losses)), lr, time.perf_counter() - t0, metrics)
            history.append(asdict(record))
            score = metrics.get(self.task.monitor, float("nan"))
            if not math.isnan(score) and score > best:
                best, best_epoch = score, epoch
                torch.save(model.state_dict(), self.checkpoints / "best.pt")
            if self.progress:
                from rich.console import Console

                Console(stderr=True).print(
                    f"epoch {epoch + 1}/{cfg.epochs}  loss {record.loss:.4f}  val {self.task.monitor} "
                    f"{score:.4f}  best {best:.4f} (epoch {best_epoch + 1})  {record.seconds:.1f}s",
                    highlight=False,
                )
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "augment_rng": loader.augmenter.generator.get_state() if loader.augmenter else None,
                    "history": history,
                    "best": best,
                    "best_epoch": best_epoch,
                    "epoch": epoch,
                },
                self.checkpoints / "last.pt",
            )
            (self.run_dir / "history.json").write_text(json.dumps(history, indent=1))
        if best_epoch < 0:  # validation metric never defined (e.g. one class only): keep the last weights
            torch.save(model.state_dict(), self.checkpoints / "best.pt")
        return {"best": best, "best_epoch": best_epoch, "epochs_run": len(history), "history": history}


HEAD_NAMES = ("fc", "head", "class_layers")  # classifier layers of medmap's / MONAI's networks


def _split_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(head parameters, backbone parameters): the head is what a pretrained file cannot provide."""
    head, backbone = [], []
    has_encoder = hasattr(model, "encoder")  # segmenters: the encoder is the pretrainable part, the rest is new
    for name, p in model.named_parameters():
        first = name.split(".")[0]
        is_head = first != "encoder" if has_encoder else first in HEAD_NAMES
        (head if is_head else backbone).append(p)
    return head, backbone


def model_dims(plan: Plan) -> int:
    from medmap.models.registry import spatial_dims

    return spatial_dims(plan)
