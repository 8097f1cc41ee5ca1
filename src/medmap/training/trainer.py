"""The training loop: one for every task (the `Task` supplies network, loss and metrics).

An epoch is a number of optimiser steps (the plan's ``iterations_per_epoch``), not a pass over the
cases: what a run buys is steps, and a budget (``TrainConfig.budget_seconds``) is turned into epochs
by timing a few real steps first (`measure_step`). AdamW (decoupled weight decay) or nnU-Net's SGD
(Nesterov momentum 0.99), with the learning rate set every step: linear warm-up, then cosine or
polynomial decay to zero. Early stopping on the task's validation metric, a checkpoint after every
epoch and ``resume`` that continues exactly: model, optimiser, scheduler, RNG and augmentation
generator states are all saved, and patch sampling is a pure function of (seed, epoch, index). AMP is
used on CUDA only; 3-D networks run channels-last (measured 8 % faster steps on the CPU too).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from medmap import run_folder as runs
from medmap.data.cache import CachedCase
from medmap.data.loader import AugmentingLoader, PatchDataset
from medmap.device import check_device
from medmap.errors import ConfigError
from medmap.inference.precision import autocast, resolve_precision
from medmap.plan import Plan
from medmap.training.distributed import LostRankError, Ranks, bare, wrap

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "poly")
WARMUP_CAP = 0.05  # warm-up never takes more than this share of the steps (short budgets)


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


def _schedule(config: TrainConfig, steps_per_epoch: int, epochs: int):
    """Learning-rate factor per optimiser step: linear warm-up, then cosine or poly decay to zero."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(config.warmup_epochs * steps_per_epoch, int(WARMUP_CAP * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        if config.schedule == "poly":
            return (1 - progress) ** 0.9
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def peak_learning_rate(config: TrainConfig, task) -> float:
    if config.learning_rate is not None:
        return config.learning_rate
    return 1e-2 if config.optimizer == "sgd" else task.learning_rate


def build_optimizer(config: TrainConfig, head: list, backbone: list, lr: float, backbone_lr: float):
    groups = [{"params": head, "lr": lr}, {"params": backbone, "lr": backbone_lr}]
    if config.optimizer == "sgd":  # nnU-Net's: high momentum, Nesterov, small weight decay
        return torch.optim.SGD(groups, momentum=0.99, nesterov=True, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=config.weight_decay)


class Trainer:
    """Trains one model. With ``ranks`` of several processes (`medmap.training.distributed`) each trains on
    its share of every global batch under DDP; rank 0 alone writes checkpoints, history and budget."""

    def __init__(
        self,
        task,
        plan: Plan,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        progress: bool = False,
        ranks: Ranks | None = None,
    ) -> None:
        self.task, self.plan, self.config = task, plan, config
        self.run_dir = Path(run_dir)
        self.ranks = ranks or Ranks()
        self.progress = progress and self.ranks.is_main
        self.device = check_device(self.ranks.device(config.device))
        self.ranks.batch_share(plan.batch_size)  # refuses a batch that does not divide among the ranks

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / runs.CHECKPOINTS

    def samples_per_epoch(self, train: list[CachedCase], steps: int | None = None) -> int:
        cfg, plan = self.config, self.plan
        if steps:  # fixed by the budget
            samples = steps * plan.batch_size
        elif cfg.samples_per_epoch:
            samples = cfg.samples_per_epoch
        elif plan.iterations_per_epoch:
            samples = plan.iterations_per_epoch * plan.batch_size
        else:  # plans written before iterations_per_epoch existed
            samples = max(3 * len(train), 8 * plan.batch_size)
        return max(samples, plan.batch_size)  # at least one full batch: the last partial one is dropped

    def _train_loader(self, train: list[CachedCase], seed: int | None = None, steps: int | None = None):
        cfg = self.config
        seed = cfg.seed if seed is None else seed
        train_set = PatchDataset(
            train,
            self.plan,
            self.task,
            train=True,
            samples_per_epoch=self.samples_per_epoch(train, steps),
            seed=seed,
            balanced=cfg.balanced_sampling,
        )
        return AugmentingLoader(
            train_set,
            self.plan.batch_size,
            workers=cfg.workers,
            seed=seed,
            rank=self.ranks.rank,
            world=self.ranks.world_size,
        )

    def _place(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.plan.spatial_dims == 3:
            model = model.to(memory_format=torch.channels_last_3d)
        elif self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def plan_epochs(self, model, loss_fn, train: list[CachedCase], val_set: PatchDataset) -> dict:
        """Epochs that fit ``budget_seconds``: a few real steps (on a copy of the model, from a loader of
        their own, so the run itself is untouched) and one validation pass are timed first."""
        import copy

        cfg = self.config
        started = time.perf_counter()
        probe = copy.deepcopy(model)
        optimizer = torch.optim.SGD(probe.parameters(), lr=0.0)
        loader = self._train_loader(train, seed=cfg.seed + 7919)
        times = []  # per step: waiting for the batch (cutting, augmenting) + forward, backward, update
        probe.train()
        mark = time.perf_counter()
        for i, batch in enumerate(loader):
            self._step(probe, loss_fn, optimizer, None, batch)
            now = time.perf_counter()
            times.append(now - mark)
            mark = now
            if i >= 6:
                break
        step = float(np.median(times[1:])) if len(times) > 1 else times[0]  # the first one starts the workers
        t0 = time.perf_counter()
        self.predict(probe, val_set)
        validation = time.perf_counter() - t0
        nominal = len(loader)  # the plan's epoch; stretched or shrunk so that whole epochs fill the budget
        spent = time.perf_counter() - started
        available = max(cfg.budget_seconds - spent, 0.0)
        epochs = int(max(cfg.min_epochs, round(available / (nominal * step + validation))))
        steps = int(max(1, (available / epochs - validation) // step))
        return self.ranks.agree(
            {
                "budget_seconds": cfg.budget_seconds,
                "seconds_per_step": round(step, 4),
                "seconds_per_validation": round(validation, 3),
                "steps_per_epoch": steps,
                "planned_steps_per_epoch": nominal,
                "batch_size": self.plan.batch_size,
                "epochs": epochs,
                "samples": epochs * steps * self.plan.batch_size,
                "measured_in_seconds": round(spent, 2),
            },
            "agreeing on the budget",
        )  # rank 0's timing decides for all: every rank must run the same number of steps

    def _step(self, model, loss_fn, optimizer, scaler, batch) -> float:
        x = batch["image"].to(self.device)
        y = batch["target"].to(self.device)
        if x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            loss = loss_fn(model(x), y)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return float(loss.detach())

    def predict(
        self, model: torch.nn.Module, dataset: PatchDataset, batch_size: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Task predictions and targets for every item of an evaluation dataset, in order."""
        predictions, targets, _ = self.evaluate_batches(model, dataset, batch_size)
        return predictions, targets

    def evaluate_batches(
        self, model: torch.nn.Module, dataset: PatchDataset, batch_size: int | None = None, loss_fn=None
    ) -> tuple[np.ndarray, np.ndarray, float | None]:
        """`predict`, plus the mean loss over the items when ``loss_fn`` is given (the validation loss that
        the training curves show beside the training loss)."""
        model.eval()
        outputs, targets, losses = [], [], []
        batch = batch_size or self.plan.batch_size
        precision = resolve_precision(self.config.evaluation_precision, self.device)
        mine = self.ranks.share(len(dataset)) if self._sharing() else range(len(dataset))
        with torch.no_grad():
            for start in range(mine.start, mine.stop, batch):
                items = [dataset[i] for i in range(start, min(start + batch, mine.stop))]
                x = torch.stack([it["image"] for it in items]).to(self.device)
                if x.dim() == 5:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                with autocast(precision, self.device):
                    logits = model(x).float()
                outputs.append(self.task.predictions(logits))
                target = torch.stack([it["target"] for it in items])
                targets.append(target.numpy())
                if loss_fn is not None:
                    losses.append(float(loss_fn(logits, target.to(self.device))) * len(items))
        predictions, targets = self._joined(outputs), self._joined(targets)
        if not self._sharing():
            return predictions, targets, (sum(losses) / len(dataset) if losses else None)
        total = self.ranks.total(sum(losses)) if loss_fn is not None else None
        predictions, targets = self.ranks.gather(predictions), self.ranks.gather(targets)
        return predictions, targets, (total / len(dataset) if total is not None else None)

    def _sharing(self) -> bool:
        """Validation is split among the ranks while they train together (not after the group ended)."""
        return self.ranks.distributed and torch.distributed.is_initialized()

    @staticmethod
    def _joined(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0,))

    def fit(
        self,
        train: list[CachedCase],
        val: list[CachedCase],
        *,
        resume: bool = False,
        stop_after: Callable[[list[dict]], bool] | None = None,
    ) -> dict:
        """Train (or resume) to the configured epochs. ``stop_after(history)`` (the epoch records so far)
        returning True ends the run after that epoch's checkpoint, as an interruption would: a later
        ``resume`` continues it exactly (`medmap tune` stops trailing candidates this way)."""
        cfg, main = self.config, self.ranks.is_main
        if main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        model = self._place(self.task.build_network(self.plan, cfg.dropout))
        loss_fn = self.task.build_loss(self.plan, train, cfg.label_smoothing).to(self.device)
        if cfg.pretrained and not resume:
            from medmap.models.pretrained import load_pretrained

            report = load_pretrained(model, cfg.pretrained)
            if main:
                (self.run_dir / "pretrained.json").write_text(json.dumps(asdict(report), indent=1))
            self._say(report.summary())
        head, backbone = _split_parameters(model)
        lr = peak_learning_rate(cfg, self.task)
        optimizer = build_optimizer(cfg, head, backbone, lr, lr * (cfg.backbone_lr_factor if cfg.pretrained else 1.0))
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        val_set = PatchDataset(val, self.plan, self.task, train=False)
        epochs = cfg.epochs
        budget_file = self.run_dir / runs.BUDGET
        budget: dict = {}
        planning_started = time.perf_counter()
        if cfg.budget_seconds:
            saved = self.ranks.agree(json.loads(budget_file.read_text()) if main and budget_file.is_file() else None)
            if resume and saved:
                budget = saved
            else:
                budget = self.plan_epochs(model, loss_fn, train, val_set)
                if main:
                    budget_file.write_text(json.dumps(budget, indent=1))
            epochs = budget["epochs"]
            self._say(
                f"budget {_duration(cfg.budget_seconds)}: {budget['seconds_per_step']:.2f} s per step of "
                f"{budget['batch_size']} -> {epochs} epochs of {budget['steps_per_epoch']} steps "
                f"({budget['samples']} samples)"
            )
        loader = self._train_loader(train, steps=budget.get("steps_per_epoch"))  # once, sized by any budget
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(cfg, len(loader), epochs))
        history: list[dict] = []
        best, best_epoch, start = -math.inf, -1, 0
        state = self._last_state() if resume else None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            own = state["ranks"][self.ranks.rank] if "ranks" in state else state
            torch.set_rng_state(own["torch_rng"])
            if loader.augmenter is not None:
                loader.augmenter.generator.set_state(own["augment_rng"])
            history, best, best_epoch, start = state["history"], state["best"], state["best_epoch"], state["epoch"] + 1
        model = wrap(model, self.ranks, self.device)  # after loading: DDP starts every rank from rank 0's weights
        from medmap.progress import track

        training_started = time.perf_counter() - sum(h["seconds"] for h in history)

        def epoch_numbers():  # the count may be corrected once, after the first epoch of a budgeted run
            epoch = start
            while epoch < epochs:
                yield epoch
                epoch += 1

        for epoch in track(epoch_numbers(), "training", enabled=self.progress, total=epochs - start):
            if epoch - best_epoch > cfg.patience and best_epoch >= 0:
                break
            overrun = bool(cfg.budget_seconds) and time.perf_counter() - training_started > 1.25 * cfg.budget_seconds
            if self.ranks.agree(overrun, "checking the budget"):
                self._say(f"warning: budget overrun (the machine became slower): stopped after {epoch} epochs")
                break
            t0 = time.perf_counter()
            frozen = epoch < cfg.freeze_encoder_epochs
            for p in backbone:
                p.requires_grad_(not frozen)
            model.train()
            loader.dataset.set_epoch(epoch)
            losses = []
            lr = optimizer.param_groups[0]["lr"]
            with self.ranks.guard(f"training epoch {epoch + 1}"):  # DDP's gradient all-reduce
                for batch in loader:
                    losses.append(self._step(model, loss_fn, optimizer, scaler, batch))
                    scheduler.step()
            predictions, targets, val_loss = self.evaluate_batches(model, val_set, loss_fn=loss_fn)
            metrics = {**self.task.validation_metrics(predictions, targets), "loss": val_loss}
            mean_loss = self.ranks.total(float(np.mean(losses))) / self.ranks.world_size  # the global batch's
            record = EpochRecord(epoch, mean_loss, lr, time.perf_counter() - t0, metrics)
            history.append(asdict(record))
            if budget and not budget.get("corrected_after_epoch_1"):
                # the probe's few steps misjudge a real epoch by 10-25 %: the first epoch corrects the count
                remaining = cfg.budget_seconds - (time.perf_counter() - planning_started)
                epochs = max(epoch + 1, epoch + 1 + round(remaining / record.seconds))  # <= half an epoch over
                epochs = self.ranks.agree(epochs, "agreeing on the epochs")
                budget.update(corrected_after_epoch_1=True, first_epoch_seconds=round(record.seconds, 2))
                budget.update(epochs=epochs, samples=epochs * len(loader) * self.plan.batch_size)
                if main:
                    budget_file.write_text(json.dumps(budget, indent=1))
                scheduler.lr_lambdas = [_schedule(cfg, len(loader), epochs)] * len(optimizer.param_groups)
            score = metrics.get(self.task.monitor, float("nan"))  # the same on every rank: gathered outputs
            if not math.isnan(score) and score > best:
                best, best_epoch = score, epoch
                if main:
                    torch.save(bare(model).state_dict(), self.checkpoints / runs.BEST)
            self._say(
                f"epoch {epoch + 1}/{epochs}  loss {record.loss:.4f}  val {self.task.monitor} "
                f"{score:.4f}  best {best:.4f} (epoch {best_epoch + 1})  {record.seconds:.1f}s"
            )
            own = {
                "torch_rng": torch.get_rng_state(),
                "augment_rng": loader.augmenter.generator.get_state() if loader.augmenter else None,
            }
            every_rank = self.ranks.gather_objects(own, "saving the checkpoint")  # each rank's random state
            if main:
                state = {
                    "model": bare(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    **own,
                    "world_size": self.ranks.world_size,
                    "ranks": every_rank,
                    "history": history,
                    "best": best,
                    "best_epoch": best_epoch,
                    "epoch": epoch,
                }
                _save_atomically(state, self.checkpoints / runs.LAST)
                (self.run_dir / runs.HISTORY).write_text(json.dumps(history, indent=1))
            if stop_after is not None and stop_after(history):
                break
        if best_epoch < 0 and main:  # validation metric never defined (e.g. one class only): the last weights
            torch.save(bare(model).state_dict(), self.checkpoints / runs.BEST)
        return {"best": best, "best_epoch": best_epoch, "epochs_run": len(history), "history": history}

    def _last_state(self) -> dict | None:
        """The checkpoint to resume from, read by rank 0 and handed to every rank (other machines need no
        shared file system); None when there is none. Refuses another number of processes than it had."""
        path = self.checkpoints / runs.LAST
        state = (
            torch.load(path, map_location="cpu", weights_only=False) if self.ranks.is_main and path.is_file() else None
        )
        state = self.ranks.agree(state, "sharing the checkpoint")
        if state is not None and state.get("world_size", 1) != self.ranks.world_size:
            if not self.ranks.is_main:  # every rank sees it; rank 0 is the one to say it
                raise LostRankError("resumed with another number of processes (rank 0 says so)", quiet=True)
            raise ConfigError(
                f"{path}: saved by {state.get('world_size', 1)} training process(es); resume it with as many "
                f"(--nproc-per-node), not {self.ranks.world_size}"
            )
        return state

    def _say(self, text: str) -> None:
        if self.progress:
            from rich.console import Console

            Console(stderr=True).print(text, highlight=False, markup=False)


def _save_atomically(state: dict, path: Path) -> None:
    """A process killed while saving leaves the previous checkpoint intact (resume reads a whole one)."""
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    tmp.replace(path)


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.3g} min" if seconds >= 60 else f"{seconds:.0f} s"


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
