"""MONAI's 3-D RetinaNet (`monai.apps.detection`), the reference detector issue 13 names, trained and run
as MONAI's LUNA16 detection tutorial does, on medmap's detector's own data: the same training scans, the
same resampling and intensity normalisation (the bundle's plan), the same patch size and batch, and the
same wall-clock training time. `detection.py --monai-retinanet` scores its findings beside medmap's:

    python benchmarks/detection.py --data demo-output/data --detector BUNDLE --monai-retinanet [--retinanet-size small]
    python benchmarks/monai_retinanet.py --quick      # this module alone, as the test suite runs it

``--quick`` checks the pieces on three generated chest CTs: every nodule's box comes back to its world
centre and diameter through the grid (the convention MONAI users most often get wrong), a RetinaNet
trains for a second, and its findings over a whole scan are world positions inside that scan.

From the tutorial (``luna16_training.py`` and its config): a ResNet-50 backbone (bottleneck blocks
3-4-6-3) with a feature pyramid on layers 1 and 2, anchors of three base shapes at feature-map scales 1, 2
and 4, the ATSS matcher (4 candidates), the hard-negative sampler (64 per image, 30 % positive, pool 20,
at least 16 negatives), SGD with Nesterov momentum 0.9, learning rate 1e-2, weight decay 3e-5, the
classification and box losses summed; inference by the detector's sliding window, score threshold 0.02,
NMS at IoU 0.22. Scaled to these scans: the anchor shapes come from the training nodules' diameters in
voxels at the plan's spacing (the tutorial's were chosen for LUNA16 at 0.7 x 0.7 x 1.25 mm), and the
patches are the plan's. Half of the patches are centred near a nodule, half drawn anywhere (the
tutorial's positive/negative crop ratio 1:1).

One difference of plumbing: MONAI builds the backbone's feature extractor with torchvision's
``IntermediateLayerGetter``, and torchvision has no CPU build here, so `ResNetFeatures` runs the same
ResNet layers into MONAI's own ``FeaturePyramidNetwork``: the same network. And the detector asks
``isinstance(matcher, torchvision's Matcher)`` before it tries MONAI's ATSS matcher, which fails without
torchvision; `_without_torchvision` gives those names a class nothing is an instance of.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medmap.data.preprocess import crop, segmentation_input
from medmap.evaluation.detection import Detection
from medmap.io.image import Image
from medmap.plan import Plan

RETURNED_LAYERS = (1, 2)  # the tutorial's
SCALES = [1, 2, 4]  # feature-map scales of the anchors: len(RETURNED_LAYERS) + 1 levels
SIZE_DIVISIBLE = 2 * 2 * 2 ** max(RETURNED_LAYERS)  # conv1 stride x max pool x the returned layers' strides


@dataclass
class Prepared:
    """A scan as the network sees it (``[C, Z, Y, X]`` on the plan's grid) and its nodules as boxes
    (``[z0, y0, x0, z1, y1, x1]`` voxels of that array: MONAI's StandardMode in array axis order)."""

    array: np.ndarray
    grid: Image
    boxes: np.ndarray


def prepare(image: Image, plan: Plan, nodules: list[tuple[tuple[float, float, float], float]]) -> Prepared:
    """``image`` resampled and normalised as medmap's detector reads it; ``nodules`` (LPS mm centre, mm
    diameter) as boxes on that grid."""
    array, bbox, resampled = segmentation_input(image, plan.normalization, plan.target_spacing)
    grid = crop(resampled, bbox)
    boxes = []
    for centre, diameter in nodules:
        index = grid.world_to_index(np.asarray(centre, float))
        radius = diameter / 2 / np.asarray(grid.spacing, float)
        boxes.append(np.concatenate([index - radius, index + radius]))
    return Prepared(np.asarray(array, np.float32), grid, np.asarray(boxes, np.float32).reshape(-1, 6))


class ResNetFeatures(nn.Module):
    """A MONAI ResNet's layers 1..max(returned) into MONAI's feature pyramid (what MONAI's
    ``resnet_fpn_feature_extractor`` builds through torchvision)."""

    def __init__(self, resnet: nn.Module, returned: tuple[int, ...] = RETURNED_LAYERS, out_channels: int = 256):
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        super().__init__()
        stem = [resnet.conv1, resnet.bn1, resnet.act]
        if not resnet.no_max_pool:
            stem.append(resnet.maxpool)
        self.stem = nn.Sequential(*stem)
        self.layers = nn.ModuleList(getattr(resnet, f"layer{i}") for i in range(1, max(returned) + 1))
        self.returned = returned
        channels = [self._channels(self.layers[i - 1]) for i in returned]
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=3, in_channels_list=channels, out_channels=out_channels, extra_blocks=LastLevelMaxPool(3)
        )
        self.out_channels = out_channels

    @staticmethod
    def _channels(layer: nn.Module) -> int:
        convs = [m for m in layer.modules() if isinstance(m, nn.Conv3d)]
        return convs[-1].out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        features = OrderedDict()
        for i, layer in enumerate(self.layers, start=1):
            x = layer(x)
            if i in self.returned:
                features[str(len(features))] = x
        return self.fpn(features)


def anchor_shapes(prepared: list[Prepared]) -> list[list[int]]:
    """Three isotropic base anchor shapes (voxels) at the 10th, 50th and 90th percentile of the training
    nodules' sizes on the plan's grid, halved to the first feature level's scale-1 anchors (the tutorial
    chose its three shapes from LUNA16's boxes in the same way)."""
    sides = np.concatenate([p.boxes[:, 3:] - p.boxes[:, :3] for p in prepared if len(p.boxes)]).mean(1)
    return [[max(2, round(float(q)))] * 3 for q in np.percentile(sides, [10, 50, 90])]


class _Absent:
    """torchvision's Matcher or sampler, which is not installed: no object is one."""


def _without_torchvision() -> None:
    import monai.apps.detection.networks.retinanet_detector as module

    try:
        import torchvision  # noqa: F401
    except ImportError:
        module.Matcher = module.BalancedPositiveNegativeSampler = _Absent


TUTORIAL = {"layers": (3, 4, 6, 3), "inplanes": (64, 128, 256, 512), "fpn_channels": 256}  # ResNet-50, FPN 256
SMALL = {"layers": (1, 1, 1, 1), "inplanes": (32, 64, 128, 256), "fpn_channels": 64}  # sized for 2 CPU cores
QUICK = {"layers": (1, 1, 1, 1), "inplanes": (8, 16, 32, 64), "fpn_channels": 16}  # the quick modes: paths only


def build_detector(
    plan: Plan, shapes: list[list[int]], layers=(3, 4, 6, 3), inplanes=(64, 128, 256, 512), fpn_channels=256
):
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
    from monai.apps.detection.networks.retinanet_network import RetinaNet
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.networks.nets import resnet

    _without_torchvision()
    backbone = resnet.ResNet(
        block=resnet.ResNetBottleneck,
        layers=list(layers),
        block_inplanes=list(inplanes),
        n_input_channels=plan.channels,
        conv1_t_stride=[2, 2, 2],
        conv1_t_size=[7, 7, 7],
        spatial_dims=3,
    )
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=SCALES, base_anchor_shapes=shapes)
    network = RetinaNet(
        spatial_dims=3,
        num_classes=1,
        num_anchors=anchors.num_anchors_per_location()[0],
        feature_extractor=ResNetFeatures(backbone, out_channels=fpn_channels),
        size_divisible=[SIZE_DIVISIBLE] * 3,
    )
    detector = RetinaNetDetector(network=network, anchor_generator=anchors)
    detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
    detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
    detector.set_target_keys(box_key="box", label_key="label")
    detector.set_box_selector_parameters(
        score_thresh=0.02, topk_candidates_per_level=1000, nms_thresh=0.22, detections_per_img=100
    )
    return detector


def _patch(p: Prepared, size: np.ndarray, rng: np.random.Generator, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    shape = np.asarray(p.array.shape[1:])
    padded = np.maximum(shape, size)
    array = np.zeros((p.array.shape[0], *padded), np.float32)
    array[:] = p.array.min()
    array[(slice(None), *(slice(0, n) for n in shape))] = p.array
    if positive and len(p.boxes):
        box = p.boxes[rng.integers(len(p.boxes))]
        centre = (box[:3] + box[3:]) / 2 + rng.uniform(-size / 4, size / 4)
        start = np.clip(np.round(centre - size / 2).astype(int), 0, padded - size)
    else:
        start = np.asarray([rng.integers(0, n - s + 1) for n, s in zip(padded, size, strict=True)])
    crop_ = array[(slice(None), *(slice(a, a + s) for a, s in zip(start, size, strict=True)))]
    boxes = p.boxes - np.concatenate([start, start]).astype(np.float32)
    centres = (boxes[:, :3] + boxes[:, 3:]) / 2
    inside = np.all((centres >= 0) & (centres < size), axis=1)
    boxes = np.clip(boxes[inside], 0, np.concatenate([size, size]).astype(np.float32))
    return crop_, boxes


def train(prepared: list[Prepared], plan: Plan, seconds: float, seed: int, **size) -> tuple[object, int]:
    """The tutorial's training loop for ``seconds`` of wall-clock time; (detector, steps taken). ``size``:
    the network's (`TUTORIAL` by default, `SMALL`)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    detector = build_detector(plan, anchor_shapes(prepared), **(size or TUTORIAL))
    optimiser = torch.optim.SGD(detector.network.parameters(), lr=1e-2, momentum=0.9, weight_decay=3e-5, nesterov=True)
    size = np.asarray(plan.patch_size)
    detector.train()
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        inputs, targets = [], []
        for i in range(plan.batch_size):
            array, boxes = _patch(prepared[rng.integers(len(prepared))], size, rng, positive=i % 2 == 0)
            inputs.append(torch.from_numpy(np.ascontiguousarray(array)))
            targets.append({"box": torch.from_numpy(boxes), "label": torch.zeros(len(boxes), dtype=torch.long)})
        outputs = detector(inputs, targets)
        loss = outputs[detector.cls_key] + outputs[detector.box_reg_key]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    return detector, steps


def findings(detector, p: Prepared, plan: Plan) -> list[Detection]:
    """The detector's boxes over a whole scan (its sliding-window inferer), as findings in LPS mm."""
    # windows twice the training patch, no larger than the scan, in whole multiples the network can take
    roi = [min(2 * s, n) for s, n in zip(plan.patch_size, p.array.shape[1:], strict=True)]
    roi = [max(-(-r // SIZE_DIVISIBLE), 1) * SIZE_DIVISIBLE for r in roi]
    detector.set_sliding_window_inferer(roi_size=roi, overlap=0.25, sw_batch_size=1, mode="constant", device="cpu")
    detector.eval()
    with torch.no_grad():
        (out,) = detector([torch.from_numpy(np.ascontiguousarray(p.array))], use_inferer=True)
    boxes = out["box"].numpy().reshape(-1, 6)
    scores = out[detector.pred_score_key].numpy().reshape(-1)
    centres = p.grid.index_to_world((boxes[:, :3] + boxes[:, 3:]) / 2) if len(boxes) else np.zeros((0, 3))
    sides = (boxes[:, 3:] - boxes[:, :3]) * np.asarray(p.grid.spacing)
    order = np.argsort(-scores, kind="stable")
    return [Detection(tuple(float(v) for v in centres[i]), float(scores[i]), float(sides[i].mean())) for i in order]


def quick(out: Path) -> dict:
    """The quick mode (see the module docstring); its figures mean nothing, its checks do."""
    import tempfile

    from medmap.data.demo import DemoSize, write_chest
    from medmap.data.layouts import read_dataset
    from medmap.training.run import prepare_plan

    with tempfile.TemporaryDirectory() as tmp:
        write_chest(Path(tmp), DemoSize(chest_patients=3, nodules_per_patient=(2, 3)), seed=2, progress=False)
        dataset = read_dataset(Path(tmp) / "nodules.csv", "detection")
        overrides = ["patch_size=[32,32,32]", "batch_size=2"]
        plan = prepare_plan(dataset, overrides=overrides, device="cpu", progress=False)
        images = [c.load_image() for c in dataset.cases]
        nodules = [[(tuple(n.position), float(n.diameter_mm)) for n in c.lesions] for c in dataset.cases]
        prepared = [prepare(image, plan, truth) for image, truth in zip(images, nodules, strict=True)]
        worst_mm = 0.0
        for p, truth in zip(prepared, nodules, strict=True):
            centres = p.grid.index_to_world((p.boxes[:, :3] + p.boxes[:, 3:]) / 2)
            sides = (p.boxes[:, 3:] - p.boxes[:, :3]) * np.asarray(p.grid.spacing)
            for (centre, diameter), back, side in zip(truth, centres, sides, strict=True):
                assert np.allclose(side, diameter, atol=1e-3), (side, diameter)
                worst_mm = max(worst_mm, float(np.linalg.norm(back - np.asarray(centre))))
        assert worst_mm < 1e-3, f"a box's centre is {worst_mm} mm from its nodule"
        detector, steps = train(prepared[:2], plan, 1.0, seed=0, **QUICK)
        found = findings(detector, prepared[2], plan)
        inside = [p.grid.world_to_index(np.asarray(f.centre)) for f in found]
        shape = np.asarray(prepared[2].array.shape[1:])
        assert all(np.all(i > -1) and np.all(i < shape) for i in inside), "a finding outside its scan"
    result = {"quick": True, "steps": steps, "findings": len(found), "box_centre_error_mm": worst_mm}
    print(f"boxes <-> world: worst centre error {worst_mm:.2e} mm; {steps} steps; {len(found)} findings on a scan")
    out.mkdir(parents=True, exist_ok=True)
    (out / "monai_retinanet.json").write_text(json.dumps(result, indent=1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="check the pieces on generated scans (the suite's run)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for monai_retinanet.json")
    args = parser.parse_args()
    if not args.quick:
        parser.error("the comparison runs through detection.py --monai-retinanet; alone this module has --quick")
    quick(args.out)


if __name__ == "__main__":
    main()
