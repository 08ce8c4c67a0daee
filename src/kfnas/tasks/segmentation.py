"""Semantic segmentation: official.vision's segmentation model around a searched network, by mIoU.

``SEGMENTATION`` follows ``kfnas.tasks.base.TaskKind``. ``build_task`` configures tf-models'
``SemanticSegmentationTask`` (its input pipeline over official.vision's segmentation TFRecords,
per-pixel softmax cross-entropy ignoring mask value 255, per-class IoU evaluation) from the spec;
``build_model`` wraps a searched network with ``factory.build_segmentation_model`` and a
``SegmentationHead`` reading one decoder level. The decoder is the network's when the space
searches one (NAS-FPN); otherwise the task picks it from the backbone's endpoints: ``identity``
when the backbone already outputs every level ``min_level..max_level`` (SpineNet), else tf-models'
``FPN`` over those levels (ResNet- or MobileNet-like backbones).

Classes: like detection, ``task.num_classes`` counts the classes besides the background. Masks
hold 0 for the background and ``1..num_classes`` for the classes (255: ignored), and the model
predicts ``num_classes + 1`` classes. Metrics (``metric_names``): ``mean_iou``, tf-models' mean
over all ``num_classes + 1`` classes of the per-class IoU (the default objective), and
``pixel_accuracy``, the share of non-ignored pixels predicted right, read off the same confusion
matrix; the per-class IoUs are also reported as ``iou/0``, ``iou/1``, ... Validation reads the
whole validation set once (no repeat, last partial batch kept), with masks at the input size.

``build_task`` returns a ``SemanticSegmentationTask`` subclass whose ``build_model()`` uses
``network_factory`` when set (as detection's does) and whose ``reduce_aggregated_logs`` adds
``pixel_accuracy``.

Model knobs live in ``task.options``; ``option_problems`` rejects unknown keys (listing the valid
ones), wrong types, levels outside 3..7 or inverted, a head level outside them, and an image size
the levels cannot divide. ``-`` means "set by the search space" (see its module; e.g. nasfpn's
backbone defaults to ``resnet10``).

==========================  =========  =============================================================
option                      default    meaning
==========================  =========  =============================================================
backbone                    -          the fixed backbone under a space that searches the decoder
                                       (nasfpn); the space names those it takes
filter_size_scale           -          backbone width multiplier (1.0)
decoder_num_filters         -          NAS-FPN node channels (256)
decoder_num_repeats         -          stacked NAS-FPN cells (5)
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

Optimizer: SGD with momentum 0.9 and cosine decay to 0 over the budget's steps, after the warm-up
(Vertex's ``semantic_segmentation_nas`` recipe: cosine 0.01, warm-up 500).

To add a knob: add one line to ``OPTIONS`` and read it in ``_model_config``, ``_data_config`` or
``optimizer_config`` (backbone and decoder knobs: in the search space's ``build_network``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kfnas.augment.tables import augmentation_problems
from kfnas.config.spec import SpecError
from kfnas.tasks.options import (
    Option,
    choice,
    flag,
    fraction,
    integer,
    number,
    resolve,
    table_problems,
)

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network

#: Feature levels the decoders and the head may use.
LEVEL_RANGE = (3, 7)
#: Mask value left out of the loss and the metrics.
IGNORE_LABEL = 255

#: Every knob of ``task.options`` (see the table in the module docstring).
OPTIONS: dict[str, Option] = {
    "backbone": Option(None, lambda v: isinstance(v, str) and bool(v), "a backbone name"),
    "filter_size_scale": number(0, strict=True),
    "decoder_num_filters": integer(1),
    "decoder_num_repeats": integer(1),
    "fpn_num_filters": integer(1, 256),
    "min_level": integer(1, 3),
    "max_level": integer(1, 7),
    "head_level": integer(1, 3),
    "head_num_convs": integer(0, 2),
    "head_num_filters": integer(1, 256),
    "activation": choice(("relu", "swish"), "swish"),
    "norm_momentum": fraction(0.99),
    "norm_epsilon": number(0, 0.001, strict=True),
    "l2_weight_decay": number(0, 4e-5),
    "aug_rand_hflip": flag(True),
    "aug_scale_min": number(0, 1.0, strict=True),
    "aug_scale_max": number(0, 1.0, strict=True),
    # Checked in option_problems by augmentation_problems, whose messages say what to write.
    "augmentation": Option(None, lambda v: True, "a RandAugment or AutoAugment policy"),
    "validation_batch_size": integer(1),
    "learning_rate": number(0, strict=True),
    "warmup_steps": integer(0),
}


def option_problems(task: TaskSpec) -> list[str]:
    """What is wrong with ``task.options`` for segmentation, as messages that say what to change.

    Checks: unknown keys (the message lists the valid ones), values of the wrong type or range,
    levels outside ``LEVEL_RANGE`` or inverted, a head level outside them, an inverted scale
    jitter range, and an image size that ``2**max_level`` does not divide.
    """
    out = table_problems("segmentation", task.options, OPTIONS)
    if "augmentation" in task.options:
        out.extend(augmentation_problems(task.options["augmentation"], "segmentation"))
    if out:
        return out
    opts = resolve(task.options, OPTIONS)
    low, high = LEVEL_RANGE
    min_level, max_level = opts["min_level"], opts["max_level"]
    if not low <= min_level <= max_level <= high:
        out.append(
            f"task.options min_level {min_level} and max_level {max_level} must satisfy "
            f"{low} <= min_level <= max_level <= {high}"
        )
    else:
        if not min_level <= opts["head_level"] <= max_level:
            out.append(
                f"task.options.head_level {opts['head_level']} must lie in min_level..max_level "
                f"= {min_level}..{max_level}: the head reads that decoder level"
            )
        if task.image_size % 2**max_level:
            stride = 2**max_level
            bigger = -(-task.image_size // stride) * stride
            out.append(
                f"task.image_size {task.image_size} is not divisible by 2**max_level = {stride} "
                f"(task.options.max_level = {max_level}): use a multiple of {stride} such as "
                f"{bigger}, or lower max_level"
            )
    if opts["aug_scale_min"] > opts["aug_scale_max"]:
        out.append("task.options.aug_scale_min must not exceed task.options.aug_scale_max")
    return out


def resolved_options(task: TaskSpec) -> dict[str, Any]:
    """``task.options`` over the defaults of ``OPTIONS`` (space knobs left out unless set)."""
    return resolve(task.options, OPTIONS)


def _check(task: TaskSpec) -> dict[str, Any]:
    problems = option_problems(task)
    if problems:
        raise SpecError(
            "the segmentation task options are not valid:\n  - " + "\n  - ".join(problems)
        )
    return resolved_options(task)


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
        drop_remainder=training,  # Validation keeps its last partial batch: every image counts.
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
    """``SemanticSegmentationTask`` with a searched network and a pixel accuracy."""
    from official.vision.tasks import semantic_segmentation

    class SearchedSemanticSegmentationTask(semantic_segmentation.SemanticSegmentationTask):
        """tf-models' segmentation task with a searched network.

        Set ``network_factory`` (``input_specs -> Network``, e.g. a search space's
        ``build_network`` with its architecture and task bound) before tools that call
        ``build_model()`` themselves; or build the model with ``SEGMENTATION.build_model``.
        ``reduce_aggregated_logs`` adds ``pixel_accuracy`` from the per-class IoU's confusion
        matrix.
        """

        network_factory: Callable[[Any], Any] | None = None
        #: ``task.options.augmentation``: the training inputs apply it (``kfnas.augment``).
        augmentation: Any = None

        def build_inputs(self, params: Any, input_context: Any = None) -> Any:
            if params.is_training and self.augmentation is not None:
                from kfnas.augment.inputs import segmentation_inputs

                return segmentation_inputs(self, params, input_context, self.augmentation)
            return super().build_inputs(params, input_context)

        def build_model(self) -> Any:
            import tf_keras

            if self.network_factory is None:
                raise RuntimeError(
                    "this segmentation task has no network: set task.network_factory, or build "
                    "the model with kfnas.tasks.segmentation.SEGMENTATION.build_model(task, "
                    "network)"
                )
            input_specs = tf_keras.layers.InputSpec(
                shape=[None, *self.task_config.model.input_size]
            )
            return SEGMENTATION.build_model(self, self.network_factory(input_specs))

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


@dataclasses.dataclass(frozen=True)
class SegmentationTask:
    """The segmentation task kind (see the module docstring); ``SEGMENTATION`` is its instance."""

    name: str = "segmentation"
    metric_names: tuple[str, ...] = ("mean_iou", "pixel_accuracy")
    default_metric: str = "mean_iou"

    def build_task(self, task: TaskSpec, data: DataSpec, budget: BudgetSpec) -> Any:
        """A configured segmentation task (a ``SemanticSegmentationTask`` subclass).

        Raises:
            SpecError: ``option_problems`` found problems.
        """
        opts = _check(task)  # Before importing TensorFlow: bad options fail fast.
        from official.vision.configs import semantic_segmentation as cfg

        size = task.image_size
        config = cfg.SemanticSegmentationTask(
            model=_model_config(task, opts),
            train_data=_data_config(data.train, budget.batch_size, size, opts, training=True),
            validation_data=_data_config(
                data.validation,
                opts.get("validation_batch_size", budget.batch_size),
                size,
                opts,
                training=False,
            ),
            losses=cfg.Losses(
                ignore_label=IGNORE_LABEL, l2_weight_decay=float(opts["l2_weight_decay"])
            ),
            evaluation=cfg.Evaluation(report_per_class_iou=True, report_train_mean_iou=True),
            allow_image_summary=False,  # No image summaries: trials report scalars only.
        )
        official_task = _searched_task_class()(config)
        official_task.augmentation = opts.get("augmentation")
        return official_task

    def build_model(self, official_task: Any, network: Network) -> Any:
        """The segmentation model around ``network`` (``factory.build_segmentation_model``).

        The decoder is the network's when the space searches one (NAS-FPN); otherwise identity
        for a backbone with every level ``min_level..max_level``, else an FPN over them with
        ``fpn_num_filters`` channels.
        """
        import tf_keras
        from official.vision.modeling import factory

        config = official_task.task_config
        model_config = config.model
        if network.decoder is None:
            model_config = _with_default_decoder(model_config, network.backbone)
        input_specs = tf_keras.layers.InputSpec(shape=[None, *model_config.input_size])
        decay = config.losses.l2_weight_decay
        # Halved as SemanticSegmentationTask.build_model does, to match tf.nn.l2_loss.
        regularizer = tf_keras.regularizers.l2(decay / 2.0) if decay else None
        model = factory.build_segmentation_model(
            input_specs=input_specs,
            model_config=model_config,
            l2_regularizer=regularizer,
            backbone=network.backbone,
            decoder=network.decoder,
        )
        model(tf_keras.Input(model_config.input_size), training=False)  # Builds the variables.
        return model

    def optimizer_config(self, task: TaskSpec, budget: BudgetSpec) -> Any:
        """SGD with momentum 0.9, cosine decay and linear warm-up for ``budget.train_steps``."""
        opts = _check(task)
        from official.modeling import optimization

        steps = budget.train_steps
        rate = float(opts.get("learning_rate", 0.01 * budget.batch_size / 32))
        config: dict[str, Any] = {
            "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
            "learning_rate": {
                "type": "cosine",
                "cosine": {"initial_learning_rate": rate, "decay_steps": max(1, steps)},
            },
        }
        warmup = int(opts.get("warmup_steps", min(500, steps // 10)))
        if warmup > 0:
            config["warmup"] = {
                "type": "linear",
                "linear": {"warmup_steps": warmup, "warmup_learning_rate": 0.0},
            }
        return optimization.OptimizationConfig(config)

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """``(image_size, image_size, 3)``."""
        return (task.image_size, task.image_size, 3)

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """See ``kfnas.data.segmentation.segmentation_data_problems``."""
        from kfnas.data.segmentation import segmentation_data_problems

        return segmentation_data_problems(task, data)

    def option_problems(self, task: TaskSpec) -> list[str]:
        """See the module function ``option_problems``."""
        return option_problems(task)

    def metrics_from_logs(self, logs: dict[str, Any]) -> dict[str, float]:
        """``metric_names`` -> float, from what ``reduce_aggregated_logs`` returned.

        Raises:
            KeyError: A metric is missing from ``logs`` (the message lists the keys present).
        """
        missing = [key for key in self.metric_names if key not in logs]
        if missing:
            raise KeyError(f"evaluation logs lack {missing}; they have {sorted(logs)}")
        return {name: float(logs[name]) for name in self.metric_names}


SEGMENTATION = SegmentationTask()

__all__ = [
    "IGNORE_LABEL",
    "LEVEL_RANGE",
    "OPTIONS",
    "SEGMENTATION",
    "SegmentationTask",
    "option_problems",
    "resolved_options",
]
