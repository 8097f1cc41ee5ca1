"""FROC and CPM as LUNA16 computes them, against an example worked by hand."""

import numpy as np
import pytest

from medmap.evaluation.detection import FP_RATES, Detection, Nodule, Scan, froc, froc_with_ci, match


def hand_worked_scans() -> list[Scan]:
    """Scan A: two nodules, one found twice, one false positive; scan B: a detection just outside its
    nodule's radius (a false positive) and one just inside."""
    a = Scan(
        "A",
        [Nodule((0, 0, 0), 10), Nodule((50, 0, 0), 6)],
        [
            Detection((1, 1, 1), 0.9),  # 1.73 mm from the first nodule's centre, radius 5: a hit
            Detection((50, 0, 2), 0.6),  # 2 mm from the second, radius 3: a hit
            Detection((100, 0, 0), 0.8),  # near nothing: a false positive
            Detection((0, 4, 0), 0.3),  # the first nodule again, with a lower score: neither a hit nor an FP
        ],
    )
    b = Scan("B", [Nodule((0, 0, 0), 8)], [Detection((0, 0, 5), 0.7), Detection((0, 0, 3.9), 0.4)])
    return [a, b]


def test_matching_uses_the_nodule_radius_in_millimetres():
    found, fps = match(hand_worked_scans()[1])
    assert found.tolist() == [0.4] and fps.tolist() == [0.7]  # 5 mm is outside a 4 mm radius, 3.9 inside


def test_froc_and_cpm_match_the_hand_computed_values():
    # thresholds 0.9, 0.8, 0.7, 0.6, 0.4 give (FP per scan, sensitivity) (0, 1/3), (0.5, 1/3), (1, 1/3),
    # (1, 2/3), (1, 1): at 1/8, 1/4, 1/2 FP per scan 1/3 found, from 1 FP per scan on all three
    result = froc(hand_worked_scans())
    assert result["nodules"] == 3 and result["scans"] == 2 and result["found_at_any_score"] == 3
    assert result["rates"] == list(FP_RATES)
    assert result["sensitivity_at"] == pytest.approx([1 / 3] * 3 + [1.0] * 4)
    assert result["cpm"] == pytest.approx(5 / 7)


def test_interpolates_between_operating_points_and_never_exceeds_what_was_found():
    scans = [Scan("A", [Nodule((0, 0, 0), 10), Nodule((30, 0, 0), 10)], [Detection((0, 0, 0), 0.5)])]
    scans.append(Scan("B", [], [Detection((9, 9, 9), 0.9), Detection((8, 8, 8), 0.1)]))
    # (FP per scan, sensitivity): (0.5, 0) at 0.9, (0.5, 0.5) at 0.5, (1, 0.5) at 0.1; the second nodule never
    result = froc(scans, rates=(0.25, 0.5, 8.0))
    assert result["sensitivity_at"] == pytest.approx([0.25, 0.5, 0.5])
    assert result["found_at_any_score"] == 1


def test_bootstrap_interval_is_by_scan_and_contains_the_estimate():
    rng = np.random.default_rng(0)
    scans = []
    for i in range(12):
        nodules = [Nodule(tuple(rng.uniform(-100, 100, 3)), 8.0) for _ in range(2)]
        detections = [Detection(n.centre, float(rng.uniform(0.3, 1.0))) for n in nodules[: 1 + i % 2]]
        detections += [Detection(tuple(rng.uniform(200, 300, 3)), float(rng.uniform(0, 0.8))) for _ in range(3)]
        scans.append(Scan(f"s{i}", nodules, detections))
    result = froc_with_ci(scans, n_boot=300, seed=1)
    low, high = result["cpm_ci"]
    assert low <= result["cpm"] <= high and high - low > 0.01
    assert froc_with_ci(scans, n_boot=300, seed=1)["cpm_ci"] == result["cpm_ci"]  # seeded
    assert all(lo <= s <= hi for s, (lo, hi) in zip(result["sensitivity_at"], result["sensitivity_at_ci"], strict=True))


def test_the_margin_over_a_baseline_is_worded_by_where_its_interval_lies():
    from medmap.evaluation.wording import margin_verdict

    assert margin_verdict((0.02, 0.3)) == "supported"
    assert "WORSE" in margin_verdict((-0.68, -0.36))  # not "includes 0": it does not
    assert "includes 0" in margin_verdict((-0.1, 0.2))


def test_average_precision_at_iou_0_1_matches_the_hand_computed_value():
    from medmap.evaluation.detection import average_precision, box_iou, by_size

    assert box_iou(((50, 0, 0), 10), ((58, 0, 0), 10)) == pytest.approx(200 / 1800)  # 0.111: a hit at 0.1
    assert box_iou(((50, 0, 0), 10), ((59, 0, 0), 10)) == pytest.approx(100 / 1900)  # 0.053: not
    nodules = [Nodule((0, 0, 0), 10), Nodule((50, 0, 0), 10)]
    detections = [Detection((0, 0, 0), 0.9, 10), Detection((100, 0, 0), 0.8, 10), Detection((51, 0, 0), 0.7, 10)]
    detections.append(Detection((1, 0, 0), 0.6, 10))  # a second detection of a taken nodule: a false positive
    # ranked TP FP TP FP: recall .5 .5 1 1, precision 1 .5 .667 .5; interpolated: 1 for recall <= .5 (51 of
    # the 101 points), .667 above (50 points)
    assert average_precision([Scan("A", nodules, detections)]) == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert np.isnan(average_precision([Scan("A", nodules, [Detection((0, 0, 0), 0.9)])]))  # no diameter, no box
    sizes = by_size([Scan("A", [*nodules, Nodule((200, 0, 0), 4)], detections)], threshold=0.75)
    assert sizes["6-10 mm"]["nodules"] == 0 and sizes[">= 10 mm"] == {"found": 1, "nodules": 2, "sensitivity": 0.5}
    assert sizes["< 6 mm"]["found"] == 0 and sizes["< 6 mm"]["nodules"] == 1
