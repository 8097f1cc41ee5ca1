"""One bundle, three engines: torch eager, TorchScript and ONNX Runtime on the CPU, side by side; and the
whole-volume segmentation against MONAI's sliding_window_inference with the same weights.

    python benchmarks/engines.py --seg BUNDLE [--cls BUNDLE] [--volume DICOM_OR_NIFTI]

Bundles come from ``medmap bundle create`` (``make demo`` writes both into demo-output/bundles/).
Per engine: latency of one network call on one patch (median of --repeats after a warm-up) and
throughput in patches per second at the plan's batch size; for the segmentation bundle also the
whole-volume inference of --volume (a CT the bundle was made for) through medmap's predictor with each
engine, and MONAI's sliding_window_inference with the torch network, the same window, overlap and
Gaussian weighting. Ratios are against torch eager. Table printed, JSON written.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ENGINES = ("torch", "torchscript", "onnx")


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def engine_table(bundle_path: Path, repeats: int) -> dict:
    from medmap.inference.bundle import load_bundle
    from medmap.inference.engines import example_input, load_engines

    bundle = load_bundle(bundle_path)
    out = {}
    for name in ENGINES:
        (engine,) = load_engines(bundle, name)[:1]
        one = torch.randn_like(example_input(bundle, 1))
        batch = torch.randn_like(example_input(bundle, bundle.plan.batch_size))
        with torch.inference_mode():
            latency = timed(lambda e=engine, x=one: e(x), repeats)
            batch_s = timed(lambda e=engine, x=batch: e(x), repeats)
        out[name] = {"latency_s": latency, "patches_per_s": bundle.plan.batch_size / batch_s}
    return out


def volume_table(bundle_path: Path, volume: Path, repeats: int) -> dict:
    from monai.inferers import sliding_window_inference

    from medmap.data.preprocess import segmentation_input
    from medmap.inference.bundle import load_bundle
    from medmap.inference.engines import load_engines
    from medmap.inference.sliding_window import sliding_window
    from medmap.io.load import load

    bundle = load_bundle(bundle_path)
    plan = bundle.plan
    image = load(volume)
    array, _, _ = segmentation_input(image, plan.normalization, plan.target_spacing)
    settings = plan.inference
    out = {}
    for name in ENGINES:
        engines = load_engines(bundle, name)

        def run(engines=engines):
            return sliding_window(
                array, engines, plan.patch_size, overlap=settings.overlap, batch_size=settings.batch_size
            )

        out[f"medmap + {name}"] = {"seconds": timed(run, repeats)}
    (net,) = bundle.networks()[:1]

    def monai():
        with torch.inference_mode():
            return sliding_window_inference(
                torch.from_numpy(array)[None],
                roi_size=plan.patch_size,
                sw_batch_size=settings.batch_size,
                predictor=lambda x: torch.softmax(net(x), 1),
                overlap=settings.overlap,
                mode="gaussian",
                sigma_scale=0.125,
            )

    out["MONAI sliding_window_inference + torch"] = {"seconds": timed(monai, repeats)}
    labels = run().labels
    reference = monai()[0].argmax(0).numpy()
    out["label_agreement_with_monai"] = float((labels == reference).mean())
    out["network_input_shape"] = list(array.shape)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seg", type=Path, help="segmentation bundle")
    parser.add_argument("--cls", type=Path, help="classification bundle")
    parser.add_argument("--volume", type=Path, help="a volume for whole-volume timing (segmentation bundle)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    payload: dict = {"threads": args.threads, "repeats": args.repeats}
    for kind, path in (("classification", args.cls), ("segmentation", args.seg)):
        if path is None:
            continue
        table = engine_table(path, args.repeats)
        payload[kind] = table
        base = table["torch"]
        print(f"\n{kind} bundle {path}: one patch (latency) and the plan's batch (throughput), CPU")
        print(f"{'engine':14} {'latency ms':>11} {'x faster':>9} {'patches/s':>10} {'x faster':>9}")
        for name, r in table.items():
            print(
                f"{name:14} {1000 * r['latency_s']:11.1f} {base['latency_s'] / r['latency_s']:9.2f} "
                f"{r['patches_per_s']:10.2f} {r['patches_per_s'] / base['patches_per_s']:9.2f}"
            )
    if args.seg and args.volume:
        table = volume_table(args.seg, args.volume, max(1, args.repeats // 2))
        payload["whole_volume"] = table
        base = table["medmap + torch"]["seconds"]
        print(f"\nwhole volume {args.volume} (network input {table['network_input_shape']}):")
        print(f"{'method':40} {'seconds':>8} {'x medmap+torch':>15}")
        for name, r in table.items():
            if isinstance(r, dict):
                print(f"{name:40} {r['seconds']:8.2f} {r['seconds'] / base:15.2f}")
        print(f"label agreement with MONAI: {table['label_agreement_with_monai']:.5f}")
    (args.out / "engines.json").write_text(json.dumps(payload, indent=2))
    print(f"JSON: {args.out / 'engines.json'}")


if __name__ == "__main__":
    main()
