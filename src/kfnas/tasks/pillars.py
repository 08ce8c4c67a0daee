"""The PointPillars detector of the ``lidar_detection`` task: pillars, BEV anchors, box decoding.

A point cloud ``[batch, points, 4]`` (x, y, z, intensity in metres in the sensor frame; rows
outside the voxelization range or not finite are padding) becomes a detection in four steps:

1. ``Pillarize`` (in the graph, so a served model takes raw points): each point in range falls
   into the pillar of its ``pillar_size`` cell of the x-y grid; the first ``max_points_per_pillar``
   points of at most ``max_pillars`` pillars (in grid order) are kept, each with
   ``POINT_FEATURES`` = 10 features: x, y, z, intensity, its offset to the mean of its pillar's
   points (3) and to the pillar's centre (3; z to the middle of the z range).
2. The searched featurizer (``Network.featurizer``: shared per-point layers, max over the pillar's
   points) gives one vector per pillar, scattered into a bird's-eye-view (BEV) pseudo-image of
   ``grid_shape`` = (rows along y, columns along x).
3. The searched backbone (levels 1 to 3, stride ``2**level`` of the grid) and decoder (one width
   at every level) run on it; official.vision's ``RetinaNetHead`` predicts per anchor the class,
   the BEV box and the attributes ``heading`` (sin, cos), ``z`` (box centre) and ``height``.
4. official.vision's ``MultilevelDetectionGenerator`` decodes and suppresses; ``boxes_3d`` turns
   its BEV boxes and attributes back into 3-D boxes in metres.

In the BEV the 2-D box of an object is its footprint in its own frame, centred on the object:
``length`` along the grid's x (columns) and ``width`` along y (rows), in pillars; the heading is
an attribute. Anchors are such footprints, one per ``anchor_sizes`` entry (metres) at each cell
of each level, matched by official.vision's ``AnchorLabeler`` (IoU of footprints). Non-maximum
suppression also compares footprints (axis-aligned), which the rotated-box evaluation
(``kfnas.tasks.lidar_metrics``) does not: overlapping objects of different headings may suppress
one another.

The model is official.vision's ``RetinaNetModel`` with ``PillarBackbone`` (steps 1-2 and the
searched backbone) as its backbone and the anchors fixed at construction, so it runs on a point
cloud alone (serving, measurement).

To change the point features: edit ``Pillarize.point_features`` and ``POINT_FEATURES`` (the
featurizer's input width follows); to add an attribute: one entry in ``ATTRIBUTES`` and its
target in ``kfnas.tasks.lidar_detection``'s input pipeline and ``boxes_3d``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

#: Features per pillar point fed to the featurizer (see ``Pillarize``).
POINT_FEATURES = 10
#: The regression attributes of the head: name -> size.
ATTRIBUTES: Mapping[str, int] = {"heading": 2, "z": 1, "height": 1}
#: The BEV levels (stride ``2**level`` of the pillar grid) of backbone, decoder, head and anchors.
MIN_LEVEL, MAX_LEVEL = 1, 3


@dataclasses.dataclass(frozen=True)
class Voxelization:
    """How points become pillars.

    Attributes:
        point_range: ``(x_min, y_min, z_min, x_max, y_max, z_max)`` in metres; points outside
            are dropped.
        pillar_size: Side of a pillar's square cell in x and y, in metres.
        max_pillars: Pillars kept per cloud (the first in grid order).
        max_points_per_pillar: Points kept per pillar (the first in the cloud's order).
    """

    point_range: tuple[float, float, float, float, float, float]
    pillar_size: float
    max_pillars: int
    max_points_per_pillar: int

    @property
    def grid_shape(self) -> tuple[int, int]:
        """``(rows, columns)`` of the BEV grid: the y and x extents over the pillar size."""
        x0, y0, _, x1, y1, _ = self.point_range
        return round((y1 - y0) / self.pillar_size), round((x1 - x0) / self.pillar_size)


def pillarize_layer(voxelization: Voxelization) -> Any:
    """A ``Pillarize`` layer (see the module docstring) for ``voxelization``."""
    return _classes().Pillarize(voxelization)


def pillar_backbone(voxelization: Voxelization, featurizer: Any, backbone: Any) -> Any:
    """The model's backbone: points -> pillars -> featurizer -> BEV -> searched backbone."""
    return _classes().PillarBackbone(voxelization, featurizer, backbone)


def anchor_boxes(
    voxelization: Voxelization, anchor_sizes: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """The BEV anchors per level: ``{"1": [rows_l, cols_l, 4 * A]}`` in pillars.

    Each cell of level ``l`` (stride ``2**l`` pillars) holds one footprint per ``anchor_sizes``
    entry (``[length, width]`` in metres: length along x, width along y), ordered as
    official.vision's anchors are (``ymin, xmin, ymax, xmax``, anchors concatenated per cell).
    """
    import tensorflow as tf

    rows, cols = voxelization.grid_shape
    out = {}
    for level in range(MIN_LEVEL, MAX_LEVEL + 1):
        stride = 2**level
        y = tf.range(stride / 2, rows, stride, dtype=tf.float32)
        x = tf.range(stride / 2, cols, stride, dtype=tf.float32)
        xv, yv = tf.meshgrid(x, y)
        boxes = []
        for length, width in anchor_sizes:
            half_l = float(length) / voxelization.pillar_size / 2
            half_w = float(width) / voxelization.pillar_size / 2
            boxes.append(tf.stack([yv - half_w, xv - half_l, yv + half_w, xv + half_l], axis=-1))
        out[str(level)] = tf.concat(boxes, axis=-1)
    return out


def footprints(boxes: Any, voxelization: Voxelization) -> Any:
    """3-D boxes ``[..., 7]`` (metres) -> their BEV footprints ``[..., 4]`` in pillars."""
    import tensorflow as tf

    x0, y0 = voxelization.point_range[0], voxelization.point_range[1]
    size = voxelization.pillar_size
    cx = (boxes[..., 0] - x0) / size
    cy = (boxes[..., 1] - y0) / size
    half_l = boxes[..., 3] / size / 2
    half_w = boxes[..., 4] / size / 2
    return tf.stack([cy - half_w, cx - half_l, cy + half_w, cx + half_l], axis=-1)


def boxes_3d(bev_boxes: Any, attributes: Mapping[str, Any], voxelization: Voxelization) -> Any:
    """Detected footprints ``[..., 4]`` (pillars) and attributes -> 3-D boxes ``[..., 7]``.

    The inverse of ``footprints`` plus the attributes: ``heading`` from its (sin, cos) by
    ``atan2``, ``z`` and ``height`` as predicted (height at least 1 cm).
    """
    import tensorflow as tf

    x0, y0 = voxelization.point_range[0], voxelization.point_range[1]
    size = voxelization.pillar_size
    ymin, xmin, ymax, xmax = tf.unstack(bev_boxes, axis=-1)
    heading = attributes["heading"]
    return tf.stack(
        [
            x0 + (xmin + xmax) / 2 * size,
            y0 + (ymin + ymax) / 2 * size,
            attributes["z"][..., 0],
            (xmax - xmin) * size,
            (ymax - ymin) * size,
            tf.maximum(attributes["height"][..., 0], 0.01),
            tf.atan2(heading[..., 0], heading[..., 1]),
        ],
        axis=-1,
    )


@functools.cache
def _classes() -> Any:
    """The Keras layers, defined on first use so that importing this module needs no TF."""
    import tensorflow as tf
    import tf_keras

    class Pillarize(tf_keras.layers.Layer):
        """Points ``[B, M, 4]`` -> pillar points ``[B, P, N, 10]``, their mask and cells.

        Returns ``(features, mask, cells)``: ``mask`` ``[B, P, N]`` is 1 for a kept point,
        ``cells`` ``[B, P, 2]`` the (row, column) of each pillar (0, 0 for an unused pillar,
        whose features and mask are zero).
        """

        def __init__(self, voxelization: Voxelization, **kwargs: Any):
            super().__init__(trainable=False, **kwargs)
            self.voxelization = voxelization

        def call(self, points: Any) -> Any:
            v = self.voxelization
            rows, cols = v.grid_shape
            pillars, per_pillar = v.max_pillars, v.max_points_per_pillar
            points = tf.cast(points, tf.float32)
            batch = tf.shape(points)[0]
            count = tf.shape(points)[1]
            lo = tf.constant(v.point_range[:3], tf.float32)
            hi = tf.constant(v.point_range[3:], tf.float32)
            xyz = points[..., :3]
            valid = tf.reduce_all(tf.math.is_finite(points), axis=-1) & tf.reduce_all(
                (xyz >= lo) & (xyz < hi), axis=-1
            )
            points = tf.where(valid[..., None], points, 0.0)  # no NaN reaches the math below
            col = tf.clip_by_value(
                tf.cast(tf.floor((points[..., 0] - lo[0]) / v.pillar_size), tf.int32),
                0,
                cols - 1,
            )
            row = tf.clip_by_value(
                tf.cast(tf.floor((points[..., 1] - lo[1]) / v.pillar_size), tf.int32),
                0,
                rows - 1,
            )
            cells = rows * cols
            # One id per (cloud, cell); dropped points sort last in their cloud.
            cloud = tf.repeat(tf.range(batch)[:, None], count, axis=1)
            cell = tf.where(valid, row * cols + col, cells)
            ids = tf.reshape(cloud * (cells + 1) + cell, [-1])
            order = tf.argsort(ids, stable=True)
            sorted_ids = tf.gather(ids, order)
            first = tf.concat([[True], sorted_ids[1:] != sorted_ids[:-1]], axis=0)
            group = tf.cumsum(tf.cast(first, tf.int32)) - 1
            size = tf.shape(sorted_ids)[0]
            position = tf.range(size)
            start = tf.math.unsorted_segment_min(position, group, size)
            slot = position - tf.gather(start, group)  # the point's rank in its pillar
            sorted_cloud = sorted_ids // (cells + 1)
            first_group = tf.math.unsorted_segment_min(group, sorted_cloud, batch)
            pillar = group - tf.gather(first_group, sorted_cloud)  # the pillar's rank
            keep = (
                tf.gather(tf.reshape(valid, [-1]), order) & (slot < per_pillar) & (pillar < pillars)
            )
            where = tf.boolean_mask(tf.stack([sorted_cloud, pillar, slot], axis=-1), keep)
            kept = tf.boolean_mask(tf.gather(tf.reshape(points, [-1, 4]), order), keep)
            shape = tf.stack([batch, pillars, per_pillar])
            raw = tf.scatter_nd(where, kept, tf.concat([shape, [4]], axis=0))
            mask = tf.scatter_nd(where, tf.ones_like(kept[:, 0]), shape)
            kept_cell = tf.boolean_mask(tf.gather(tf.reshape(cell, [-1]), order), keep)
            pillar_cells = tf.scatter_nd(
                where[:, :2],
                tf.stack([kept_cell // cols, kept_cell % cols], axis=-1)
                * tf.cast(tf.equal(where[:, 2:], 0), tf.int32),  # one writer per pillar
                tf.stack([batch, pillars, 2]),
            )
            return self.point_features(raw, mask, pillar_cells), mask, pillar_cells

        def point_features(self, raw: Any, mask: Any, cells: Any) -> Any:
            """The 10 features of each kept point (zero for the padding)."""
            v = self.voxelization
            xyz = raw[..., :3]
            counts = tf.maximum(tf.reduce_sum(mask, axis=-1, keepdims=True), 1.0)
            mean = tf.reduce_sum(xyz * mask[..., None], axis=2, keepdims=True) / counts[..., None]
            centre = tf.stack(
                [
                    v.point_range[0] + (tf.cast(cells[..., 1], tf.float32) + 0.5) * v.pillar_size,
                    v.point_range[1] + (tf.cast(cells[..., 0], tf.float32) + 0.5) * v.pillar_size,
                    tf.fill(tf.shape(cells[..., 0]), (v.point_range[2] + v.point_range[5]) / 2),
                ],
                axis=-1,
            )[:, :, None, :]
            features = tf.concat([raw, xyz - mean, xyz - centre], axis=-1)
            return features * mask[..., None]

    class PillarBackbone(tf_keras.Model):
        """Points -> BEV pseudo-image -> the searched backbone's levels."""

        def __init__(
            self, voxelization: Voxelization, featurizer: Any, backbone: Any, **kwargs: Any
        ):
            super().__init__(**kwargs)
            self.voxelization = voxelization
            self.pillarize = Pillarize(voxelization)
            self.featurizer = featurizer
            self.bev_backbone = backbone

        def call(self, points: Any, training: Any = None) -> Any:
            features, mask, cells = self.pillarize(points)
            pillar_features = self.featurizer(features, mask=mask, training=training)
            rows, cols = self.voxelization.grid_shape
            batch = tf.shape(points)[0]
            pillars = tf.shape(cells)[1]
            clouds = tf.repeat(tf.range(batch)[:, None, None], pillars, axis=1)
            index = tf.concat([clouds, cells], axis=-1)
            channels = tf.shape(pillar_features)[-1]
            # Unused pillars have zero features (the featurizer's contract) and add nothing.
            bev = tf.scatter_nd(index, pillar_features, tf.stack([batch, rows, cols, channels]))
            bev = tf.ensure_shape(bev, [None, rows, cols, pillar_features.shape[-1]])
            return self.bev_backbone(bev, training=training)

    class _Classes:
        pass

    _Classes.Pillarize = Pillarize  # type: ignore[attr-defined]
    _Classes.PillarBackbone = PillarBackbone  # type: ignore[attr-defined]
    return _Classes


def build_detector(
    voxelization: Voxelization,
    network: Any,
    *,
    num_classes: int,
    anchor_sizes: Sequence[Sequence[float]],
    head_num_convs: int,
    head_num_filters: int,
    activation: str,
    norm_momentum: float,
    norm_epsilon: float,
    kernel_regularizer: Any,
    pre_nms_score_threshold: float,
    nms_iou_threshold: float,
    max_num_detections: int,
) -> Any:
    """official.vision's ``RetinaNetModel`` around a pointpillars ``Network`` (module docstring).

    Args:
        voxelization: The pillar grid.
        network: The space's ``Network`` with its ``featurizer``, ``backbone`` and ``decoder``.
        num_classes: Classes without the background.
        anchor_sizes: ``[length, width]`` in metres per anchor of a cell.
        head_num_convs: Convolutions of the head's towers before its outputs.
        head_num_filters: Their width.
        activation: The head's activation.
        norm_momentum: The head's batch normalization momentum.
        norm_epsilon: Its epsilon.
        kernel_regularizer: The head's weight decay.
        pre_nms_score_threshold: Scores below it are dropped before suppression.
        nms_iou_threshold: Non-maximum suppression's IoU (of footprints).
        max_num_detections: Detections kept per cloud.
    """
    import tf_keras
    from official.vision.modeling import retinanet_model
    from official.vision.modeling.heads import dense_prediction_heads
    from official.vision.modeling.layers import detection_generator

    if network.featurizer is None or network.decoder is None:
        raise ValueError(
            "a lidar_detection model needs a space that builds a featurizer and a decoder "
            "(the pointpillars space does)"
        )
    head = dense_prediction_heads.RetinaNetHead(
        min_level=MIN_LEVEL,
        max_level=MAX_LEVEL,
        num_classes=num_classes + 1,  # class 0 is the background
        num_anchors_per_location=len(anchor_sizes),
        num_convs=head_num_convs,
        num_filters=head_num_filters,
        attribute_heads=[
            {"name": name, "type": "regression", "size": size, "prediction_tower_name": ""}
            for name, size in ATTRIBUTES.items()
        ],
        activation=activation,
        norm_momentum=norm_momentum,
        norm_epsilon=norm_epsilon,
        kernel_regularizer=kernel_regularizer,
    )
    generator = detection_generator.MultilevelDetectionGenerator(
        pre_nms_score_threshold=pre_nms_score_threshold,
        nms_iou_threshold=nms_iou_threshold,
        max_num_detections=max_num_detections,
    )
    model = retinanet_model.RetinaNetModel(
        backbone=pillar_backbone(voxelization, network.featurizer, network.backbone),
        decoder=network.decoder,
        head=head,
        detection_generator=generator,
        anchor_boxes=anchor_boxes(voxelization, anchor_sizes),
        min_level=MIN_LEVEL,
        max_level=MAX_LEVEL,
    )
    # The pillar backbone and the head make their weights on their first call: called here on
    # symbolic clouds (any number of x, y, z, intensity points), so that a training step's first
    # trace creates no variables (TensorFlow would trace the step again).
    features = model.backbone(tf_keras.Input(shape=(None, 4)))
    model.head(model.decoder(features))
    return model


__all__ = [
    "ATTRIBUTES",
    "MAX_LEVEL",
    "MIN_LEVEL",
    "POINT_FEATURES",
    "Voxelization",
    "anchor_boxes",
    "boxes_3d",
    "build_detector",
    "footprints",
    "pillar_backbone",
    "pillarize_layer",
]
