"""Whole-volume segmentation: medmap's sliding window vs MONAI's sliding_window_inference, same network,
window and overlap, next to the pure network time over the same windows (the limit neither can beat).

    python benchmarks/sliding_window.py                     # 512x512x300, the figures in docs/benchmarks.md
    python benchmarks/sliding_window.py --size 256 --slices 150   # quicker

Each method runs in a fresh process (so peak memory is its own): the volume and the network are built,
then the inference is timed; peak memory is the growth of the process's peak resident memory (VmHWM)
over what it held before inference (volume and network), also given as a multiple of the float32
volume. Both produce a label map (arg-max of Gaussian-blended softmax); their agreement is reported.
The network is a DynUNet as medmap's planner builds it (``--width`` base features).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

METHODS = ("network only", "medmap", "monai")


def high_water_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def build(args) -> tuple[torch.nn.Module, np.ndarray]:
    from medmap.models.segmenters import build_segmenter
    from medmap.plan import Normalization, Plan

    plan = Plan(
        dataset="bench",
        task="segmentation",
        modality="CT",
        labels={0: "background", 1: "liver", 2: "tumour"},
        input_mode="3d",
        target_spacing=(1.0, 1.0, 1.0),
        normalization=Normalization(scheme="none"),
        patch_size=tuple(args.window),
        batch_size=args.batch,
        network="unet",
        network_width=args.width,
        network_depth=4,
    )
    torch.manual_seed(0)
    net = build_segmenter(plan).eval()
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(1, args.slices, args.size, args.size)).astype(np.float32)
    return net, volume


def run_medmap(net, volume, args) -> np.ndarray:
    from medmap.inference.sliding_window import sliding_window

    return sliding_window(volume, net, args.window, overlap=args.overlap, batch_size=args.batch).labels


def run_monai(net, volume, args) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        out = sliding_window_inference(
            torch.from_numpy(volume)[None],
            roi_size=args.window,
            sw_batch_size=args.batch,
            predictor=lambda x: torch.softmax(net(x), 1),
            overlap=args.overlap,
            mode="gaussian",
            sigma_scale=0.125,
        )
        return out[0].argmax(0).to(torch.uint8).numpy()


def run_network_only(net, volume, args) -> None:
    """The forward passes alone: as many batches as medmap runs, on one batch already in memory."""
    from medmap.inference.sliding_window import window_starts

    count = 1
    for size, w in zip(volume.shape[1:], args.window, strict=True):
        count *= len(window_starts(size, w, args.overlap))
    batch = torch.from_numpy(volume[:, : args.window[0], : args.window[1], : args.window[2]].copy())
    batch = batch[None].repeat(args.batch, 1, 1, 1, 1)
    with torch.inference_mode():
        for start in range(0, count, args.batch):
            net(batch[: min(args.batch, count - start)])
    return None


def worker(method: str, args) -> None:
    torch.set_num_threads(args.threads)
    net, volume = build(args)
    with torch.inference_mode():  # one warm-up forward pass (allocator, kernels)
        net(torch.zeros(1, 1, *args.window))
    before = high_water_kb()
    t0 = time.perf_counter()
    labels = {"medmap": run_medmap, "monai": run_monai, "network only": run_network_only}[method](net, volume, args)
    seconds = time.perf_counter() - t0
    peak_kb = max(high_water_kb() - before, 0)
    if labels is not None:
        np.save(args.out / f"labels_{method}.npy", labels)
    print(json.dumps({"seconds": seconds, "peak_kb": peak_kb, "volume_bytes": int(volume.nbytes)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--window", type=int, nargs=3, default=[64, 128, 128])
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="fresh processes per method, interleaved; medians")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help="a small run that proves the benchmark works (tests)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.slices, args.size, args.window, args.repeats = 24, 64, [16, 32, 32], 1
    args.window = tuple(args.window)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        worker(args.worker, args)
        return
    runs: dict[str, list[dict]] = {m: [] for m in METHODS}
    passthrough = list(sys.argv[1:])
    for repeat in range(args.repeats):  # interleaved, so a slow spell of the shared machine hits every method
        for method in METHODS:
            print(f"run {repeat + 1}/{args.repeats}: {method} ...", flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, *passthrough, "--worker", method], capture_output=True, text=True, check=True
            )
            runs[method].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = {}
    for method, reports in runs.items():
        seconds = sorted(r["seconds"] for r in reports)
        peak = max(r["peak_kb"] for r in reports)
        results[method] = {
            "seconds": seconds[len(seconds) // 2],
            "all_seconds": seconds,
            "peak_mb": peak / 1024,
            "peak_x_volume": peak * 1024 / reports[0]["volume_bytes"],
        }
    limit = results["network only"]["seconds"]
    for r in results.values():
        r["overhead_pct"] = 100 * (r["seconds"] / limit - 1)
    a, b = np.load(args.out / "labels_medmap.npy"), np.load(args.out / "labels_monai.npy")
    agreement = float((a == b).mean())
    print(
        f"\n{args.size}x{args.size}x{args.slices} float32 volume ({args.size**2 * args.slices * 4 / 2**20:.0f} MB), "
        f"DynUNet width {args.width}, window {args.window}, overlap {args.overlap}, batch {args.batch}, "
        f"{args.threads} threads\n"
    )
    header = f"{'method':14} {'seconds':>9} {'overhead':>9} {'x medmap':>9} {'peak MB':>9} {'peak/volume':>12}"
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:14} {r['seconds']:9.1f} {r['overhead_pct']:8.1f}% "
            f"{r['seconds'] / results['medmap']['seconds']:9.2f} {r['peak_mb']:9.0f} {r['peak_x_volume']:12.2f}"
        )
    print(
        f"\nlabel agreement medmap vs MONAI: {agreement:.5f} of voxels (window placement and weights differ slightly)"
    )
    payload = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "worker")}, "results": results}
    payload["label_agreement"] = agreement
    (args.out / "sliding_window.json").write_text(json.dumps(payload, indent=2, default=list))
    print(f"JSON: {args.out / 'sliding_window.json'}")


if __name__ == "__main__":
    main()
