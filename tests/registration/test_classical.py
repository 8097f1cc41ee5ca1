"""Classical registration of one pair: a known transform recovered on an oblique anisotropic grid, the
result folder read back by another library, the field's regularity, and bad pairs that name themselves."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medmap.io.image import Image
from medmap.io.load import save
from medmap.tasks.registration.classical import from_ants, register
from medmap.tasks.registration.evaluate import warp_image
from medmap.tasks.registration.field import displacement_field, regularity
from medmap.tasks.registration.pair import Pair, RegistrationError, read_pair
from tests.builders import rotation
from tests.helpers import assert_one_line_error, medmap_cli

OBLIQUE = rotation(0.2, -0.15, 0.3)
SPACING = (2.5, 1.5, 1.25)  # slice, row, column: anisotropic


def phantom(shape=(28, 44, 48), spacing=SPACING, direction=OBLIQUE, blobs: int = 16) -> tuple[Image, Image]:
    """Smooth blobs of different brightness and size all over the grid (an image with structure everywhere,
    so that every affine parameter is pinned down) and a label map of the four largest, on an oblique grid."""
    rng = np.random.default_rng(7)
    grid = np.stack(np.meshgrid(*[np.arange(s) * sp for s, sp in zip(shape, spacing, strict=True)], indexing="ij"), -1)
    extent = np.asarray(shape) * np.asarray(spacing)
    image, label = np.zeros(shape, np.float32), np.zeros(shape, np.uint8)
    radii = np.sort(rng.uniform(3, 9, blobs))[::-1]
    for k, radius in enumerate(radii):
        centre = rng.uniform(0.15, 0.85, 3) * extent
        distance = np.linalg.norm(grid - centre, axis=-1)
        image += rng.uniform(40, 220) / (1 + np.exp((distance - radius) / 1.5))
        if k < 4:
            label[(distance < radius) & (label == 0)] = k + 1
    origin = (-30.0, 12.0, 40.0)
    return Image(image, spacing, origin, direction), Image(label, spacing, origin, direction)


def known_affine(fixed: sitk.Image) -> sitk.AffineTransform:
    """A rotation of about 6 degrees, 3 % scaling and a 5 mm shift about the image's centre."""
    truth = sitk.AffineTransform(3)
    truth.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in fixed.GetSize()]))
    matrix = sitk.Euler3DTransform((0, 0, 0), 0.05, -0.08, 0.06).GetMatrix()
    truth.SetMatrix((np.asarray(matrix).reshape(3, 3) @ np.diag([1.03, 0.98, 1.0])).ravel().tolist())
    truth.SetTranslation((4.0, -3.0, 2.0))
    return truth


def moved(image: sitk.Image, truth: sitk.Transform, interpolator=sitk.sitkLinear) -> sitk.Image:
    """The image as it would look if ``truth`` mapped its points onto the moving image's."""
    return sitk.Resample(image, image, truth.GetInverse(), interpolator, 0.0)


@pytest.fixture(scope="module")
def phantom_pair(tmp_path_factory):
    """fixed / moving NIfTI files with their label maps, the moving made by a known affine."""
    folder = tmp_path_factory.mktemp("pair")
    image, label = phantom()
    fixed, fixed_label = image.to_sitk(), label.to_sitk()
    truth = known_affine(fixed)
    paths = {}
    for name, img in {
        "fixed": fixed,
        "fixed_label": fixed_label,
        "moving": moved(fixed, truth),
        "moving_label": moved(fixed_label, truth, sitk.sitkNearestNeighbor),
    }.items():
        paths[name] = folder / f"{name}.nii.gz"
        save(Image.from_sitk(img), paths[name])
    return paths, truth


def test_a_known_affine_is_recovered_to_half_a_millimetre_on_an_oblique_anisotropic_grid(phantom_pair):
    paths, truth = phantom_pair
    pair = read_pair(paths["fixed"], paths["moving"])
    result = register(pair, "affine", seed=0)
    size = pair.fixed.GetSize()
    rng = np.random.default_rng(0)
    points = [
        pair.fixed.TransformContinuousIndexToPhysicalPoint(list(rng.uniform(4, np.asarray(size) - 5)))
        for _ in range(200)
    ]
    errors = [np.linalg.norm(np.subtract(result.transform.TransformPoint(p), truth.TransformPoint(p))) for p in points]
    unregistered = [np.linalg.norm(np.subtract(p, truth.TransformPoint(p))) for p in points]
    assert np.mean(unregistered) > 3.0  # the test moves things by millimetres
    assert max(errors) < 0.5, max(errors)
    assert result.notes[0].startswith("start: world coordinates")


def test_the_cli_writes_a_folder_other_libraries_read_back_on_the_fixed_grid(phantom_pair, tmp_path):
    paths, truth = phantom_pair
    out = tmp_path / "out"
    run = medmap_cli(
        "register",
        paths["fixed"],
        paths["moving"],
        "-o",
        out,
        "--method",
        "affine",
        "--fixed-label",
        paths["fixed_label"],
        "--moving-label",
        paths["moving_label"],
    )
    assert run.returncode == 0, run.stderr
    record = json.loads((out / "registration.json").read_text())
    assert record["mean_dice"]["before"] < 0.8 < record["mean_dice"]["after"]
    assert set(record["labels"]["after"]) == {"1", "2", "3", "4"}
    assert record["regularity"]["folded_share"] == 0.0
    # nibabel reads the warped image on the fixed image's grid (RAS affine = LPS affine flipped in x, y)
    fixed_nib, warped_nib = nib.load(paths["fixed"]), nib.load(out / "warped.nii.gz")
    np.testing.assert_allclose(warped_nib.affine, fixed_nib.affine, atol=1e-4)
    assert warped_nib.shape == fixed_nib.shape
    # the ITK transform file is the transform that was applied: SimpleITK's own Resample with it gives the warp
    transform = sitk.ReadTransform(str(out / "transform.tfm"))
    fixed, moving = sitk.ReadImage(str(paths["fixed"])), sitk.ReadImage(str(paths["moving"]))
    again = sitk.GetArrayFromImage(warp_image(moving, fixed, transform))
    np.testing.assert_allclose(np.asarray(warped_nib.dataobj).T, again, atol=1e-3)
    # the displacement field holds T(x) - x in LPS mm at the voxel centres
    field = sitk.ReadImage(str(out / "displacement.nii.gz"))
    index = (20, 17, 11)
    point = np.asarray(fixed.TransformIndexToPhysicalPoint(index))
    np.testing.assert_allclose(field[index], np.asarray(transform.TransformPoint(point)) - point, atol=1e-3)
    assert np.linalg.norm(np.asarray(field[index]) - (np.asarray(truth.TransformPoint(point)) - point)) < 0.5


def test_the_same_seed_gives_the_same_transform(phantom_pair):
    """The same to rounding: ITK's threads add the metric's partial sums in the order they finish."""
    paths, _ = phantom_pair
    pair = read_pair(paths["fixed"], paths["moving"])
    first, second = (register(pair, "rigid", seed=3).transform.GetParameters() for _ in range(2))
    np.testing.assert_allclose(first, second, rtol=1e-9, atol=1e-9)
    other = register(pair, "rigid", seed=4).transform.GetParameters()
    assert not np.allclose(first, other, rtol=1e-9, atol=1e-9)  # the seed does pick the sampled voxels


def test_a_deformable_method_beats_the_affine_on_a_bent_picture(tmp_path):
    """2-D: a photograph bent by a smooth field; B-spline lowers the intensity error the affine leaves."""
    image, _ = phantom(shape=(1, 96, 96), spacing=(1.0, 1.0, 1.0), direction=np.eye(3))
    fixed = image.to_sitk()[:, :, 0]
    y, x = np.mgrid[:96, :96]
    bend = np.stack([4 * np.sin(y / 96 * np.pi) * np.sin(x / 96 * 2 * np.pi), 3 * np.sin(x / 96 * np.pi)], -1)
    field = sitk.GetImageFromArray(bend, isVector=True)
    field.CopyInformation(fixed)
    moving = sitk.Resample(fixed, fixed, sitk.DisplacementFieldTransform(field), sitk.sitkLinear, 0.0)
    pair = Pair(fixed, moving, "fixed", "moving")

    def error(method):
        result = register(pair, method, seed=0)
        warped = sitk.GetArrayFromImage(warp_image(moving, fixed, result.transform))
        return float(np.abs(warped - sitk.GetArrayFromImage(fixed)).mean()), result

    affine_error, _ = error("affine")
    bspline_error, bspline = error("bspline")
    assert bspline_error < 0.7 * affine_error, (bspline_error, affine_error)
    assert regularity(displacement_field(bspline.transform, fixed))["folded_share"] < 0.005


def test_a_linear_map_has_a_constant_jacobian_border_included():
    grid = sitk.Image([40, 50, 30], sitk.sitkFloat32)
    grid.SetSpacing((2.0, 2.0, 2.0))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.05, 0.02, 0, 0, 0.97, 0.01, 0, 0.03, 1.02))
    stats = regularity(displacement_field(affine, grid))
    assert stats["folded_share"] == 0.0 and stats["sd_log_jacobian"] < 1e-9


def test_folding_is_measured_where_the_field_turns_the_grid_inside_out():
    grid = sitk.Image([32, 32, 8], sitk.sitkFloat32)
    identity = regularity(displacement_field(sitk.TranslationTransform(3, (1.0, 2.0, 0.0)), grid))
    assert identity == {"folded_share": 0.0, "sd_log_jacobian": 0.0, "max_displacement_mm": pytest.approx(np.sqrt(5))}
    x = np.arange(32, dtype=float)
    vectors = np.zeros((8, 32, 32, 3))
    vectors[..., 0] = -1.6 * np.sin(x / 32 * 2 * np.pi)[None, None, :] * 32 / (2 * np.pi)  # d/dx = -1.6 cos: folds
    field = sitk.GetImageFromArray(vectors, isVector=True)
    folded = regularity(field)
    # J = 1 - 1.6 cos(2 pi x / 32) <= 0 at 9 of the 32 columns, 7 of the 30 inside the border columns
    assert folded["folded_share"] == pytest.approx(7 / 30) and folded["sd_log_jacobian"] > 1


def test_ants_syn_is_read_back_as_ants_applies_it(phantom_pair, tmp_path):
    ants = pytest.importorskip("ants", reason="antspyx is a dev dependency: `make test` installs it")
    paths, _ = phantom_pair
    fixed, moving = ants.image_read(str(paths["fixed"])), ants.image_read(str(paths["moving"]))
    found = ants.registration(fixed, moving, "SyN", random_seed=0, outprefix=str(tmp_path / "syn_"))
    transform, _ = from_ants(found["fwdtransforms"])
    fixed_sitk, moving_sitk = sitk.ReadImage(str(paths["fixed"])), sitk.ReadImage(str(paths["moving"]))
    mine = sitk.GetArrayFromImage(warp_image(moving_sitk, fixed_sitk, transform))
    theirs = found["warpedmovout"].numpy().T  # ANTs arrays are (x, y, z)
    assert np.abs(mine - theirs).max() < 1e-3 * np.abs(theirs).max()
    swapped = sitk.CompositeTransform([transform.GetNthTransform(1), transform.GetNthTransform(0)])
    assert np.abs(sitk.GetArrayFromImage(warp_image(moving_sitk, fixed_sitk, swapped)) - theirs).max() > 1e-2


def test_bad_pairs_and_folders_name_themselves(phantom_pair, tmp_path):
    paths, _ = phantom_pair
    flat = tmp_path / "flat.png"
    save(Image(np.zeros((1, 20, 20), np.uint8)), flat)
    assert_one_line_error(medmap_cli("register", paths["fixed"], flat, "-o", tmp_path / "a"), "flat.png", "2-D")
    far = tmp_path / "far.nii.gz"
    image = sitk.ReadImage(str(paths["moving"]))
    image.SetOrigin(np.add(image.GetOrigin(), (900.0, 0, 0)).tolist())
    sitk.WriteImage(image, str(far))
    assert_one_line_error(
        medmap_cli("register", paths["fixed"], far, "-o", tmp_path / "b", "--init", "world"), "far.nii.gz", "overlap"
    )
    assert_one_line_error(
        medmap_cli(
            "register",
            paths["fixed"],
            paths["moving"],
            "-o",
            tmp_path / "c",
            "--fixed-label",
            flat,
            "--moving-label",
            paths["moving_label"],
        ),
        "flat.png",
        "grid",
    )
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert_one_line_error(medmap_cli("register", paths["fixed"], paths["moving"], "-o", taken), "taken", "not empty")
    assert (taken / "keep.txt").read_text() == "mine"
    assert_one_line_error(
        medmap_cli("register", paths["fixed"], paths["moving"], "-o", tmp_path / "d", "--method", "demons"), "demons"
    )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(RegistrationError, match="both"):
        read_pair(paths["fixed"], paths["moving"], fixed_label=paths["fixed_label"])


def test_a_small_field_of_view_inside_a_large_one_is_a_pair_not_a_refusal(phantom_pair):
    """An MR of one thigh onto a whole-body PET: the moving image covers a fraction of the fixed one."""
    paths, _ = phantom_pair
    fixed = sitk.ReadImage(str(paths["fixed"]))
    part = fixed[12:36, 10:34, 6:22]  # the middle of the volume, its world position kept
    result = register(Pair(fixed, part, "whole", "part"), "rigid", init="world", seed=0)
    assert result.overlap > 0.9
    far = sitk.Image(part)
    far.SetOrigin(np.add(part.GetOrigin(), (400.0, 0, 0)).tolist())
    with pytest.raises(RegistrationError, match="overlap"):
        register(Pair(fixed, far, "whole", "far"), "rigid", init="world", seed=0)
