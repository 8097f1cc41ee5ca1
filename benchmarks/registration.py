"""Registration benchmark: `medmap register` run as a user runs it, every method on the same pairs.

    python benchmarks/registration.py                      # MNI152 brains (known deformations), the demo liver
    python benchmarks/registration.py --datasets sts       # STS_001: MR T1 / T2 onto the patient's PET (real)
    python benchmarks/registration.py --quick              # the suite: two small brain pairs, seconds

Pairs: ``brain`` is six MNI152 brains at 2 mm, each with its own random affine (rotation up to 10
degrees, scale 0.9-1.1) and a smooth 3 mm field (benchmarks/brain_data.volume_set), brains 1-5 moved onto
brain 0, scored by the grey / white matter labels carried along; ``liver`` is the demo's abdominal CTs
(liver and tumour labels), cases 1-5 onto case 0 (patient to patient: different bodies, so the tumour is
not expected to meet); ``sts`` is the real STS_001 patient: its MR T1 and T2 moved onto its FDG-PET, each
series with its own GTV_Mass contour (RTSTRUCT, converted by `medmap convert`), so the warped MR contour
is scored against the PET's. Methods: rigid, affine and B-spline (SimpleITK, medmap's own settings), SyN
(ANTs through antspyx, its defaults). Reported per method: mean label Dice before and after, HD95,
the share of folded voxels (Jacobian determinant <= 0) and SDlogJ, seconds per pair. The paired
interval is each method's Dice against the affine's, resampled over pairs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from campaign import ROOT, across_seeds, medmap, save, verdict

METHODS = ["rigid", "affine", "bspline", "syn"]


def brain_pairs(work: Path, quick: bool) -> list[dict]:
    from brain_data import volume_set

    sizes = {"n_train": 3, "n_test": 0, "spacing": 4.0} if quick else {"n_train": 6, "n_test": 0, "spacing": 2.0}
    root = work / ("brain-quick" if quick else "brain")
    if not (root / "dataset.json").is_file():
        volume_set(root, **sizes, seed=0)
    return _msd_pairs(root)


def liver_pairs(work: Path, quick: bool) -> list[dict]:
    demo = work / "demo"
    if not (demo / "liver" / "dataset.json").is_file():
        subprocess.run([sys.executable, "-m", "medmap.cli", "demo-data", str(demo)], check=True)
    return _msd_pairs(demo / "liver")[:5]


def _msd_pairs(root: Path) -> list[dict]:
    images = sorted((root / "imagesTr").glob("*.nii.gz"))
    labels = {p.name: p for p in (root / "labelsTr").glob("*.nii.gz")}

    def label_of(image: Path) -> Path:
        return labels[image.name.replace("_0000.nii.gz", ".nii.gz")]

    fixed = images[0]
    return [
        {"pair": f"{m.name.split('.')[0]}->{fixed.name.split('.')[0]}", "fixed": fixed, "moving": m,
         "fixed_label": label_of(fixed), "moving_label": label_of(m)}
        for m in images[1:]
    ]  # fmt: skip


def sts_pairs(data: Path, work: Path) -> list[dict]:
    """STS_001's MR series onto its PET, each contour converted from its own RTSTRUCT."""
    patient = data / "sts_001"
    masks = {}
    for series in ("FDG_PET", "MR_T1", "MR_T2"):
        out = work / "sts" / f"{series}.nii.gz"
        image = work / "sts" / f"{series}_image.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_file():
            labels = work / "sts" / "labels.json"
            labels.write_text(json.dumps({"1": "GTV_Mass"}))
            medmap("convert", patient / series / "mask" / "1-1.dcm", out, "--image", patient / series / "image",
                   "--labels", labels)  # fmt: skip
            medmap("convert", patient / series / "image", image)
        masks[series] = (image, out)
    fixed, fixed_label = masks["FDG_PET"]
    return [
        {"pair": f"{s}->FDG_PET", "fixed": fixed, "moving": masks[s][0], "fixed_label": fixed_label,
         "moving_label": masks[s][1]}
        for s in ("MR_T1", "MR_T2")
    ]  # fmt: skip


def register(pair: dict, method: str, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="medmap-reg-") as tmp:
        out = Path(tmp) / "out"
        wall = medmap(
            "register", pair["fixed"], pair["moving"], "-o", out, "--method", method, "--seed", seed,
            "--fixed-label", pair["fixed_label"], "--moving-label", pair["moving_label"],
        )  # fmt: skip
        record = json.loads((out / "registration.json").read_text())
    hd95 = [m["hd95_mm"] for m in record["labels"]["after"].values()]
    return {
        "pair": pair["pair"],
        "method": method,
        "dice_before": record["mean_dice"]["before"],
        "dice_after": record["mean_dice"]["after"],
        "hd95_mm": float(np.nanmean(hd95)) if np.isfinite(hd95).any() else float("nan"),
        "per_label": record["labels"]["after"],
        "folded_share": record["regularity"]["folded_share"],
        "sd_log_jacobian": record["regularity"]["sd_log_jacobian"],
        "seconds": record["seconds"],
        "wall_seconds": round(wall, 2),
    }


def summarise(name: str, rows: list[dict]) -> list[dict]:
    by_method = {m: {r["pair"]: r for r in rows if r["method"] == m} for m in METHODS}
    out = []
    for method, runs in by_method.items():
        if not runs:
            continue
        values = list(runs.values())
        entry = {
            "dataset": name,
            "method": method,
            "pairs": len(values),
            "dice_before": float(np.mean([r["dice_before"] for r in values])),
            "dice_after": float(np.mean([r["dice_after"] for r in values])),
            "hd95_mm": float(np.nanmean([r["hd95_mm"] for r in values])),
            "folded_percent": 100 * float(np.mean([r["folded_share"] for r in values])),
            "sd_log_jacobian": float(np.mean([r["sd_log_jacobian"] for r in values])),
            "seconds_per_pair": float(np.mean([r["seconds"] for r in values])),
        }
        if method != "affine" and by_method["affine"]:
            dice = {p: r["dice_after"] for p, r in runs.items()}
            affine = {p: r["dice_after"] for p, r in by_method["affine"].items()}
            entry["minus_affine"] = across_seeds([(dice, affine)], np.mean)
            entry["verdict"] = verdict(entry["minus_affine"], method, "affine")
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["brain", "liver"], help="brain, liver, sts")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "registration")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="two small brain pairs (the suite)")
    args = parser.parse_args()
    if args.quick:
        args.datasets, args.work = ["brain"], args.out / "registration-work"
    makers = {
        "brain": lambda: brain_pairs(args.work, args.quick),
        "liver": lambda: liver_pairs(args.work, args.quick),
        "sts": lambda: sts_pairs(args.data, args.work),
    }
    rows, summary = [], []
    for name in args.datasets:
        if name not in makers:
            raise SystemExit(f"unknown dataset {name!r}; use {', '.join(makers)}")
        done = []
        for pair in makers[name]():
            for method in args.methods:
                row = {"dataset": name, **register(pair, method, args.seed)}
                done.append(row)
                print(f"{name} {row['pair']} {method}: Dice {row['dice_before']:.3f} -> {row['dice_after']:.3f}, "
                      f"folded {row['folded_share']:.3%}, {row['seconds']:.1f} s", flush=True)  # fmt: skip
        rows += done
        summary += summarise(name, done)
        save(args.out, "registration", args.quick, {"summary": summary, "pairs": rows, "partial": True})
    path = save(args.out, "registration", args.quick, {"summary": summary, "pairs": rows})
    print(f"\n{'dataset':<7} {'method':<8} {'pairs':>5} {'Dice before':>11} {'after':>6} {'HD95 mm':>8} "
          f"{'folded %':>8} {'SDlogJ':>6} {'s/pair':>7}  vs affine [95% CI]")  # fmt: skip
    for s in summary:
        diff = s.get("minus_affine")
        versus = f"{diff['mean']:+.3f} [{diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}] {s['verdict']}" if diff else ""
        print(f"{s['dataset']:<7} {s['method']:<8} {s['pairs']:>5} {s['dice_before']:>11.3f} {s['dice_after']:>6.3f} "
              f"{s['hd95_mm']:>8.2f} {s['folded_percent']:>8.3f} {s['sd_log_jacobian']:>6.3f} "
              f"{s['seconds_per_pair']:>7.1f}  {versus}")  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
