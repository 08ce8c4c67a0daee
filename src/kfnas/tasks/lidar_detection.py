"""LiDAR 3-D detection: a PointPillars detector on point clouds, scored by rotated-box AP and APH.

``LIDAR_DETECTION`` follows ``kfnas.tasks.base.TaskKind``. Its model (``kfnas.tasks.pillars``) is
official.vision's ``RetinaNetModel`` whose backbone turns a point cloud into pillars and a
bird's-eye-view (BEV) pseudo-image before the searched backbone; the space (``pointpillars``)
builds the featurizer, backbone and decoder. Training reuses tf-models' ``RetinaNetTask`` (focal
loss on the classes, Huber loss on the BEV boxes and on the ``heading``, ``z`` and ``height``
attributes); the input pipeline is this module's (the TFRecord format of ``kfnas.data.lidar``:
parse, drop empty scenes, augment, sample the points, label the anchors with official.vision's
``AnchorLabeler``); evaluation decodes 3-D boxes and scores them with
``kfnas.tasks.lidar_metrics`` (3-D and BEV AP with rotated boxes, Waymo's heading-weighted APH).
The model input is a cloud of ``max_points`` rows ``(x, y, z, intensity)``; padding rows are NaN.

``task.image_size`` is the BEV grid's column count (the x extent over ``pillar_size``); it and
the row count must be multiples of 8, the stride of level 3. ``-`` below means "computed".

================================  ==========  ===================================================
option                            default     meaning
================================  ==========  ===================================================
point_range                       -12.8, ...  ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in
                                              metres (default +-12.8 m in x and y, +-3 m in z)
pillar_size                       0.4         side of a pillar's cell, metres
max_pillars                       2048        pillars kept per cloud (grid order)
max_points_per_pillar             16          points kept per pillar
max_points                        4096        points per cloud the model takes (more: sampled)
class_names                       -           names of classes ``1..num_classes`` (default
                                              vehicle, pedestrian, cyclist, class4, ...)
iou_thresholds                    -           strict IoU per class (vehicle .7, others .5)
loose_iou_thresholds              -           loose IoU per class (vehicle .5, others .25)
anchor_sizes                      3 sizes     ``[length, width]`` metres per anchor of a cell
                                              (vehicle 4.5x2, pedestrian .8x.7, cyclist 1.8x.7)
match_threshold                   0.5         anchor-object IoU (BEV footprints) for a positive
unmatched_threshold               0.4         below it an anchor is negative; between: ignored
head_num_convs, head_num_filters  0, 128      head tower (0: one 3x3 conv per output, as
                                              Vertex NAS's PointPillars)
activation                        relu        head activation
norm_momentum, norm_epsilon       .99, 1e-3   batch normalization
l2_weight_decay                   4e-5        L2 weight decay (network and head)
focal_loss_alpha, _gamma          .25, 2.0    classification focal loss
huber_loss_delta                  0.1         box regression Huber loss delta
box_loss_weight                   50          weight of the box loss
aug_rand_flip                     true        flip y (and headings) at random in training
aug_rotation                      0.3927      random yaw of the whole scene, +-radians (pi/8)
aug_scale_min, aug_scale_max      .95, 1.05   random global scaling range
max_num_instances                 64          objects kept per scene
shuffle_buffer_size               256         training shuffle buffer (scenes)
cache_data                        false       cache parsed scenes in memory
pre_nms_score_threshold           0.05        score threshold before non-max suppression
nms_iou_threshold                 0.5         NMS IoU (of BEV footprints)
max_num_detections                64          detections per scene
optimizer                         adam        ``adam``, ``sgd`` or ``rmsprop``
momentum                          0.9         SGD / RMSprop momentum; Adam's beta_1
learning_rate                     lr          base rate; default ``0.002 * batch_size / 8``
lr_schedule                       cosine      cosine decay to 0
warmup_steps                      steps       linear warm-up; default ``min(1000, steps // 10)``
validation_batch_size             batch       validation batch (default ``budget.batch_size``)
================================  ==========  ===================================================

Waymo Open Dataset at Vertex NAS's settings: ``point_range: [-76.8, -76.8, -3, 76.8, 76.8, 3]``,
``pillar_size: 0.3`` (a 512 x 512 grid, ``image_size: 512``), ``max_pillars: 24000``,
``max_points_per_pillar: 100``, ``max_points`` about 200000, ``anchor_sizes: [[4.725, 2.079]]``.

To add a knob: one line in ``OPTIONS``, read in ``_lidar_config`` or the pipeline.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from kfnas.spaces.options import Option, choice, flag, fraction, integer, is_number, number
from kfnas.spaces.regularizers import l2_regularizer
from kfnas.tasks.base import (
    COMMON_OPTIONS,
    OPTIMIZERS,
    ModelInputs,
    OfficialTask,
    SearchedTask,
    ServingExport,
)
from kfnas.tasks.pillars import MAX_LEVEL, Voxelization

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network

#: The metrics evaluation reports (means over the classes with ground truth; see
#: ``kfnas.tasks.lidar_metrics``), besides per-class ``AP/<name>``, ``APH/<name>``, ...
METRIC_NAMES = ("AP", "APH", "AP_BEV", "APH_BEV", "AP_loose", "AP_BEV_loose")
#: Names of classes 1, 2, 3 unless ``class_names`` says otherwise (the generated data's).
DEFAULT_CLASS_NAMES = ("vehicle", "pedestrian", "cyclist")


def _numbers(count: int | None = None, *, positive: bool = False) -> Any:
    def check(value: Any) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and (count is None or len(value) == count)
            and all(is_number(v) and (v > 0 or not positive) for v in value)
        )

    return check


OPTIONS: dict[str, Option] = {
    **COMMON_OPTIONS,
    "point_range": Option(
        [-12.8, -12.8, -3.0, 12.8, 12.8, 3.0],
        _numbers(6),
        "six numbers [x_min, y_min, z_min, x_max, y_max, z_max] in metres",
    ),
    "pillar_size": number(0, 0.4, strict=True),
    "max_pillars": integer(1, 2048),
    "max_points_per_pillar": integer(1, 16),
    "max_points": integer(1, 4096),
    "class_names": Option(
        None,
        lambda v: isinstance(v, list) and all(isinstance(n, str) and n for n in v),
        "a list of class names",
    ),
    "iou_thresholds": Option(None, _numbers(positive=True), "a list of IoUs in (0, 1]"),
    "loose_iou_thresholds": Option(None, _numbers(positive=True), "a list of IoUs in (0, 1]"),
    "anchor_sizes": Option(
        [[4.5, 2.0], [0.8, 0.7], [1.8, 0.7]],
        lambda v: isinstance(v, list) and bool(v) and all(_numbers(2, positive=True)(a) for a in v),
        "a non-empty list of [length, width] pairs in metres",
    ),
    "match_threshold": fraction(0.5, positive=True),
    "unmatched_threshold": fraction(0.4),
    "head_num_convs": integer(0, 0),
    "head_num_filters": integer(1, 128),
    "activation": Option("relu", lambda v: v in ("relu", "swish"), "'relu' or 'swish'"),
    "focal_loss_alpha": fraction(0.25),
    "focal_loss_gamma": number(0, 2.0),
    "huber_loss_delta": number(0, 0.1, strict=True),
    "box_loss_weight": number(0, 50),
    "aug_rand_flip": flag(True),
    "aug_rotation": number(0, 0.3927),
    "aug_scale_min": number(0, 0.95, strict=True),
    "aug_scale_max": number(0, 1.05, strict=True),
    "max_num_instances": integer(1, 64),
    "shuffle_buffer_size": integer(1, 256),
    "cache_data": flag(False),
    "pre_nms_score_threshold": fraction(0.05),
    "nms_iou_threshold": fraction(0.5),
    "max_num_detections": integer(1, 64),
    "optimizer": choice(OPTIMIZERS, "adam"),
    "momentum": fraction(0.9),
    "lr_schedule": choice(("cosine",), "cosine"),
    "warmup_learning_rate": number(0),
}


def voxelization(opts: dict[str, Any]) -> Voxelization:
    """The pillar grid of the resolved options."""
    return Voxelization(
        point_range=tuple(float(v) for v in opts["point_range"]),  # type: ignore[arg-type]
        pillar_size=float(opts["pillar_size"]),
        max_pillars=int(opts["max_pillars"]),
        max_points_per_pillar=int(opts["max_points_per_pillar"]),
    )


def class_names(task: TaskSpec, opts: dict[str, Any]) -> list[str]:
    """The names of classes ``1..num_classes``."""
    names = opts.get("class_names")
    if names:
        return list(names)
    return [
        DEFAULT_CLASS_NAMES[i] if i < len(DEFAULT_CLASS_NAMES) else f"class{i + 1}"
        for i in range(task.num_classes)
    ]


def thresholds(task: TaskSpec, opts: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Strict and loose IoU thresholds per class (options, else by class name)."""
    from kfnas.tasks.lidar_metrics import iou_thresholds_for

    names = class_names(task, opts)
    strict, loose = iou_thresholds_for(names)
    return (
        [float(v) for v in opts.get("iou_thresholds") or strict],
        [float(v) for v in opts.get("loose_iou_thresholds") or loose],
    )


def _grid_problems(task: TaskSpec, opts: dict[str, Any]) -> list[str]:
    x0, y0, z0, x1, y1, z1 = (float(v) for v in opts["point_range"])
    if not (x0 < x1 and y0 < y1 and z0 < z1):
        return [
            f"task.options.point_range {opts['point_range']} must list [x_min, y_min, z_min, "
            f"x_max, y_max, z_max] with each minimum below its maximum"
        ]
    size = float(opts["pillar_size"])
    out = []
    stride = 2**MAX_LEVEL
    for axis, extent in (("x", x1 - x0), ("y", y1 - y0)):
        cells = extent / size
        if abs(cells - round(cells)) > 1e-6:
            out.append(
                f"the {axis} extent of task.options.point_range ({extent:g} m) is not a whole "
                f"number of pillars of {size:g} m: change pillar_size or the range"
            )
        elif round(cells) % stride:
            bigger = -(-round(cells) // stride) * stride
            out.append(
                f"the pillar grid has {round(cells)} cells along {axis} ({extent:g} m / "
                f"{size:g} m), which the backbone levels cannot divide (level {MAX_LEVEL} has "
                f"stride {stride}): make it a multiple of {stride}, e.g. {bigger} cells "
                f"({bigger * size:g} m)"
            )
    if not out and round((x1 - x0) / size) != task.image_size:
        cols = round((x1 - x0) / size)
        out.append(
            f"task.image_size {task.image_size} must be the BEV grid's column count, "
            f"{cols} (x extent {x1 - x0:g} m / pillar_size {size:g} m): set task.image_size: "
            f"{cols}, or change point_range or pillar_size"
        )
    return out


def _class_problems(task: TaskSpec, opts: dict[str, Any]) -> list[str]:
    out = []
    for key in ("class_names", "iou_thresholds", "loose_iou_thresholds"):
        value = opts.get(key)
        if value is not None and len(value) != task.num_classes:
            out.append(
                f"task.options.{key} lists {len(value)} entries for {task.num_classes} "
                f"classes: give one per class (task.num_classes)"
            )
    for key in ("iou_thresholds", "loose_iou_thresholds"):
        if any(v > 1 for v in opts.get(key) or []):
            out.append(f"task.options.{key} must hold IoUs in (0, 1]")
    return out


def task_voxelization(config: Any) -> Voxelization:
    """The pillar grid of a lidar task config (``LidarDetectionTask``'s ``lidar`` settings)."""
    lidar = config.lidar
    return Voxelization(
        point_range=tuple(lidar.point_range),
        pillar_size=lidar.pillar_size,
        max_pillars=lidar.max_pillars,
        max_points_per_pillar=lidar.max_points_per_pillar,
    )


def anchor_sizes(config: Any) -> list[tuple[float, float]]:
    """The ``[length, width]`` anchor sizes of a lidar task config."""
    return list(zip(config.lidar.anchor_lengths, config.lidar.anchor_widths, strict=True))


@functools.cache
def _searched_task_class() -> type:
    import numpy as np
    import tensorflow as tf
    from official.vision.tasks import retinanet

    from kfnas.tasks import pillars
    from kfnas.tasks.lidar_metrics import LidarEvaluator

    class SearchedLidarTask(SearchedTask, retinanet.RetinaNetTask):
        """tf-models' RetinaNet training on point clouds, evaluated by rotated-box AP."""

        kind = LIDAR_DETECTION
        EVAL_KEY = "lidar_eval"

        def build_model(self) -> Any:
            if self.network_factory is None:
                return super().build_model()
            import tf_keras

            shape = [None, self.task_config.lidar.max_points, 4]
            return self.kind.build_model(
                self, self.network_factory(tf_keras.layers.InputSpec(shape=shape))
            )

        def build_inputs(self, params: Any, input_context: Any = None) -> Any:
            return lidar_inputs(self.task_config, params, input_context)

        def validation_step(self, inputs: Any, model: Any, metrics: Any = None) -> Any:
            features, labels = inputs
            outputs = model(features, anchor_boxes=labels["anchor_boxes"], training=False)
            loss, cls_loss, box_loss, model_loss = self.build_losses(
                outputs=outputs, labels=labels, aux_losses=model.losses
            )
            logs = {self.loss: loss}
            losses = {
                "total_loss": loss,
                "cls_loss": cls_loss,
                "box_loss": box_loss,
                "model_loss": model_loss,
            }
            for metric in metrics or []:
                metric.update_state(losses[metric.name])
                logs[metric.name] = metric.result()
            boxes = pillars.boxes_3d(
                outputs["detection_boxes"],
                outputs["detection_attributes"],
                task_voxelization(self.task_config),
            )
            detections = {
                "boxes": boxes,
                "scores": outputs["detection_scores"],
                "classes": tf.cast(outputs["detection_classes"], tf.int32),
                "count": tf.cast(outputs["num_detections"], tf.int32),
            }
            logs[self.EVAL_KEY] = (labels["groundtruths"], detections)
            return logs

        def aggregate_logs(self, state: Any = None, step_outputs: Any = None) -> Any:
            if state is None:
                lidar = self.task_config.lidar
                state = LidarEvaluator(
                    lidar.class_names, lidar.iou_thresholds, lidar.loose_iou_thresholds
                )
            truth, found = step_outputs[self.EVAL_KEY]

            def joined(parts: Any) -> np.ndarray:  # one array over the replicas
                parts = parts if isinstance(parts, tuple | list) else (parts,)
                return np.concatenate([np.asarray(p) for p in parts], axis=0)

            truth = {k: joined(v) for k, v in truth.items()}
            found = {k: joined(v) for k, v in found.items()}
            for i in range(len(found["count"])):
                d, g = int(found["count"][i]), int(truth["count"][i])
                state.update(
                    found["boxes"][i, :d],
                    found["scores"][i, :d],
                    found["classes"][i, :d],
                    truth["boxes"][i, :g],
                    truth["classes"][i, :g],
                )
            return state

        def reduce_aggregated_logs(self, aggregated_logs: Any, global_step: Any = None) -> Any:
            return aggregated_logs.result()

    return SearchedLidarTask


def lidar_inputs(config: Any, params: Any, input_context: Any = None) -> Any:
    """The ``tf.data`` pipeline of a lidar task config's ``params`` (train or validation data).

    Yields ``(points [batch, max_points, 4], labels)`` with the labels ``RetinaNetTask``'s
    losses read (``cls_targets``, ``box_targets``, ``attribute_targets``, ``cls_weights``,
    ``box_weights``), the ``anchor_boxes`` and, for evaluation, ``groundtruths`` (``boxes``
    ``[batch, max_num_instances, 7]``, ``classes``, ``count``). Scenes with no point inside the
    range are skipped (the data check counts them).
    """
    import tensorflow as tf
    from official.vision.ops import anchor, preprocess_ops

    from kfnas.data.lidar import parse_scene
    from kfnas.tasks import pillars

    lidar = config.lidar
    vox = task_voxelization(config)
    training = params.is_training
    lo = tf.constant(lidar.point_range[:3], tf.float32)
    hi = tf.constant(lidar.point_range[3:], tf.float32)
    num_classes = len(lidar.class_names)
    anchors = pillars.anchor_boxes(vox, anchor_sizes(config))
    labeler = anchor.AnchorLabeler(lidar.match_threshold, lidar.unmatched_threshold)

    def inside(xyz: Any) -> Any:
        return tf.reduce_all((xyz >= lo) & (xyz < hi), axis=-1)

    def augment(points: Any, boxes: Any) -> tuple[Any, Any]:
        if lidar.aug_rand_flip:
            flip = tf.random.uniform([]) < 0.5
            sign = tf.where(flip, -1.0, 1.0)
            points = points * tf.stack([1.0, sign, 1.0, 1.0])
            boxes = boxes * tf.stack([1.0, sign, 1.0, 1.0, 1.0, 1.0, sign])
        angle = tf.random.uniform([], -lidar.aug_rotation, lidar.aug_rotation)
        cos, sin = tf.cos(angle), tf.sin(angle)
        rotation = tf.stack([[cos, sin], [-sin, cos]])  # row vectors times R: yaw by angle
        points = tf.concat([points[:, :2] @ rotation, points[:, 2:]], axis=-1)
        centres = boxes[:, :2] @ rotation
        heading = tf.math.floormod(boxes[:, 6:7] + angle + math.pi, 2 * math.pi) - math.pi
        boxes = tf.concat([centres, boxes[:, 2:6], heading], axis=-1)
        scale = tf.random.uniform([], lidar.aug_scale_min, lidar.aug_scale_max)
        points = points * tf.stack([scale, scale, scale, 1.0])
        boxes = boxes * tf.stack([scale] * 6 + [1.0])
        return points, boxes

    def prepare(scene: Any) -> Any:
        points, boxes, classes = scene["points"], scene["boxes"], scene["classes"]
        if training:
            points, boxes = augment(points, boxes)
        points = tf.boolean_mask(points, inside(points[:, :3]))
        if training:
            points = tf.random.shuffle(points)
        points = points[: lidar.max_points]
        missing = lidar.max_points - tf.shape(points)[0]
        points = tf.pad(points, [[0, missing], [0, 0]], constant_values=math.nan)
        points = tf.ensure_shape(points, [lidar.max_points, 4])
        keep = inside(boxes[:, :3]) & (classes >= 1) & (classes <= num_classes)
        boxes, classes = tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)
        boxes, classes = boxes[: lidar.max_num_instances], classes[: lidar.max_num_instances]
        attributes = {
            "heading": tf.stack([tf.sin(boxes[:, 6]), tf.cos(boxes[:, 6])], axis=-1),
            "z": boxes[:, 2:3],
            "height": boxes[:, 5:6],
        }
        cls_t, box_t, att_t, cls_w, box_w = labeler.label_anchors(
            anchors, pillars.footprints(boxes, vox), classes[:, None], attributes
        )
        count = tf.shape(classes)[0]
        labels = {
            "cls_targets": cls_t,
            "box_targets": box_t,
            "attribute_targets": att_t,
            "cls_weights": cls_w,
            "box_weights": box_w,
            "anchor_boxes": anchors,
            "groundtruths": {
                "boxes": preprocess_ops.clip_or_pad_to_fixed_size(boxes, lidar.max_num_instances),
                "classes": preprocess_ops.clip_or_pad_to_fixed_size(
                    classes, lidar.max_num_instances
                ),
                "count": count,
            },
        }
        return points, labels

    def not_empty(scene: Any) -> Any:
        return tf.reduce_any(inside(scene["points"][:, :3]))

    files = tf.io.gfile.glob(params.input_path)
    if not files:
        raise ValueError(f"no files match {params.input_path!r}")
    dataset = tf.data.Dataset.from_tensor_slices(sorted(files))
    if input_context and input_context.num_input_pipelines > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.interleave(tf.data.TFRecordDataset, cycle_length=1)
    dataset = dataset.map(parse_scene, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.filter(not_empty)
    if params.cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(params.shuffle_buffer_size)
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    batch = (
        input_context.get_per_replica_batch_size(params.global_batch_size)
        if input_context
        else params.global_batch_size
    )
    return dataset.batch(batch, drop_remainder=params.drop_remainder).prefetch(tf.data.AUTOTUNE)


class LidarDetectionTask(OfficialTask):
    """The ``lidar_detection`` task kind (see the module docstring)."""

    name = "lidar_detection"
    default_metric = "AP"
    metric_names = METRIC_NAMES
    options = OPTIONS
    serving_export = ServingExport(
        module="kfnas.export.serving:lidar_module", signatures={"points": "serving_default"}
    )
    augmentation_space = None
    model_inputs = ModelInputs(
        describe_template="point clouds of {1} features per point (x, y, z, intensity; "
        "trained on clouds of up to {0} points)",
        serving_note="Points are grouped into pillars inside the model as evaluation did; rows "
        "outside the voxelization range or not finite are ignored.",
        limit_template="Served clouds of another sensor, mounting height, range or density than "
        "the training data (up to {0} points a cloud) were not evaluated.",
    )
    known_limits = (
        "Non-maximum suppression compares the detections' footprints axis-aligned, so close "
        "objects of different headings may suppress one another.",
        "Points beyond max_points per cloud, max_points_per_pillar per pillar or max_pillars "
        "per cloud are dropped.",
    )
    base_rate = (0.002, 8)
    warmup_cap = 1000

    def extra_problems(self, task: TaskSpec, opts: dict[str, Any]) -> list[str]:
        """A range or pillar size the levels cannot use, class lists of the wrong length."""
        out = _grid_problems(task, opts) + _class_problems(task, opts)
        if opts["aug_scale_min"] > opts["aug_scale_max"]:
            out.append("task.options.aug_scale_min must not exceed task.options.aug_scale_max")
        return out

    def task_config(
        self, task: TaskSpec, data: DataSpec, budget: BudgetSpec, opts: dict[str, Any]
    ) -> Any:
        """A ``RetinaNetTask`` config with the ``lidar`` settings (``kfnas.tasks.lidar_config``)."""
        from official.vision.configs import common
        from official.vision.configs import retinanet as cfg

        from kfnas.tasks.lidar_config import Lidar, LidarDetectionTaskConfig
        from kfnas.tasks.pillars import ATTRIBUTES, POINT_FEATURES

        strict, loose = thresholds(task, opts)
        rows, cols = voxelization(opts).grid_shape
        lidar = Lidar(
            point_range=[float(v) for v in opts["point_range"]],
            pillar_size=float(opts["pillar_size"]),
            max_pillars=opts["max_pillars"],
            max_points_per_pillar=opts["max_points_per_pillar"],
            max_points=opts["max_points"],
            class_names=class_names(task, opts),
            iou_thresholds=strict,
            loose_iou_thresholds=loose,
            anchor_lengths=[float(pair[0]) for pair in opts["anchor_sizes"]],
            anchor_widths=[float(pair[1]) for pair in opts["anchor_sizes"]],
            match_threshold=float(opts["match_threshold"]),
            unmatched_threshold=float(opts["unmatched_threshold"]),
            aug_rand_flip=opts["aug_rand_flip"],
            aug_rotation=float(opts["aug_rotation"]),
            aug_scale_min=float(opts["aug_scale_min"]),
            aug_scale_max=float(opts["aug_scale_max"]),
            max_num_instances=opts["max_num_instances"],
        )
        batch = opts.get("validation_batch_size", budget.batch_size)
        return LidarDetectionTaskConfig(
            model=cfg.RetinaNet(
                num_classes=task.num_classes + 1,
                # The BEV pseudo-image the backbone sees (rows, columns, point features).
                input_size=[rows, cols, POINT_FEATURES],
                min_level=1,
                max_level=MAX_LEVEL,
                head=cfg.RetinaNetHead(
                    num_convs=opts["head_num_convs"],
                    num_filters=opts["head_num_filters"],
                    attribute_heads=[
                        cfg.AttributeHead(name=name, type="regression", size=size)
                        for name, size in ATTRIBUTES.items()
                    ],
                ),
                detection_generator=cfg.DetectionGenerator(
                    pre_nms_score_threshold=float(opts["pre_nms_score_threshold"]),
                    nms_iou_threshold=float(opts["nms_iou_threshold"]),
                    max_num_detections=opts["max_num_detections"],
                ),
                norm_activation=common.NormActivation(
                    activation=opts["activation"],
                    use_sync_bn=False,
                    norm_momentum=float(opts["norm_momentum"]),
                    norm_epsilon=float(opts["norm_epsilon"]),
                ),
            ),
            train_data=_data_config(data.train, budget.batch_size, opts, training=True),
            validation_data=_data_config(data.validation, batch, opts, training=False),
            losses=cfg.Losses(
                focal_loss_alpha=float(opts["focal_loss_alpha"]),
                focal_loss_gamma=float(opts["focal_loss_gamma"]),
                huber_loss_delta=float(opts["huber_loss_delta"]),
                box_loss_weight=opts["box_loss_weight"],
                l2_weight_decay=float(opts["l2_weight_decay"]),
            ),
            use_coco_metrics=False,
            lidar=lidar,
        )

    def searched_task_class(self) -> type:
        """``RetinaNetTask`` with this module's inputs and evaluation."""
        return _searched_task_class()

    def build_model(self, official_task: Any, network: Network) -> Any:
        """The PointPillars detector around ``network`` (``kfnas.tasks.pillars``)."""
        from kfnas.tasks.pillars import build_detector

        config = official_task.task_config
        model = config.model
        norm = model.norm_activation
        return build_detector(
            task_voxelization(config),
            network,
            num_classes=model.num_classes - 1,
            anchor_sizes=anchor_sizes(config),
            head_num_convs=model.head.num_convs,
            head_num_filters=model.head.num_filters,
            activation=norm.activation,
            norm_momentum=norm.norm_momentum,
            norm_epsilon=norm.norm_epsilon,
            kernel_regularizer=l2_regularizer(config.losses.l2_weight_decay),
            pre_nms_score_threshold=model.detection_generator.pre_nms_score_threshold,
            nms_iou_threshold=model.detection_generator.nms_iou_threshold,
            max_num_detections=model.detection_generator.max_num_detections,
        )

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """``(max_points, 4)``: one point cloud."""
        return (int(self.resolved_options(task)["max_points"]), 4)

    def measured_model(self, model: Any) -> Any:
        """Pillars, backbone, decoder and head, without non-maximum suppression (as detection)."""
        from kfnas.tasks.detection import DETECTION

        return DETECTION.measured_model(model)

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """See ``kfnas.data.lidar.lidar_data_problems`` (range from ``point_range``)."""
        from kfnas.data.lidar import lidar_data_problems

        opts = self.resolved_options(task)
        return lidar_data_problems(
            task, data, point_range=tuple(float(v) for v in opts["point_range"])
        )


def _data_config(pattern: str, batch_size: int, opts: dict[str, Any], *, training: bool) -> Any:
    from official.vision.configs import retinanet as cfg

    return cfg.DataConfig(
        input_path=pattern,
        global_batch_size=batch_size,
        is_training=training,
        drop_remainder=training,
        shuffle_buffer_size=opts["shuffle_buffer_size"],
        cache=opts["cache_data"],
    )


LIDAR_DETECTION = LidarDetectionTask()

__all__ = [
    "DEFAULT_CLASS_NAMES",
    "LIDAR_DETECTION",
    "METRIC_NAMES",
    "OPTIONS",
    "LidarDetectionTask",
    "anchor_sizes",
    "class_names",
    "lidar_inputs",
    "task_voxelization",
    "thresholds",
    "voxelization",
]
