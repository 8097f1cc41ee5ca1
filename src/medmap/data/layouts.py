"""Read the standard dataset layouts into a `Dataset`; write the ones medmap produces.

- Medical Segmentation Decathlon: ``dataset.json`` (``training``/``test`` lists), ``imagesTr/``,
  ``labelsTr/``, ``imagesTs/``.
- nnU-Net v2 raw: ``DatasetXXX_Name/dataset.json`` with ``channel_names``/``labels``/``file_ending``,
  images ``<case>_<channel:04d><ending>``.
- MedMNIST npz: ``train_images``/``train_labels`` (and ``val_``/``test_``), 2-D or 3-D.
- CSV manifest: ``image`` (file or DICOM folder, relative to the CSV) plus ``label``, or ``mask``, or
  lesion world coordinates ``x,y,z`` (mm, LPS) with ``label``; optional ``patient_id``, ``split``,
  ``case_id``, ``series_uid``, ``diameter_mm``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from medmap.data.dataset import Case, Dataset, Lesion, NpzSlot, check_task_name
from medmap.data.dicom_folder import is_dicom_label_folder, read_dicom_folder
from medmap.data.mask_labels import mask_labels, mask_of, structure_labels
from medmap.data.sr_folder import holds_reports, read_sr_folder
from medmap.errors import DatasetError, InputNotFoundError
from medmap.io.guard import reading
from medmap.io.image import Image
from medmap.io.labels.names import label_names

SPLITS = ("train", "val", "test")


def _class_labels(path: Path, rows: list[dict]) -> tuple[dict[int, str], dict[str, int]]:
    """Class index -> name, and back, of a table's ``label`` column: a ``labels.json`` beside the table
    fixes the order ({"0": "normal", "1": "consolidation"}), otherwise `_class_order`. A label the
    sidecar does not declare names its line."""
    sidecar = path.with_name("labels.json")
    declared = {int(k): str(v) for k, v in _read_json(sidecar).items()} if sidecar.is_file() else {}
    names = sorted({r["label"] for r in rows if r["label"] != ""}, key=_class_order)
    labels = declared or dict(enumerate(names))
    to_index = {name: index for index, name in labels.items()}
    for n, row in enumerate(rows, start=2):
        if row["label"] not in ("", *to_index):
            cid = row.get("case_id") or row.get("image") or f"line {n}"
            raise DatasetError(
                f"{path}: line {n} (case {cid}): label {row['label']!r} is not declared in "
                f"{sidecar.name} ({', '.join(to_index)})"
            )
    return labels, to_index


def read_dataset(path: str | Path, task: str | None = None) -> Dataset:
    """Recognise the layout at ``path`` and read it. Whatever a damaged file makes a parser raise
    becomes one line naming it (`reading`); the checks below name the case and what is wrong.
    ``task="detection"`` reads a lesion table (``x,y,z,diameter_mm``) as one case per image holding all
    its findings; otherwise the layout says the task."""
    path = Path(path)
    if task is not None:
        check_task_name(task)
    with reading(path, "not a readable dataset"):
        if task == "detection" and path.is_dir():
            return read_sr_folder(path)
        if task == "detection":
            if path.suffix != ".csv":
                raise DatasetError(
                    f"{path}: detection reads a lesion table (.csv with image, x, y, z, diameter_mm) "
                    "or a folder of DICOM studies with their TID 1500 reports"
                )
            return read_detection_table(path)
        dataset = _read_dataset(path)
    if task is not None and task != dataset.task:
        raise DatasetError(f"--task {task}: {path} is a {dataset.task} dataset")
    return dataset


def _read_dataset(path: Path) -> Dataset:
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".npz":
        return read_medmnist(path)
    if path.suffix == ".csv":
        return read_csv_manifest(path)
    meta = path / "dataset.json"
    if path.is_dir() and meta.is_file():
        spec = _read_json(meta)
        return read_nnunet(path, spec) if "channel_names" in spec else read_msd(path, spec)
    if is_dicom_label_folder(path):
        return read_dicom_folder(path)
    if holds_reports(path):
        return read_sr_folder(path)
    raise DatasetError(
        f"{path}: not a dataset (expected a folder with dataset.json (MSD / nnU-Net), a folder of DICOM studies "
        "with their RTSTRUCT / SEG and a labels.json or their TID 1500 reports, a .npz (MedMNIST) or a .csv manifest)"
    )


def _read_json(path: Path) -> dict:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise DatasetError(f"{path}: must hold a JSON object, not a {type(spec).__name__}")
    return spec


# --- MSD -----------------------------------------------------------------------------------------------------
def read_msd(root: Path, spec: dict | None = None) -> Dataset:
    spec = spec or _read_json(root / "dataset.json")
    try:
        labels = {int(k): str(v) for k, v in spec["labels"].items()}
        modality = spec.get("modality", {})
        training = spec["training"]
    except (KeyError, AttributeError, ValueError) as exc:
        raise DatasetError(f"{root / 'dataset.json'}: not an MSD dataset.json (missing or bad {exc})") from None
    cases = []
    for entry in training:
        image = root / entry["image"]
        cid = _strip_suffix(image.name)
        cases.append(Case(cid, [image], patient_id=cid, mask=root / entry["label"]))
    for entry in spec.get("test", []):
        image = root / (entry if isinstance(entry, str) else entry["image"])
        cid = _strip_suffix(image.name)
        label = entry.get("label") if isinstance(entry, dict) else None
        mask = root / label if label else root / "labelsTs" / image.name  # test labels, when the folder has them
        cases.append(Case(cid, [image], patient_id=cid, split="test", mask=mask if mask.is_file() else None))
    channels = [str(modality[k]) for k in sorted(modality, key=int)]
    return Dataset(
        str(spec.get("name", root.name)),
        root,
        "segmentation",
        "msd",
        labels,
        cases,
        modality=channels[0] if channels else "",
        channel_names=channels,
    )


def write_msd(
    root: Path,
    name: str,
    labels: dict[int, str],
    modality: str,
    training: list[tuple[str, Image, Image]],
    test: list[tuple[str, Image] | tuple[str, Image, Image]] = (),
) -> Path:
    """Write an MSD dataset: ``training`` holds (case id, image, mask); ``test`` (case id, image) or
    (case id, image, mask): test labels go to ``labelsTs/``, where nnU-Net keeps them too."""
    from medmap.io.load import save

    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    entries = []
    for cid, image, mask in training:
        save(image, root / "imagesTr" / f"{cid}.nii.gz")
        save(mask, root / "labelsTr" / f"{cid}.nii.gz")
        entries.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    tests = []
    for cid, image, *mask in test:
        save(image, root / "imagesTs" / f"{cid}.nii.gz")
        tests.append(f"./imagesTs/{cid}.nii.gz")
        if mask:
            (root / "labelsTs").mkdir(exist_ok=True)
            save(mask[0], root / "labelsTs" / f"{cid}.nii.gz")
    spec = {
        "name": name,
        "description": f"{name} (generated by medmap)",
        "tensorImageSize": "3D",
        "modality": {"0": modality},
        "labels": {str(k): v for k, v in sorted(labels.items())},
        "numTraining": len(entries),
        "numTest": len(tests),
        "training": entries,
        "test": tests,
    }
    (root / "dataset.json").write_text(json.dumps(spec, indent=2))
    return root


# --- nnU-Net v2 raw ----------------------------------------------------------------------------------------------
def read_nnunet(root: Path, spec: dict | None = None) -> Dataset:
    spec = spec or _read_json(root / "dataset.json")
    try:
        channels = {int(k): str(v) for k, v in spec["channel_names"].items()}
        labels = {}
        for name, value in spec["labels"].items():
            if isinstance(value, list):  # region-based labels: use the first value
                value = value[0]
            labels[int(value)] = str(name)
        ending = spec.get("file_ending", ".nii.gz")
    except (KeyError, AttributeError, ValueError, TypeError) as exc:
        raise DatasetError(f"{root / 'dataset.json'}: not an nnU-Net dataset.json (missing or bad {exc})") from None
    cases = []
    for folder, label_folder, split in (("imagesTr", "labelsTr", None), ("imagesTs", "labelsTs", "test")):
        pattern = re.compile(rf"^(.+)_(\d{{4}}){re.escape(ending)}$")
        ids = sorted({m.group(1) for p in (root / folder).glob(f"*{ending}") if (m := pattern.match(p.name))})
        for cid in ids:
            images = [root / folder / f"{cid}_{ch:04d}{ending}" for ch in sorted(channels)]
            mask = root / label_folder / f"{cid}{ending}"
            if split == "test" and not mask.is_file():  # test labels are optional
                mask = None
            cases.append(Case(cid, images, patient_id=cid, mask=mask, split=split))
    names = [channels[k] for k in sorted(channels)]
    return Dataset(
        root.name,
        root,
        "segmentation",
        "nnunet",
        labels,
        cases,
        modality=names[0] if names else "",
        channel_names=names,
    )


# --- MedMNIST ------------------------------------------------------------------------------------------------------
def read_medmnist(path: Path) -> Dataset:
    try:
        with np.load(path, mmap_mode="r") as npz:
            keys = set(npz.files)
            counts = {s: len(npz[f"{s}_labels"]) for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys}
            for split in counts:
                images = len(npz[f"{split}_images"])
                if images != counts[split]:  # zip() would silently drop the unmatched ones
                    raise DatasetError(f"{path}: {images} {split}_images but {counts[split]} {split}_labels")
            labels_all = np.concatenate(
                [np.asarray(npz[f"{s}_labels"]).reshape(len(npz[f"{s}_labels"]), -1)[:, 0] for s in counts]
            )
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{path}: not a readable npz file ({exc})") from None
    if not counts:
        raise DatasetError(f"{path}: no train_images/train_labels (MedMNIST layout) in {sorted(keys)}")
    classes = sorted(int(v) for v in np.unique(labels_all))
    cases, offset = [], 0
    for split, n in counts.items():
        split_labels = labels_all[offset : offset + n]
        offset += n
        for i in range(n):
            cid = f"{split}-{i:05d}"
            cases.append(
                Case(
                    cid, [NpzSlot(path, f"{split}_images", i)], patient_id=cid, label=int(split_labels[i]), split=split
                )
            )
    return Dataset(path.stem, path, "classification", "medmnist", {c: str(c) for c in classes}, cases)


# --- CSV manifest -----------------------------------------------------------------------------------------------------
def read_csv_manifest(path: Path) -> Dataset:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise DatasetError(f"{path}: manifest has no rows")
    for line, row in enumerate(rows, start=2):
        if None in row.values() or None in row:  # csv.DictReader pads short rows with None, keeps long ones
            raise DatasetError(f"{path}: line {line}: its fields do not match the header's (an unclosed quote?)")
    columns = set(rows[0])
    channels = _channel_columns(path, list(rows[0]))
    segmentation = "mask" in columns or "label_object" in columns
    lesions = {"x", "y", "z"} <= columns
    if not segmentation and "label" not in columns:
        raise DatasetError(f"{path}: manifest needs a 'label' column, or a 'mask' column for segmentation")
    base = path.parent
    mask_values = None
    structures = None
    if "label_object" in columns:  # RTSTRUCTs: labels.json names the structures of each label value
        structures = structure_labels(path, [base / r["label_object"] for r in rows if r.get("label_object")])
        labels, to_index = label_names({v: list(n) for v, n in structures}), {}
    elif segmentation:  # a labels.json beside it names the mask's values ({"0": "background", "1": "liver"})
        labels, mask_values = mask_labels(path, [base / r["mask"] for r in rows if r.get("mask")])
        to_index: dict[str, int] = {}
    else:
        labels, to_index = _class_labels(path, rows)
    cases = []
    case_names = _case_names([row[channels[0]] for row in rows])
    for n, row in enumerate(rows, start=2):  # line numbers as a spreadsheet shows them
        if lesions and not any(row[k] for k in ("x", "y", "z", "label")):
            continue  # a scan without findings (a detector's negative) holds no lesion to classify
        images = [base / row[column] for column in channels]
        image = images[0]
        cid = row.get("case_id") or (f"{_strip_suffix(image.name)}-{n}" if lesions else case_names[n - 2])
        lesion = None
        if lesions:
            try:
                lesion = Lesion(
                    (float(row["x"]), float(row["y"]), float(row["z"])),
                    float(row["diameter_mm"]) if row.get("diameter_mm") else None,
                )
            except ValueError:
                raise DatasetError(f"{path}: line {n}: coordinates x,y,z must be numbers (mm)") from None
        label = to_index.get(row["label"]) if not segmentation and row["label"] != "" else None
        cases.append(
            Case(
                cid,
                images,
                patient_id=row.get("patient_id") or cid,
                label=label,
                mask=mask_of(row, base, structures) if segmentation else None,
                mask_values=mask_values,
                lesion=lesion,
                split=row.get("split") or None,
                series_uid=row.get("series_uid") or None,
            )
        )
    task = "segmentation" if segmentation else "classification"
    channel_names = [c.removeprefix("image_") for c in channels] if channels != ["image"] else []
    return Dataset(path.stem, path, task, "csv", labels, cases, channel_names=channel_names)


def _case_names(images: list[str]) -> list[str]:
    """A case id per row from its image's name, or from its path where names repeat (``P0/image``,
    ``P1/image``: DICOM folders exported under one name), so that no two cases share an id."""
    stems = [_strip_suffix(Path(i).name) for i in images]
    repeated = {s for s in stems if stems.count(s) > 1}
    out = []
    for image, stem in zip(images, stems, strict=True):
        parts = [p for p in Path(image).parent.parts if p not in ("/", "..", ".")]
        out.append("-".join([*parts, stem]) if stem in repeated and parts else stem)
    return out


def _channel_columns(path: Path, header: list[str]) -> list[str]:
    """``image``, or one ``image_<name>`` column per channel (``image_flair,image_t1c``: MR sequences of a
    case on one grid), in the header's order."""
    named = [c for c in header if c.startswith("image_") and c != "image_id"]
    if "image" in header and named:
        raise DatasetError(f"{path}: either one 'image' column or one 'image_<channel>' column per channel, not both")
    if "image" not in header and not named:
        raise DatasetError(f"{path}: manifest needs an 'image' column (or 'image_<channel>' columns; has {header})")
    return named or ["image"]


LUNA16_COLUMNS = {"seriesuid": "series_uid", "coordX": "x", "coordY": "y", "coordZ": "z"}


def read_detection_table(path: Path, finding: str = "nodule") -> Dataset:
    """A lesion table as a detection dataset: one case per image, holding every row's finding (centre
    ``x,y,z`` in LPS mm, ``diameter_mm``). A row with empty coordinates is an image without findings (a
    negative scan). LUNA16's ``annotations.csv`` is read as it is (``seriesuid,coordX,coordY,coordZ,
    diameter_mm``, world mm as ITK writes them, which is LPS): each series is the image file named by its
    UID (``<seriesuid>.mhd``, ``.mha``, ``.nrrd``, ``.nii.gz``) or the DICOM series of that UID under the
    table's folder. Labels: 0 background, 1 ``finding``; a ``label`` column (the nodules' class) is kept
    on each lesion so the detector can split its patients as the classifier of the same table does."""
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or folder")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DatasetError(f"{path}: the lesion table has no rows")
    if "image" not in rows[0] and "seriesuid" in rows[0]:
        rows = _luna16_rows(path, rows)
    missing = {"image", "x", "y", "z", "diameter_mm"} - set(rows[0])
    if missing:
        raise DatasetError(
            f"{path}: a detection table needs the columns {', '.join(sorted(missing))} (LPS mm), "
            "or LUNA16's seriesuid, coordX, coordY, coordZ, diameter_mm"
        )
    to_index = _class_labels(path, rows)[1] if "label" in rows[0] else {}
    base, cases = path.parent, {}
    for n, row in enumerate(rows, start=2):
        key = (row["image"], row.get("series_uid") or "")
        if key not in cases:
            name = _strip_suffix(Path(row["image"]).name) + (f"-{key[1][-8:]}" if key[1] else "")
            cases[key] = Case(
                name,
                [base / row["image"]],
                patient_id=row.get("patient_id") or name,
                split=row.get("split") or None,
                series_uid=row.get("series_uid") or None,
            )
        if row["x"] == "" and row["y"] == "" and row["z"] == "":
            continue
        try:
            position, diameter = (float(row["x"]), float(row["y"]), float(row["z"])), float(row["diameter_mm"])
        except ValueError:
            raise DatasetError(f"{path}: line {n}: x, y, z and diameter_mm must be numbers (mm)") from None
        if not diameter > 0:
            raise DatasetError(f"{path}: line {n} (image {row['image']}): diameter_mm {diameter} must be above 0")
        cases[key].lesions.append(Lesion(position, diameter, to_index.get(row.get("label", "")), n))
    return Dataset(path.stem, path, "detection", "csv", {0: "background", 1: finding}, list(cases.values()))


def _luna16_rows(path: Path, rows: list[dict]) -> list[dict]:
    """LUNA16's columns as medmap's, each series UID resolved to its image (file or DICOM folder)."""
    files = {}
    for suffix in (".mhd", ".mha", ".nrrd", ".nii.gz", ".nii"):
        for found in path.parent.rglob(f"*{suffix}"):
            files.setdefault(found.name[: -len(suffix)], found)
    dicom: dict[str, Path] | None = None
    out = []
    for n, row in enumerate(rows, start=2):
        uid = (row.get("seriesuid") or "").strip()
        renamed = {LUNA16_COLUMNS.get(k, k): v for k, v in row.items()}
        if uid in files:
            renamed.update(image=str(files[uid].relative_to(path.parent)), series_uid="")
        else:
            if dicom is None:
                dicom = _dicom_series_folders(path.parent)
            if uid not in dicom:
                raise DatasetError(
                    f"{path}: line {n}: series {uid or '(empty)'} not found under {path.parent} "
                    "(no <seriesuid>.mhd/.mha/.nrrd/.nii.gz file, no DICOM series with that UID)"
                )
            renamed["image"] = str(dicom[uid].relative_to(path.parent))
        renamed.setdefault("patient_id", uid)
        out.append(renamed)
    return out


def _dicom_series_folders(root: Path) -> dict[str, Path]:
    """Series Instance UID -> the folder of its first file, for every DICOM series under ``root``."""
    from medmap.io.dicom import scan

    try:
        return {s.uid: Path(s.paths[0]).parent for s in scan(root).series}
    except InputNotFoundError:
        return {}


def _strip_suffix(name: str) -> str:
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".dcm"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


NEGATIVE_CLASSES = ("normal", "benign", "negative", "healthy", "absent", "no")


def _class_order(text: str):
    """Class index order: a 'negative' class name first (so binary tasks predict the finding as class 1),
    then numbers in numeric order, then names alphabetically."""
    if text.lower() in NEGATIVE_CLASSES:
        return (0, 0, "")
    return (1, int(text), "") if text.lstrip("-").isdigit() else (2, 0, text)
