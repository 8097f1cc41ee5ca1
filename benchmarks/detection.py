"""Nodule detection on the demo chest CTs, scored as LUNA16 scores it (FROC, CPM, bootstrap by scan).

    python benchmarks/detection.py --data demo-output/data      # after make demo (or medmap demo-data)
    python benchmarks/detection.py --quick                      # what the test suite runs

The held-out patients are the classifier's test split of ``nodules.csv`` (seed 0): the same patients the
nodule classifier is scored on, so find-then-classify can be scored on them too. Each of their chest CT
series is a scan; its nodules (centre and diameter in LPS mm) are the truth. Detectors:

- ``blob baseline``: `medmap.evaluation.blob_detector` (Laplacian of Gaussian inside the lungs), the
  classical bar a learned detector has to clear (issue 13); the learned detector joins this table when
  it exists.

Printed: sensitivity at 1/8 ... 8 false positives per scan with 95 % intervals, CPM, sensitivity by
nodule size at 1 false positive per scan, seconds per scan; the same as JSON under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from medmap.data.demo import DemoSize, write_chest
from medmap.data.layouts import read_dataset
from medmap.evaluation.blob_detector import detect_blobs
from medmap.evaluation.detection import Nodule, Scan, froc_with_ci, match, threshold_at
from medmap.tasks import task_for

SIZES = ((0.0, 6.0, "< 6 mm"), (6.0, 10.0, "6-10 mm"), (10.0, float("inf"), ">= 10 mm"))


def held_out_scans(nodules_csv: Path, seed: int) -> list[tuple[Scan, object]]:
    """(truth of one held-out scan, its first case: loads the image) for every test-split chest CT."""
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
        scans.append((Scan(Path(key).name, nodules), cases[0]))
    return scans


def by_size_at(scans: list[Scan], fp_per_scan: float, curve: dict) -> dict:
    """Share of nodules of each size found at the score threshold that allows ``fp_per_scan``."""
    threshold = threshold_at(curve, fp_per_scan)
    threshold = float("inf") if threshold is None else threshold
    out = {}
    for low, high, name in SIZES:
        found = total = 0
        for scan in scans:
            best, _ = match(scan)
            for nodule, score in zip(scan.nodules, best, strict=True):
                if low <= nodule.diameter_mm < high:
                    total += 1
                    found += int(not np.isnan(score) and score >= threshold)
        out[name] = {"found": found, "nodules": total}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="demo data folder (holding nodules.csv and chest_ct/)")
    parser.add_argument("--quick", action="store_true", help="five generated chest CTs (the test suite's run)")
    parser.add_argument("--seed", type=int, default=0, help="the split's seed (the classifier's default)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for detection.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if args.quick:
            data = Path(tmp) / "data"
            write_chest(data, DemoSize(chest_patients=5, nodules_per_patient=(3, 4)), seed=1, progress=False)
        elif data is None:
            parser.error("give --data (a demo data folder) or --quick")
        scans, seconds = [], []
        for scan, case in held_out_scans(data / "nodules.csv", args.seed):
            image = case.load_image()
            started = time.perf_counter()
            scan.detections = detect_blobs(image)
            seconds.append(time.perf_counter() - started)
            scans.append(scan)
    if not scans:
        sys.exit("no held-out scans: the dataset has too few patients for a test split")
    result = froc_with_ci(scans, seed=args.seed)
    sizes = by_size_at(scans, 1.0, result["curve"])
    print(f"\nnodule detection on {len(scans)} held-out chest CTs ({result['nodules']} nodules), LUNA16 criterion")
    print(f"{'FP per scan':>14} " + " ".join(f"{r:>6g}" for r in result["rates"]) + "    CPM (95 % CI)")
    cells = " ".join(f"{s:6.3f}" for s in result["sensitivity_at"])
    low, high = result["cpm_ci"]
    print(f"{'blob baseline':>14} {cells}    {result['cpm']:.3f} ({low:.3f}-{high:.3f})")
    print("found at 1 FP per scan by size: " + ", ".join(f"{k} {v['found']}/{v['nodules']}" for k, v in sizes.items()))
    print(f"seconds per scan: {np.mean(seconds):.1f} (blob baseline, {len(scans)} scans)")
    payload = {
        "quick": args.quick,
        "scans": len(scans),
        "detectors": {
            "blob baseline": {**result, "by_size_at_1fp": sizes, "seconds_per_scan": float(np.mean(seconds))}
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
