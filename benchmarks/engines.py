"""One bundle, three engines: torch eager, TorchScript and ONNX Runtime on the CPU, side by side; and the
whole-volume segmentation against MONAI's sliding_window_inference with the same weights.

    python benchmarks/engines.py --seg BUNDLE [--cls BUNDLE] [--volume DICOM_OR_NIFTI]

Bundles come from ``medmap bundle create`` (``make demo`` writes both into demo-output/bundles/).
Per engine: latency of one network call on one patch (median of --repeats after a warm-up) and
throughput in patches per second at the plan's batch size; for the segmentation bundle also the
whole-volume inference of --volume (a CT the bundle was made for) through medmap's predictor with each
engine, and MONAI's sliding_window_inference with the torch network, the same window, overlap and
Gaussian weighting. Engine ratios are against torch eager float32; whole-volume ratios against
MONAI's float32 reference. bfloat16 rows run torch under autocast (fast only on hardware with native
bfloat16: AVX512-BF16/AMX CPUs, recent GPUs). Table printed, JSON written.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

# (row name, engine, precision): bfloat16 is torch under autocast (medmap.inference.precision), the
# default of `medmap predict` on hardware with native bfloat16
ENGINES = (
    ("torch", "torch", "float32"),
    ("torch bfloat16", "torch", "bfloat16"),
    ("torchscript", "torchscript", "float32"),
    ("onnx", "onnx", "float32"),
)


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
    for name, engine_name, precision in ENGINES:
        (engine,) = load_engines(bundle, engine_name, precision=precision)[:1]
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
    from medmap.inference.precision import autocast
    from medmap.inference.sliding_window import sliding_window
    from medmap.io.load import load

    bundle = load_bundle(bundle_path)
    plan = bundle.plan
    image = load(volume)
    array, _, _ = segmentation_input(image, plan.normalization, plan.target_spacing)
    settings = plan.inference
    out, labels = {}, {}
    for name, engine_name, precision in ENGINES:
        engines = load_engines(bundle, engine_name, precision=precision)

        def run(engines=engines):
            return sliding_window(
                array, engines, plan.patch_size, overlap=settings.overlap, batch_size=settings.batch_size
            )

        out[f"medmap + {name}"] = {"seconds": timed(run, repeats)}
        labels[name] = run().labels
    (net,) = bundle.networks()[:1]

    def monai(precision: str = "float32"):
        with torch.inference_mode(), autocast(precision):
            return sliding_window_inference(
                torch.from_numpy(array)[None],
                roi_size=plan.patch_size,
                sw_batch_size=settings.batch_size,
                predictor=lambda x: torch.softmax(net(x).float(), 1),
                overlap=settings.overlap,
                mode="gaussian",
                sigma_scale=0.125,
            )

    out["MONAI sliding_window_inference + torch"] = {"seconds": timed(monai, repeats)}
    out["MONAI sliding_window_inference + torch bfloat16"] = {"seconds": timed(lambda: monai("bfloat16"), repeats)}
    reference = monai()[0].argmax(0).numpy()
    out["label_agreement"] = {
        "medmap float32 vs MONAI float32": float((labels["torch"] == reference).mean()),
        "medmap bfloat16 vs medmap float32": float((labels["torch bfloat16"] == labels["torch"]).mean()),
        "medmap onnx vs medmap float32": float((labels["onnx"] == labels["torch"]).mean()),
    }
    out["network_input_shape"] = list(array.shape)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seg", type=Path, help="segmentation bundle")
    parser.add_argument("--cls", type=Path, help="classification bundle")
    parser.add_argument("--volume", type=Path, help="a volume for whole-volume timing (segmentation bundle)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a small run that proves the benchmark works (tests)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    from medmap.inference.precision import resolve_precision

    default = resolve_precision("auto")
    payload: dict = {"threads": args.threads, "repeats": args.repeats, "predict_default_precision": default}
    print(f"medmap predict's default precision on this machine (--precision auto): {default}")
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
        monai = table["MONAI sliding_window_inference + torch"]["seconds"]
        print(f"\nwhole volume {args.volume} (network input {table['network_input_shape']}):")
        print(f"{'method':48} {'seconds':>8} {'x faster than MONAI float32':>28}")
        for name, r in table.items():
            if isinstance(r, dict) and "seconds" in r:
                print(f"{name:48} {r['seconds']:8.2f} {monai / r['seconds']:28.2f}")
        for name, value in table["label_agreement"].items():
            print(f"label agreement, {name}: {value:.5f}")
    (args.out / "engines.json").write_text(json.dumps(payload, indent=2))
    print(f"JSON: {args.out / 'engines.json'}")


if __name__ == "__main__":
    main()
