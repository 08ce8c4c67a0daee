"""Detection: RetinaNet (tf-models-official) around a searched backbone, scored by COCO AP.

``DETECTION`` follows ``kfnas.tasks.base.TaskKind``. ``build_task`` configures tf-models'
``RetinaNetTask`` (its input pipeline, focal and Huber losses, COCO evaluator) from the spec;
``build_model`` wraps a searched backbone in RetinaNet (``factory.build_retinanet``'s model, built
without calling the backbone again: ``_retinanet``); ``optimizer_config`` is
the published SpineNet RetinaNet recipe (SGD momentum 0.9, step decay x0.1 at 95 % and 98 % of the
steps, linear warm-up) sized to the budget. Validation reads the whole validation set once. COCO
evaluation uses ``data.annotations`` when given, else the validation records (which then need
integer ``image/source_id`` values). The ``metric_names`` are the box AP keys ``AP``, ``AP50``,
``AP75``, ``APs``, ``APm``, ``APl``.

Model knobs live in ``task.options`` (a proxy task shrinks them); ``option_problems`` rejects
unknown keys (listing the valid ones), wrong types, levels outside 3..7 and an image size the
levels cannot divide (``image_size % 2**max_level != 0``). Backbone and decoder knobs
(``backbone``, ``filter_size_scale``, ``endpoints_num_filters``, ``resample_alpha``, ...) are the
spaces' own: each declares them (``task_options``; see its module). ``-`` below means "computed".

================================  =========  =====================================================
option                            default    meaning
================================  =========  =====================================================
min_level, max_level              3, 7       feature levels (stride ``2**level``) of the backbone
                                             endpoints, head and anchors; proxies use e.g. 3..5
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

To add a knob: add one line to ``OPTIONS`` and read it in ``_model_config`` or ``_data_config``
(a backbone knob: in the space's ``task_options`` and ``build_network``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from kfnas.spaces.options import (
    LEVEL_OPTIONS,
    LEVEL_RANGE,
    Option,
    flag,
    fraction,
    integer,
    is_number,
    number,
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
    step_decay,
)

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network

#: The kfnas metric names: the keys, unprefixed, of what ``RetinaNetTask.reduce_aggregated_logs``
#: returns (the box metrics of tf-models' ``COCOEvaluator``; it also reports ARmax1, ARmax10,
#: ARmax100, ARs, ARm and ARl, which kfnas does not use). COCO reports -1 for a metric with no
#: ground truth (e.g. ``APl`` on small images).
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")

#: Every knob of ``task.options`` the task reads (see the table in the module docstring).
OPTIONS: dict[str, Option] = {
    **LEVEL_OPTIONS,
    **COMMON_OPTIONS,
    **AUGMENTATION_OPTIONS,
    "activation": Option("swish", lambda v: v in ("relu", "swish"), "'relu' or 'swish'"),
    "head_num_convs": integer(0, 4),
    "head_num_filters": integer(1, 256),
    "head_use_separable_conv": flag(False),
    "fpn_num_filters": integer(1, 256),
    "anchor_size": number(0, 3.0, strict=True),
    "anchor_num_scales": integer(1, 3),
    "anchor_aspect_ratios": Option(
        [0.5, 1.0, 2.0],
        lambda v: isinstance(v, list) and bool(v) and all(is_number(r) and r > 0 for r in v),
        "a non-empty list of positive numbers",
    ),
    "focal_loss_alpha": fraction(0.25),
    "focal_loss_gamma": number(0, 1.5),
    "huber_loss_delta": number(0, 0.1, strict=True),
    "box_loss_weight": number(0, 50),
    "max_num_instances": integer(1, 100),
    "shuffle_buffer_size": integer(1, 1000),
    "cache_data": flag(False),
    "pre_nms_score_threshold": fraction(0.05),
    "nms_iou_threshold": fraction(0.5),
    "max_num_detections": integer(1, 100),
    "momentum": fraction(0.9),
    "warmup_learning_rate": number(0),
}


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
        # Decoder ``identity``: SpineNet already outputs one feature map per level
        # (``build_model`` swaps in the FPN for backbones that do not).
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
    from official.vision.tasks import retinanet

    class SearchedRetinaNetTask(SearchedTask, retinanet.RetinaNetTask):
        """tf-models' RetinaNet task with a searched network (``SearchedTask``)."""

        kind = DETECTION
        augmented_inputs = "kfnas.augment.inputs:detection_inputs"

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


class DetectionTask(OfficialTask):
    """The detection task kind (see the module docstring); ``DETECTION`` is its instance."""

    name = "detection"
    default_metric = "AP"
    metric_names = METRIC_NAMES
    options = OPTIONS
    serving_export = ServingExport(
        module="official.vision.serving.detection:DetectionModule",
        # Boxes relative to the caller's image rather than to the resized model input.
        config_overrides={"export_config": {"output_normalized_coordinates": True}},
    )
    augmentation_space = "randaugment_detection"
    known_limits = ("Detections are capped per image (see the output shapes above).",)
    # The published SpineNet RetinaNet recipe: step decay x0.1 at 95 % and 98 % of the steps.
    base_rate = (0.32, 256)
    schedules = {"step": step_decay(0.95, 0.98)}
    default_schedule = "step"
    warmup_cap = 2000
    warmup_start_share = 0.0067 / 0.32

    def extra_problems(self, task: TaskSpec, opts: dict[str, Any]) -> list[str]:
        """Bad levels or image size (``level_problems``), an inverted scale jitter range."""
        return level_problems(task, opts["min_level"], opts["max_level"]) + scale_jitter_problems(
            opts
        )

    def task_config(
        self, task: TaskSpec, data: DataSpec, budget: BudgetSpec, opts: dict[str, Any]
    ) -> Any:
        """A ``RetinaNetTask`` config (COCO metrics; ``data.annotations`` when given).

        Without ``data.annotations``, tf-models' ``COCOEvaluator`` (``annotation_file=None``)
        builds the ground truth from the validation records, which then need integer
        ``image/source_id`` values. Validation reads the set once (no repeat, last partial batch
        kept: ``_data_config``).
        """
        from official.vision.configs import retinanet as cfg

        batch = opts.get("validation_batch_size", budget.batch_size)
        return cfg.RetinaNetTask(
            model=_model_config(task, opts),
            train_data=_data_config(data.train, budget.batch_size, opts, training=True),
            validation_data=_data_config(data.validation, batch, opts, training=False),
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

    def searched_task_class(self) -> type:
        """``RetinaNetTask`` with ``SearchedTask``, ground-truth counts flattened for COCO."""
        return _searched_task_class()

    def build_model(self, official_task: Any, network: Network) -> Any:
        """RetinaNet around ``network`` (``_retinanet``: ``factory.build_retinanet``'s model).

        The decoder is the network's when the space searches one (NAS-FPN). Otherwise it is the
        config's identity when the backbone gives every level ``min_level..max_level`` at one
        width (SpineNet), and else official.vision's ``FPN`` (``fpn_num_filters`` wide, no
        separable convs, the head's activation and batch norm): it makes the levels above the
        backbone's top (mobile backbones end at level 5) and one width for the shared head.
        """
        config = official_task.task_config
        model = config.model
        regularizer = l2_regularizer(config.losses.l2_weight_decay)
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
        return _retinanet(model, network.backbone, decoder, regularizer)

    def measured_model(self, model: Any) -> Any:
        """The RetinaNet network without its detection generator: backbone, decoder, head.

        Non-maximum suppression's cost grows with the boxes the trained weights score above
        the threshold, so the same architecture timed after two trainings differed by half
        (18.8 ms and 30.2 ms in one demo run); the network's cost is the architecture's. The
        parameters are the whole model's (the generator has none).
        """
        return _Network(model)

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """See ``kfnas.data.detection.detection_data_problems``."""
        from kfnas.data.detection import detection_data_problems

        return detection_data_problems(task, data)


DETECTION = DetectionTask()
option_problems = DETECTION.option_problems
resolved_options = DETECTION.resolved_options

__all__ = [
    "DETECTION",
    "LEVEL_RANGE",
    "METRIC_NAMES",
    "OPTIONS",
    "DetectionTask",
    "option_problems",
    "resolved_options",
]


#: The detection generator config's fields that ``MultilevelDetectionGenerator`` takes as they are.
_GENERATOR_FIELDS = (
    "apply_nms",
    "pre_nms_top_k",
    "pre_nms_score_threshold",
    "nms_iou_threshold",
    "max_num_detections",
    "nms_version",
    "use_cpu_nms",
    "soft_nms_sigma",
    "return_decoded",
    "use_class_agnostic_nms",
    "box_coder_weights",
)
#: The norm-activation config's fields that ``RetinaNetHead`` takes as they are.
_NORM_FIELDS = ("activation", "use_sync_bn", "norm_momentum", "norm_epsilon")


def _retinanet(model: Any, backbone: Any, decoder: Any, regularizer: Any) -> Any:
    """The RetinaNet model ``factory.build_retinanet`` builds, without calling the backbone.

    The factory calls the (already built) backbone once more on a new Keras input only to build
    the decoder and head; that call re-creates every backbone layer's ops and took 0.7 s of a
    demo proxy trial's 2.6 s model build. Here the head (and a decoder not yet built) are built
    on Keras inputs of the backbone's ``output_specs`` shapes instead, so that a training step's
    first trace creates no variables (TensorFlow would trace it again) and a checkpoint restores
    at once. Head, detection generator and model take the same config fields as in the factory.

    Args:
        model: The task config's ``RetinaNet`` model config.
        backbone: The searched backbone (``output_specs``: level -> shape).
        decoder: The decoder, or None for identity (the backbone's levels go to the head).
        regularizer: The L2 regularizer of the head.
    """
    import tf_keras
    from official.vision.modeling import retinanet_model
    from official.vision.modeling.heads import dense_prediction_heads
    from official.vision.modeling.layers import detection_generator

    def inputs(specs: dict[str, Any]) -> dict[str, Any]:
        return {level: tf_keras.Input(shape=shape[1:]) for level, shape in specs.items()}

    features = inputs(backbone.output_specs)
    if decoder is not None:
        features = decoder(features) if not decoder.built else inputs(decoder.output_specs)
    norm = model.norm_activation
    head_config = model.head
    head = dense_prediction_heads.RetinaNetHead(
        min_level=model.min_level,
        max_level=model.max_level,
        num_classes=model.num_classes,
        num_anchors_per_location=len(model.anchor.aspect_ratios) * model.anchor.num_scales,
        num_convs=head_config.num_convs,
        num_filters=head_config.num_filters,
        attribute_heads=[cfg.as_dict() for cfg in (head_config.attribute_heads or [])],
        share_classification_heads=head_config.share_classification_heads,
        use_separable_conv=head_config.use_separable_conv,
        **{name: getattr(norm, name) for name in _NORM_FIELDS},
        kernel_regularizer=regularizer,
        share_level_convs=head_config.share_level_convs,
    )
    head(features)
    generator = model.detection_generator
    tflite_config = generator.tflite_post_processing.as_dict()
    tflite_config["input_image_size"] = (model.input_size[0], model.input_size[1])
    return retinanet_model.RetinaNetModel(
        backbone,
        decoder,
        head,
        detection_generator.MultilevelDetectionGenerator(
            **{name: getattr(generator, name) for name in _GENERATOR_FIELDS},
            tflite_post_processing_config=tflite_config,
        ),
        min_level=model.min_level,
        max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=model.anchor.aspect_ratios,
        anchor_size=model.anchor.anchor_size,
    )


class _Network:
    """A RetinaNet model's backbone, decoder and head, called like the model in inference."""

    def __init__(self, model: Any):
        self.model = model
        self.built = True

    @property
    def variables(self) -> list[Any]:
        """The whole model's weights."""
        return list(self.model.variables)

    @property
    def trainable_variables(self) -> list[Any]:
        """The whole model's trainable weights."""
        return list(self.model.trainable_variables)

    def __call__(self, images: Any, training: bool = False) -> Any:
        """The raw class and box outputs of every level (the generator's inputs)."""
        features = self.model.backbone(images, training=training)
        if self.model.decoder:
            features = self.model.decoder(features, training=training)
        return self.model.head(features, training=training)
