"""The classical baseline detector finds nodules in generated chest CTs, in world coordinates."""

import numpy as np

from medmap.data.phantoms import chest_ct
from medmap.evaluation.blob_detector import detect_blobs
from medmap.evaluation.detection import Nodule, Scan, froc


def test_blobs_are_found_in_the_lungs_and_reported_in_millimetres():
    scans = []
    for seed in (0, 3):
        case = chest_ct(shape=(40, 192, 192), spacing=(2.5, 0.9, 0.9), seed=seed, n_nodules=3)
        detections = detect_blobs(case.image, keep=30)
        scores = [d.score for d in detections]
        assert detections and scores == sorted(scores, reverse=True)
        index = case.image.world_to_index(np.array([d.centre for d in detections]))
        assert np.all(index > -0.5) and np.all(index < np.array(case.image.shape) - 0.5)
        assert all(3.0 <= d.diameter_mm <= 30.0 for d in detections)
        scans.append(Scan(str(seed), [Nodule(n.position, n.diameter_mm) for n in case.nodules], detections))
    result = froc(scans)
    assert result["sensitivity_at"][-1] >= 0.5  # at 8 false positives per scan
    assert result["found_at_any_score"] >= 4
