"""Intended use, measured: how many in-distribution series a bundle accepts and how many foreign ones it refuses.

    python benchmarks/intended_use.py --data demo-output/data \\
        --liver demo-output/runs/liver --nodules demo-output/runs/nodules     # after make demo
    python benchmarks/intended_use.py --quick                                 # what the test suite runs

Each run is packaged as ``make demo`` packages it (the liver bundle declares BodyPartExamined ABDOMEN) and
every input goes through `medmap.inference.predictor.Predictor.run_case`, the path ``medmap predict`` and
the node take. Inputs:

- liver model, in distribution: the held-out abdominal CTs, as NIfTI (no header) and as DICOM series;
  foreign: every chest CT (DICOM, and again as NIfTI without any header, so only the image profile can
  tell), chest radiographs (DX), MR-like volumes (the abdominal CTs' intensities rescaled, as NIfTI and as
  DICOM MR).
- nodule model, per lesion position, in distribution: the nodules of the test-split chest CTs; foreign:
  positions in the liver and tumours of the abdominal CTs, positions in the air outside the body and in
  the mediastinum (the image centre) of the test chest CTs, radiographs and MR volumes.

Aim (issue 14): 100 % of in-distribution inputs accepted, 100 % of foreign ones refused.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from medmap.data.demo import DemoSize, write_demo_data
from medmap.data.layouts import read_dataset
from medmap.errors import MedmapError
from medmap.inference.bundle import create_bundle, load_bundle
from medmap.inference.predictor import InputCase, Predictor
from medmap.io.dicom.writer import SeriesInfo, write_series
from medmap.io.load import load, save
from medmap.training.config import TrainConfig
from medmap.training.run import train_run


def decide(predictor: Predictor, case: InputCase, out: Path) -> list[bool]:
    """Accepted (True) or refused per answer: one per lesion for lesion models, else one per series. A
    refusal for another reason (wrong modality, 2-D image) counts as a refusal: nothing was answered."""
    try:
        result = predictor.run_case(case, out)
    except MedmapError:  # OutOfUseError, or a header fact (modality, dimensions) refused before it
        return [False] * max(1, len(case.lesions))
    if "findings" in result.result:
        return [f.get("assessed", True) for f in result.result["findings"]]
    return [True]


def mr_like(image):
    """An abdominal CT's intensities mapped to an MR-like arbitrary scale (fat bright, no air band)."""
    array = np.clip(image.array.astype(np.float32) + 1000.0, 0, 2000) * 0.6
    return image.with_array(array, modality="", body_part="")


def liver_inputs(data: Path, tmp: Path) -> list[tuple[str, bool, InputCase]]:
    items = []
    liver = read_dataset(data / "liver")
    for case in liver.split("test"):
        items.append(("abdominal CT, NIfTI", True, InputCase(case.case_id, Path(case.images[0]))))
    for folder in sorted((data / "liver_dicom").iterdir()):
        items.append(("abdominal CT, DICOM", True, InputCase(folder.name, folder)))
    for folder in sorted((data / "chest_ct").iterdir()):
        items.append(("chest CT, DICOM", False, InputCase(folder.name, folder)))
        stripped = save(load(folder).with_array(load(folder).array), tmp / f"{folder.name}.nii.gz")
        items.append(("chest CT, NIfTI (no header)", False, InputCase(f"{folder.name}-nifti", stripped)))
    for path in sorted((data / "radiographs").glob("*.dcm"))[:20]:
        items.append(("chest radiograph (DX)", False, InputCase(path.stem, path)))
    for i, case in enumerate(liver.split("test")):
        image = mr_like(case.load_image())
        nifti = save(image, tmp / f"mr-{i}.nii.gz")
        items.append(("MR-like volume, NIfTI", False, InputCase(f"mr-{i}", nifti)))
        scaled = image.with_array(np.rint(image.array).astype(np.int16), modality="MR")
        folder = tmp / f"mr-dicom-{i}"
        write_series(scaled, folder, modality="MR", info=SeriesInfo(patient_id=f"MR-{i}", body_part="ABDOMEN"))
        items.append(("MR-like volume, DICOM MR", False, InputCase(f"mr-dicom-{i}", folder)))
    return items


def nodule_inputs(data: Path, run: Path, tmp: Path, rng: np.random.Generator) -> list[tuple[str, bool, InputCase]]:
    test = set(json.loads((run / "split.json").read_text())["test"])
    dataset = {c.case_id: c for c in read_dataset(data / "nodules.csv").cases}
    by_series: dict[str, list] = {}
    for case_id in test:
        case = dataset[case_id]
        by_series.setdefault(str(case.images[0]), []).append(tuple(case.lesion.position))
    items = []
    for folder, positions in sorted(by_series.items()):
        name = Path(folder).name
        items.append(("chest CT, test nodules", True, InputCase(name, Path(folder), lesions=positions)))
        image = load(folder)
        corners = [image.index_to_world(np.array([image.shape[0] / 2, 3.0, 3.0]))]
        centre = [image.index_to_world((np.asarray(image.shape) - 1) / 2)]
        items.append(
            ("chest CT, mediastinum (image centre)", False, InputCase(f"{name}-c", Path(folder), lesions=centre))
        )
        items.append(("chest CT, position in the air", False, InputCase(f"{name}-air", Path(folder), lesions=corners)))
    liver = read_dataset(data / "liver")
    for case in liver.split("test"):
        mask = case.load_mask()
        if mask is None:
            continue
        components, n = ndimage.label(mask.array > 0)
        centres = [
            mask.index_to_world(np.array(c))
            for c in ndimage.center_of_mass(mask.array > 0, components, range(1, n + 1))
        ]
        folder = data / "liver_dicom" / case.case_id
        source = folder if folder.is_dir() else Path(case.images[0])
        items.append(("abdominal CT, liver/tumour positions", False, InputCase(case.case_id, source, lesions=centres)))
        inside = np.argwhere(mask.array > 0)
        picks = [mask.index_to_world(inside[i].astype(float)) for i in rng.choice(len(inside), 3, replace=False)]
        items.append(
            ("abdominal CT, random liver positions", False, InputCase(f"{case.case_id}-r", source, lesions=picks))
        )
    for path in sorted((data / "radiographs").glob("*.dcm"))[:10]:
        items.append(("chest radiograph (DX)", False, InputCase(path.stem, path, lesions=[(0.0, 0.0, 0.0)])))
    for i, case in enumerate(liver.split("test")):
        image = mr_like(case.load_image())
        nifti = save(image, tmp / f"nmr-{i}.nii.gz")
        centre = image.index_to_world((np.asarray(image.shape) - 1) / 2)
        items.append(("MR-like volume, NIfTI", False, InputCase(f"nmr-{i}", nifti, lesions=[centre])))
    return items


def measure(bundle: Path, items, out: Path) -> list[dict]:
    predictor = Predictor(load_bundle(bundle), precision="float32")
    rows: dict[str, dict] = {}
    for group, expected, case in items:
        decisions = decide(predictor, case, out)
        row = rows.setdefault(group, {"group": group, "in_distribution": expected, "n": 0, "accepted": 0})
        row["n"] += len(decisions)
        row["accepted"] += sum(decisions)
    for row in rows.values():
        right = row["accepted"] if row["in_distribution"] else row["n"] - row["accepted"]
        row["correct_share"] = round(right / row["n"], 4)
    return list(rows.values())


def quick_runs(tmp: Path, seed: int) -> tuple[Path, Path, Path]:
    """Small demo data and two short runs (one epoch each): the decisions do not depend on the weights."""
    data = tmp / "data"
    size = DemoSize(chest_patients=8, nodules_per_patient=(2, 3), liver_train=5, liver_test=2, radiograph_patients=4)
    write_demo_data(data, seed=seed, size=size)
    config = TrainConfig(epochs=1, samples_per_epoch=8, workers=0, seed=seed)
    small = ["network_width=8", "batch_size=2"]
    train_run(data / "nodules.csv", tmp / "nodules", task="classification", overrides=small, config=config)
    seg = [*small, "patch_size=[16,32,32]", "network_depth=3", "inference.overlap=0"]  # accepted cases: fast
    train_run(data / "liver", tmp / "liver", task="segmentation", overrides=seg, config=config)
    return data, tmp / "liver", tmp / "nodules"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="demo data folder (medmap demo-data)")
    parser.add_argument("--liver", type=Path, help="liver training run folder")
    parser.add_argument("--nodules", type=Path, help="nodule training run folder")
    parser.add_argument("--quick", action="store_true", help="small generated data, one-epoch runs (test suite)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        if args.quick:
            data, liver_run, nodule_run = quick_runs(tmp / "quick", args.seed)
        elif args.data and args.liver and args.nodules:
            data, liver_run, nodule_run = args.data, args.liver, args.nodules
        else:
            parser.error("give --data, --liver and --nodules, or --quick")
        liver = create_bundle(liver_run, tmp / "bundles" / "liver", body_parts=["ABDOMEN"])
        nodules = create_bundle(nodule_run, tmp / "bundles" / "nodules")
        (tmp / "inputs").mkdir()
        results = {
            "liver": measure(liver, liver_inputs(data, tmp / "inputs"), tmp / "out-liver"),
            "nodules": measure(
                nodules,
                nodule_inputs(data, nodule_run, tmp / "inputs", np.random.default_rng(args.seed)),
                tmp / "out-n",
            ),
        }
    print("\nintended use: share of inputs decided as they should be (accepted if in distribution, else refused)")
    print(f"{'model':8} {'input':40} {'expected':>9} {'n':>5} {'accepted':>9} {'correct':>8}")
    for model, rows in results.items():
        for r in rows:
            expected = "accept" if r["in_distribution"] else "refuse"
            print(f"{model:8} {r['group']:40} {expected:>9} {r['n']:5d} {r['accepted']:9d} {r['correct_share']:8.1%}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "intended_use.json").write_text(json.dumps({"quick": args.quick, "results": results}, indent=1))
    with open(args.out / "intended_use.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["model", *results["liver"][0]])
        writer.writeheader()
        writer.writerows({"model": m, **r} for m, rows in results.items() for r in rows)


if __name__ == "__main__":
    sys.exit(main())
