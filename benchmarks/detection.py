"""Nodule detection on the demo chest CTs, scored as LUNA16 scores it (FROC, CPM, bootstrap by scan), and
find-then-classify scored on the same held-out patients.

    python benchmarks/detection.py --data demo-output/data --detector DET_BUNDLE --classifier CLS_BUNDLE
    python benchmarks/detection.py --quick                      # what the test suite runs

The held-out patients are the classifier's test split of ``nodules.csv`` (seed 0), which is also the
detector's (`medmap.tasks.detection.task.DetectionTask.split`): patients neither model trained on. Each of
their chest CT series is a scan; its nodules (centre and diameter in LPS mm) are the truth. Detectors:

- ``blob baseline``: `medmap.evaluation.blob_detector` (Laplacian of Gaussian inside the lungs), the
  classical bar a learned detector has to clear;
- ``medmap``: a detection bundle (``--detector``), its findings exactly as `medmap predict` finds them.

Printed: sensitivity at 1/8 ... 8 false positives per scan with 95 % intervals, CPM, AP at box IoU 0.1,
sensitivity by nodule size at 1 false positive per scan (the baseline's threshold read off its own curve),
seconds per scan; with ``--classifier``, find-then-classify: every finding at the detector's operating
threshold classified, the nodule-level AUC of malignancy over the detected nodules and how many malignant
nodules were never found. The same as JSON under ``--out``. ``--quick`` runs it all on five small
generated chest CTs with untrained bundles, so that no path rots (its figures mean nothing).

``--speed`` (with ``--detector``): whole-volume detection of one 256x256x300 generated chest CT, each way
in a fresh process (peak memory its own): medmap's (`Models.class_probability` + `findings`, as `medmap
predict` runs it) and MONAI's (`sliding_window_inference` with the same network and weights, window,
overlap and batch, Gaussian blending, as MONAI's detection tutorial infers whole volumes) on the same
preprocessed volume with the same findings step; seconds, peak memory and whether the findings agree.

``--monai-retinanet`` (with ``--detector``): MONAI's 3-D RetinaNet, the reference detector, trained as its
LUNA16 tutorial trains it on the detector's training scans for the detector's own training time (the
bundle's history; ``--retinanet-seconds`` to change it), then scored beside it (`monai_retinanet`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from medmap.data.demo import DemoSize, write_chest
from medmap.data.layouts import read_dataset
from medmap.evaluation.blob_detector import detect_blobs
from medmap.evaluation.detection import (
    Nodule,
    Scan,
    average_precision,
    by_size,
    froc_with_ci,
    hits,
    paired_cpm_difference,
    threshold_at,
)
from medmap.evaluation.wording import margin_verdict
from medmap.tasks import task_for
from sliding_window import high_water_kb  # peak resident memory, as the segmentation timing reads it


def held_out_scans(nodules_csv: Path, seed: int) -> list[tuple[Scan, object, list[str]]]:
    """(truth of one held-out scan, its first case: loads the image, each nodule's class) for every
    test-split chest CT."""
    dataset = read_dataset(nodules_csv)
    test = task_for(dataset.task).split(dataset.cases, seed)["test"]
    by_image: dict[str, list] = {}
    for case in test:
        by_image.setdefault(case.image_key, []).append(case)
    scans = []
    for key, cases in sorted(by_image.items()):
        unsized = [c.case_id for c in cases if not c.lesion.diameter_mm]
        if unsized:
            sys.exit(f"{nodules_csv}: case {unsized[0]} has no diameter_mm; detection is scored by nodule radius")
        nodules = [Nodule(tuple(c.lesion.position), float(c.lesion.diameter_mm)) for c in cases]
        classes = [dataset.labels[c.label] for c in cases]
        scans.append((Scan(Path(key).name, nodules), cases[0], classes))
    return scans


def scored(scans: list[Scan], seconds: list[float], seed: int, threshold: float | None = None) -> dict:
    """FROC with intervals, AP at IoU 0.1, and by size at ``threshold`` (else at 1 FP per scan on the curve)."""
    result = froc_with_ci(scans, seed=seed)
    if threshold is None:
        threshold = threshold_at(result["curve"], 1.0)
        threshold = float("inf") if threshold is None else threshold
    return {
        **result,
        "ap_iou_0.1": average_precision(scans, 0.1),
        "by_size_at_threshold": by_size(scans, threshold),
        "threshold": threshold,
        "seconds_per_scan": float(np.mean(seconds)),
    }


def find_then_classify(scans: list[Scan], classes: list[list[str]], probabilities: list[list[float]], threshold):
    """Nodule level: each true nodule found at the threshold gets the malignancy probability of the best
    detection that hits it; AUC over found nodules, and the malignant nodules never found."""
    from sklearn.metrics import roc_auc_score

    truth, scores, missed_malignant, malignant = [], [], 0, 0
    for scan, names, probs in zip(scans, classes, probabilities, strict=True):
        for nodule, name in zip(scan.nodules, names, strict=True):
            malignant += name == "malignant"
            hitting = [
                (d.score, p)
                for d, p in zip(scan.detections, probs, strict=True)
                if d.score >= threshold and hits(d, [nodule])
            ]
            if not hitting:
                missed_malignant += name == "malignant"
                continue
            truth.append(int(name == "malignant"))
            scores.append(max(hitting)[1])
    auc = float(roc_auc_score(truth, scores)) if len(set(truth)) == 2 else float("nan")
    return {
        "found": len(truth),
        "nodules": sum(len(s.nodules) for s in scans),
        "auc_over_found": auc,
        "malignant": malignant,
        "malignant_missed": missed_malignant,
    }


def untrained_bundles(data: Path, root: Path) -> tuple[Path, Path]:
    """A detector and a lesion classifier with untrained weights (the quick mode's: paths, not figures)."""
    import torch

    from medmap.inference.bundle import create_bundle
    from medmap.training.run import prepare_plan

    bundles = []
    for task, overrides in (
        ("detection", ["network_width=4", "network_depth=3", "patch_size=[32,32,32]"]),
        ("classification", ["network=smallcnn", "network_width=8"]),
    ):
        dataset = read_dataset(data / "nodules.csv", task if task == "detection" else None)
        plan = prepare_plan(dataset, overrides=overrides, device="cpu", progress=False)
        run = root / task
        (run / "checkpoints").mkdir(parents=True)
        plan.save(run / "plan.json")
        torch.manual_seed(0)
        torch.save(task_for(plan).build_network(plan, None).state_dict(), run / "checkpoints" / "best.pt")
        (run / "threshold.json").write_text(json.dumps({"threshold": 0.5}))
        bundles.append(create_bundle(run, root / f"{task}-bundle"))
    return bundles[0], bundles[1]


SPEED_SHAPE, SPEED_SPACING = (300, 256, 256), (1.25, 0.7, 0.7)  # slices, rows, columns; mm


def speed_worker(method: str, detector: Path, threads: int, shape=SPEED_SHAPE) -> dict:
    """One way of detecting in the speed volume, timed in this (fresh) process."""
    import torch

    from medmap.data.phantoms import chest_ct
    from medmap.inference.bundle import load_bundle
    from medmap.inference.predictor import Predictor
    from medmap.tasks.detection.findings import findings

    torch.set_num_threads(threads)
    image = chest_ct(tuple(shape), SPEED_SPACING, seed=3, n_nodules=4).image
    predictor = Predictor(load_bundle(detector), precision="float32")
    before = high_water_kb()
    started = time.perf_counter()
    if method == "medmap":
        found = findings(predictor.models.class_probability(image, 1))
    else:
        found = findings(_monai_probability(image, predictor))
    seconds = time.perf_counter() - started
    centres = [list(f.centre) for f in found if f.score >= 0.5]
    return {"seconds": seconds, "peak_kb": max(high_water_kb() - before, 0), "centres": centres}


def _monai_probability(image, predictor):
    """The finding's probability map the way MONAI's tutorials infer a whole volume, on medmap's input."""
    import torch
    from monai.inferers import sliding_window_inference

    from medmap.data.preprocess import segmentation_input
    from medmap.io.image import Image

    plan, (net,) = predictor.bundle.plan, predictor.models.networks
    array, bbox, resampled = segmentation_input(image, plan.normalization, plan.target_spacing)
    with torch.inference_mode():
        out = sliding_window_inference(
            torch.from_numpy(np.ascontiguousarray(array))[None],
            roi_size=plan.patch_size,
            sw_batch_size=plan.inference.batch_size,
            predictor=lambda x: torch.softmax(net(x), 1),
            overlap=plan.inference.overlap,
            mode="gaussian",
            sigma_scale=0.125,
        )
    full = np.zeros(resampled.shape, np.float32)
    full[tuple(slice(a, b) for a, b in bbox)] = out[0, 1].numpy()
    return Image(full, resampled.spacing, resampled.origin, resampled.direction)


def speed(detector: Path, threads: int, shape=SPEED_SHAPE) -> dict:
    import subprocess

    detector = str(detector)

    results = {}
    for method in ("medmap", "monai"):
        command = [sys.executable, __file__, "--speed-worker", method, "--detector", detector]
        proc = subprocess.run(
            [*command, "--threads", str(threads), "--speed-shape", *map(str, shape)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[method] = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = (np.asarray(results[m]["centres"]).reshape(-1, 3) for m in ("medmap", "monai"))
    agree = len(a) == len(b) and (len(a) == 0 or np.abs(np.sort(a, 0) - np.sort(b, 0)).max() < 1.0)
    ratio = results["monai"]["seconds"] / results["medmap"]["seconds"]
    size = "x".join(str(n) for n in shape[::-1])
    print(f"\nwhole-volume detection, {size} chest CT, {threads} threads")
    for method, r in results.items():
        found = len(r["centres"])
        print(f"{method:>8}: {r['seconds']:6.1f} s, peak {r['peak_kb'] / 1024:6.0f} MB, {found} findings >= 0.5")
    print(f"MONAI's way takes {ratio:.2f}x medmap's time; findings agree: {agree}")
    return {"shape_zyx": list(shape), "results": results, "monai_over_medmap": ratio, "findings_agree": bool(agree)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="demo data folder (holding nodules.csv and chest_ct/)")
    parser.add_argument("--detector", type=Path, help="a detection bundle (medmap bundle create of a detection run)")
    parser.add_argument("--classifier", type=Path, help="a lesion classifier bundle: find, then classify")
    parser.add_argument("--quick", action="store_true", help="five generated chest CTs (the test suite's run)")
    parser.add_argument("--seed", type=int, default=0, help="the split's seed (the classifier's default)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for detection.json")
    parser.add_argument("--speed", action="store_true", help="time whole-volume detection, medmap vs MONAI's way")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--speed-shape", type=int, nargs=3, default=list(SPEED_SHAPE), help="slices, rows, columns")
    parser.add_argument("--speed-worker", help=argparse.SUPPRESS)
    parser.add_argument(
        "--monai-retinanet", action="store_true", help="also train MONAI's RetinaNet for the detector's time"
    )
    parser.add_argument("--retinanet-seconds", type=float, help="its training time (default: the detector's)")
    parser.add_argument(
        "--retinanet-size",
        choices=["tutorial", "small"],
        default="tutorial",
        help="the tutorial's ResNet-50 and 256-channel FPN, or a ResNet-10 with a 64-channel FPN (CPU-sized)",
    )
    args = parser.parse_args()
    if args.speed_worker:
        print(json.dumps(speed_worker(args.speed_worker, args.detector, args.threads, args.speed_shape)))
        return
    if args.speed:
        if not args.detector:
            parser.error("--speed needs --detector (a detection bundle)")
        args.out.mkdir(parents=True, exist_ok=True)
        timed = speed(args.detector, args.threads, args.speed_shape)
        (args.out / "detection_speed.json").write_text(json.dumps(timed, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.quick:
            data = Path(tmp) / "data"
            write_chest(data, DemoSize(chest_patients=5, nodules_per_patient=(3, 4)), seed=1, progress=False)
            args.detector, args.classifier = untrained_bundles(data, Path(tmp) / "bundles")
            args.monai_retinanet, args.retinanet_seconds = True, args.retinanet_seconds or 1.0
        elif data is None:
            parser.error("give --data (a demo data folder) or --quick")
        payload = run(data, args)
        if args.quick:  # the speed comparison's path too, on a small volume
            payload["speed"] = speed(args.detector, args.threads, (40, 96, 96))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.json").write_text(json.dumps(payload, indent=1))


def retinanet(data: Path, bundle, held_out, args) -> tuple[dict, list[Scan]]:
    """MONAI's RetinaNet trained on the detector's training scans for the detector's training time, then
    scored on the held-out scans (`monai_retinanet`)."""
    import monai_retinanet as peer
    from medmap.run_folder import RunFolder

    dataset = read_dataset(data / "nodules.csv", "detection")
    train = task_for("detection").split(dataset.cases, args.seed)["train"]
    plan = bundle.plan
    prepared = [
        peer.prepare(c.load_image(), plan, [(tuple(n.position), float(n.diameter_mm)) for n in c.lesions])
        for c in train
    ]
    history = RunFolder(bundle.root).history  # a bundle keeps its run's files under the same names
    budget = args.retinanet_seconds or sum(e.get("seconds", 0.0) for e in history)
    size = {"tutorial": peer.TUTORIAL, "small": peer.SMALL}[args.retinanet_size]
    if args.quick:  # paths, not figures
        size = peer.QUICK
    started = time.perf_counter()
    detector, steps = peer.train(prepared, plan, budget, args.seed, **size)
    trained_s = time.perf_counter() - started
    scans, seconds = [], []
    for scan, case, _ in held_out:
        started = time.perf_counter()
        found = peer.findings(detector, peer.prepare(case.load_image(), plan, []), plan)
        seconds.append(time.perf_counter() - started)
        scans.append(replace(scan, detections=found))
    result = scored(scans, seconds, args.seed)
    result.update({"training_seconds": trained_s, "training_steps": steps, "budget_seconds": budget, "network": size})
    print(
        f"MONAI RetinaNet ({args.retinanet_size}): {steps} steps of batch {plan.batch_size} in {trained_s:.0f} s "
        f"(budget {budget:.0f} s)"
    )
    return result, scans


def run(data: Path, args) -> dict:
    from medmap.inference.bundle import load_bundle
    from medmap.inference.predictor import InputCase, Predictor
    from medmap.tasks.classification.predict import classify
    from medmap.tasks.detection.findings import findings, rescaled

    held_out = held_out_scans(data / "nodules.csv", args.seed)
    if not held_out:
        sys.exit("no held-out scans: the dataset has too few patients for a test split")
    detector = classifier = None
    if args.detector:
        classifier_bundle = load_bundle(args.classifier) if args.classifier else None
        detector = Predictor(load_bundle(args.detector), precision="float32", classifier=classifier_bundle)
        classifier = detector.classifier
    blobs, learned, seconds, probabilities = [], [], {"blob baseline": [], "medmap": []}, []
    for scan, case, _ in held_out:
        image = case.load_image()
        started = time.perf_counter()
        blobs.append(replace(scan, detections=detect_blobs(image)))
        seconds["blob baseline"].append(time.perf_counter() - started)
        if detector is None:
            continue
        started = time.perf_counter()
        found = rescaled(findings(detector.models.class_probability(image, 1)), detector.bundle.diameter_scale)
        learned.append(replace(scan, detections=found))
        seconds["medmap"].append(time.perf_counter() - started)
        if classifier is not None:
            positions = [tuple(d.centre) for d in learned[-1].detections]
            items = (
                classify(
                    classifier,
                    InputCase(scan.case_id, case.images[0], lesions=positions),
                    image,
                    refuse_when_none=False,
                )["findings"]
                if positions
                else []
            )
            probabilities.append(
                [
                    i["probabilities"].get("malignant", float("nan")) if "probabilities" in i else float("nan")
                    for i in items
                ]
            )
    results = {"blob baseline": scored(blobs, seconds["blob baseline"], args.seed)}
    if detector is not None:
        threshold = detector.bundle.threshold if detector.bundle.threshold is not None else 0.5
        results["medmap"] = scored(learned, seconds["medmap"], args.seed, threshold)
    others = {"blob baseline": blobs}
    if args.monai_retinanet:
        results["MONAI RetinaNet"], others["MONAI RetinaNet"] = retinanet(data, detector.bundle, held_out, args)
    scans = [s for s, _, _ in held_out]
    nodules = sum(len(s.nodules) for s in scans)
    print(f"\nnodule detection on {len(scans)} held-out chest CTs ({nodules} nodules), LUNA16 criterion")
    print(
        f"{'FP per scan':>14} "
        + " ".join(f"{r:>6g}" for r in results["blob baseline"]["rates"])
        + "    CPM (95 % CI)    AP@0.1  s/scan"
    )
    for name, r in results.items():
        cells = " ".join(f"{s:6.3f}" for s in r["sensitivity_at"])
        low, high = r["cpm_ci"]
        print(
            f"{name:>14} {cells}    {r['cpm']:.3f} ({low:.3f}-{high:.3f})  {r['ap_iou_0.1']:.3f}  "
            f"{r['seconds_per_scan']:.1f}"
        )
        sizes = ", ".join(f"{k} {v['found']}/{v['nodules']}" for k, v in r["by_size_at_threshold"].items())
        print(f"{'':>14} found at threshold {r['threshold']:.3f} by size: {sizes}")
    payload = {"quick": args.quick, "scans": len(scans), "detectors": results}
    if "medmap" in results:  # the margins, each with its paired bootstrap interval over the same scans
        payload["medmap_minus"] = {name: paired_cpm_difference(learned, o, args.seed) for name, o in others.items()}
        for name, c in payload["medmap_minus"].items():
            low, high = c["delta_ci"]
            verdict = margin_verdict(c["delta_ci"])
            print(f"medmap - {name}: CPM {c['delta_cpm']:+.3f} ({low:+.3f} to {high:+.3f}), {verdict}")
    if "medmap" in results and "blob baseline" in results:
        payload["speed_ratio_blob_over_medmap"] = (
            results["blob baseline"]["seconds_per_scan"] / results["medmap"]["seconds_per_scan"]
        )
    if classifier is not None:
        classes = [c for _, _, c in held_out]
        chained = find_then_classify(learned, classes, probabilities, results["medmap"]["threshold"])
        payload["find_then_classify"] = chained
        print(
            f"find, then classify: {chained['found']} of {chained['nodules']} nodules found at the threshold; "
            f"malignancy AUC over them {chained['auc_over_found']:.3f}; "
            f"{chained['malignant_missed']} of {chained['malignant']} malignant nodules never found"
        )
    return payload


if __name__ == "__main__":
    main()
