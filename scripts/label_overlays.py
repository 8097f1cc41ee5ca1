"""Every RTSTRUCT and SEG in ../shared/data/real drawn on its own image: one PNG per object, the slice
through the middle of each structure (up to four), outlines in the structure's colour, for a person to
see that contours land on the right slices and sides. Objects that cannot be converted are listed with
their one-line reason.

    python scripts/label_overlays.py [--real ../shared/data/real] [--out docs/figures]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

OBJECTS = [
    ("lung1-rtstruct", "nsclc_lung1_001/mask_rtstruct/1-1.dcm"),
    ("sts-pet-rtstruct", "sts_001/FDG_PET/mask/1-1.dcm"),
    ("sts-mr-t1-rtstruct", "sts_001/MR_T1/mask/1-1.dcm"),
    ("sts-mr-t2-rtstruct", "sts_001/MR_T2/mask/1-1.dcm"),
    ("dcmqi-liver-seg", "dcmqi_seg/data/segmentations/liver.dcm"),
    ("dcmqi-overlaps-seg", "dcmqi_seg/data/segmentations/partial_overlaps.dcm"),
]
COLOURS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"]


def draw(name: str, path: Path, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import medmap
    from medmap.io.labels.objects import load_label_object, read_label_object, referenced_series

    obj = read_label_object(path)
    image = medmap.load(referenced_series(path, obj.series_uid), obj.series_uid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        labels, names, _ = load_label_object(path, image)
    present = [v for v in sorted(names) if v and (labels.array == v).any()]
    shown = present[:4]
    colour = {v: COLOURS[i % len(COLOURS)] for i, v in enumerate(present)}
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.4), squeeze=False)
    for ax, value in zip(axes[0], shown, strict=True):
        k = int(np.median(np.argwhere(labels.array == value)[:, 0]))
        pixels = image.array[k].astype(float)
        low, high = np.percentile(pixels, [1, 99])
        ax.imshow(pixels, cmap="gray", vmin=low, vmax=high, aspect=image.spacing[1] / image.spacing[2])
        largest_first = sorted(present, key=lambda v: -int((labels.array[k] == v).sum()))
        for n, other in enumerate(largest_first):  # each later outline thinner: shared edges show both colours
            if (labels.array[k] == other).any():
                width = 2.4 - 1.6 * n / max(1, len(largest_first) - 1)
                ax.contour(labels.array[k] == other, levels=[0.5], colors=colour[other], linewidths=width)
        ax.set_title(f"{names[value]} (slice {k})", fontsize=9)
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[v], label=names[v]) for v in present]
    fig.legend(handles=handles, loc="lower center", ncol=len(present), fontsize=8, frameon=False)
    fig.suptitle(f"{name}: {image.meta.modality} {image.shape}, outlines of {len(present)} structure(s)", fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    target = out / f"labels-{name}.png"
    fig.savefig(target, dpi=80)
    plt.close(fig)
    return f"{target}: {', '.join(names[v] for v in present)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/real")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    args = parser.parse_args()
    from medmap.errors import MedmapError

    args.out.mkdir(parents=True, exist_ok=True)
    for name, relative in OBJECTS:
        try:
            print(draw(name, args.real / relative, args.out))
        except MedmapError as exc:
            print(f"{relative}: not drawn: {exc}")


if __name__ == "__main__":
    main()
