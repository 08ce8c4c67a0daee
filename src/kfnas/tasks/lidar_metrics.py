"""LiDAR 3-D detection metrics: bird's-eye-view and 3-D average precision over rotated boxes, APH.

Pure NumPy plus Shapely (no TensorFlow), so it runs anywhere the records are read.

Boxes use the project's LiDAR format: 7 floats ``(center_x, center_y, center_z, length, width,
height, heading)`` in metres and radians, in the sensor frame (x forward, y left, z up).
``length`` lies along the heading direction, ``width`` across it, ``height`` along z;
``heading`` is the yaw from +x towards +y and ``center_z`` is the centre of the box (not its
bottom).

What it computes:

* ``box_corners_bev``: the four x-y corners of each box, counter-clockwise.
* ``bev_iou``: rotated rectangle IoU in the x-y plane (Shapely intersects the rectangles).
* ``iou_3d``: BEV intersection area x overlap along z, over the union of the volumes.
* ``heading_accuracy``: Waymo's heading weight ``1 - min(|d|, 2 pi - |d|) / pi`` (1 for the same
  heading, 0 for the opposite one).
* ``greedy_match`` and ``average_precision``: the matching and the all-point AP below.
* ``LidarEvaluator``: accumulates scenes (``update``) and reports ``result()``: for every metric
  in ``METRIC_NAMES`` the mean over the classes that have ground truth, and per class
  ``AP/<name>``, ``APH/<name>`` and ``AP_BEV/<name>``.

Matching, per class and per scene: detections in descending score order (ties keep their
order); each takes the still-unmatched ground truth with the highest IoU if that IoU reaches the
class's threshold (a true positive), else it is a false positive, so a second detection of an
already matched object is a false positive. AP pools every detection of a class over all scenes,
sorts them by score (ties keep the order of ``update`` calls, then of the detections in a scene),
accumulates true and false positives into precision ``TP / (TP + FP)`` and recall
``TP / num_gt``, and integrates the precision envelope (for each recall, the best precision at
that recall or higher) stepwise over recall: all-point interpolation, as PASCAL VOC 2010+ and
the Waymo Open Dataset approximate. APH (Waymo) is the same with each true positive counted with
its heading-accuracy weight in the precision numerator, ``sum(weights) / (TP + FP)``, at the
unweighted recall ``TP / num_gt``: what the Waymo Open Dataset's metrics code computes
(``precisions_ha_weighted`` over ``recalls_ha_weighted``, the latter from ``num_tps``), so a
single detection turned by 90 degrees on a square object scores APH 0.5.

A class without ground truth has no AP (recall is undefined): it is left out of the means and
its per-class keys are absent. When no class has ground truth every mean is ``-1.0``, as COCO
reports a metric without ground truth.

Thresholds: one strict and one loose IoU threshold per class. ``DEFAULT_IOU`` holds the usual
strict ones (Waymo's and KITTI's: vehicle 0.7, pedestrian and cyclist 0.5), ``DEFAULT_LOOSE_IOU``
the loose ones (KITTI's: 0.5 and 0.25); ``iou_thresholds_for`` picks them for class names
(``FALLBACK_IOU`` / ``FALLBACK_LOOSE_IOU`` for other names).

To add a metric: add one entry to ``METRICS`` (its IoU kind, ``"3d"`` or ``"bev"``, its threshold
level, ``"strict"`` or ``"loose"``, and whether true positives are heading-weighted);
``METRIC_NAMES`` and the matchings follow from it. Add its name to ``PER_CLASS_METRICS`` to also
report it per class. A new IoU kind also needs its matrix (from ``_ious``) in the ``ious`` table
of ``LidarEvaluator.update``; a new threshold level a constructor argument and an entry in
``LidarEvaluator._thresholds``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import shapely

BOX_SIZE = 7
"""Floats per box: ``(center_x, center_y, center_z, length, width, height, heading)``."""

DEFAULT_IOU: Mapping[str, float] = {"vehicle": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
"""Strict IoU thresholds by class name (Waymo's level thresholds, KITTI's "moderate")."""

DEFAULT_LOOSE_IOU: Mapping[str, float] = {"vehicle": 0.5, "pedestrian": 0.25, "cyclist": 0.25}
"""Loose IoU thresholds by class name (KITTI's loose thresholds)."""

FALLBACK_IOU = 0.5
"""Strict IoU threshold of a class name not in ``DEFAULT_IOU``."""

FALLBACK_LOOSE_IOU = 0.25
"""Loose IoU threshold of a class name not in ``DEFAULT_LOOSE_IOU``."""

MISSING_VALUE = -1.0
"""What every mean reports when no class has ground truth (as COCO does)."""

IouKind = Literal["3d", "bev"]
Level = Literal["strict", "loose"]


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """How one reported metric is computed.

    Attributes:
        iou: the overlap that matches detections to ground truth: ``"3d"`` or ``"bev"``.
        level: which of a class's thresholds applies: ``"strict"`` or ``"loose"``.
        heading_weighted: count each true positive with its heading accuracy (APH).
    """

    iou: IouKind
    level: Level
    heading_weighted: bool = False


METRICS: Mapping[str, MetricSpec] = {
    "AP": MetricSpec("3d", "strict"),
    "APH": MetricSpec("3d", "strict", heading_weighted=True),
    "AP_BEV": MetricSpec("bev", "strict"),
    "APH_BEV": MetricSpec("bev", "strict", heading_weighted=True),
    "AP_loose": MetricSpec("3d", "loose"),
    "AP_BEV_loose": MetricSpec("bev", "loose"),
}
"""Every reported metric by name; ``result()`` gives the mean over classes of each."""

METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
"""The names of the means in ``result()``:
``("AP", "APH", "AP_BEV", "APH_BEV", "AP_loose", "AP_BEV_loose")``."""

PER_CLASS_METRICS: tuple[str, ...] = ("AP", "APH", "AP_BEV")
"""Metrics also reported per class, as ``<metric>/<class name>``."""

_MATCHINGS: tuple[tuple[IouKind, Level], ...] = tuple(
    dict.fromkeys((spec.iou, spec.level) for spec in METRICS.values())
)


def _as_boxes(boxes: npt.ArrayLike, name: str = "boxes") -> np.ndarray:
    """Return ``boxes`` as a float64 ``[N, 7]`` array (an empty input gives ``[0, 7]``)."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, BOX_SIZE)
    if array.ndim != 2 or array.shape[1] != BOX_SIZE:
        raise ValueError(f"{name} must have shape [N, {BOX_SIZE}], got {array.shape}")
    return array


def box_corners_bev(boxes: npt.ArrayLike) -> np.ndarray:
    """The bird's-eye-view corners of boxes.

    Args:
        boxes: ``[N, 7]`` boxes ``(x, y, z, length, width, height, heading)``.

    Returns:
        ``[N, 4, 2]`` x-y corners, counter-clockwise, starting at front-left
        (``+length/2, +width/2`` in the box frame).
    """
    boxes = _as_boxes(boxes)
    half_length = 0.5 * boxes[:, 3:4]
    half_width = 0.5 * boxes[:, 4:5]
    # Box-frame offsets of the corners: front-left, rear-left, rear-right, front-right.
    along = half_length * np.array([1.0, -1.0, -1.0, 1.0])
    across = half_width * np.array([1.0, 1.0, -1.0, -1.0])
    cos = np.cos(boxes[:, 6:7])
    sin = np.sin(boxes[:, 6:7])
    x = boxes[:, 0:1] + cos * along - sin * across
    y = boxes[:, 1:2] + sin * along + cos * across
    return np.stack([x, y], axis=-1)


def _intersections(a: np.ndarray, b: np.ndarray, pairs: np.ndarray | None) -> np.ndarray:
    """BEV intersection areas ``[N, M]`` of boxes ``a`` and ``b``, over ``pairs`` only.

    Pairs whose circumscribed circles are apart, pairs with a degenerate (zero-area) box and pairs
    outside ``pairs`` (a boolean ``[N, M]`` mask) get 0 without calling Shapely.
    """
    areas = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return areas
    radius_a = 0.5 * np.hypot(a[:, 3], a[:, 4])
    radius_b = 0.5 * np.hypot(b[:, 3], b[:, 4])
    distance = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    near = distance < radius_a[:, None] + radius_b[None, :]
    near &= (a[:, 3] * a[:, 4] > 0)[:, None] & (b[:, 3] * b[:, 4] > 0)[None, :]
    if pairs is not None:
        near &= pairs
    rows, cols = np.nonzero(near)
    if rows.size == 0:
        return areas
    used_a = np.unique(rows)
    used_b = np.unique(cols)
    polygons_a = np.empty(len(a), dtype=object)
    polygons_b = np.empty(len(b), dtype=object)
    polygons_a[used_a] = shapely.polygons(box_corners_bev(a[used_a]))
    polygons_b[used_b] = shapely.polygons(box_corners_bev(b[used_b]))
    areas[rows, cols] = shapely.area(shapely.intersection(polygons_a[rows], polygons_b[cols]))
    return areas


def _ious(
    a: np.ndarray, b: np.ndarray, pairs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """BEV and 3-D IoU matrices ``[N, M]`` of checked boxes, computed from one intersection."""
    inter_bev = _intersections(a, b, pairs)
    area_a = a[:, 3] * a[:, 4]
    area_b = b[:, 3] * b[:, 4]
    union_bev = area_a[:, None] + area_b[None, :] - inter_bev
    bev = np.divide(inter_bev, union_bev, out=np.zeros_like(inter_bev), where=union_bev > 0)

    top = np.minimum(a[:, None, 2] + 0.5 * a[:, None, 5], b[None, :, 2] + 0.5 * b[None, :, 5])
    bottom = np.maximum(a[:, None, 2] - 0.5 * a[:, None, 5], b[None, :, 2] - 0.5 * b[None, :, 5])
    inter_3d = inter_bev * np.maximum(top - bottom, 0.0)
    union_3d = (area_a * a[:, 5])[:, None] + (area_b * b[:, 5])[None, :] - inter_3d
    iou3d = np.divide(inter_3d, union_3d, out=np.zeros_like(inter_3d), where=union_3d > 0)
    return bev, iou3d


def bev_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Bird's-eye-view IoU of rotated boxes: their x-y rectangles, heights ignored.

    Args:
        a: ``[N, 7]`` boxes.
        b: ``[M, 7]`` boxes.

    Returns:
        ``[N, M]`` IoU in [0, 1]; 0 where both rectangles have zero area.
    """
    return _ious(_as_boxes(a, "a"), _as_boxes(b, "b"))[0]


def iou_3d(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """3-D IoU of boxes rotated about z: BEV intersection x z overlap / union of volumes.

    Args:
        a: ``[N, 7]`` boxes.
        b: ``[M, 7]`` boxes.

    Returns:
        ``[N, M]`` IoU in [0, 1]; 0 where both boxes have zero volume.
    """
    return _ious(_as_boxes(a, "a"), _as_boxes(b, "b"))[1]


def heading_accuracy(pred: npt.ArrayLike, truth: npt.ArrayLike) -> np.ndarray:
    """Waymo's heading accuracy: ``1 - min(|d|, 2 pi - |d|) / pi``, ``d`` wrapped to [-pi, pi).

    Args:
        pred: predicted headings in radians (any shape broadcasting with ``truth``).
        truth: true headings in radians.

    Returns:
        Weights in [0, 1]: 1 for the same heading, 0.5 at 90 degrees, 0 for the opposite one.
    """
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    diff = np.abs(np.mod(diff + np.pi, 2.0 * np.pi) - np.pi)
    return 1.0 - np.minimum(diff, 2.0 * np.pi - diff) / np.pi


def greedy_match(iou: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> np.ndarray:
    """Match detections to ground truth greedily, best score first.

    Detections go in descending score order (ties keep their order); each takes the
    still-unmatched ground truth with the highest IoU if that IoU is at least ``threshold``
    (ties: the first such ground truth), else it stays unmatched (a false positive).

    Args:
        iou: ``[D, G]`` IoU of detections against ground truth.
        scores: ``[D]`` detection scores.
        threshold: least IoU of a match.

    Returns:
        ``[D]`` int: the matched ground-truth index of each detection, -1 for none.
    """
    iou = np.asarray(iou, dtype=np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64).reshape(-1), kind="stable")
    return _greedy_match(iou, order, threshold)


def _greedy_match(iou: np.ndarray, order: np.ndarray, threshold: float) -> np.ndarray:
    """``greedy_match`` with the detections' score order given."""
    matched = np.full(iou.shape[0], -1, dtype=np.int64)
    if iou.size == 0:
        return matched
    hits = iou >= threshold
    candidates = np.where(hits, iou, -np.inf)
    if hits.sum(axis=0).max() <= 1:
        # No ground truth within reach of two detections: nothing is contested, so each
        # detection with a hit takes its best one whatever the order.
        rows = np.flatnonzero(hits.any(axis=1))
        matched[rows] = np.argmax(candidates[rows], axis=1)
        return matched
    taken = np.zeros(iou.shape[1], dtype=bool)
    for det in order[hits[order].any(axis=1)]:
        row = np.where(taken, -np.inf, candidates[det])
        gt = int(np.argmax(row))
        if row[gt] == -np.inf:
            continue
        matched[det] = gt
        taken[gt] = True
    return matched


def average_precision(
    scores: npt.ArrayLike,
    true_positive: npt.ArrayLike,
    num_gt: int,
    weights: npt.ArrayLike | None = None,
) -> float:
    """All-point interpolated average precision of pooled detections.

    Detections are sorted by descending score (stable). With ``n`` the running count of
    detections, ``TP`` the running count of true positives and ``TP_w`` the running sum of their
    weights, precision is ``TP_w / n`` and recall ``TP / num_gt``; AP is the area under the
    precision envelope (at each recall the best precision at that recall or higher), integrated
    stepwise over recall. Without weights ``TP_w = TP`` (plain AP); with heading accuracies as
    weights it is Waymo's APH.

    Args:
        scores: ``[D]`` detection scores.
        true_positive: ``[D]`` bool: whether each detection matched a ground truth.
        num_gt: ground-truth objects of the class; must be positive.
        weights: ``[D]`` weight of each true positive in the precision (heading accuracy for
            APH); 1 when None. Weights of false positives are ignored.

    Returns:
        AP in [0, 1].
    """
    if num_gt <= 0:
        raise ValueError(f"num_gt must be positive, got {num_gt}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    hits = np.asarray(true_positive, dtype=bool).reshape(-1)[order]
    gain = hits.astype(np.float64)
    if weights is not None:
        gain *= np.asarray(weights, dtype=np.float64).reshape(-1)[order]
    precision = np.cumsum(gain) / np.arange(1, scores.size + 1)
    recall = np.cumsum(hits) / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(recall, prepend=0.0)
    return float(np.sum(steps * envelope))


def iou_thresholds_for(class_names: Sequence[str]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The usual strict and loose IoU thresholds of classes, by name (case-insensitive).

    Args:
        class_names: class names, e.g. ``("vehicle", "pedestrian", "cyclist")``.

    Returns:
        ``(strict, loose)``: from ``DEFAULT_IOU`` and ``DEFAULT_LOOSE_IOU``, ``FALLBACK_IOU`` and
        ``FALLBACK_LOOSE_IOU`` for other names.
    """
    names = [name.lower() for name in class_names]
    strict = tuple(DEFAULT_IOU.get(name, FALLBACK_IOU) for name in names)
    loose = tuple(DEFAULT_LOOSE_IOU.get(name, FALLBACK_LOOSE_IOU) for name in names)
    return strict, loose


def _as_classes(classes: npt.ArrayLike, count: int, num_classes: int, name: str) -> np.ndarray:
    """Return ``classes`` as a ``[count]`` int64 array of ids in 1..num_classes."""
    array = np.asarray(classes).reshape(-1)
    if array.shape != (count,):
        raise ValueError(f"{name} must have shape [{count}], got {np.shape(classes)}")
    if (
        array.size
        and not np.issubdtype(array.dtype, np.integer)
        and (not np.all(np.isfinite(array)) or np.any(array != np.round(array)))
    ):
        raise ValueError(f"{name} must hold integer class ids")
    array = array.astype(np.int64)
    if array.size and (array.min() < 1 or array.max() > num_classes):
        raise ValueError(
            f"{name} must lie in 1..{num_classes} (drop background and padded rows first), "
            f"got ids from {array.min()} to {array.max()}"
        )
    return array


def _check_finite_sizes(boxes: np.ndarray, name: str) -> None:
    """Reject non-finite boxes and negative sizes."""
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name} must be finite")
    if np.any(boxes[:, 3:6] < 0):
        raise ValueError(f"{name} must have non-negative length, width and height")


class LidarEvaluator:
    """Accumulates LiDAR detections scene by scene and reports AP, APH, BEV and loose AP.

    Class ids ``1..K`` name ``class_names[id - 1]``. Each class has one strict and one loose IoU
    threshold (``METRICS`` says which metric uses which). Call ``update`` once per scene, then
    ``result``; ``reset`` starts over.

    Args:
        class_names: the K class names, in id order.
        iou_thresholds: strict IoU threshold per class; None: ``iou_thresholds_for(class_names)``.
        loose_iou_thresholds: loose IoU threshold per class; None: from ``iou_thresholds_for``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        iou_thresholds: Sequence[float] | None = None,
        loose_iou_thresholds: Sequence[float] | None = None,
    ) -> None:
        self.class_names: tuple[str, ...] = tuple(class_names)
        if not self.class_names:
            raise ValueError("class_names must not be empty")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be unique, got {self.class_names}")
        strict, loose = iou_thresholds_for(self.class_names)
        self._thresholds: dict[Level, np.ndarray] = {
            "strict": self._check_thresholds(iou_thresholds, strict, "iou_thresholds"),
            "loose": self._check_thresholds(loose_iou_thresholds, loose, "loose_iou_thresholds"),
        }
        self.reset()

    def _check_thresholds(
        self, given: Sequence[float] | None, default: Sequence[float], name: str
    ) -> np.ndarray:
        values = np.asarray(default if given is None else given, dtype=np.float64).reshape(-1)
        if values.shape != (len(self.class_names),):
            raise ValueError(
                f"{name} needs one value per class ({len(self.class_names)}), got {len(values)}"
            )
        if np.any(~(values > 0) | (values > 1)):
            raise ValueError(f"{name} must lie in (0, 1], got {values.tolist()}")
        return values

    @property
    def iou_thresholds(self) -> tuple[float, ...]:
        """The strict IoU threshold of each class."""
        return tuple(self._thresholds["strict"].tolist())

    @property
    def loose_iou_thresholds(self) -> tuple[float, ...]:
        """The loose IoU threshold of each class."""
        return tuple(self._thresholds["loose"].tolist())

    def reset(self) -> None:
        """Forget every scene seen so far."""
        num_classes = len(self.class_names)
        self._num_gt = np.zeros(num_classes, dtype=np.int64)
        self._scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self._true_positive: dict[tuple[IouKind, Level], list[list[np.ndarray]]] = {
            key: [[] for _ in range(num_classes)] for key in _MATCHINGS
        }
        self._heading: dict[tuple[IouKind, Level], list[list[np.ndarray]]] = {
            key: [[] for _ in range(num_classes)] for key in _MATCHINGS
        }

    def update(
        self,
        det_boxes: npt.ArrayLike,
        det_scores: npt.ArrayLike,
        det_classes: npt.ArrayLike,
        gt_boxes: npt.ArrayLike,
        gt_classes: npt.ArrayLike,
    ) -> None:
        """Add one scene.

        Every row counts: drop padded rows and ground truth of class 0 (or any id outside
        ``1..K``) before the call; ids outside ``1..K`` raise ``ValueError``. Empty arrays are
        fine (a scene without detections, or without objects).

        Args:
            det_boxes: ``[D, 7]`` detected boxes.
            det_scores: ``[D]`` detection scores (higher is more confident).
            det_classes: ``[D]`` int class ids in ``1..K``.
            gt_boxes: ``[G, 7]`` ground-truth boxes.
            gt_classes: ``[G]`` int class ids in ``1..K``.

        Raises:
            ValueError: on wrong shapes, non-finite values, negative sizes or ids outside 1..K.
        """
        num_classes = len(self.class_names)
        det = _as_boxes(det_boxes, "det_boxes")
        gt = _as_boxes(gt_boxes, "gt_boxes")
        _check_finite_sizes(det, "det_boxes")
        _check_finite_sizes(gt, "gt_boxes")
        scores = np.asarray(det_scores, dtype=np.float64).reshape(-1)
        if scores.shape != (len(det),):
            raise ValueError(f"det_scores must have shape [{len(det)}], got {scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("det_scores must be finite")
        det_cls = _as_classes(det_classes, len(det), num_classes, "det_classes")
        gt_cls = _as_classes(gt_classes, len(gt), num_classes, "gt_classes")

        self._num_gt += np.bincount(gt_cls - 1, minlength=num_classes)
        if len(det) == 0:
            return
        same_class = det_cls[:, None] == gt_cls[None, :]
        bev, iou3d = _ious(det, gt, same_class)
        heading = heading_accuracy(det[:, None, 6], gt[None, :, 6])
        for index in np.unique(det_cls - 1):
            dets = np.flatnonzero(det_cls == index + 1)
            gts = np.flatnonzero(gt_cls == index + 1)
            self._scores[index].append(scores[dets])
            order = np.argsort(-scores[dets], kind="stable")
            block = (dets[:, None], gts[None, :])
            ious: dict[IouKind, np.ndarray] = {"bev": bev[block], "3d": iou3d[block]}
            class_heading = heading[block]
            for iou_kind, level in _MATCHINGS:
                matched = _greedy_match(ious[iou_kind], order, self._thresholds[level][index])
                hit = np.flatnonzero(matched >= 0)
                weight = np.zeros(len(dets))
                weight[hit] = class_heading[hit, matched[hit]]
                self._true_positive[iou_kind, level][index].append(matched >= 0)
                self._heading[iou_kind, level][index].append(weight)

    def result(self) -> dict[str, float]:
        """The metrics over every scene added since the last ``reset``.

        Returns:
            For each name in ``METRIC_NAMES`` the mean over the classes with ground truth
            (``-1.0`` when no class has any), and ``<metric>/<class name>`` for each metric in
            ``PER_CLASS_METRICS`` and each class with ground truth. Classes without ground truth
            are left out of the means and get no per-class keys.
        """
        per_class: dict[str, list[float]] = {name: [] for name in METRICS}
        values: dict[str, float] = {}
        for index, class_name in enumerate(self.class_names):
            num_gt = int(self._num_gt[index])
            if num_gt == 0:
                continue
            scores = _concat(self._scores[index])
            for name, spec in METRICS.items():
                key = (spec.iou, spec.level)
                weights = _concat(self._heading[key][index]) if spec.heading_weighted else None
                value = average_precision(
                    scores, _concat(self._true_positive[key][index]), num_gt, weights
                )
                per_class[name].append(value)
                if name in PER_CLASS_METRICS:
                    values[f"{name}/{class_name}"] = value
        means = {
            name: float(np.mean(found)) if found else MISSING_VALUE
            for name, found in per_class.items()
        }
        return {**means, **values}


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenate ``parts``; an empty list gives an empty float array."""
    return np.concatenate(parts) if parts else np.zeros(0)
