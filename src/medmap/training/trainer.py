"""The training loop: one for every task (the `Task` supplies network, loss and metrics).

An epoch is a number of optimiser steps (the plan's ``iterations_per_epoch``), not a pass over the
cases: what a run buys is steps, and a budget (``TrainConfig.budget_seconds``) is turned into epochs
by timing a few real steps first (`Trainer.plan_epochs`). AdamW (decoupled weight decay) or nnU-Net's SGD
(Nesterov momentum 0.99), with the learning rate set every step: linear warm-up, then cosine or
polynomial decay to zero. Early stopping on the task's validation metric, a checkpoint after every
epoch and ``resume`` that continues exactly: model, optimiser, scheduler, RNG and augmentation
generator states are all saved, and patch sampling is a pure function of (seed, epoch, index). AMP is
used on CUDA only; 3-D networks run channels-last (measured 8 % faster steps on the CPU too).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from medmap import run_folder as runs
from medmap.data.cache import CachedCase
from medmap.data.loader import AugmentingLoader, PatchDataset
from medmap.device import check_device
from medmap.errors import ConfigError
from medmap.inference.precision import autocast, resolve_precision
from medmap.plan import Plan
from medmap.run_folder import RunFolder
from medmap.training.config import TrainConfig
from medmap.training.distributed import LostRankError, Ranks, bare, wrap
from medmap.training.optimisation import build_optimizer, learning_rate_schedule, peak_learning_rate, split_parameters


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


@dataclass
class _Parts:
    """What one run trains with, built once by `Trainer._build` (the scheduler once the loader is sized)."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    backbone: list
    val_set: PatchDataset
    scheduler: LambdaLR | None = None


@dataclass
class _Progress:
    """Where a run stands: its epochs (a budget corrects them once), history and best epoch so far."""

    epochs: int
    budget: dict
    planning_started: float  # perf_counter() before the budget was timed: the budget counts from there
    history: list[dict] = field(default_factory=list)
    best: float = -math.inf
    best_epoch: int = -1
    start: int = 0

    def epoch_numbers(self):
        """The epochs still to run, reading ``epochs`` afresh after each (it may be corrected once)."""
        epoch = self.start
        while epoch < self.epochs:
            yield epoch
            epoch += 1


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
        if self.ranks.is_main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        seed_everything(self.config.seed)
        parts = self._build(train, val, resume)
        planning_started = time.perf_counter()
        epochs, budget = self._budget(parts, train, resume)
        loader = self._train_loader(train, steps=budget.get("steps_per_epoch"))  # once, sized by any budget
        run = _Progress(epochs=epochs, budget=budget, planning_started=planning_started)
        steps = len(loader)  # per epoch; the schedule reads run.epochs, which the budget may correct once
        parts.scheduler = LambdaLR(
            parts.optimizer, lambda step: learning_rate_schedule(self.config, steps, run.epochs)(step)
        )
        if resume:
            self._resume(parts, loader, run)
        parts.model = wrap(parts.model, self.ranks, self.device)  # after loading: every rank starts from rank 0's
        from medmap.progress import track

        training_started = time.perf_counter() - sum(h["seconds"] for h in run.history)
        for epoch in track(run.epoch_numbers(), "training", enabled=self.progress, total=run.epochs - run.start):
            if self._should_stop(epoch, run, training_started):
                break
            record = self._train_epoch(epoch, parts, loader)
            run.history.append(asdict(record))
            self._correct_budget(epoch, record, run, steps)
            self._keep_best(epoch, record, run, parts)
            self._checkpoint(epoch, run, parts, loader)
            if stop_after is not None and stop_after(run.history):
                break
        if run.best_epoch < 0 and self.ranks.is_main:  # validation metric never defined (one class): last weights
            torch.save(bare(parts.model).state_dict(), self.checkpoints / runs.BEST)
        return {"best": run.best, "best_epoch": run.best_epoch, "epochs_run": len(run.history), "history": run.history}

    # --- the steps of `fit` -------------------------------------------------------------------------
    def _build(self, train: list[CachedCase], val: list[CachedCase], resume: bool) -> _Parts:
        """Network (with any pretrained start), loss, optimiser and scaler, and the validation patches."""
        cfg = self.config
        model = self._place(self.task.build_network(self.plan, cfg.dropout))
        loss_fn = self.task.build_loss(self.plan, train, cfg.label_smoothing).to(self.device)
        if cfg.pretrained and not resume:
            from medmap.models.pretrained import load_pretrained

            report = load_pretrained(model, cfg.pretrained)
            if self.ranks.is_main:
                RunFolder(self.run_dir).write(runs.PRETRAINED, asdict(report))
            self._say(report.summary())
        head, backbone = split_parameters(model)
        lr = peak_learning_rate(cfg, self.task)
        optimizer = build_optimizer(cfg, head, backbone, lr, lr * (cfg.backbone_lr_factor if cfg.pretrained else 1.0))
        scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda")
        val_set = PatchDataset(val, self.plan, self.task, train=False)
        return _Parts(model, loss_fn, optimizer, scaler, backbone, val_set)

    def _budget(self, parts: _Parts, train: list[CachedCase], resume: bool) -> tuple[int, dict]:
        """The epochs to run, and the budget that decided them (``{}`` without a budget): timed now, or the
        saved one when resuming (the same epochs and steps as before the interruption)."""
        cfg, folder = self.config, RunFolder(self.run_dir)
        if not cfg.budget_seconds:
            return cfg.epochs, {}
        saved = self.ranks.agree(folder.read(runs.BUDGET) if self.ranks.is_main else None)
        if resume and saved:
            budget = saved
        else:
            budget = self.plan_epochs(parts.model, parts.loss_fn, train, parts.val_set)
            if self.ranks.is_main:
                folder.write(runs.BUDGET, budget)
        self._say(
            f"budget {_duration(cfg.budget_seconds)}: {budget['seconds_per_step']:.2f} s per step of "
            f"{budget['batch_size']} -> {budget['epochs']} epochs of {budget['steps_per_epoch']} steps "
            f"({budget['samples']} samples)"
        )
        return budget["epochs"], budget

    def _resume(self, parts: _Parts, loader: AugmentingLoader, run: _Progress) -> None:
        """Model, optimiser, scheduler, scaler, random states and the progress of the last checkpoint."""
        state = self._last_state()
        if state is None:
            return
        parts.model.load_state_dict(state["model"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        parts.scaler.load_state_dict(state["scaler"])
        own = state["ranks"][self.ranks.rank] if "ranks" in state else state
        torch.set_rng_state(own["torch_rng"])
        if loader.augmenter is not None:
            loader.augmenter.generator.set_state(own["augment_rng"])
        run.history, run.best, run.best_epoch, run.start = (
            state["history"], state["best"], state["best_epoch"], state["epoch"] + 1
        )  # fmt: skip

    def _should_stop(self, epoch: int, run: _Progress, training_started: float) -> bool:
        """Early stopping (patience) and a budget overrun (the machine became slower) end the run."""
        cfg = self.config
        if epoch - run.best_epoch > cfg.patience and run.best_epoch >= 0:
            return True
        overrun = bool(cfg.budget_seconds) and time.perf_counter() - training_started > 1.25 * cfg.budget_seconds
        if self.ranks.agree(overrun, "checking the budget"):
            self._say(f"warning: budget overrun (the machine became slower): stopped after {epoch} epochs")
            return True
        return False

    def _train_epoch(self, epoch: int, parts: _Parts, loader: AugmentingLoader) -> EpochRecord:
        """One epoch of steps (the backbone frozen for the first ``freeze_encoder_epochs``), then validation."""
        t0 = time.perf_counter()
        frozen = epoch < self.config.freeze_encoder_epochs
        for p in parts.backbone:
            p.requires_grad_(not frozen)
        parts.model.train()
        loader.dataset.set_epoch(epoch)
        losses = []
        lr = parts.optimizer.param_groups[0]["lr"]
        with self.ranks.guard(f"training epoch {epoch + 1}"):  # DDP's gradient all-reduce
            for batch in loader:
                losses.append(self._step(parts.model, parts.loss_fn, parts.optimizer, parts.scaler, batch))
                parts.scheduler.step()
        predictions, targets, val_loss = self.evaluate_batches(parts.model, parts.val_set, loss_fn=parts.loss_fn)
        metrics = {**self.task.validation_metrics(predictions, targets), "loss": val_loss}
        mean_loss = self.ranks.total(float(np.mean(losses))) / self.ranks.world_size  # the global batch's
        return EpochRecord(epoch, mean_loss, lr, time.perf_counter() - t0, metrics)

    def _correct_budget(self, epoch: int, record: EpochRecord, run: _Progress, steps_per_epoch: int) -> None:
        """The probe's few steps misjudge a real epoch by 10-25 %: the first epoch corrects the count (and,
        through ``run.epochs``, the learning-rate schedule's length)."""
        budget = run.budget
        if not budget or budget.get("corrected_after_epoch_1"):
            return
        remaining = self.config.budget_seconds - (time.perf_counter() - run.planning_started)
        epochs = max(epoch + 1, epoch + 1 + round(remaining / record.seconds))  # <= half an epoch over
        run.epochs = self.ranks.agree(epochs, "agreeing on the epochs")
        budget.update(corrected_after_epoch_1=True, first_epoch_seconds=round(record.seconds, 2))
        budget.update(epochs=run.epochs, samples=run.epochs * steps_per_epoch * self.plan.batch_size)
        if self.ranks.is_main:
            RunFolder(self.run_dir).write(runs.BUDGET, budget)

    def _keep_best(self, epoch: int, record: EpochRecord, run: _Progress, parts: _Parts) -> None:
        score = record.val.get(self.task.monitor, float("nan"))  # the same on every rank: gathered outputs
        if not math.isnan(score) and score > run.best:
            run.best, run.best_epoch = score, epoch
            if self.ranks.is_main:
                torch.save(bare(parts.model).state_dict(), self.checkpoints / runs.BEST)
        self._say(
            f"epoch {epoch + 1}/{run.epochs}  loss {record.loss:.4f}  val {self.task.monitor} "
            f"{score:.4f}  best {run.best:.4f} (epoch {run.best_epoch + 1})  {record.seconds:.1f}s"
        )

    def _checkpoint(self, epoch: int, run: _Progress, parts: _Parts, loader: AugmentingLoader) -> None:
        """Everything `_resume` needs to continue exactly, every rank's random state included, and the
        history; written atomically by rank 0."""
        own = {
            "torch_rng": torch.get_rng_state(),
            "augment_rng": loader.augmenter.generator.get_state() if loader.augmenter else None,
        }
        every_rank = self.ranks.gather_objects(own, "saving the checkpoint")
        if not self.ranks.is_main:
            return
        state = {
            "model": bare(parts.model).state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict(),
            **own,
            "world_size": self.ranks.world_size,
            "ranks": every_rank,
            "history": run.history,
            "best": run.best,
            "best_epoch": run.best_epoch,
            "epoch": epoch,
        }
        _save_atomically(state, self.checkpoints / runs.LAST)
        RunFolder(self.run_dir).write(runs.HISTORY, run.history)

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
