"""The labels of a segmentation table's masks: declared in ``labels.json`` beside the table, or read from
the masks themselves, and the stored values mapped onto the consecutive indices a network predicts.

Why: masks arrive as users' tools save them: 0/255 PNGs, 0/1 bit maps, label maps with gaps (0, 1, 4 in
BraTS). A network predicts classes 0..K-1, so stored values are mapped in their order (0 stays the
background); the names come from ``labels.json`` where one exists, otherwise each value is named after
itself and a warning says which file to write to name them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from medmap.data.dataset import LabelObject
from medmap.errors import DatasetError, MedmapError, MedmapWarning
from medmap.io.labels.names import read_label_names


def _stored_values(masks: list[Path]) -> list[int]:
    """Every value the readable masks hold (unreadable or missing ones are left to ``dataset check``)."""
    from medmap.data.dataset import load_source

    values: set[int] = set()
    for mask in masks:
        try:
            array = load_source(mask).array
        except (MedmapError, OSError):
            continue
        values.update(int(v) for v in np.unique(array))
    return sorted(values)


def mask_labels(table: Path, masks: list[Path]) -> tuple[dict[int, str], dict[int, int] | None]:
    """(label index -> name, stored value -> label index or None when the values already are indices)."""
    sidecar = table.with_name("labels.json")
    if sidecar.is_file():
        try:
            declared = {int(k): str(v) for k, v in json.loads(sidecar.read_text(encoding="utf-8")).items()}
        except (ValueError, AttributeError) as exc:
            raise DatasetError(
                f'{sidecar}: expected {{"value": "name", ...}} with whole-number values ({exc})'
            ) from None
    else:
        values = _stored_values(masks)
        foreground = [v for v in values if v != 0]
        if not foreground:
            return {0: "background"}, None
        names = {v: "foreground" for v in foreground} if len(foreground) == 1 else {v: f"label {v}" for v in foreground}
        declared = {0: "background", **names}
        example = json.dumps({str(k): v for k, v in declared.items()})
        warnings.warn(
            MedmapWarning(
                f"{table}: no labels.json beside it; the masks hold values {values}, taken as {example}. "
                f"Write {sidecar} to name them"
            ),
            stacklevel=2,
        )
    declared.setdefault(0, "background")
    ordered = sorted(declared)
    if ordered == list(range(len(ordered))):
        return declared, None
    lookup = {value: index for index, value in enumerate(ordered)}
    return {index: declared[value] for value, index in lookup.items()}, lookup


def mask_of(row: dict, base: Path, structures) -> Path | LabelObject | None:
    """A table row's segmentation target: its label object when the table has them, else its mask file."""
    if structures is not None:
        return LabelObject(base / row["label_object"], structures) if row.get("label_object") else None
    return base / row["mask"] if row.get("mask") else None


def structure_labels(path: Path, objects: list[Path]) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """The labels.json beside a table of label objects (RTSTRUCT / SEG), or an error saying what to write in it."""
    sidecar = path.with_name("labels.json")
    if sidecar.is_file():
        return tuple((v, tuple(n)) for v, n in sorted(read_label_names(sidecar).items()))
    from medmap.io.labels.objects import read_label_object, structure_names

    found = structure_names(read_label_object(objects[0])) if objects else []
    example = json.dumps({str(i): name for i, name in enumerate(found[:3], start=1)}) if found else '{"1": "Name"}'
    raise DatasetError(
        f"{path}: label objects need {sidecar} naming the structure of each label value, e.g. {example}"
        + (f" (structures in {objects[0].name}: {', '.join(found)})" if found else "")
    )
