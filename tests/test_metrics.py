"""Hand-computed checks of every metric in dinoseg.metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dinoseg.io import InputError
from dinoseg.metrics import GT_B, GT_B_MATCH, SegmentationMeter, boundary, dilate


def grid(rows: list[str]) -> np.ndarray:
    """Build a (H, W) uint8 mask from strings: '.' = 0, '#' = 1, 'x' = 255."""
    table = {".": 0, "#": 1, "x": 255}
    return np.array([[table[ch] for ch in row] for row in rows], dtype=np.uint8)


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[top : top + side, left : left + side] = True
    return m


# target: left two columns are the class (8 px), prediction: left three columns (12 px)
TARGET = grid(["##..", "##..", "##..", "##.."])
PRED = grid(["###.", "###.", "###.", "###."]).astype(bool)


def test_hand_computed_single_episode() -> None:
    m = SegmentationMeter(safety_classes=[3])
    m.update(PRED, TARGET, class_id=3)
    s = m.summary()
    # TP 8, FP 4, FN 0, TN 4
    assert s["miou"] == pytest.approx(100 * 8 / 12)
    assert s["fg_iou"] == pytest.approx(100 * 8 / 12)
    assert s["bg_iou"] == pytest.approx(100 * 4 / 8)
    assert s["fb_iou"] == pytest.approx((100 * 8 / 12 + 50) / 2)
    assert s["pixel_accuracy"] == pytest.approx(75.0)
    assert s["safety"]["3"]["fnr"] == 0.0
    assert s["safety"]["3"]["fpr"] == pytest.approx(50.0)  # 4 of 8 background pixels
    assert s["episodes"] == 1 and s["classes"] == 1


def test_perfect_prediction() -> None:
    m = SegmentationMeter()
    m.update(TARGET == 1, TARGET, class_id=0)
    s = m.summary()
    assert s["miou"] == s["fb_iou"] == s["pixel_accuracy"] == 100.0


def test_intersection_and_union_are_summed_over_episodes_before_dividing() -> None:
    m = SegmentationMeter()
    target_a = grid(["####", "....", "....", "...."])  # 4 px
    m.update(grid(["#...", "....", "....", "...."]).astype(bool), target_a, 5)  # IoU 1/4
    target_b = grid(["####", "####", "....", "...."])  # 8 px
    m.update(target_b == 1, target_b, 5)  # IoU 1
    # HSNet: (1 + 8) / (4 + 8) = 75 %, not the mean of episode IoUs (62.5 %)
    assert m.summary()["miou"] == pytest.approx(75.0)
    assert m.summary()["per_class"]["5"]["episodes"] == 2


def test_miou_is_the_mean_over_classes() -> None:
    m = SegmentationMeter(class_names={3: "road", 7: "car"})
    m.update(grid(["#...", "#..."]).astype(bool), grid(["##..", "...."]), 3)  # 1 / 3
    m.update(grid(["##..", "...."]).astype(bool), grid(["##..", "...."]), 7)  # 1
    s = m.summary()
    assert s["per_class"]["3"]["name"] == "road" and s["per_class"]["3"]["episodes"] == 1
    assert s["per_class"]["3"]["iou"] == pytest.approx(100 / 3)
    assert s["per_class"]["7"]["iou"] == 100.0
    assert s["miou"] == pytest.approx((100 / 3 + 100) / 2)
    # FB-IoU pools both episodes: TP 1 + 2, FP 1, FN 1 -> fg 3 / 5; TN 5 + 6 -> bg 11 / 13
    assert s["fg_iou"] == pytest.approx(60.0)
    assert s["bg_iou"] == pytest.approx(100 * 11 / 13)
    assert s["fb_iou"] == pytest.approx((60.0 + 100 * 11 / 13) / 2)


def test_empty_prediction() -> None:
    m = SegmentationMeter(safety_classes=[1])
    target = grid(["##..", "##..", "....", "...."])
    m.update(np.zeros((4, 4), dtype=bool), target, 1)
    s = m.summary()
    assert s["miou"] == 0.0
    assert s["bg_iou"] == pytest.approx(75.0)  # TN 12 / (12 + FN 4)
    assert s["fb_iou"] == pytest.approx(37.5)
    assert s["pixel_accuracy"] == pytest.approx(75.0)
    assert s["boundary_f1"] == 0.0
    assert s["safety"]["1"]["fnr"] == 100.0 and s["safety"]["1"]["fpr"] == 0.0


def test_empty_ground_truth() -> None:
    m = SegmentationMeter(safety_classes=[2])
    pred = square(4, 1, 1, 2)
    m.update(pred, np.zeros((4, 4), dtype=np.uint8), 2)
    s = m.summary()
    assert s["miou"] == 0.0  # TP 0 / FP 4
    assert s["boundary_f1"] == 0.0  # 4 predicted edge pixels, none near a true edge
    assert s["bg_iou"] == pytest.approx(75.0)
    assert s["safety"]["2"]["fnr"] is None  # no class pixels to miss
    assert s["safety"]["2"]["fpr"] == pytest.approx(25.0)


def test_empty_prediction_on_empty_ground_truth_is_undefined_not_zero() -> None:
    m = SegmentationMeter()
    m.update(np.zeros((4, 4), dtype=bool), np.zeros((4, 4), dtype=np.uint8), 0)
    s = m.summary()
    assert s["miou"] is None and s["per_class"]["0"]["iou"] is None
    assert s["bg_iou"] == 100.0 and s["fb_iou"] == 100.0  # only the defined half
    assert s["boundary_f1"] is None


def test_all_ignore_counts_nothing() -> None:
    m = SegmentationMeter(safety_classes=[4])
    m.update(np.ones((4, 4), dtype=bool), np.full((4, 4), 255, dtype=np.uint8), 4)
    s = m.summary()
    assert s["episodes"] == 1
    for key in ("miou", "fb_iou", "fg_iou", "bg_iou", "pixel_accuracy", "boundary_f1"):
        assert s[key] is None, key
    assert s["safety"]["4"]["fnr"] is None and s["safety"]["4"]["fpr"] is None


def test_ignored_pixels_are_not_false_positives() -> None:
    m = SegmentationMeter()
    target = grid(["xxxx", "##..", "##..", "...."])
    pred = grid(["####", "##..", "##..", "...."]).astype(bool)
    m.update(pred, target, 0)
    s = m.summary()
    assert s["miou"] == 100.0 and s["pixel_accuracy"] == 100.0


def test_dilate_and_boundary() -> None:
    m = square(7, 2, 2, 3)
    assert dilate(m, 1).sum() == 25 and dilate(m, 0).sum() == 9
    ring = boundary(m)
    assert ring.sum() == 8 and not ring[3, 3]
    # the image border is not a boundary
    assert boundary(np.ones((5, 5), dtype=bool)).sum() == 0
    edge = np.zeros((5, 5), dtype=bool)
    edge[:, :2] = True
    assert boundary(edge).sum() == 5  # only column 1, next to the background


def test_boundary_f1_with_tolerance() -> None:
    gt = square(10, 2, 2, 5).astype(np.uint8)  # boundary ring of 16 px
    pred = square(10, 2, 3, 5)  # shifted one column right
    exact = SegmentationMeter(boundary_tolerance=0)
    exact.update(pred, gt, 0)
    # at 0 px the rings share their top and bottom rows inside cols 3..6: 8 of 16 -> P = R = 1/2
    assert exact.summary()["boundary_f1"] == pytest.approx(50.0)
    loose = SegmentationMeter(boundary_tolerance=1)
    loose.update(pred, gt, 0)
    assert loose.summary()["boundary_f1"] == pytest.approx(100.0)
    assert loose.summary()["boundary_tolerance_px"] == 1


def test_boundary_inside_ignore_band_still_matches_ground_truth() -> None:
    # VOC style: an ignore band around the object; the prediction's edge lies in the band
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[1:9, 1:9] = 255
    gt[2:8, 2:8] = 1
    pred = square(10, 1, 1, 8)
    m = SegmentationMeter(boundary_tolerance=1)
    m.update(pred, gt, 0)
    s = m.summary()
    assert s["miou"] == 100.0  # the band counts nowhere
    # no countable predicted edge (P undefined); all 20 GT edge pixels matched (R = 100 %)
    assert m.counts[0][GT_B_MATCH] == m.counts[0][GT_B] == 20
    assert s["boundary_f1"] == pytest.approx(100.0)


def test_summary_is_json_serialisable() -> None:
    m = SegmentationMeter(class_names={3: "road"}, safety_classes=[3, 9])
    m.update(PRED, TARGET, 3)
    s = m.summary()
    assert json.loads(json.dumps(s, allow_nan=False)) == s
    assert s["safety"]["9"]["episodes"] == 0 and s["safety"]["9"]["fnr"] is None


def test_merge_equals_single_meter() -> None:
    one, a, b = SegmentationMeter(), SegmentationMeter(), SegmentationMeter()
    rng = np.random.default_rng(0)
    for i in range(6):
        target = rng.choice(np.array([0, 1, 255], dtype=np.uint8), size=(12, 12))
        pred = rng.random((12, 12)) > 0.5
        one.update(pred, target, i % 3)
        (a if i < 3 else b).update(pred, target, i % 3)
    a.merge(b)
    assert a.summary() == one.summary()


def test_bad_inputs_raise_input_error() -> None:
    m = SegmentationMeter()
    with pytest.raises(InputError, match="same"):
        m.update(np.zeros((4, 5), dtype=bool), TARGET, 0)
    with pytest.raises(InputError, match="255"):
        m.update(PRED, TARGET * 2, 0)
    with pytest.raises(InputError, match="bool"):
        m.update(PRED.astype(np.float32) * 0.7, TARGET, 0)
    m.update(PRED.astype(np.uint8), TARGET, 0)  # 0/1 integers are fine
    with pytest.raises(InputError):
        SegmentationMeter(boundary_tolerance=-1)
