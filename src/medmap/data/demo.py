"""Write the built-in demo data: the three datasets the worked examples train on.

``OUT/chest_ct/<patient>/``   chest CT series (real DICOM) with lung nodules; ``OUT/nodules.csv``
                              lists each nodule's LPS position (mm), diameter and class.
``OUT/liver/``                abdominal CT, Medical Segmentation Decathlon layout (NIfTI), labels
                              0 background, 1 liver, 2 tumour; ``OUT/liver_dicom/<case>/`` holds the
                              test cases again as DICOM CT series.
``OUT/radiographs/``          frontal chest radiographs (DICOM DX, some stored MONOCHROME1);
                              ``OUT/radiographs.csv`` labels them normal / consolidation.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medmap.data.layouts import write_msd
from medmap.data.phantoms import abdomen_ct, chest_ct, chest_radiograph
from medmap.errors import OutputError
from medmap.io.dicom.writer import SeriesInfo, write_radiograph, write_series
from medmap.progress import track

# Written at the root of generated data: runs trained on it say so in their provenance and model card.
SYNTHETIC_MARKER = "MEDMAP_SYNTHETIC_DATA.json"


def is_synthetic(path: str | Path) -> bool:
    """Whether ``path`` (a dataset folder or file) lies in data written by `write_demo_data`."""
    path = Path(path).resolve()
    return any((folder / SYNTHETIC_MARKER).is_file() for folder in [path, *path.parents][:3])


@dataclass(frozen=True)
class DemoSize:
    chest_patients: int = 48
    nodules_per_patient: tuple[int, int] = (4, 8)
    liver_train: int = 24
    liver_test: int = 6
    radiograph_patients: int = 160
    radiographs_per_patient: tuple[int, int] = (1, 2)


SMALL = DemoSize(chest_patients=6, liver_train=6, liver_test=2, radiograph_patients=24)


@dataclass
class DemoSummary:
    root: Path
    nodules: int
    malignant: int
    liver_cases: int
    radiographs: int


def _rng_for(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


def write_chest(out: Path, size: DemoSize, seed: int, progress: bool) -> tuple[int, int]:
    rows = []
    for p in track(range(size.chest_patients), "chest CT series", enabled=progress):
        rng = _rng_for(seed, 1, p)
        in_plane, thickness = float(rng.uniform(0.6, 0.9)), float(rng.choice([1.0, 1.25, 1.5, 2.0, 2.5]))
        n_slices = round(96 / thickness)
        case = chest_ct(
            (n_slices, 256, 256),
            (thickness, in_plane, in_plane),
            seed=int(rng.integers(2**31)),
            n_nodules=int(rng.integers(*size.nodules_per_patient)),
        )
        pid = f"CHEST-{p:04d}"
        info = SeriesInfo(
            patient_name=f"DEMO^CHEST{p:04d}",
            patient_id=pid,
            body_part="CHEST",
            series_description="demo chest CT",
            window_center=-600,
            window_width=1500,
        )
        write_series(case.image, out / "chest_ct" / pid, info=info)
        for n in case.nodules:
            x, y, z = n.position
            rows.append(
                {
                    "image": f"chest_ct/{pid}",
                    "x": f"{x:.2f}",
                    "y": f"{y:.2f}",
                    "z": f"{z:.2f}",
                    "label": "malignant" if n.malignant else "benign",
                    "diameter_mm": f"{n.diameter_mm:.2f}",
                    "patient_id": pid,
                }
            )
    with open(out / "nodules.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows), sum(r["label"] == "malignant" for r in rows)


def write_liver(out: Path, size: DemoSize, seed: int, progress: bool) -> int:
    training, test = [], []
    total = size.liver_train + size.liver_test
    for c in track(range(total), "abdominal CT volumes", enabled=progress):
        rng = _rng_for(seed, 2, c)
        spacing = (float(rng.choice([3.0, 4.0, 5.0])), float(rng.uniform(1.7, 2.1)), 0.0)
        spacing = (spacing[0], spacing[1], spacing[1])
        case = abdomen_ct((round(200 / spacing[0]), 160, 160), spacing, seed=int(rng.integers(2**31)))
        cid = f"liver_{c:03d}"
        if c < size.liver_train:
            training.append((cid, case.image, case.label))
        else:
            test.append((cid, case.image, case.label))
            info = SeriesInfo(
                patient_name=f"DEMO^LIVER{c:03d}",
                patient_id=f"LIVER-{c:03d}",
                body_part="ABDOMEN",
                series_description="demo abdominal CT",
                window_center=60,
                window_width=400,
            )
            write_series(case.image, out / "liver_dicom" / cid, info=info)
    write_msd(out / "liver", "DemoLiver", {0: "background", 1: "liver", 2: "tumour"}, "CT", training, test)
    return total


def write_radiographs(out: Path, size: DemoSize, seed: int, progress: bool) -> int:
    rows = []
    for p in track(range(size.radiograph_patients), "chest radiographs", enabled=progress):
        rng = _rng_for(seed, 3, p)
        pid = f"CXR-{p:04d}"
        for k in range(int(rng.integers(size.radiographs_per_patient[0], size.radiographs_per_patient[1] + 1))):
            positive = bool(rng.random() < 0.5)
            image = chest_radiograph(seed=int(rng.integers(2**31)), consolidation=positive)
            name = f"radiographs/{pid}_{k}.dcm"
            info = SeriesInfo(
                patient_name=f"DEMO^CXR{p:04d}",
                patient_id=pid,
                body_part="CHEST",
                window_center=1100,
                window_width=2200,
            )
            write_radiograph(image, out / name, info=info, monochrome1=bool(rng.random() < 0.3))
            rows.append({"image": name, "label": "consolidation" if positive else "normal", "patient_id": pid})
    with open(out / "radiographs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def write_demo_data(
    out: str | Path, *, seed: int = 0, size: DemoSize = DemoSize(), progress: bool = False
) -> DemoSummary:
    """Generate all demo datasets under ``out`` (new or empty). The same seed gives the same data."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise OutputError(f"{out}: folder exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text(
        json.dumps({"generator": "medmap demo-data", "seed": seed, "note": "synthetic phantoms, no patient data"})
    )
    nodules, malignant = write_chest(out, size, seed, progress)
    liver = write_liver(out, size, seed, progress)
    radiographs = write_radiographs(out, size, seed, progress)
    return DemoSummary(out, nodules, malignant, liver, radiographs)
