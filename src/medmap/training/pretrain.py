"""Self-supervised pretraining on unlabelled images: SimCLR-style contrastive learning.

Why SimCLR: it is simple, proven on medical images, and needs nothing medmap does not already have:
two random augmentations of the same patch (`BatchAugmenter`, stronger than for supervised training)
must map to nearby embeddings and away from the other patches of the batch (NT-Xent loss). The views
teach the encoder what to ignore: ``views="strong"`` (the plan's augmentation at 1.5x strength) makes
it blind to size and brightness; ``views="geometric"`` (flips and rotations only) keeps those cues,
for classes that differ by size or density (nodules, lesions). The
encoder is exactly the classifier that training builds, with its head replaced by a small projection
MLP during pretraining; the saved file holds the encoder in medmap's own tensor names, so
``medmap train --pretrained FILE`` loads every tensor but the classification head.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medmap.data.augment import BatchAugmenter
from medmap.data.cache import CachedCase
from medmap.data.loader import AugmentingLoader, PatchDataset
from medmap.errors import ConfigError
from medmap.models.registry import build_classifier, replace_head
from medmap.plan import Plan
from medmap.progress import track
from medmap.tasks import task_for
from medmap.training.trainer import seed_everything


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross-entropy: each view must pick its partner among the 2N - 1 others."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    similarity = z @ z.t() / temperature
    n = z1.shape[0]
    similarity.fill_diagonal_(float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(similarity, partner)


class ContrastiveModel(nn.Module):
    def __init__(self, plan: Plan, projection: int = 64) -> None:
        super().__init__()
        self.encoder = build_classifier(plan, dropout=0.0)
        replace_head(self.encoder, plan, nn.Identity())
        dims = plan.spatial_dims
        probe = torch.zeros(1, plan.input_channels, *[s for s in plan.patch_size if dims == 3 or s > 1][-dims:])
        with torch.no_grad():
            self.encoder.eval()
            features = self.encoder(probe).flatten(1).shape[1]
        self.project = nn.Sequential(
            nn.Linear(features, 2 * projection), nn.ReLU(inplace=True), nn.Linear(2 * projection, projection)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.encoder(x).flatten(1))


VIEWS = ("strong", "geometric")


def view_augmentation(plan: Plan, views: str):
    """The augmentation that makes the two views of a patch: the plan's, 1.5x as strong and applied more
    often; ``geometric`` leaves scale, gamma, contrast and noise out (only flips and rotations)."""
    if views not in VIEWS:
        raise ConfigError(f"views {views!r}: one of {', '.join(VIEWS)}")
    update = {"strength": min(2.0, plan.augmentation.strength * 1.5), "probability": 0.8}
    if views == "geometric":
        update |= {"scale": (1.0, 1.0), "gamma": (1.0, 1.0), "contrast": (1.0, 1.0), "noise_std": 0.0}
    return plan.augmentation.model_copy(update=update)


def pretrain(
    cases: list[CachedCase],
    plan: Plan,
    output: str | Path,
    *,
    views: str = "strong",
    epochs: int = 20,
    learning_rate: float = 1e-3,
    temperature: float = 0.2,
    samples_per_epoch: int | None = None,
    workers: int = 2,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Train the encoder contrastively on ``cases`` (labels ignored) and save it to ``output``."""
    if len(cases) < 4:
        raise ConfigError(f"pretraining needs at least 4 unlabelled cases, got {len(cases)}")
    seed_everything(seed)
    model = ContrastiveModel(plan)
    batch = max(4, min(plan.batch_size, len(cases)))
    strong = view_augmentation(plan, views)
    dataset = PatchDataset(
        cases,
        plan.model_copy(update={"augmentation": strong}),
        task_for(plan),
        train=True,
        samples_per_epoch=samples_per_epoch or max(2 * len(cases), 8 * batch),
        seed=seed,
    )
    loader = AugmentingLoader(dataset, batch, workers=workers, seed=seed, augment=False)
    augmenter = BatchAugmenter(strong, plan.target_spacing, seed=seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    history = []
    for epoch in track(range(epochs), "pretraining", enabled=progress):
        model.train()
        dataset.set_epoch(epoch)
        losses = []
        for item in loader:
            x = item["image"]
            first, _ = augmenter(x)
            second, _ = augmenter(x)
            loss = nt_xent(model(first), model(second), temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        history.append({"epoch": epoch, "loss": float(np.mean(losses))})
        if progress:
            from rich.console import Console

            Console(stderr=True).print(
                f"pretrain epoch {epoch + 1}/{epochs}  contrastive loss {history[-1]['loss']:.4f}", highlight=False
            )
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"encoder": model.encoder.state_dict()}, output)
    output.with_suffix(".json").write_text(
        json.dumps(
            {
                "method": "SimCLR (NT-Xent)",
                "views": views,
                "temperature": temperature,
                "cases": len(cases),
                "plan": plan.model_dump(mode="json"),
                "history": history,
            },
            indent=1,
        )
    )
    return {"history": history, "weights": str(output)}
