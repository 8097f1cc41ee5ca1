"""Structure names to label values: ``Parotid_L``, ``L Parotid`` and ``PAROTID LT`` are one structure.

Clinical contour sets spell the same organ many ways (TG-263 asks for ``Parotid_L``; planning systems
and people write ``L Parotid``, ``Lt_Parotid``, ``PAROTID LT``). A name is reduced to a key: its words
lower-cased and joined, separators and case ignored, the side words (left, lt, l, sin ...) reduced to
one side mark. A ``labels.json`` gives each label value its name (TG-263 spelling recommended) or a
list of accepted names; every structure whose key matches is that label.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from medmap.data.laterality import SIDE_TOKENS
from medmap.errors import DatasetError


def name_key(name: str) -> str:
    """The spelling-free key of a structure name (``Parotid_L`` and ``PAROTID LT`` -> ``parotid|L``)."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    words = [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]
    sides = sorted({SIDE_TOKENS[w] for w in words if w in SIDE_TOKENS})
    rest = "".join(w for w in words if w not in SIDE_TOKENS)  # "Brain Stem" and "BrainStem" are "brainstem"
    return rest + ("|" + "".join(sides) if sides else "")


def read_label_names(path: Path) -> dict[int, list[str]]:
    """``labels.json``: {"1": "Lung_L", "2": ["Lung_R", "Right Lung"]} -> value -> accepted names."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
        out = {int(k): [v] if isinstance(v, str) else [str(n) for n in v] for k, v in spec.items()}
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such labels file") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise DatasetError(f'{path}: expected {{"1": "Name", "2": ["Name", "Other spelling"]}} ({exc})') from None
    out.pop(0, None)  # background is what no structure covers
    if any(v <= 0 for v in out):
        raise DatasetError(f"{path}: label values must be positive whole numbers")
    return out


@dataclass(frozen=True)
class NameMatch:
    """Which structure carries which label value, and what matched nothing."""

    values: dict[str, int]  # structure name as in the file -> label value
    unmatched: tuple[str, ...]  # structures no label accepts
    missing: tuple[int, ...]  # labels no structure carries (not annotated in this case)


def match_names(structures: list[str], labels: dict[int, list[str]], *, source: str) -> NameMatch:
    """Map the structures of one object onto the labels; a name two labels accept, or a label two
    structures claim, is an error naming the object."""
    keys: dict[str, int] = {}
    for value, names in labels.items():
        for name in names:
            key = name_key(name)
            if key in keys and keys[key] != value:
                raise DatasetError(f"{source}: the name {name!r} is given to labels {keys[key]} and {value}")
            keys[key] = value
    values: dict[str, int] = {}
    unmatched = []
    for structure in structures:
        value = keys.get(name_key(structure))
        if value is None:
            unmatched.append(structure)
            continue
        other = next((s for s, v in values.items() if v == value), None)
        if other is not None:
            raise DatasetError(f"{source}: structures {other!r} and {structure!r} both match label {value}")
        values[structure] = value
    missing = tuple(v for v in sorted(labels) if v not in values.values())
    return NameMatch(values, tuple(unmatched), missing)


def label_names(labels: dict[int, list[str]]) -> dict[int, str]:
    """Each value's name as a label map names it (the first accepted spelling), background included."""
    return {0: "background", **{v: names[0] for v, names in sorted(labels.items())}}
