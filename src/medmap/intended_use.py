"""What a model was trained on, and the check that keeps it there: the intended use.

A model answers only on input like its training data; a liver model sent a chest CT must say "not
assessed", not outline a liver in the chest wall. A run writes ``intended_use.json`` (a bundle carries it)
with what it learnt from its own training cases:

- header facts: modality, dimensionality, BodyPartExamined values (seen in training or declared with
  ``bundle create --body-part``), the range of voxel spacings;
- a *profile* of the images as the data pipeline reads them, before normalisation: for CT the share of
  voxels in Hounsfield bands (air, lung, fat, soft tissue, bone, ...), for other modalities the shape of
  the intensity histogram, and the field of view in mm. A new image's distance is how far its features
  lie outside the range of the development images, in units of each feature's spread; the acceptance
  threshold is calibrated on the validation cases (`Profile.fit`), never on test cases;
- for lesion-level models, a second profile of the cube around each lesion (a "nodule" in the liver or in
  the air outside the body is refused by it).

Why image statistics and not a feature-space distance in the network: they are cheap, independent of the
weights and of the inference engine (ONNX, TorchScript), and every refusal can say why in one line
("lung density (-900 to -500 HU) 31 % of the voxels; training 0-3 %"), which a PACS engineer can act on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from medmap.errors import ConfigError, MedmapError

FILE = "intended_use.json"

# Hounsfield bands: physical tissue classes, the same on every calibrated CT scanner.
CT_EDGES = (-900.0, -500.0, -150.0, -30.0, 100.0, 400.0)
CT_BANDS = (
    "air (< -900 HU)",
    "lung density (-900 to -500 HU)",
    "-500 to -150 HU",
    "fat (-150 to -30 HU)",
    "soft tissue (-30 to 100 HU)",
    "dense tissue (100 to 400 HU)",
    "bone or metal (>= 400 HU)",
)
# Other modalities have no absolute scale: the histogram's shape, as quantiles between the 1st and 99th
# percentile (0 = 1st, 1 = 99th).
QUANTILES = (5, 25, 50, 75, 95)
QUANTILE_NAMES = tuple(f"intensity {q}th percentile (0-1 between 1st and 99th)" for q in QUANTILES)
AXES = ("slice", "row", "column")

# The smallest spread a feature is given, whatever the training set shows: a handful of near-identical
# training images must not make a two-percentage-point difference look foreign.
SCALE_FLOOR = {"fraction": 0.02, "quantile": 0.03, "log2_mm": 0.25}
MIN_THRESHOLD = 2.0  # spreads beyond the range of the development (training + validation) images
MAX_THRESHOLD = 4.0
CALIBRATION_MARGIN = 1.25  # threshold = margin x the largest validation distance, within [MIN, MAX]
# Spacing: a coarser image than any in training lacks detail the model relies on (refused beyond 2x the
# coarsest); a finer one is resampled to the plan's spacing without loss (refused only below 1/4 of the
# finest, where it is likely another kind of acquisition).
COARSER_FACTOR = 2.0
FINER_FACTOR = 4.0


class OutOfUseError(MedmapError):
    """An input outside the model's intended use: the model does not answer on it."""


def feature_names(kind: str, shape: tuple[int, ...] | None = None) -> tuple[list[str], list[str]]:
    """Names and units of the features `describe` returns for ``kind``; field-of-view features for the
    axes of ``shape`` longer than one voxel (none without a shape: lesion regions)."""
    if kind == "ct":
        names, units = list(CT_BANDS), ["fraction"] * len(CT_BANDS)
    else:
        names, units = list(QUANTILE_NAMES), ["quantile"] * len(QUANTILE_NAMES)
    for axis, n in enumerate((shape or ())[:3]):
        if n > 1:
            names.append(f"field of view along the {AXES[axis]} axis")
            units.append("log2_mm")
    return names, units


def describe(array: np.ndarray, spacing, kind: str, *, extent: bool = True) -> list[float]:
    """Features of an image (``[Z, Y, X]`` or ``[Z, Y, X, C]``, first channel used), in the order of
    `feature_names`: intensity features, then (``extent``) log2 of the field of view in mm per axis."""
    values = np.asarray(array)
    if values.ndim == 4:
        values = values[..., 0]
    values = values.astype(np.float32, copy=False).ravel()
    if kind == "ct":
        counts = np.bincount(np.searchsorted(np.asarray(CT_EDGES, dtype=np.float32), values, side="right"), minlength=7)
        features = list(counts / max(values.size, 1))
    else:
        q = np.percentile(values, [1, *QUANTILES, 99])
        span = float(q[-1] - q[0]) or 1.0
        features = list((q[1:-1] - q[0]) / span)
    if extent:
        shape = np.asarray(array).shape[:3]
        features += [np.log2(n * s) for n, s in zip(shape, spacing, strict=True) if n > 1]
    return [float(f) for f in features]


def profile_kind(modality: str) -> str:
    return "ct" if (modality or "").upper() == "CT" else "relative"


def _shown(value: float, unit: str) -> str:
    if unit == "fraction":
        return f"{100 * value:.1f} %"
    if unit == "log2_mm":
        return f"{2**value:.0f} mm"
    return f"{value:.2f}"


@dataclass
class Profile:
    """The training images' features (centre, spread, range) and the calibrated acceptance threshold."""

    kind: str
    names: list[str]
    units: list[str]
    center: list[float]
    scale: list[float]
    low: list[float]
    high: list[float]
    threshold: float
    calibration: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, train: list[list[float]], val: list[list[float]], kind: str, names, units) -> Profile:
        """Calibrate on validation, then describe all development cases.

        The validation cases' distances to the *training* range say how far unseen in-distribution images
        fall outside it: the threshold is 1.25 x the largest, kept within [2, 4] spreads (a small training
        set with one atypical validation case must not switch the check off). The range finally accepted
        is that of training and validation cases together (never test cases)."""
        floor = np.asarray([SCALE_FLOOR[u] for u in units])

        def described(rows) -> Profile:
            x = np.asarray(rows, dtype=np.float64)
            return cls(
                kind=kind,
                names=list(names),
                units=list(units),
                center=np.median(x, axis=0).tolist(),
                scale=np.maximum(x.std(axis=0), floor).tolist(),
                low=x.min(axis=0).tolist(),
                high=x.max(axis=0).tolist(),
                threshold=MIN_THRESHOLD,
            )

        val_d = [described(train).distance(f)[0] for f in val]
        profile = described([*train, *val])
        largest = max(val_d, default=0.0)
        profile.threshold = float(np.clip(CALIBRATION_MARGIN * largest, MIN_THRESHOLD, MAX_THRESHOLD))
        profile.calibration = {
            "training_cases": len(train),
            "validation_cases": len(val),
            "validation_outside_training_range": int(sum(d > 0 for d in val_d)),
            "largest_validation_distance": round(largest, 3),
            "rule": f"threshold = {CALIBRATION_MARGIN} x largest validation distance to the training range, "
            f"within [{MIN_THRESHOLD}, {MAX_THRESHOLD}]; range of training + validation cases",
        }
        return profile

    def distance(self, features: list[float]) -> tuple[float, np.ndarray]:
        """How far outside the training range the features lie, in training spreads (0: inside it)."""
        f = np.asarray(features)
        above = np.where(np.asarray(self.units) == "log2_mm", 0.0, f - np.asarray(self.high))
        # a larger field of view than in training is fine (the window slides over it), a smaller one may
        # cut the anatomy off: only that side counts for the field-of-view features
        excess = np.maximum(0.0, np.maximum(above, np.asarray(self.low) - f))
        z = excess / np.asarray(self.scale)
        return float(z.max()), z

    def reasons(self, features: list[float], what: str) -> list[str]:
        """Empty when ``features`` are within the threshold; else the two most deviant features, in words."""
        if len(features) != len(self.center):
            return [f"{what}: {len(features)} image features, the model's profile has {len(self.center)}"]
        score, z = self.distance(features)
        if score <= self.threshold:
            return []
        worst = [int(i) for i in np.argsort(-np.abs(z))[:2] if abs(z[i]) > self.threshold]
        parts = [
            f"{self.names[i]} {_shown(features[i], self.units[i])}, training "
            f"{_shown(self.low[i], self.units[i])} to {_shown(self.high[i], self.units[i])}"
            for i in worst
        ]
        return [f"{what} unlike the training images (distance {score:.1f} > {self.threshold:.1f}: {'; '.join(parts)})"]


@dataclass
class IntendedUse:
    """What the model accepts; `check_image` and `check_lesion` return the reasons to refuse (none: accept)."""

    modality: str
    dims: int
    body_parts: list[str]
    spacing_min: list[float]
    spacing_max: list[float]
    series: Profile | None = None
    lesion: Profile | None = None

    def check_image(self, image) -> list[str]:
        reasons = []
        modality = (image.meta.modality or "").upper()
        if self.modality and modality and modality != self.modality.upper():
            reasons.append(f"modality {modality}, the model is for {self.modality}")
        dims = 2 if image.is_2d else 3
        if dims != self.dims:
            reasons.append(f"a {dims}-D image, the model was trained on {self.dims}-D images")
        part = (image.meta.body_part or "").strip().upper()
        if part and self.body_parts and part not in self.body_parts:
            reasons.append(f"BodyPartExamined {part}, the model is for {', '.join(self.body_parts)}")
        for axis, (n, s) in enumerate(zip(image.shape, image.spacing, strict=True)):
            low, high = self.spacing_min[axis], self.spacing_max[axis]
            if n > 1 and low > 0 and not low / FINER_FACTOR <= s <= high * COARSER_FACTOR:
                reasons.append(
                    f"{AXES[axis]} spacing {s:.3g} mm, training images {low:.3g} to {high:.3g} mm (accepted "
                    f"from {low / FINER_FACTOR:.3g} to {high * COARSER_FACTOR:.3g} mm)"
                )
        if self.series is not None and not reasons:  # the profile means little once a header fact is off
            reasons += self.series.reasons(describe(image.array, image.spacing, self.series.kind), "the image is")
        return reasons

    def check_lesion(self, raw_cube: np.ndarray, position) -> list[str]:
        if self.lesion is None:
            return []
        where = "the region around the lesion at " + ", ".join(f"{v:.1f}" for v in position) + " mm (LPS) is"
        return self.lesion.reasons(describe(raw_cube, (1.0, 1.0, 1.0), self.lesion.kind, extent=False), where)

    def summary(self) -> list[str]:
        """The intended use in sentences, for the model card and the node's page."""
        lines = [f"{self.modality or 'any modality'}, {self.dims}-D images"]
        if self.body_parts:
            lines.append(f"BodyPartExamined {', '.join(self.body_parts)} (other values are refused)")
        spans = [
            f"{AXES[a]} {lo:.3g}-{hi:.3g} mm"
            for a, (lo, hi) in enumerate(zip(self.spacing_min, self.spacing_max, strict=True))
            if lo > 0
        ]
        lines.append(
            f"voxel spacing in training: {', '.join(spans)} (accepted down to 1/{FINER_FACTOR:g} of the finest, "
            f"up to {COARSER_FACTOR:g}x the coarsest)"
        )
        for what, p in (("image", self.series), ("lesion region", self.lesion)):
            if p is not None:
                c = p.calibration
                lines.append(
                    f"{what} profile from {c.get('training_cases')} training cases, threshold {p.threshold:.1f} "
                    f"calibrated on {c.get('validation_cases')} validation cases"
                )
        return lines

    # --- files -------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IntendedUse:
        d = dict(d)
        for key in ("series", "lesion"):
            d[key] = Profile(**d[key]) if d.get(key) else None
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: Path) -> IntendedUse | None:
        """The record at ``path``, or None when there is none (runs and bundles made before medmap wrote it)."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path}: not a valid intended-use record ({type(exc).__name__})") from None

    def with_body_parts(self, parts: list[str]) -> IntendedUse:
        merged = sorted({*self.body_parts, *(p.strip().upper() for p in parts if p.strip())})
        return replace(self, body_parts=merged)


def case_record(image, modality: str) -> dict:
    """What the cache keeps of one training image for the intended use (no pixels, no identifiers)."""
    return {
        "features": describe(image.array, image.spacing, profile_kind(modality)),
        "body_part": (image.meta.body_part or "").strip().upper(),
        "spacing": list(image.spacing),
        "shape": list(image.shape),
    }


def lesion_record(raw_cube: np.ndarray, modality: str) -> list[float]:
    return describe(raw_cube, (1.0, 1.0, 1.0), profile_kind(modality), extent=False)


def fit_intended_use(modality: str, train: list[dict], val: list[dict]) -> IntendedUse:
    """The record from the cache's per-case records (`case_record`, plus ``lesion`` features for lesion
    cases) of the training cases, its thresholds calibrated on the validation cases. Lesion cases of one
    image share its image record; each image counts once."""

    def images(records: list[dict]) -> list[dict]:
        unique = {json.dumps(r["features"]): r for r in records}
        return list(unique.values())

    kind = profile_kind(modality)
    train_images, val_images = images(train), images(val)
    shapes = np.asarray([r["shape"] for r in train_images])
    spacings = np.asarray([r["spacing"] for r in train_images], dtype=np.float64)
    varies = shapes.min(axis=0) > 1  # an axis that is 1 in some training image (2-D) has no spacing range
    names, units = feature_names(kind, tuple(shapes[0]))
    series = Profile.fit([r["features"] for r in train_images], [r["features"] for r in val_images], kind, names, units)
    lesion = None
    if any("lesion" in r for r in train):
        lnames, lunits = feature_names(kind)
        lesion = Profile.fit(
            [r["lesion"] for r in train], [r["lesion"] for r in val if "lesion" in r], kind, lnames, lunits
        )
    return IntendedUse(
        modality=modality,
        dims=2 if shapes[:, 0].max() == 1 else 3,
        body_parts=sorted({r["body_part"] for r in train_images + val_images if r["body_part"]}),
        spacing_min=[float(v) if ok else 0.0 for v, ok in zip(spacings.min(axis=0), varies, strict=True)],
        spacing_max=[float(v) if ok else 0.0 for v, ok in zip(spacings.max(axis=0), varies, strict=True)],
        series=series,
        lesion=lesion,
    )
