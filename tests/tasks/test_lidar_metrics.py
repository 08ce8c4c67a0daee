"""LiDAR metrics: rotated-box IoU (BEV and 3-D), heading accuracy, matching, AP and APH.

Every expected value is worked out by hand in a comment next to it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from kfnas.tasks.lidar_metrics import (
    DEFAULT_IOU,
    DEFAULT_LOOSE_IOU,
    METRIC_NAMES,
    LidarEvaluator,
    average_precision,
    bev_iou,
    box_corners_bev,
    greedy_match,
    heading_accuracy,
    iou_3d,
    iou_thresholds_for,
)

CLASSES = ("vehicle", "pedestrian", "cyclist")
VEHICLE, PEDESTRIAN, CYCLIST = 1, 2, 3


def box(x=0.0, y=0.0, z=0.0, length=4.0, width=2.0, height=2.0, heading=0.0) -> list[float]:
    return [x, y, z, length, width, height, heading]


def boxes(*rows: list[float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64).reshape(-1, 7)


def ids(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def evaluator() -> LidarEvaluator:
    return LidarEvaluator(CLASSES)


def one_scene(det, scores, det_classes, gt, gt_classes) -> dict[str, float]:
    ev = evaluator()
    ev.update(
        boxes(*det), np.asarray(scores, float), ids(*det_classes), boxes(*gt), ids(*gt_classes)
    )
    return ev.result()


# ----------------------------------------------------------------------------------- geometry


def test_corners_of_a_box_turned_a_quarter():
    # Centre (1, 2), length 4 along heading pi/2 (so along +y), width 2 along x.
    # Box-frame corners (+-2, +-1) rotated by 90 degrees ((u, v) -> (-v, u)) plus the centre:
    # front-left (2, 1) -> (-1, 2) -> (0, 4); rear-left (-2, 1) -> (-1, -2) -> (0, 0);
    # rear-right (-2, -1) -> (1, -2) -> (2, 0); front-right (2, -1) -> (1, 2) -> (2, 4).
    corners = box_corners_bev(boxes(box(1, 2, heading=math.pi / 2)))
    assert corners.shape == (1, 4, 2)
    np.testing.assert_allclose(corners[0], [[0, 4], [0, 0], [2, 0], [2, 4]], atol=1e-12)
    # Shoelace: (0*0 - 0*4) + (0*0 - 2*0) + (2*4 - 2*0) + (2*4 - 0*4) = 16 > 0: counter-clockwise.


def test_identical_boxes_have_iou_one():
    a = boxes(box(3, -1, 0.5, 4.2, 1.9, 1.6, 0.7))
    assert bev_iou(a, a)[0, 0] == pytest.approx(1.0)
    assert iou_3d(a, a)[0, 0] == pytest.approx(1.0)


def test_box_shifted_along_its_length():
    # 4 x 2 box moved 1 m along x (its length): overlap 3 x 2 = 6, union 8 + 8 - 6 = 10 -> 0.6.
    # Same z and height, so the 3-D IoU is 6h / (8h + 8h - 6h) = 0.6 as well.
    a, b = boxes(box(0, 0)), boxes(box(1, 0))
    assert bev_iou(a, b)[0, 0] == pytest.approx(0.6)
    assert iou_3d(a, b)[0, 0] == pytest.approx(0.6)


def test_box_turned_a_quarter_shifted_along_y():
    # Heading pi/2: the length 4 lies along y; moved 1 m along y, the overlap is again 2 x 3 = 6,
    # union 10 -> 0.6.
    a = boxes(box(0, 0, heading=math.pi / 2))
    b = boxes(box(0, 1, heading=math.pi / 2))
    assert bev_iou(a, b)[0, 0] == pytest.approx(0.6)
    # Shifted along x instead (across the width 2): overlap 1 x 4 = 4, union 12 -> 1/3.
    c = boxes(box(1, 0, heading=math.pi / 2))
    assert bev_iou(a, c)[0, 0] == pytest.approx(1 / 3)


def test_box_against_itself_turned_ninety_degrees():
    # 2 x 1 box and the same turned 90 degrees about its centre: the overlap is the 1 x 1 square
    # in the middle; union 2 + 2 - 1 = 3 -> 1/3.
    a = boxes(box(5, 5, length=2, width=1))
    b = boxes(box(5, 5, length=2, width=1, heading=math.pi / 2))
    assert bev_iou(a, b)[0, 0] == pytest.approx(1 / 3)


def test_square_against_itself_turned_45_degrees():
    # Unit square centred at 0 against the same turned 45 degrees (edges |x| + |y| = sqrt(2)/2).
    # The turned square cuts a right isosceles triangle off each corner of the first: at corner
    # (1/2, 1/2) the cut is x + y > sqrt(2)/2, legs 1/2 - (sqrt(2)/2 - 1/2) = 1 - sqrt(2)/2, area
    # (1 - sqrt(2)/2)^2 / 2. Four corners: 2 (1 - sqrt(2)/2)^2 = 2 (3/2 - sqrt(2)) = 3 - 2 sqrt(2).
    # Intersection (an octagon) 1 - (3 - 2 sqrt(2)) = 2 (sqrt(2) - 1) ~ 0.8284,
    # union 2 - 2 (sqrt(2) - 1) = 4 - 2 sqrt(2),
    # IoU (2 sqrt(2) - 2) / (4 - 2 sqrt(2)) = (sqrt(2) - 1) / (sqrt(2) (sqrt(2) - 1)) = 1/sqrt(2).
    a = boxes(box(length=1, width=1, height=1))
    b = boxes(box(length=1, width=1, height=1, heading=math.pi / 4))
    assert bev_iou(a, b)[0, 0] == pytest.approx(1 / math.sqrt(2))
    # Equal heights and z: the 3-D IoU is the same ratio.
    assert iou_3d(a, b)[0, 0] == pytest.approx(1 / math.sqrt(2))


def test_3d_iou_with_half_the_height_overlapping():
    # Same BEV box (IoU 1), second one raised by h/2 = 1: z overlap 1 of 2, so the intersection is
    # V/2 and the union 2V - V/2 = 1.5V -> (V/2) / (1.5V) = 1/3.
    a, b = boxes(box(z=0.0)), boxes(box(z=1.0))
    assert bev_iou(a, b)[0, 0] == pytest.approx(1.0)
    assert iou_3d(a, b)[0, 0] == pytest.approx(1 / 3)


def test_disjoint_boxes():
    a = boxes(box(0, 0))
    # Far apart in x-y: 0 in both.
    assert bev_iou(a, boxes(box(30, 0)))[0, 0] == 0.0
    assert iou_3d(a, boxes(box(30, 0)))[0, 0] == 0.0
    # Touching along an edge (x from 2 to 6 against -2 to 2): zero area.
    assert bev_iou(a, boxes(box(4, 0)))[0, 0] == pytest.approx(0.0)
    # Same footprint, stacked above (z from 2 to 4 against -1 to 1): BEV 1, 3-D 0.
    assert bev_iou(a, boxes(box(z=3)))[0, 0] == pytest.approx(1.0)
    assert iou_3d(a, boxes(box(z=3)))[0, 0] == 0.0


def test_iou_matrix_shapes_and_degenerate_boxes():
    a = boxes(box(0, 0), box(1, 0), box(0, 0, length=0.0))
    b = boxes(box(0, 0), box(50, 50))
    bev = bev_iou(a, b)
    assert bev.shape == (3, 2)
    # Rows: identical 1, shifted 1 m 0.6 (see above), a zero-length box 0; second column far away.
    np.testing.assert_allclose(bev, [[1.0, 0.0], [0.6, 0.0], [0.0, 0.0]], atol=1e-12)
    assert bev_iou(np.zeros((0, 7)), b).shape == (0, 2)
    assert iou_3d(a, np.zeros((0, 7))).shape == (3, 0)


def test_heading_accuracy():
    # 1 - |d| / pi with d wrapped to [-pi, pi).
    assert heading_accuracy(0.4, 0.4) == pytest.approx(1.0)
    assert heading_accuracy(0.4 + math.pi, 0.4) == pytest.approx(0.0, abs=1e-12)
    assert heading_accuracy(math.pi / 2, 0.0) == pytest.approx(0.5)
    assert heading_accuracy(-math.pi / 2, 0.0) == pytest.approx(0.5)
    # 3.0 against -3.0: d = 6 wraps to 6 - 2 pi ~ -0.2832, so 1 - (2 pi - 6) / pi ~ 0.9099.
    assert heading_accuracy(3.0, -3.0) == pytest.approx(1 - (2 * math.pi - 6) / math.pi)
    # A full turn is the same heading.
    assert heading_accuracy(0.1 + 2 * math.pi, 0.1) == pytest.approx(1.0)
    np.testing.assert_allclose(heading_accuracy([0.0, math.pi / 4], [0.0, 0.0]), [1.0, 0.75])


# ----------------------------------------------------------------------------------- matching


def test_greedy_match_takes_the_best_free_ground_truth():
    # Detection 0 (score .9) goes first and takes gt 1 (IoU .9 > .6); detection 1 then takes
    # gt 0 (.8).
    assert greedy_match([[0.6, 0.9], [0.8, 0.0]], [0.9, 0.8], 0.5).tolist() == [1, 0]
    # Detection 0 takes gt 0 (.9); detection 1's only candidate is taken: unmatched.
    assert greedy_match([[0.9, 0.6], [0.8, 0.0]], [0.9, 0.8], 0.5).tolist() == [0, -1]
    # Scores reversed: detection 1 goes first and takes gt 0, detection 0 falls back to gt 1.
    assert greedy_match([[0.9, 0.6], [0.8, 0.0]], [0.1, 0.9], 0.5).tolist() == [1, 0]
    # Equal scores keep the detections' order: detection 0 first.
    assert greedy_match([[0.9], [0.95]], [0.5, 0.5], 0.5).tolist() == [0, -1]
    # Below the threshold nothing matches.
    assert greedy_match([[0.4]], [1.0], 0.5).tolist() == [-1]
    assert greedy_match(np.zeros((2, 0)), [1.0, 0.5], 0.5).tolist() == [-1, -1]


def test_average_precision_directly():
    # FP (.9) then TP (.8), one gt: precision 0, 1/2 at recall 0, 1 -> AP = 1 * 1/2 = 0.5.
    assert average_precision([0.8, 0.9], [True, False], 1) == pytest.approx(0.5)
    # The same TP with heading weight .5 (APH): weighted precision .5 / 2 = .25 at the unweighted
    # recall 1 -> AP = 1 * .25.
    assert average_precision([0.8, 0.9], [True, False], 1, [0.5, 0.0]) == pytest.approx(0.25)
    # Weights of false positives do not count: still .25.
    assert average_precision([0.8, 0.9], [True, False], 1, [0.5, 0.7]) == pytest.approx(0.25)
    assert average_precision([], [], 3) == 0.0
    with pytest.raises(ValueError):
        average_precision([1.0], [True], 0)


# ----------------------------------------------------------------------------------- AP, APH


def test_perfect_detections():
    gt = [box(0, 0), box(10, 5, heading=0.3)]
    result = one_scene(gt, [0.9, 0.8], [VEHICLE] * 2, gt, [VEHICLE] * 2)
    for name in METRIC_NAMES:
        assert result[name] == pytest.approx(1.0), name
    assert result["AP/vehicle"] == pytest.approx(1.0)
    assert result["APH/vehicle"] == pytest.approx(1.0)
    assert result["AP_BEV/vehicle"] == pytest.approx(1.0)
    assert "AP/pedestrian" not in result


def test_one_of_two_objects_missed():
    # One TP, 2 gt: precision 1 up to recall 1/2, nothing beyond -> AP = 1/2 * 1 = 0.5.
    result = one_scene([box(0, 0)], [0.9], [VEHICLE], [box(0, 0), box(10, 0)], [VEHICLE] * 2)
    assert result["AP"] == pytest.approx(0.5)
    assert result["APH"] == pytest.approx(0.5)


def test_duplicate_detection_does_not_lower_ap():
    # One gt; TP (.9), then a duplicate of it (.8), a FP: precision 1, 1/2 at recall 1, 1.
    # The drop to 1/2 comes at a recall already reached, so AP = 1 * 1 = 1 (averaging the
    # precisions of the detections would give 0.75).
    gt = [box(0, 0)]
    result = one_scene([box(0, 0), box(0.1, 0)], [0.9, 0.8], [VEHICLE] * 2, gt, [VEHICLE])
    assert result["AP"] == pytest.approx(1.0)
    assert result["AP_BEV"] == pytest.approx(1.0)

    # Two gt A and B; TP on A (.9), duplicate of A (.8), TP on B (.7):
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; envelope 1 at recall 1/2, 2/3 at recall 1.
    # AP = 1/2 * 1 + 1/2 * 2/3 = 5/6.
    det = [box(0, 0), box(0.1, 0), box(10, 0)]
    result = one_scene(det, [0.9, 0.8, 0.7], [VEHICLE] * 3, [box(0, 0), box(10, 0)], [1, 1])
    assert result["AP"] == pytest.approx(5 / 6)


def test_false_positive_ranked_first():
    # FP (.9) far from the gt, then the TP (.8): precision 0, 1/2 at recall 0, 1 -> AP = 0.5.
    result = one_scene([box(30, 0), box(0, 0)], [0.9, 0.8], [VEHICLE] * 2, [box(0, 0)], [VEHICLE])
    assert result["AP"] == pytest.approx(0.5)
    assert result["APH"] == pytest.approx(0.5)


def test_heading_flipped():
    # Turned by pi the box covers the same space (IoU 1: a TP) but faces backwards: weight 0.
    gt = [box(0, 0, heading=0.2)]
    result = one_scene([box(0, 0, heading=0.2 + math.pi)], [0.9], [VEHICLE], gt, [VEHICLE])
    assert result["AP"] == pytest.approx(1.0)
    assert result["AP_BEV"] == pytest.approx(1.0)
    assert result["APH"] == pytest.approx(0.0, abs=1e-9)
    assert result["APH_BEV"] == pytest.approx(0.0, abs=1e-9)


def test_heading_off_by_a_quarter_turn():
    # A 2 x 2 square turned by pi/2 is the same square (IoU 1: a TP), heading weight
    # 1 - (pi/2)/pi = 1/2. Precision_h = sum of weights / (TP + FP) = 0.5 / 1 at recall
    # TP / num_gt = 1 (Waymo weights the precision only) -> APH = 1 * 0.5 = 0.5.
    square = {"length": 2.0, "width": 2.0}
    gt = [box(**square)]
    det = [box(**square, heading=math.pi / 2)]
    result = one_scene(det, [0.9], [VEHICLE], gt, [VEHICLE])
    assert result["AP"] == pytest.approx(1.0)
    assert result["APH"] == pytest.approx(0.5)
    assert result["APH_BEV"] == pytest.approx(0.5)


def test_shift_between_strict_and_loose_thresholds():
    # Shifted 1 m along its length: 3-D and BEV IoU 0.6 (see above); vehicle thresholds are
    # 0.7 strict and 0.5 loose, so the detection misses strictly and hits loosely.
    result = one_scene([box(1, 0)], [0.9], [VEHICLE], [box(0, 0)], [VEHICLE])
    assert result["AP"] == 0.0
    assert result["AP_BEV"] == 0.0
    assert result["APH"] == 0.0
    assert result["AP_loose"] == pytest.approx(1.0)
    assert result["AP_BEV_loose"] == pytest.approx(1.0)


def test_bev_match_without_a_3d_match():
    # Raised by h/2: BEV IoU 1, 3-D IoU 1/3 (see above), below 0.7 and 0.5.
    result = one_scene([box(z=1.0)], [0.9], [VEHICLE], [box(z=0.0)], [VEHICLE])
    assert result["AP_BEV"] == pytest.approx(1.0)
    assert result["AP_BEV_loose"] == pytest.approx(1.0)
    assert result["AP"] == 0.0
    assert result["AP_loose"] == 0.0


def test_classes_do_not_match_each_other_and_without_ground_truth_are_left_out():
    # Vehicle: perfect (AP 1). Cyclist: one gt, only a pedestrian detection on it, which cannot
    # match across classes (cyclist AP 0). Pedestrian: that detection but no gt: left out.
    # Mean AP = (1 + 0) / 2 = 0.5.
    gt = [box(0, 0), box(20, 0, length=1.8, width=0.6, height=1.7)]
    det = [box(0, 0), box(20, 0, length=1.8, width=0.6, height=1.7)]
    result = one_scene(det, [0.9, 0.8], [VEHICLE, PEDESTRIAN], gt, [VEHICLE, CYCLIST])
    assert result["AP/vehicle"] == pytest.approx(1.0)
    assert result["AP/cyclist"] == 0.0
    assert "AP/pedestrian" not in result
    assert "APH/pedestrian" not in result
    assert result["AP"] == pytest.approx(0.5)
    assert set(METRIC_NAMES) <= set(result)


def test_no_ground_truth_at_all():
    ev = evaluator()
    assert ev.result() == dict.fromkeys(METRIC_NAMES, -1.0)
    ev.update(boxes(box(0, 0)), [0.9], ids(VEHICLE), np.zeros((0, 7)), ids())
    ev.update(np.zeros((0, 7)), np.zeros(0), ids(), np.zeros((0, 7)), ids())
    # Only means, all -1.0, and no per-class keys.
    assert ev.result() == dict.fromkeys(METRIC_NAMES, -1.0)


def test_detections_are_pooled_by_score_across_scenes():
    # Scene 1: gt A, a TP scored .5. Scene 2: gt B, a FP scored .9 and a TP scored .4.
    # Pooled by score: FP .9, TP .5, TP .4 -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1. The
    # envelope at recall 1/2 is the best precision at recall >= 1/2: max(1/2, 2/3) = 2/3; at
    # recall 1 it is 2/3. AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3.
    # (Averaging per-scene APs would give (1 + 1/2) / 2 = 0.75; concatenating the scenes without
    # sorting, TP, FP, TP, would give 1/2 * 1 + 1/2 * 2/3 = 5/6.)
    ev = evaluator()
    ev.update(boxes(box(0, 0)), [0.5], ids(VEHICLE), boxes(box(0, 0)), ids(VEHICLE))
    det = boxes(box(30, 0), box(0, 0))
    ev.update(det, [0.9, 0.4], ids(VEHICLE, VEHICLE), boxes(box(0, 0)), ids(VEHICLE))
    assert ev.result()["AP"] == pytest.approx(2 / 3)
    ev.reset()
    assert ev.result()["AP"] == -1.0


# ----------------------------------------------------------------------------------- API


def test_metric_names_and_thresholds():
    assert METRIC_NAMES == ("AP", "APH", "AP_BEV", "APH_BEV", "AP_loose", "AP_BEV_loose")
    assert DEFAULT_IOU == {"vehicle": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
    assert DEFAULT_LOOSE_IOU == {"vehicle": 0.5, "pedestrian": 0.25, "cyclist": 0.25}
    strict, loose = iou_thresholds_for(["vehicle", "Pedestrian", "cyclist", "sign"])
    assert strict == (0.7, 0.5, 0.5, 0.5)
    assert loose == (0.5, 0.25, 0.25, 0.25)
    ev = LidarEvaluator(["car", "truck"], [0.6, 0.8], [0.3, 0.4])
    assert ev.iou_thresholds == (0.6, 0.8)
    assert ev.loose_iou_thresholds == (0.3, 0.4)
    assert evaluator().iou_thresholds == (0.7, 0.5, 0.5)


def test_custom_thresholds_apply_per_class():
    # IoU 0.6 (1 m shift): a miss at the default 0.7, a hit with a strict threshold of 0.55.
    ev = LidarEvaluator(["car"], [0.55], [0.3])
    ev.update(boxes(box(1, 0)), [0.9], ids(1), boxes(box(0, 0)), ids(1))
    assert ev.result()["AP/car"] == pytest.approx(1.0)


def test_bad_input_is_rejected():
    ev = evaluator()
    with pytest.raises(ValueError, match="gt_classes"):
        ev.update(np.zeros((0, 7)), [], ids(), boxes(box()), ids(0))  # background: drop first
    with pytest.raises(ValueError, match="det_classes"):
        ev.update(boxes(box()), [0.5], ids(4), np.zeros((0, 7)), ids())
    with pytest.raises(ValueError, match="det_boxes"):
        ev.update(np.zeros((1, 6)), [0.5], ids(1), np.zeros((0, 7)), ids())
    with pytest.raises(ValueError, match="det_scores"):
        ev.update(boxes(box()), [0.5, 0.4], ids(1), np.zeros((0, 7)), ids())
    with pytest.raises(ValueError, match="finite"):
        ev.update(boxes(box(x=np.nan)), [0.5], ids(1), np.zeros((0, 7)), ids())
    with pytest.raises(ValueError, match="one value per class"):
        LidarEvaluator(CLASSES, [0.7], [0.5, 0.25, 0.25])
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        LidarEvaluator(["car"], [0.0], [0.5])
    with pytest.raises(ValueError, match="unique"):
        LidarEvaluator(["car", "car"])
    # Float class ids holding integers are accepted (as models often output them).
    ev.update(boxes(box()), [0.5], np.array([1.0]), boxes(box()), np.array([1.0]))
    assert ev.result()["AP"] == pytest.approx(1.0)


def test_many_scenes_run_through():
    # Speed sanity (no timing assertion): 200 scenes x 10 boxes of all three classes, detections
    # jittered around the ground truth plus a few far false positives.
    rng = np.random.default_rng(0)
    ev = evaluator()
    for _ in range(200):
        n = 10
        centre = rng.uniform(-60, 60, (n, 2))
        z = rng.uniform(-1, 1, (n, 1))
        size = rng.uniform([0.5, 0.5, 1.4], [5.0, 2.2, 2.0], (n, 3))
        heading = rng.uniform(-math.pi, math.pi, (n, 1))
        gt = np.hstack([centre, z, size, heading])
        gt_classes = rng.integers(1, 4, n)
        det = gt + rng.normal(0, 0.1, gt.shape)
        det[:, 3:6] = np.abs(det[:, 3:6])
        det[-2:, :2] += 200.0
        ev.update(det, rng.random(n), gt_classes, gt, gt_classes)
    result = ev.result()
    for name in METRIC_NAMES:
        assert 0.0 <= result[name] <= 1.0, name
    for name in CLASSES:
        assert 0.0 <= result[f"APH/{name}"] <= result[f"AP/{name}"] <= 1.0
    # Loose thresholds and BEV can only match more.
    assert result["AP_loose"] >= result["AP"]
    assert result["AP_BEV"] >= result["AP"] - 1e-12
