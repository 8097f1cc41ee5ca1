"""Classical registration of one pair, no training: rigid, affine and B-spline with SimpleITK (mutual
information, so CT to MR works as MR to MR does), SyN with ANTs. Every method starts from the linear one
before it, and every choice it makes is written into the result's notes.

Why these settings: Mattes mutual information (32 bins, a seeded random 20 % of the voxels) is the
multi-modal metric both toolkits' own examples use; three resolution levels (shrink 4, 2, 1; smoothing
2, 1, 0 voxels) avoid the local optima a full-resolution start falls into; optimiser scales from physical
shift make a millimetre of translation and a millimetre of rotation at the image's edge weigh the same.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medmap.tasks.registration.pair import Pair, RegistrationError, common_share

METHODS = ("rigid", "affine", "bspline", "syn")
INITS = ("auto", "world", "geometry", "moments")
MIN_OVERLAP = 0.1  # a result that leaves less of the fixed image inside the moving one aligned nothing


@dataclass
class Registration:
    """A transform mapping fixed-image points to moving-image points, and how it was found."""

    transform: sitk.Transform
    method: str
    linear: sitk.Transform  # the rigid or affine part (transform.tfm); the whole transform for rigid / affine
    metric: float  # the final mutual information (negative: lower is better), as the optimiser saw it
    seconds: float
    overlap: float  # share of the smaller field of view the two images have in common (pair.common_share)
    notes: list[str] = field(default_factory=list)


def check_options(method: str, init: str) -> None:
    if method not in METHODS:
        raise RegistrationError(f"unknown registration method {method!r}; use one of {', '.join(METHODS)}")
    if init not in INITS:
        raise RegistrationError(f"unknown initialisation {init!r}; use one of {', '.join(INITS)}")


def register(pair: Pair, method: str = "affine", *, init: str = "auto", seed: int = 0) -> Registration:
    """Align ``pair.moving`` onto ``pair.fixed`` with ``method`` (one of `METHODS`)."""
    check_options(method, init)
    start = time.perf_counter()
    notes: list[str] = []
    fixed, moving = pair.fixed, pair.moving
    if method == "syn":
        transform, linear, metric = _syn(pair, seed, notes)
    else:
        initial = _initial(pair, init, notes)
        rigid, metric = _optimise(fixed, moving, initial, seed)
        notes.append("rigid: Euler transform, mutual information, 3 resolution levels")
        linear = rigid
        if method in ("affine", "bspline"):
            affine = sitk.AffineTransform(pair.dimension)
            affine.SetCenter(rigid.GetCenter())
            affine.SetMatrix(rigid.GetMatrix())
            affine.SetTranslation(rigid.GetTranslation())
            linear, metric = _optimise(fixed, moving, affine, seed)
            notes.append("affine: from the rigid result, mutual information, 3 resolution levels")
        transform = linear
        if method == "bspline":
            transform, metric = _bspline(fixed, moving, linear, seed, notes)
    overlap = common_share(fixed, moving, linear)  # the linear part: invertible, and it places the images
    if overlap < MIN_OVERLAP:
        raise RegistrationError(
            f"{pair.moving_name}: after {method} registration the two images share {overlap:.0%} of the smaller "
            f"field of view ({pair.fixed_name}): no common field of view"
        )
    return Registration(transform, method, linear, metric, time.perf_counter() - start, overlap, notes)


def _initial(pair: Pair, init: str, notes: list[str]) -> sitk.Transform:
    """The starting rigid transform: the scanners' world coordinates, or centres aligned."""
    rigid = sitk.Euler2DTransform() if pair.dimension == 2 else sitk.Euler3DTransform()
    world = common_share(pair.fixed, pair.moving, sitk.TranslationTransform(pair.dimension))
    if init == "world" and world == 0:
        raise RegistrationError(
            f"{pair.moving_name} and {pair.fixed_name} do not overlap in world coordinates; use --init moments "
            "or --init geometry to align their centres first"
        )
    frames = {i.meta.frame_of_reference_uid for i in (pair.fixed_image, pair.moving_image) if i is not None}
    frames.discard("")
    # world coordinates compare only within one frame of reference (PS3.3 C.7.4.1): two DICOM series with
    # different ones (another session, another scanner) are started from their centres of mass instead
    comparable = len(frames) != 2
    if init == "world" or (init == "auto" and world >= 0.5 and comparable):
        centre = pair.fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in pair.fixed.GetSize()])
        rigid.SetCenter(centre)
        notes.append(
            f"start: world coordinates as the scanners wrote them ({world:.0%} of the smaller field of view shared)"
        )
        return rigid
    chosen = "moments" if init == "auto" else init
    mode = (
        sitk.CenteredTransformInitializerFilter.MOMENTS
        if chosen == "moments"
        else sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    start = sitk.CenteredTransformInitializer(pair.fixed, pair.moving, rigid, mode)
    why = "centres of intensity mass aligned" if chosen == "moments" else "centres of the images aligned"
    reason = "different frames of reference" if not comparable else f"world coordinates share {world:.0%}"
    notes.append(f"start: {why} ({reason})")
    return start


def _method(fixed: sitk.Image, seed: int) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    levels = [f for f in (4, 2, 1) if min(fixed.GetSize()) // f >= 8] or [1]
    reg.SetShrinkFactorsPerLevel(levels)
    reg.SetSmoothingSigmasPerLevel([{4: 2, 2: 1, 1: 0}[f] for f in levels])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return reg


def _optimise(
    fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, seed: int
) -> tuple[sitk.Transform, float]:
    reg = _method(fixed, seed)
    # regular steps (2 mm, halved on every reversal): plain gradient descent's convergence window stopped
    # at the coarsest level after 12 iterations on a 6 mm, 9 degree test shift, 4 mm from the answer
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-4, numberOfIterations=200, relaxationFactor=0.5
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(initial, inPlace=False)
    found = reg.Execute(fixed, moving)
    return _unwrapped(found), reg.GetMetricValue()


def _unwrapped(transform: sitk.Transform) -> sitk.Transform:
    """Registration returns its result inside a composite; the single transform is what a file should hold."""
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        return transform.GetNthTransform(0).Downcast()
    return transform.Downcast()


def control_mesh(fixed: sitk.Image, per_side: int = 4) -> list[int]:
    """B-spline mesh cells per axis: control points a quarter of the largest extent apart, alike in mm on
    every axis. On the benchmark's small brain pairs (4 mm) 8 cells and 100 iterations took 39 s for a
    label Dice of 0.827, 4 cells and 30 iterations 8.9 s for 0.836 (the affine alone: 0.838)."""
    extent = np.asarray(fixed.GetSize()) * np.asarray(fixed.GetSpacing())
    step = float(extent.max()) / per_side
    return [max(1, round(e / step)) for e in extent]


def _bspline(
    fixed: sitk.Image, moving: sitk.Image, linear: sitk.Transform, seed: int, notes: list[str]
) -> tuple[sitk.Transform, float]:
    mesh = control_mesh(fixed)
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    reg = _method(fixed, seed)
    # L-BFGS-B on one mesh over the three image levels: a mesh refined between levels needs optimiser
    # scales for every new parameter, and estimating them took 229 s against 1 s for the affine on a
    # 48 x 48 x 40 test volume, for a worse fit
    reg.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=30,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=100,
        costFunctionConvergenceFactor=1e7,
    )
    reg.SetMovingInitialTransform(linear)
    reg.SetInitialTransform(bspline, inPlace=True)
    reg.Execute(fixed, moving)
    notes.append(
        f"B-spline: cubic, a {'x'.join(map(str, mesh))} control mesh on top of the affine, L-BFGS-B, mutual information"
    )
    # points of the fixed image go through the B-spline first, then the affine (the moving initial transform)
    return sitk.CompositeTransform([linear, bspline]), reg.GetMetricValue()


def _syn(pair: Pair, seed: int, notes: list[str]) -> tuple[sitk.Transform, sitk.Transform, float]:
    """ANTs SyN (its own rigid + affine + SyN stages, mutual information then cross-correlation)."""
    try:
        import ants
    except ImportError:
        raise RegistrationError("--method syn needs ANTs: pip install antspyx (medmap[ants])") from None
    with tempfile.TemporaryDirectory(prefix="medmap-syn-") as tmp:
        folder = Path(tmp)
        sitk.WriteImage(pair.fixed, str(folder / "fixed.nii.gz"))
        sitk.WriteImage(pair.moving, str(folder / "moving.nii.gz"))
        result = ants.registration(
            fixed=ants.image_read(str(folder / "fixed.nii.gz")),
            moving=ants.image_read(str(folder / "moving.nii.gz")),
            type_of_transform="SyN",
            random_seed=seed,
            outprefix=str(folder / "syn_"),
        )
        transform, affine = from_ants(result["fwdtransforms"])
        metric = float(
            ants.image_mutual_information(result["warpedmovout"], ants.image_read(str(folder / "fixed.nii.gz")))
        )
    notes.append("SyN (ANTs, antspyx): its rigid, affine and symmetric-normalisation stages with their defaults")
    return transform, affine, metric


def from_ants(forward: list[str]) -> tuple[sitk.CompositeTransform, sitk.Transform]:
    """ANTs' forward transform files ``[warp, affine]`` as one SimpleITK transform (and its affine part).

    ANTs applies the list last-first to a fixed point (the affine, then the warp); a SimpleITK composite
    applies its list last-first too, so the affine goes first in it (checked against ANTs' own warped image).
    """
    warp_path, affine_path = forward
    affine = sitk.ReadTransform(affine_path).Downcast()
    warp = sitk.DisplacementFieldTransform(sitk.ReadImage(warp_path, sitk.sitkVectorFloat64))
    return sitk.CompositeTransform([affine, warp]), affine
