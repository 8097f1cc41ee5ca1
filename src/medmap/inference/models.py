"""A trained model as inference runs it: its networks (one per fold), plan and post-processing.

`medmap predict` (from a bundle, through any engine) and a run's evaluation (from the run folder, torch)
both answer through this object, so what `medmap evaluate` measures is what `medmap predict` does:
``segment`` is the sliding window over the whole image, back on its own grid, post-processed;
``probabilities`` is the mean softmax of the fold models over classifier inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medmap.inference.postprocess import PostProcessing
from medmap.inference.precision import with_precision
from medmap.inference.segment import class_probability, segment_image
from medmap.inference.sliding_window import Predictor
from medmap.io.image import Image
from medmap.plan import Plan
from medmap.run_folder import load_network


@dataclass
class Models:
    plan: Plan
    networks: Sequence[Predictor]  # x [B, C, *patch] -> float32 logits, one per fold model
    device: str | torch.device = "cpu"
    postprocessing: PostProcessing = field(default_factory=PostProcessing)

    @classmethod
    def load(
        cls,
        plan: Plan,
        weights: Sequence[Path],
        *,
        device: str | torch.device = "cpu",
        precision: str = "float32",
        dropout: float | None = None,
        postprocessing: PostProcessing | None = None,
    ) -> Models:
        """The torch networks of ``weights`` run in ``precision`` (a resolved one)."""
        networks = [with_precision(load_network(plan, path, dropout, device), precision, device) for path in weights]
        return cls(plan, networks, device, postprocessing or PostProcessing())

    def segment(self, image: Image, *, progress: bool = False) -> Image:
        """The post-processed label map of ``image`` on its own grid."""
        return segment_image(
            image, self.plan, self.networks, postprocessing=self.postprocessing, device=self.device, progress=progress
        )

    def class_probability(self, image: Image, value: int, *, progress: bool = False) -> Image:
        """The probability of label ``value`` over ``image``, on the network's grid (`class_probability`)."""
        return class_probability(image, self.plan, self.networks, value, device=self.device, progress=progress)

    def probabilities(self, inputs: Sequence[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """Mean softmax of the fold models for network inputs ``[C, *patch]`` (``[N, classes]``), in
        batches of ``batch_size`` (the plan's batch by default)."""
        batch = batch_size or self.plan.batch_size
        out = []
        with torch.inference_mode():
            for start in range(0, len(inputs), batch):
                x = torch.from_numpy(np.stack(inputs[start : start + batch])).to(self.device)
                if self.plan.spatial_dims == 2 and x.dim() == 5:  # [B, C, 1, Y, X] -> [B, C, Y, X]
                    x = x[:, :, 0]
                out.append(np.mean([torch.softmax(net(x).float(), 1).cpu().numpy() for net in self.networks], axis=0))
        return np.concatenate(out) if out else np.zeros((0, len(self.plan.labels)), np.float32)
