"""Any transform as a displacement field on the fixed grid, and the field's regularity.

The field is what the deformable DICOM object stores and what a learned model predicts, so every method
is compared through it: folding (a non-positive Jacobian determinant: the anatomy turned inside out) is
reported beside Dice, because a method can buy overlap by folding.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def displacement_field(transform: sitk.Transform, fixed: sitk.Image) -> sitk.Image:
    """u(x) = T(x) - x in world mm (LPS) at every voxel centre of ``fixed``: a vector image on its grid."""
    to_field = sitk.TransformToDisplacementFieldFilter()
    to_field.SetReferenceImage(fixed)
    to_field.SetOutputPixelType(sitk.sitkVectorFloat64)
    return to_field.Execute(transform)


def jacobian_determinant(field: sitk.Image) -> np.ndarray:
    """det(I + du/dx) per voxel, derivatives in mm (the image's spacing and direction)."""
    return sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field, True))


def regularity(field: sitk.Image, mask: np.ndarray | None = None) -> dict[str, float]:
    """Folding share, the standard deviation of log |J| (Learn2Reg's SDlogJ) and the largest displacement.

    ``mask`` (on the fixed grid) restricts the statistics to the anatomy, as the published tables do.
    """
    jac = jacobian_determinant(field)
    vectors = sitk.GetArrayViewFromImage(field)
    length = np.linalg.norm(vectors, axis=-1)
    if mask is not None:
        keep = np.asarray(mask, dtype=bool).reshape(jac.shape)
        jac, length = jac[keep], length[keep]
    jac = np.asarray(jac, dtype=np.float64).ravel()
    return {
        "folded_share": float(np.mean(jac <= 0)) if jac.size else float("nan"),
        "sd_log_jacobian": float(np.std(np.log(np.clip(jac, 1e-9, 1e9)))) if jac.size else float("nan"),
        "max_displacement_mm": float(length.max()) if length.size else float("nan"),
    }
