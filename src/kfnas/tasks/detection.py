"""Detection: RetinaNet (tf-models-official) around a searched backbone, scored by COCO AP.

``DETECTION`` follows ``kfnas.tasks.base.TaskKind``. ``build_task`` configures tf-models'
``RetinaNetTask`` (its input pipeline, focal and Huber losses, COCO evaluator) from the spec;
``build_model`` wraps a searched backbone with ``factory.build_retinanet`` (decoder ``identity``:
SpineNet already outputs one feature map per level); ``optimizer_config`` is the published SpineNet
RetinaNet recipe (SGD momentum 0.9, step decay x0.1 at 95 % and 98 % of the steps, linear
warm-up) sized to the budget. Validation reads the whole validation set once (no repeat, last
partial batch kept). COCO evaluation uses ``data.annotations`` when given; otherwise tf-models'
``COCOEvaluator`` (``annotation_file=None``) builds the ground truth from the validation records,
which then need integer ``image/source_id`` values (``build_task`` returns a ``RetinaNetTask``
subclass whose ``validation_step`` flattens the per-image ground-truth counts: tf-models 2.20 gives
them shape ``[1]`` and that evaluator path calls ``int()`` on them, which NumPy 2 refuses; its
``build_model()`` uses ``network_factory`` when set). Its metric keys ``AP``, ``AP50``, ``AP75``,
``APs``, ``APm``, ``APl`` (box AP, no prefix) are the ``metric_names``; COCO reports -1 for a
metric with no ground truth (e.g. ``APl`` on small images).

Model knobs live in ``task.options`` (a proxy task shrinks them); ``option_problems`` rejects
unknown keys (listing the valid ones), wrong types, levels outside 3..7 and an image size the
levels cannot divide (``image_size % 2**max_level != 0``). ``-`` below means "the backbone's
published default" (read by the search space's ``build_network``).

================================  =========  =====================================================
option                            default    meaning
================================  =========  =====================================================
backbone                          -          the fixed backbone under a space that searches the
                                             decoder (nasfpn); the space names those it takes
min_level, max_level              3, 7       feature levels (stride ``2**level``) of the backbone
                                             endpoints, head and anchors; proxies use e.g. 3..5
filter_size_scale                 -          backbone width multiplier (SpineNet-49: 1.0)
endpoints_num_filters             -          backbone output channels (SpineNet 256, Mobile 48)
                                             (mnasnet, efficientnet_v2: a 1x1 conv of that
                                             width on level 5; default 0, none)
resample_alpha                    -          SpineNet cross-scale resampling width (0.5)
block_repeats                     -          blocks per SpineNet node (1; keep 1 for mbconv)
se_ratio, expand_ratio            -          SpineNetMobile squeeze-excite (0.2), expansion (6)
init_stochastic_depth_rate        -          stochastic depth drop rate of the backbone (0.0)
decoder_num_filters               -          NAS-FPN node channels (256; space nasfpn)
decoder_num_repeats               -          stacked NAS-FPN cells (5; space nasfpn)
activation                        swish      backbone and head activation (``relu`` or ``swish``)
                                             (unset: the mnasnet backbones keep relu)
norm_momentum, norm_epsilon       .99, 1e-3  batch normalization of backbone and head
l2_weight_decay                   4e-5       L2 weight decay of backbone and head
head_num_convs, head_num_filters  4, 256     RetinaNet head depth and width
head_use_separable_conv           false      separable convolutions in the head
fpn_num_filters                   256        width of the FPN that ``build_model`` puts on a
                                             backbone whose levels miss some of min..max or
                                             differ in width (mnasnet, efficientnet_v2)
anchor_size                       3.0        base anchor side, in strides of its level
anchor_num_scales                 3          anchor scales per level
anchor_aspect_ratios              .5, 1, 2   anchor aspect ratios (width / height)
focal_loss_alpha, _gamma          .25, 1.5   classification focal loss
huber_loss_delta                  0.1        box regression Huber loss delta
box_loss_weight                   50         weight of the box loss
aug_rand_hflip                    true       random horizontal flips in training
aug_scale_min, aug_scale_max      1.0, 1.0   random scale jitter range in training
augmentation                      none       RandAugment or AutoAugment policy applied to the
                                             decoded training images and boxes before the
                                             flip and scale jitter (``kfnas.augment.tables``)
max_num_instances                 100        objects kept per image
shuffle_buffer_size               1000       training shuffle buffer (records)
cache_data                        false      cache decoded data in memory (small data sets)
validation_batch_size             batch      validation batch (default ``budget.batch_size``)
pre_nms_score_threshold           0.05       score threshold before non-max suppression
nms_iou_threshold                 0.5        non-max suppression IoU threshold
max_num_detections                100        detections per image (and per COCO image)
learning_rate                     lr         base rate; default ``0.32 * batch_size / 256``
momentum                          0.9        SGD momentum
warmup_steps                      steps      linear warm-up; default ``min(2000, steps // 10)``
warmup_learning_rate              lr/48      rate at step 0 of the warm-up (0.0067 / 0.32 x lr)
================================  =========  =====================================================

To add a knob: add one ``_Option`` line to ``OPTIONS`` and read it in ``_model_config``,
``_data_config`` or ``optimizer_config`` (backbone knobs: in the space's ``build_backbone``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kfnas.augment.tables import augmentation_problems
from kfnas.config.spec import SpecError

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network

#: Feature levels RetinaNet and the SpineNet spaces support.
LEVEL_RANGE = (3, 7)
#: kfnas metric name -> its key in what ``RetinaNetTask.reduce_aggregated_logs`` returns (the
#: box metrics of tf-models' ``COCOEvaluator``; it also reports ARmax1, ARmax10, ARmax100, ARs,
#: ARm and ARl, which kfnas does not use).
METRIC_KEYS: dict[str, str] = {name: name for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
#: Step decay of the published recipe: x0.1 after these fractions of the training steps.
_DECAY_AT = (0.95, 0.98)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class _Option:
    """One ``task.options`` knob: its default (``None``: set elsewhere) and its check."""

    default: Any
    check: Callable[[Any], bool]
    expected: str


def _int(low: int, default: Any = None) -> _Option:
    return _Option(default, lambda v: _is_int(v) and v >= low, f"an integer >= {low}")


def _num(low: float, default: Any = None, *, strict: bool = False) -> _Option:
    if strict:
        return _Option(default, lambda v: _is_number(v) and v > low, f"a number > {low:g}")
    return _Option(default, lambda v: _is_number(v) and v >= low, f"a number >= {low:g}")


def _fraction(default: Any = None) -> _Option:
    return _Option(default, lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]")


def _flag(default: bool) -> _Option:
    return _Option(default, lambda v: isinstance(v, bool), "true or false")


#: Every knob of ``task.options`` (see the table in the module docstring).
OPTIONS: dict[str, _Option] = {
    "backbone": _Option(None, lambda v: isinstance(v, str) and bool(v), "a backbone name"),
    "min_level": _int(1, 3),
    "max_level": _int(1, 7),
    "filter_size_scale": _num(0, strict=True),
    "endpoints_num_filters": _int(1),
    "resample_alpha": _num(0, strict=True),
    "block_repeats": _int(1),
    "se_ratio": _fraction(),
    "expand_ratio": _int(1),
    "init_stochastic_depth_rate": _fraction(),
    "decoder_num_filters": _int(1),
    "decoder_num_repeats": _int(1),
    "activation": _Option("swish", lambda v: v in ("relu", "swish"), "'relu' or 'swish'"),
    "norm_momentum": _fraction(0.99),
    "norm_epsilon": _num(0, 0.001, strict=True),
    "l2_weight_decay": _num(0, 4e-5),
    "head_num_convs": _int(0, 4),
    "head_num_filters": _int(1, 256),
    "head_use_separable_conv": _flag(False),
    "fpn_num_filters": _int(1, 256),
    "anchor_size": _num(0, 3.0, strict=True),
    "anchor_num_scales": _int(1, 3),
    "anchor_aspect_ratios": _Option(
        [0.5, 1.0, 2.0],
        lambda v: isinstance(v, list) and bool(v) and all(_is_number(r) and r > 0 for r in v),
        "a non-empty list of positive numbers",
    ),
    "focal_loss_alpha": _fraction(0.25),
    "focal_loss_gamma": _num(0, 1.5),
    "huber_loss_delta": _num(0, 0.1, strict=True),
    "box_loss_weight": _num(0, 50),
    "aug_rand_hflip": _flag(True),
    "aug_scale_min": _num(0, 1.0, strict=True),
    "aug_scale_max": _num(0, 1.0, strict=True),
    # Checked in option_problems by augmentation_problems, whose messages say what to write.
    "augmentation": _Option(None, lambda v: True, "a RandAugment or AutoAugment policy"),
    "max_num_instances": _int(1, 100),
    "shuffle_buffer_size": _int(1, 1000),
    "cache_data": _flag(False),
    "validation_batch_size": _int(1),
    "pre_nms_score_threshold": _fraction(0.05),
    "nms_iou_threshold": _fraction(0.5),
    "max_num_detections": _int(1, 100),
    "learning_rate": _num(0, strict=True),
    "momentum": _fraction(0.9),
    "warmup_steps": _int(0),
    "warmup_learning_rate": _num(0),
}


def option_problems(task: TaskSpec) -> list[str]:
    """What is wrong with ``task.options`` for detection, as messages that say what to change.

    Checks: unknown keys (the message lists the valid ones), values of the wrong type or range,
    levels outside ``LEVEL_RANGE`` or inverted, an inverted scale jitter range, and an image size
    that ``2**max_level`` does not divide.
    """
    out = []
    for key, value in task.options.items():
        if key not in OPTIONS:
            close = difflib.get_close_matches(key, OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(
                f"task.options.{key} is not a detection option{hint}; valid options: "
                f"{', '.join(sorted(OPTIONS))}"
            )
        elif not OPTIONS[key].check(value):
            out.append(f"task.options.{key} must be {OPTIONS[key].expected}, got {value!r}")
    if "augmentation" in task.options:
        out.extend(augmentation_problems(task.options["augmentation"], "detection"))
    if out:
        return out
    opts = resolved_options(task)
    low, high = LEVEL_RANGE
    min_level, max_level = opts["min_level"], opts["max_level"]
    if not low <= min_level <= max_level <= high:
        out.append(
            f"task.options min_level {min_level} and max_level {max_level} must satisfy "
            f"{low} <= min_level <= max_level <= {high}"
        )
    elif task.image_size % 2**max_level:
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
    """``task.options`` over the defaults of ``OPTIONS`` (backbone knobs left out unless set)."""
    defaults = {k: o.default for k, o in OPTIONS.items() if o.default is not None}
    return {**defaults, **task.options}


def _check(task: TaskSpec) -> dict[str, Any]:
    problems = option_problems(task)
    if problems:
        raise SpecError("the detection task options are not valid:\n  - " + "\n  - ".join(problems))
    return resolved_options(task)


def _model_config(task: TaskSpec, opts: dict[str, Any]) -> Any:
    from official.vision.configs import backbones, common, decoders
    from official.vision.configs import retinanet as cfg

    return cfg.RetinaNet(
        num_classes=task.num_classes + 1,  # Class 0 is the background.
        input_size=[task.image_size, task.image_size, 3],
        min_level=opts["min_level"],
        max_level=opts["max_level"],
        anchor=cfg.Anchor(
            num_scales=opts["anchor_num_scales"],
            aspect_ratios=[float(r) for r in opts["anchor_aspect_ratios"]],
            anchor_size=float(opts["anchor_size"]),
        ),
        backbone=backbones.Backbone(type=None),  # The search space builds it.
        decoder=decoders.Decoder(
            type="identity",
            identity=decoders.Identity(),
            fpn=decoders.FPN(num_filters=opts["fpn_num_filters"], use_separable_conv=False),
        ),
        head=cfg.RetinaNetHead(
            num_convs=opts["head_num_convs"],
            num_filters=opts["head_num_filters"],
            use_separable_conv=opts["head_use_separable_conv"],
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
    )


def _data_config(pattern: str, batch_size: int, opts: dict[str, Any], *, training: bool) -> Any:
    from official.vision.configs import retinanet as cfg

    parser = cfg.Parser(max_num_instances=opts["max_num_instances"])
    if training:
        parser.aug_rand_hflip = opts["aug_rand_hflip"]
        parser.aug_scale_min = float(opts["aug_scale_min"])
        parser.aug_scale_max = float(opts["aug_scale_max"])
    return cfg.DataConfig(
        input_path=pattern,
        global_batch_size=batch_size,
        is_training=training,
        drop_remainder=training,  # Validation keeps its last partial batch: every image counts.
        dtype="float32",
        shuffle_buffer_size=opts["shuffle_buffer_size"],
        cache=opts["cache_data"],
        parser=parser,
    )


@functools.cache
def _searched_task_class() -> type:
    """``RetinaNetTask`` whose ``build_model()`` takes its network from ``network_factory``."""
    from official.vision.tasks import retinanet

    class SearchedRetinaNetTask(retinanet.RetinaNetTask):
        """tf-models' RetinaNet task with a searched network.

        Set ``network_factory`` (``input_specs -> Network``, e.g. a search space's
        ``build_network`` with its architecture and task bound) before tools that call
        ``build_model()`` themselves; or build the model with ``DETECTION.build_model``.
        """

        network_factory: Callable[[Any], Any] | None = None
        #: ``task.options.augmentation``: the training inputs apply it (``kfnas.augment``).
        augmentation: Any = None

        def build_inputs(self, params: Any, input_context: Any = None) -> Any:
            if params.is_training and self.augmentation is not None:
                from kfnas.augment.inputs import detection_inputs

                return detection_inputs(self, params, input_context, self.augmentation)
            return super().build_inputs(params, input_context)

        def build_model(self) -> Any:
            import tf_keras

            if self.network_factory is None:
                raise RuntimeError(
                    "this RetinaNet task has no network: set task.network_factory, or build the "
                    "model with kfnas.tasks.detection.DETECTION.build_model(task, network)"
                )
            input_specs = tf_keras.layers.InputSpec(
                shape=[None, *self.task_config.model.input_size]
            )
            return DETECTION.build_model(self, self.network_factory(input_specs))

        def validation_step(self, inputs: Any, model: Any, metrics: Any = None) -> Any:
            # tf-models 2.20's parser gives each image's ground-truth count the shape [1]; with
            # no annotation file its COCO evaluator calls int() on it, which NumPy 2 refuses.
            import tensorflow as tf

            features, labels = inputs
            groundtruths = dict(labels["groundtruths"])
            groundtruths["num_detections"] = tf.reshape(groundtruths["num_detections"], [-1])
            labels = {**labels, "groundtruths": groundtruths}
            return super().validation_step((features, labels), model, metrics)

    return SearchedRetinaNetTask


@dataclasses.dataclass(frozen=True)
class DetectionTask:
    """The detection task kind (see the module docstring); ``DETECTION`` is its instance."""

    name: str = "detection"
    metric_names: tuple[str, ...] = tuple(METRIC_KEYS)
    default_metric: str = "AP"

    def build_task(self, task: TaskSpec, data: DataSpec, budget: BudgetSpec) -> Any:
        """A configured RetinaNet task (a ``RetinaNetTask`` subclass; see the module docstring).

        Raises:
            SpecError: ``option_problems`` found problems.
        """
        opts = _check(task)  # Before importing TensorFlow: bad options fail fast.
        from official.vision.configs import retinanet as cfg

        config = cfg.RetinaNetTask(
            model=_model_config(task, opts),
            train_data=_data_config(data.train, budget.batch_size, opts, training=True),
            validation_data=_data_config(
                data.validation,
                opts.get("validation_batch_size", budget.batch_size),
                opts,
                training=False,
            ),
            losses=cfg.Losses(
                focal_loss_alpha=float(opts["focal_loss_alpha"]),
                focal_loss_gamma=float(opts["focal_loss_gamma"]),
                huber_loss_delta=float(opts["huber_loss_delta"]),
                box_loss_weight=opts["box_loss_weight"],
                l2_weight_decay=float(opts["l2_weight_decay"]),
            ),
            annotation_file=data.annotations or None,
            use_coco_metrics=True,
            max_num_eval_detections=opts["max_num_detections"],
        )
        official_task = _searched_task_class()(config)
        official_task.augmentation = opts.get("augmentation")
        return official_task

    def build_model(self, official_task: Any, network: Network) -> Any:
        """RetinaNet around ``network`` (``factory.build_retinanet``).

        The decoder is the network's when the space searches one (NAS-FPN). Otherwise it is the
        config's identity when the backbone gives every level ``min_level..max_level`` at one
        width (SpineNet), and else official.vision's ``FPN`` (``fpn_num_filters`` wide, no
        separable convs, the head's activation and batch norm): it makes the levels above the
        backbone's top (mobile backbones end at level 5) and one width for the shared head.
        """
        import tf_keras
        from official.vision.modeling import factory

        config = official_task.task_config
        model = config.model
        input_specs = tf_keras.layers.InputSpec(shape=[None, *model.input_size])
        decay = config.losses.l2_weight_decay
        # Halved as RetinaNetTask.build_model does, to match tf.nn.l2_loss.
        regularizer = tf_keras.regularizers.l2(decay / 2.0) if decay else None
        decoder = network.decoder
        specs = network.backbone.output_specs
        levels = [str(level) for level in range(model.min_level, model.max_level + 1)]
        if decoder is None and (
            any(level not in specs for level in levels)
            or len({specs[level][-1] for level in levels}) > 1
        ):
            from official.vision.modeling.decoders import FPN

            norm = model.norm_activation
            decoder = FPN(
                input_specs=specs,
                min_level=model.min_level,
                max_level=model.max_level,
                num_filters=model.decoder.fpn.num_filters,
                use_separable_conv=False,
                activation=norm.activation,
                use_sync_bn=norm.use_sync_bn,
                norm_momentum=norm.norm_momentum,
                norm_epsilon=norm.norm_epsilon,
                kernel_regularizer=regularizer,
            )
        return factory.build_retinanet(
            input_specs=input_specs,
            model_config=model,
            l2_regularizer=regularizer,
            backbone=network.backbone,
            decoder=decoder,
        )

    def optimizer_config(self, task: TaskSpec, budget: BudgetSpec) -> Any:
        """SGD with momentum, step decay and linear warm-up for ``budget.train_steps`` steps."""
        opts = _check(task)
        from official.modeling import optimization

        steps = budget.train_steps
        rate = float(opts.get("learning_rate", 0.32 * budget.batch_size / 256))
        boundaries: list[int] = []
        for fraction in _DECAY_AT:
            step = int(fraction * steps)
            if step >= 1 and (not boundaries or step > boundaries[-1]):
                boundaries.append(step)
        config: dict[str, Any] = {
            "optimizer": {"type": "sgd", "sgd": {"momentum": float(opts["momentum"])}},
            "learning_rate": {
                "type": "stepwise",
                "stepwise": {
                    "boundaries": boundaries,
                    "values": [rate * 0.1**i for i in range(len(boundaries) + 1)],
                },
            },
        }
        warmup = int(opts.get("warmup_steps", min(2000, steps // 10)))
        if warmup > 0:
            start = float(opts.get("warmup_learning_rate", rate * 0.0067 / 0.32))
            config["warmup"] = {
                "type": "linear",
                "linear": {"warmup_steps": warmup, "warmup_learning_rate": start},
            }
        return optimization.OptimizationConfig(config)

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """``(image_size, image_size, 3)``."""
        return (task.image_size, task.image_size, 3)

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """See ``kfnas.data.detection.detection_data_problems``."""
        from kfnas.data.detection import detection_data_problems

        return detection_data_problems(task, data)

    def option_problems(self, task: TaskSpec) -> list[str]:
        """See the module function ``option_problems``."""
        return option_problems(task)

    def metrics_from_logs(self, logs: dict[str, Any]) -> dict[str, float]:
        """``metric_names`` -> float, from what ``reduce_aggregated_logs`` returned.

        Raises:
            KeyError: A metric is missing from ``logs`` (the message lists the keys present).
        """
        missing = [key for key in METRIC_KEYS.values() if key not in logs]
        if missing:
            raise KeyError(f"evaluation logs lack {missing}; they have {sorted(logs)}")
        return {name: float(logs[key]) for name, key in METRIC_KEYS.items()}


DETECTION = DetectionTask()

__all__ = [
    "DETECTION",
    "LEVEL_RANGE",
    "METRIC_KEYS",
    "OPTIONS",
    "DetectionTask",
    "option_problems",
    "resolved_options",
]
