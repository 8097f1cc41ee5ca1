"""What `medmap info` shows: one row per image series (or image file) found under a path, with its size,
spacing and orientation as the loader would assemble it, and the problems that would make the loader
refuse it. No patient identifiers."""

from __future__ import annotations

from pathlib import Path

from medmap.errors import MedmapError
from medmap.io.dicom import scan
from medmap.io.dicom.reader import check_neighbours, plan_series, series_text
from medmap.io.image import orientation_label
from medmap.io.load import is_image_file, load


def describe(path: Path, *, progress: bool = False) -> tuple[list[dict], list[str]]:
    """The rows (sizes and spacings x, y, z: columns, rows, slices) and, for each series the loader would
    refuse, its one-line error."""
    rows = []
    refused: list[str] = []  # series the loader would refuse: each an error line, and exit status 1
    if is_image_file(path):
        img = load(path)
        rows.append(
            {
                "series": path.name,
                "modality": img.meta.modality or "-",
                "body_part": "-",
                "size": list(img.shape[::-1]),
                "spacing_mm": list(img.spacing[::-1]),
                "orientation": img.orientation_label(),
                "instances": 1,
                "problems": list(img.meta.notes),
            }
        )
    else:
        result = scan(path, progress=progress)
        for s in result.series:
            problems: list[str] = []
            size, spacing, orientation = None, None, "-"
            try:
                check_neighbours(s, result)
                lay = plan_series(s)
                fmt = s.files[0].pixel_format
                size = [fmt.columns, fmt.rows, len(lay.frames)]
                spacing = list(lay.spacing[::-1])
                orientation = orientation_label(lay.direction)
                problems += lay.notes
            except MedmapError as exc:
                problems.append(str(exc).split(": ", 1)[-1])
                refused.append(str(exc))
            rows.append(
                {
                    "series": s.uid,
                    "modality": s.modality,
                    "body_part": series_text(s, "BodyPartExamined"),
                    "size": size,
                    "spacing_mm": spacing,
                    "orientation": orientation,
                    "instances": len(s.files),
                    "problems": problems,
                }
            )
        if not rows:
            raise MedmapError(f"{path}: no DICOM image series found")
        if result.skipped:
            rows.append(
                {
                    "series": f"({len(result.skipped)} non-image files ignored)",
                    "modality": "",
                    "body_part": "",
                    "size": None,
                    "spacing_mm": None,
                    "orientation": "",
                    "instances": 0,
                    "problems": [],
                }
            )
    return rows, refused
