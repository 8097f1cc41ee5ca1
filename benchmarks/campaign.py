"""What the seeded, paired benchmarks share: the datasets as a user hands them to medmap, the CLI run as a
user runs it, and the paired difference across seeds with its interval and verdict.

Datasets: ``liver`` and ``nodules`` are the demo's (``medmap demo-data``, seed 0, generated into the work
folder); ``chase`` is CHASE_DB1's 28 fundus photographs with the first observer's vessel masks (a CSV
manifest; the two eyes of a child share a patient id); ``pneumonia`` is PneumoniaMNIST's npz with its own
split; ``isic`` is the ISIC dermoscopy thumbnails, benign against malignant from each image's JSON
metadata (the two without a diagnosis left out). The real ones are read from ``data``
(../shared/data/real); ``quick`` is a generated 16x16 classification set and ``quick-vessels`` a
generated set of photographs laid out as CHASE_DB1 is (both for the suite, which runs without
../shared).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_BOOT = 2000


def prepare(name: str, data: Path, work: Path) -> tuple[Path, str]:
    """The dataset path a user would hand to medmap, and its task."""
    if name == "quick":
        from tests.builders import write_blobs

        (work / "blobs").mkdir(parents=True, exist_ok=True)
        write_blobs(work / "blobs")
        return work / "blobs" / "blobs.npz", "classification"
    if name in ("liver", "nodules"):
        demo = work / "demo"
        if not (demo / "nodules.csv").is_file():
            subprocess.run([sys.executable, "-m", "medmap.cli", "demo-data", str(demo)], check=True)
        return (demo / "liver", "segmentation") if name == "liver" else (demo / "nodules.csv", "classification")
    if name in ("chase", "pneumonia", "isic") and not data.is_dir():
        raise SystemExit(f"{data}: no such folder (the shared real data); give --data")
    if name in ("chase", "quick-vessels"):
        folder = data / "chase_db1" if name == "chase" else _stand_in_fundus(work / "fundus")
        return _vessel_table(folder, work / name / "vessels.csv"), "segmentation"
    if name == "pneumonia":
        return data / "pneumoniamnist" / "pneumoniamnist.npz", "classification"
    if name == "isic":
        return _isic_table(data / "isic", work / "isic" / "lesions.csv"), "classification"
    raise SystemExit(f"unknown dataset {name!r}")


def second_observers(table: Path) -> dict[str, Path]:
    """Each case's second-observer mask of a vessel table (CHASE_DB1's naming), the table read once."""
    with open(table, newline="") as fh:
        images = {r["case_id"]: Path(r["image"]) for r in csv.DictReader(fh)}
    return {case: image.with_name(f"{image.stem}_2ndHO.png") for case, image in images.items()}


def _vessel_table(folder: Path, table: Path) -> Path:
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "mask", "patient_id", "case_id"])
        for image in sorted(folder.glob("Image_*.jpg")):
            case = image.stem.removeprefix("Image_")
            writer.writerow([image, folder / f"{image.stem}_1stHO.png", f"child{case[:2]}", case])
    (table.parent / "labels.json").write_text(json.dumps({"0": "background", "1": "vessel"}))
    return table


def _stand_in_fundus(folder: Path, children: int = 6) -> Path:
    """Photographs named as CHASE_DB1's are (two eyes a child), with two observers' masks that differ."""
    from PIL import Image as PILImage
    from tests.builders import fundus_photo

    folder.mkdir(parents=True, exist_ok=True)
    for child in range(children):
        for k, eye in enumerate("LR"):
            rgb, vessels = fundus_photo(2 * child + k, shape=(96, 104))
            stem = f"Image_{child + 1:02d}{eye}"
            PILImage.fromarray(rgb).save(folder / f"{stem}.jpg", quality=95)
            PILImage.fromarray(vessels).save(folder / f"{stem}_1stHO.png")
            second = vessels.copy()
            second[:, 1:] |= vessels[:, :-1]  # the second observer draws the vessels a pixel wider
            PILImage.fromarray(second).save(folder / f"{stem}_2ndHO.png")
    return folder


def _isic_table(folder: Path, table: Path) -> Path:
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "case_id"])
        for image in sorted(folder.glob("ISIC_*.jpg")):
            clinical = json.loads(image.with_suffix(".json").read_text())["meta"]["clinical"]
            if clinical.get("benign_malignant") in ("benign", "malignant"):
                writer.writerow([image, clinical["benign_malignant"], image.stem])
    (table.parent / "labels.json").write_text(json.dumps({"0": "benign", "1": "malignant"}))
    return table


def medmap(*args) -> float:
    """Run the CLI as a user does; its wall-clock seconds."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "medmap.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"medmap {' '.join(map(str, args[:2]))} failed: {done.stderr.strip()[-1500:]}")
    return time.monotonic() - started


def across_seeds(pairs: list[tuple[dict, dict]], statistic, seed: int = 0) -> dict:
    """Mean over seeds of statistic(a) - statistic(b) on each seed's common test cases, and its bootstrap
    95 % interval resampling the cases within each seed. ``pairs`` holds one (a, b) per seed, each a
    mapping case id -> per-case value."""
    from medmap.tuning.leaderboard import percentile_interval

    prepared = []
    for a, b in pairs:
        common = sorted(set(a) & set(b))
        prepared.append(([a[c] for c in common], [b[c] for c in common]))

    def difference(picks) -> float:
        per_seed = [
            statistic([a[i] for i in p]) - statistic([b[i] for i in p])
            for (a, b), p in zip(prepared, picks, strict=True)
        ]
        per_seed = [v for v in per_seed if not np.isnan(v)]  # a resample without every class has no AUC
        return float(np.mean(per_seed)) if per_seed else float("nan")

    rng = np.random.default_rng(seed)
    point = difference([range(len(a)) for a, _ in prepared])
    boots = [difference([rng.integers(0, len(a), len(a)) for a, _ in prepared]) for _ in range(N_BOOT)]
    return {"mean": point, "ci": percentile_interval(boots), "n_cases": [len(a) for a, _ in prepared]}


def verdict(difference: dict, ahead: str, behind: str) -> str:
    """``ahead`` when the interval of (ahead - behind) lies above zero, ``behind`` when below, else a tie."""
    ci = difference["ci"]
    if not ci:
        return "no interval"
    if ci[0] > 0:
        return f"{ahead} ahead"
    if ci[1] < 0:
        return f"{behind} ahead"
    return "tie"


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip()


def save(out: Path, name: str, quick: bool, results: dict) -> Path:
    """The campaign's JSON, dated and with the commit it measured (written after every arm)."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {"date": time.strftime("%Y-%m-%d"), "commit": commit(), "quick": quick, **results}
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
