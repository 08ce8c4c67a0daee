"""Semantic segmentation: official.vision's segmentation model around a searched network, by mIoU.

``SEGMENTATION`` follows ``kfnas.tasks.base.TaskKind``. ``build_task`` configures tf-models'
``SemanticSegmentationTask`` (its input pipeline over official.vision's segmentation TFRecords,
per-pixel softmax cross-entropy ignoring mask value 255, per-class IoU evaluation) from the spec;
``build_model`` wraps a searched network (its decoder, or one the task picks) with
``factory.build_segmentation_model`` and a ``SegmentationHead`` reading one decoder level.

Classes: like detection, ``task.num_classes`` counts the classes besides the background. Masks
hold 0 for the background and ``1..num_classes`` for the classes (255: ignored), and the model
predicts ``num_classes + 1`` classes. Metrics (``metric_names``): ``mean_iou``, tf-models' mean
over all ``num_classes + 1`` classes of the per-class IoU (the default objective), and
``pixel_accuracy``, the share of non-ignored pixels predicted right; the per-class IoUs are also
reported as ``iou/0``, ``iou/1``, ... Validation reads the whole validation set once, with masks at
the input size.

Model knobs live in ``task.options``; ``option_problems`` rejects unknown keys (listing the valid
ones), wrong types, levels outside 3..7 or inverted, a head level outside them, and an image size
the levels cannot divide. Backbone and decoder knobs (``backbone``, ``filter_size_scale``,
``decoder_num_filters``, ``decoder_num_repeats``) are the spaces' own (``task_options`` of
``nasfpn``, whose backbone defaults to ``resnet10``).

==========================  =========  =============================================================
option                      default    meaning
==========================  =========  =============================================================
fpn_num_filters             256        width of the FPN the task adds under a backbone without
                                       every level (as detection's option of the same name)
min_level, max_level        3, 7       decoder levels (stride ``2**level``)
head_level                  3          the decoder level the head reads (output stride)
head_num_convs              2          3x3 convolutions of the head
head_num_filters            256        channels of the head convolutions
activation                  swish      backbone, decoder and head activation (``relu``/``swish``)
norm_momentum, norm_epsilon .99, 1e-3  batch normalization of backbone, decoder and head
l2_weight_decay             4e-5       L2 weight decay of the whole model
aug_rand_hflip              true       random horizontal flips in training
aug_scale_min, aug_scale_max 1.0, 1.0  random scale jitter range in training
augmentation                none       RandAugment or AutoAugment policy applied to the decoded
                                       training images and masks before normalization, flip and
                                       scale jitter (``kfnas.augment.tables``)
validation_batch_size       batch      validation batch (default ``budget.batch_size``)
learning_rate               lr         base rate; default ``0.01 * batch_size / 32`` (Vertex's
                                       segmentation recipe: 0.01 at batch 32)
warmup_steps                steps      linear warm-up from 0; default ``min(500, steps // 10)``
==========================  =========  =============================================================

Optimizer: SGD with momentum 0.9 and cosine decay to 0 over the budget's steps, after the warm-up.

To add a knob: add one line to ``OPTIONS`` and read it in ``_model_config`` or ``_data_config``
(backbone and decoder knobs: in the search space's ``task_options`` and ``build_network``).
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any

from kfnas.spaces.options import (
    LEVEL_OPTIONS,
    LEVEL_RANGE,
    Option,
    choice,
    integer,
)
from kfnas.spaces.regularizers import l2_regularizer
from kfnas.tasks.base import (
    AUGMENTATION_OPTIONS,
    COMMON_OPTIONS,
    OfficialTask,
    SearchedTask,
    ServingExport,
    level_problems,
    scale_jitter_problems,
)

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network

#: Mask value left out of the loss and the metrics.
IGNORE_LABEL = 255

#: Every knob of ``task.options`` the task reads (see the table in the module docstring).
OPTIONS: dict[str, Option] = {
    "fpn_num_filters": integer(1, 256),
    **LEVEL_OPTIONS,
    "head_level": integer(1, 3),
    "head_num_convs": integer(0, 2),
    "head_num_filters": integer(1, 256),
    "activation": choice(("relu", "swish"), "swish"),
    **COMMON_OPTIONS,
    **AUGMENTATION_OPTIONS,
}


def _model_config(task: TaskSpec, opts: dict[str, Any]) -> Any:
    from official.vision.configs import backbones, common, decoders
    from official.vision.configs import semantic_segmentation as cfg

    return cfg.SemanticSegmentationModel(
        num_classes=task.num_classes + 1,  # Class 0 is the background.
        input_size=[task.image_size, task.image_size, 3],
        min_level=opts["min_level"],
        max_level=opts["max_level"],
        head=cfg.SegmentationHead(
            level=opts["head_level"],
            num_convs=opts["head_num_convs"],
            num_filters=opts["head_num_filters"],
        ),
        backbone=backbones.Backbone(type=None),  # The search space builds it.
        # Used only for a network without a decoder whose backbone lacks levels (build_model).
        decoder=decoders.Decoder(type="fpn", fpn=decoders.FPN(num_filters=opts["fpn_num_filters"])),
        norm_activation=common.NormActivation(
            activation=opts["activation"],
            use_sync_bn=False,
            norm_momentum=float(opts["norm_momentum"]),
            norm_epsilon=float(opts["norm_epsilon"]),
        ),
    )


def _data_config(
    pattern: str, batch_size: int, size: int, opts: dict[str, Any], *, training: bool
) -> Any:
    from official.vision.configs import semantic_segmentation as cfg

    return cfg.DataConfig(
        input_path=pattern,
        global_batch_size=batch_size,
        is_training=training,
        # Validation reads the set once (is_training=False: no repeat) and keeps its last
        # partial batch: every image counts.
        drop_remainder=training,
        output_size=[size, size],
        resize_eval_groundtruth=True,
        aug_rand_hflip=opts["aug_rand_hflip"] if training else False,
        aug_scale_min=float(opts["aug_scale_min"]) if training else 1.0,
        aug_scale_max=float(opts["aug_scale_max"]) if training else 1.0,
        dtype="float32",
    )


def _with_default_decoder(model_config: Any, backbone: Any) -> Any:
    """The model config for a network without a decoder.

    Identity decoder if the backbone outputs every level ``min_level..max_level``, else the
    config's FPN.
    """
    from official.vision.configs import decoders

    levels = {str(level) for level in range(model_config.min_level, model_config.max_level + 1)}
    if not levels <= set(backbone.output_specs):
        return model_config
    model_config = copy.deepcopy(model_config)
    model_config.decoder = decoders.Decoder(type="identity", identity=decoders.Identity())
    return model_config


@functools.cache
def _searched_task_class() -> type:
    from official.vision.tasks import semantic_segmentation

    class SearchedSemanticSegmentationTask(
        SearchedTask, semantic_segmentation.SemanticSegmentationTask
    ):
        """tf-models' segmentation task with a searched network (``SearchedTask``).

        ``reduce_aggregated_logs`` adds ``pixel_accuracy`` from the per-class IoU's confusion
        matrix.
        """

        kind = SEGMENTATION
        augmented_inputs = "kfnas.augment.inputs:segmentation_inputs"

        def reduce_aggregated_logs(self, aggregated_logs: Any, global_step: Any = None) -> Any:
            import tensorflow as tf

            logs = super().reduce_aggregated_logs(aggregated_logs, global_step)
            if self.iou_metric is not None:
                matrix = tf.cast(self.iou_metric.total_cm, tf.float64)
                logs["pixel_accuracy"] = tf.math.divide_no_nan(
                    tf.linalg.trace(matrix), tf.reduce_sum(matrix)
                )
            return logs

    return SearchedSemanticSegmentationTask


class SegmentationTask(OfficialTask):
    """The segmentation task kind (see the module docstring); ``SEGMENTATION`` is its instance."""

    name = "segmentation"
    default_metric = "mean_iou"
    metric_names = ("mean_iou", "pixel_accuracy")
    options = OPTIONS
    serving_export = ServingExport(
        module="official.vision.serving.semantic_segmentation:SegmentationModule",
        # Logits at the model's input size, with image_info: official's rescaling to the
        # caller's size raises for any batch size but 1, and the signatures take any batch.
        config_overrides={"export_config": {"rescale_output": False}},
    )
    augmentation_space = "randaugment_segmentation"
    # Vertex's ``semantic_segmentation_nas`` recipe: SGD, cosine from 0.01 at batch 32, warm-up 500.
    base_rate = (0.01, 32)
    warmup_cap = 500

    def extra_problems(self, task: TaskSpec, opts: dict[str, Any]) -> list[str]:
        """A head level outside the levels, then ``level_problems``, an inverted jitter range."""
        min_level, max_level = opts["min_level"], opts["max_level"]
        low, high = LEVEL_RANGE
        out = []
        if (
            low <= min_level <= max_level <= high
            and not min_level <= opts["head_level"] <= max_level
        ):
            out.append(
                f"task.options.head_level {opts['head_level']} must lie in min_level..max_level "
                f"= {min_level}..{max_level}: the head reads that decoder level"
            )
        return out + level_problems(task, min_level, max_level) + scale_jitter_problems(opts)

    def task_config(
        self, task: TaskSpec, data: DataSpec, budget: BudgetSpec, opts: dict[str, Any]
    ) -> Any:
        """A ``SemanticSegmentationTask`` config (per-class IoU, no image summaries)."""
        from official.vision.configs import semantic_segmentation as cfg

        size = task.image_size
        batch = opts.get("validation_batch_size", budget.batch_size)
        return cfg.SemanticSegmentationTask(
            model=_model_config(task, opts),
            train_data=_data_config(data.train, budget.batch_size, size, opts, training=True),
            validation_data=_data_config(data.validation, batch, size, opts, training=False),
            losses=cfg.Losses(
                ignore_label=IGNORE_LABEL, l2_weight_decay=float(opts["l2_weight_decay"])
            ),
            evaluation=cfg.Evaluation(report_per_class_iou=True, report_train_mean_iou=True),
            allow_image_summary=False,  # No image summaries: trials report scalars only.
        )

    def searched_task_class(self) -> type:
        """``SemanticSegmentationTask`` with ``SearchedTask`` and a pixel accuracy."""
        return _searched_task_class()

    def build_model(self, official_task: Any, network: Network) -> Any:
        """The segmentation model around ``network`` (``factory.build_segmentation_model``).

        The decoder is the network's when the space searches one (NAS-FPN); otherwise identity
        for a backbone with every level ``min_level..max_level`` (SpineNet), else tf-models' FPN
        over them with ``fpn_num_filters`` channels (ResNet- or MobileNet-like backbones).
        """
        import tf_keras
        from official.vision.modeling import factory

        config = official_task.task_config
        model_config = config.model
        if network.decoder is None:
            model_config = _with_default_decoder(model_config, network.backbone)
        input_specs = tf_keras.layers.InputSpec(shape=[None, *model_config.input_size])
        model = factory.build_segmentation_model(
            input_specs=input_specs,
            model_config=model_config,
            l2_regularizer=l2_regularizer(config.losses.l2_weight_decay),
            backbone=network.backbone,
            decoder=network.decoder,
        )
        model(tf_keras.Input(model_config.input_size), training=False)  # Builds the variables.
        return model

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """See ``kfnas.data.segmentation.segmentation_data_problems``."""
        from kfnas.data.segmentation import segmentation_data_problems

        return segmentation_data_problems(task, data)


SEGMENTATION = SegmentationTask()
option_problems = SEGMENTATION.option_problems
resolved_options = SEGMENTATION.resolved_options

__all__ = [
    "IGNORE_LABEL",
    "LEVEL_RANGE",
    "OPTIONS",
    "SEGMENTATION",
    "SegmentationTask",
    "option_problems",
    "resolved_options",
]
