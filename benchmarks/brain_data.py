"""Real-image benchmark datasets cut from the MNI152 template that nilearn ships (no download).

    python benchmarks/brain_data.py --out data/          # the three sets at full size, with a summary
    python benchmarks/brain_data.py --quick --out tmp/   # small sets (the test suite)

The template is a real T1-weighted MR average (1 mm, 197x233x189) with grey- and white-matter
probability maps. From it:

- `patch_set`: a 3-class 32x32 patch classification set in MedMNIST npz layout (8-bit), the class being
  the tissue at the patch centre (grey matter, white matter, CSF); brightness is the main cue, as in
  MedMNIST's tissue sets.
- `slice_set`: a 2-D segmentation set in MSD layout, axial slices stored as (X, Y, 1) NIfTI the way MSD
  and nnU-Net store 2-D data, labels 1 grey matter and 2 white matter, with ``labelsTs`` for scoring.
- `volume_set`: a 3-D segmentation set in MSD layout at 2 mm, the same two labels: each "subject" is the
  whole template moved by its own random affine (rotation, scale, shift) and smooth elastic field, with
  its own bias field, scaling and noise.

For the patch and slice sets, train, validation and test come from separate slabs of the brain with a
gap of slices between them, so no test patch shares a slice with a training one; every image gets its
own noise and intensity scaling (one template would otherwise make train and test identical in
appearance). The volumes cannot be separated that way (each is the whole brain), so all of them share
the template's anatomy, deformed: their scores measure segmentation under changes of shape, pose and
appearance, not across real people."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SLAB, GAP = 8, 2  # slices per slab; slices dropped at each slab edge


def _templates() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(T1 in [0, 1], grey-matter and white-matter probability, brain mask 0/1) as float32, axes (x, y, z)."""
    from nilearn import datasets

    def read(image) -> np.ndarray:
        return np.asarray(image.get_fdata(), np.float32)

    t1 = read(datasets.load_mni152_template(resolution=1))
    gm = read(datasets.load_mni152_gm_template(resolution=1))
    wm = read(datasets.load_mni152_wm_template(resolution=1))
    brain = (read(datasets.load_mni152_brain_mask(resolution=1)) > 0).astype(np.float32)
    return t1 / max(float(t1.max()), 1e-6), gm, wm, brain


def _volumes() -> tuple[np.ndarray, np.ndarray]:
    """(T1 in [0, 1], tissue label 0 outside / 1 grey / 2 white / 3 CSF), axes (x, y, z) as nilearn gives."""
    t1, gm, wm, brain = _templates()
    csf = np.clip(1 - gm - wm, 0, 1) * brain
    tissue = np.argmax(np.stack([np.full_like(gm, 0.3), gm, wm, csf]), axis=0).astype(np.uint8)
    tissue[brain == 0] = 0
    return t1, tissue


def _split_of(z: int) -> str | None:
    slab, within = divmod(z, SLAB)
    if within < GAP or within >= SLAB - GAP:
        return None
    return ("train", "train", "train", "val", "test")[slab % 5]


def _appearance(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """One acquisition's look: intensity scale, offset and noise, as 8-bit."""
    scaled = image * rng.uniform(0.85, 1.15) * 235 + rng.uniform(-8, 8)
    return np.clip(scaled + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def patch_set(path: Path, *, per_class: dict[str, int] | None = None, side: int = 32, seed: int = 0) -> Path:
    """A MedMNIST-layout npz: ``{split}_images`` (N, side, side) uint8, ``{split}_labels`` (N, 1)."""
    per_class = per_class or {"train": 700, "val": 100, "test": 200}
    rng = np.random.default_rng(seed)
    t1, tissue = _volumes()
    half = side // 2
    arrays = {}
    for split, n in per_class.items():
        images, labels = [], []
        for label in (1, 2, 3):
            candidates = np.argwhere(tissue == label)
            candidates = candidates[[_split_of(int(z)) == split for z in candidates[:, 2]]]
            inside = np.all((candidates[:, :2] >= half) & (candidates[:, :2] < np.array(t1.shape[:2]) - half), axis=1)
            candidates = candidates[inside]
            for x, y, z in candidates[rng.choice(len(candidates), n, replace=False)]:
                images.append(_appearance(rng, t1[x - half : x + half, y - half : y + half, z]))
                labels.append(label - 1)
        order = rng.permutation(len(images))
        arrays[f"{split}_images"] = np.stack(images)[order]
        arrays[f"{split}_labels"] = np.asarray(labels, np.uint8)[order, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def slice_set(root: Path, *, n_train: int = 40, n_test: int = 10, seed: int = 0) -> Path:
    """MSD layout, axial slices as (X, Y, 1) NIfTI at 1 mm: labels 1 grey matter, 2 white matter."""
    from medmap.data.layouts import write_msd
    from medmap.io.image import Image

    rng = np.random.default_rng(seed)
    t1, tissue = _volumes()
    label_map = np.where(tissue == 3, 0, tissue).astype(np.uint8)
    usable = [z for z in range(40, 150) if _split_of(z) is not None]
    train_z = [z for z in usable if _split_of(z) in ("train", "val")]
    test_z = [z for z in usable if _split_of(z) == "test"]
    picks = {
        "train": sorted(rng.choice(train_z, min(n_train, len(train_z)), replace=False)),
        "test": sorted(rng.choice(test_z, min(n_test, len(test_z)), replace=False)),
    }

    def as_image(array: np.ndarray) -> Image:
        # medmap's (slice, row, column) = (z, y, x): one slice of the x-by-y plane at 1 mm
        return Image(np.ascontiguousarray(array.T[np.newaxis]), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))

    cases = {}
    for split, zs in picks.items():
        cases[split] = [
            (
                f"brain_{int(z):03d}",
                as_image(_appearance(rng, t1[:, :, z]).astype(np.int16)),
                as_image(label_map[:, :, z]),
            )
            for z in zs
        ]
    labels = {0: "background", 1: "grey matter", 2: "white matter"}
    return write_msd(root, "BrainSlices", labels, "MR", cases["train"], cases["test"])


def _deformed(rng: np.random.Generator, shape: tuple[int, ...], spacing: float) -> np.ndarray:
    """Where each voxel of a ``shape`` grid at ``spacing`` mm samples the 1 mm template: (3, *shape) indices.

    A random affine (rotation up to 10 degrees about each axis, scale 0.9-1.1, shift up to 5 mm) about the
    template's centre, plus a smooth displacement field (about 3 mm, correlated over about 20 mm)."""
    from scipy.ndimage import gaussian_filter
    from scipy.spatial.transform import Rotation

    rotation = Rotation.from_euler("xyz", rng.uniform(-10, 10, 3), degrees=True).as_matrix()
    matrix = rotation * rng.uniform(0.9, 1.1, 3)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    centred = (grid - (np.array(shape, np.float32) - 1)[:, None, None, None] / 2) * spacing  # mm
    moved = np.einsum("ij,j...->i...", matrix.astype(np.float32), centred)
    moved += rng.uniform(-5, 5, 3).astype(np.float32)[:, None, None, None]
    for axis in range(3):
        field = gaussian_filter(rng.normal(0, 1, shape).astype(np.float32), 20 / spacing / 2)
        moved[axis] += field / max(float(np.abs(field).max()), 1e-6) * 3.0
    return moved


def volume_set(root: Path, *, n_train: int = 16, n_test: int = 6, spacing: float = 2.0, seed: int = 0) -> Path:
    """MSD layout, whole brains at ``spacing`` mm, one deformation and appearance per case: 1 grey, 2 white."""
    from nilearn import datasets
    from scipy.ndimage import map_coordinates

    from medmap.data.layouts import write_msd
    from medmap.io.image import Image

    rng = np.random.default_rng(seed)
    t1, _ = _volumes()
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).get_fdata(), np.float32)
    shape = tuple(int(np.ceil(n / spacing)) for n in t1.shape)
    centre = (np.array(t1.shape, np.float32) - 1)[:, None, None, None] / 2

    def case(index: int) -> tuple[str, Image, Image]:
        where = _deformed(rng, shape, spacing) + centre  # template voxel indices (1 mm)
        sample = [map_coordinates(v, where, order=1, mode="constant") for v in (t1, gm, wm, brain)]
        image, grey, white, inside = sample
        label = np.where(inside > 0.5, np.argmax(np.stack([np.full_like(grey, 0.3), grey, white]), axis=0), 0)
        axes = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
        bias = 1 + sum(rng.uniform(-0.1, 0.1) * a for a in axes)  # a linear bias field, +-10 % per axis at most
        look = _appearance(rng, image * bias).astype(np.int16)

        def as_image(array: np.ndarray) -> Image:  # medmap's (slice, row, column) = (z, y, x)
            return Image(np.ascontiguousarray(array.transpose(2, 1, 0)), (spacing,) * 3, (0.0, 0.0, 0.0), np.eye(3))

        return f"brain_{index:03d}", as_image(look), as_image(label.astype(np.uint8))

    training = [case(i) for i in range(n_train)]
    test = [case(n_train + i) for i in range(n_test)]
    labels = {0: "background", 1: "grey matter", 2: "white matter"}
    return write_msd(root, "BrainVolumes", labels, "MR", training, test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from medmap.io.load import load

    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="small sets (the test suite)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = {"train": 20, "val": 5, "test": 10} if args.quick else None
    npz = patch_set(args.out / "brain_patches.npz", per_class=counts, seed=args.seed)
    msd = slice_set(args.out / "brain_slices", n_train=6 if args.quick else 40, n_test=3 if args.quick else 10)
    sizes = {"n_train": 2, "n_test": 1, "spacing": 4.0} if args.quick else {}
    volumes = volume_set(args.out / "brain_volumes", **sizes, seed=args.seed)
    with np.load(npz) as data:
        patches = {k: list(data[k].shape) for k in data.files}
        classes = {s: np.bincount(data[f"{s}_labels"][:, 0]).tolist() for s in ("train", "val", "test")}
    spec = json.loads((msd / "dataset.json").read_text())
    slices = {"train": spec["numTraining"], "test": spec["numTest"]}
    spec = json.loads((volumes / "dataset.json").read_text())
    labels = [np.bincount(load(volumes / e["label"]).array.ravel(), minlength=3).tolist() for e in spec["training"]]
    volume_counts = {"train": spec["numTraining"], "test": spec["numTest"], "voxels_per_class": labels}
    summary = {"patches": patches, "classes_per_split": classes, "slices": slices, "volumes": volume_counts}
    print(json.dumps(summary, indent=1))
    (args.out / "brain_data.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
