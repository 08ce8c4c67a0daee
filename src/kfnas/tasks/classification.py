"""Image classification: official.vision's classifier around a searched backbone, top-1 accuracy.

``CLASSIFICATION`` follows ``kfnas.tasks.base.TaskKind``. ``build_task`` configures tf-models'
``ImageClassificationTask`` (its input pipeline, cross-entropy loss with label smoothing, accuracy
metrics) from the spec; ``build_model`` wraps the searched backbone with
``factory.build_classification_model`` (``ClassificationModel``: global average pooling of the
backbone's top level, dropout, one dense layer of logits). A classification space searches the
backbone only: a ``Network`` with a decoder is refused (there is no ``backbone`` option either,
since no space searches a decoder for classification).

Data: official.vision's classification TFRecords as they are, ``tf.train.Example`` records with
the encoded image in ``image/encoded`` (JPEG, PNG, GIF or BMP; see ``decode_jpeg_only``) and one
integer ``image/class/label`` in ``0..num_classes - 1`` (ImageNet records labelled 1..1000 need
``num_classes: 1001``, as in tf-models' own ImageNet configs). ``data.annotations`` is not used.

Metrics: ``top_1_accuracy`` (the default metric) and ``top_5_accuracy``; with 5 classes or fewer
top-5 accuracy is 1.0 by definition: search on ``top_1_accuracy``. The model pools the backbone's
numerically highest level (``top_level_backbone``).

================================  =========  =====================================================
option                            default    meaning
================================  =========  =====================================================
dropout_rate                      0.2        dropout before the dense layer of logits
add_head_batch_norm               false      batch normalization before the pooling
label_smoothing                   0.1        label smoothing of the cross-entropy loss
l2_weight_decay                   4e-5       L2 weight decay of the head and of the backbone
norm_momentum, norm_epsilon       .99, 1e-3  batch normalization of the head and of the backbone
aug_rand_hflip                    true       random horizontal flips in training
aug_crop                          true       random crops of 8-100 % of the area in training, a
                                             central crop in evaluation (tf-models' Parser)
center_crop_fraction              0.875      side of the evaluation crop (with ``aug_crop``)
decode_jpeg_only                  false      true: JPEG only, decoded and cropped at once (faster
                                             on large JPEGs); false: any format tf decodes
shuffle_buffer_size               1000       training shuffle buffer (records)
cache_data                        false      cache decoded data in memory (small data sets)
validation_batch_size             batch      validation batch (default ``budget.batch_size``)
optimizer                         sgd        ``sgd``, ``rmsprop`` (rho .9, epsilon 1e-3), ``adam``
learning_rate                     lr         base rate; default ``0.1 * batch_size / 256``
momentum                          0.9        optimizer momentum
lr_schedule                       cosine     ``cosine`` (to 0 at the last step) or ``step`` (x0.1
                                             after 1/3, 2/3 and 8/9 of the steps: ResNet's 30,
                                             60 and 80 of 90 epochs)
warmup_steps                      steps/20   linear warm-up (default ``train_steps // 20``)
warmup_learning_rate              0.0        rate at step 0 of the warm-up
================================  =========  =====================================================

Backbone knobs (``endpoints_num_filters``, ``init_stochastic_depth_rate``, ``activation``) are
the spaces' own (``task_options`` of ``mnasnet``, ``efficientnet_v2``: see
``kfnas.spaces._mobile_space``); they also read ``l2_weight_decay``, ``norm_momentum`` and
``norm_epsilon``, whose defaults here are the spaces' own.

To add a knob: add one line to ``OPTIONS`` and read it in ``_model_config`` or ``_data_config``
(backbone knobs: in the space). To add a schedule: one entry in ``SCHEDULES``; an optimizer: one
in ``kfnas.tasks.base.OPTIMIZERS``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from kfnas.spaces.options import Option, choice, flag, fraction, integer, number
from kfnas.spaces.regularizers import l2_regularizer
from kfnas.tasks.base import (
    COMMON_OPTIONS,
    OPTIMIZERS,
    OfficialTask,
    SearchedTask,
    ServingExport,
    cosine,
    step_decay,
)

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network

#: kfnas metric name -> the name of the tf-models metric it is (``ImageClassificationTask``): the
#: names the search's objectives use are tf-models' ``accuracy`` and ``top_5_accuracy`` renamed
#: (``build_task`` returns an ``ImageClassificationTask`` subclass whose ``build_metrics`` gives
#: them these names, so the trainer reports them as such).
METRIC_KEYS: dict[str, str] = {"top_1_accuracy": "accuracy", "top_5_accuracy": "top_5_accuracy"}
#: Like tf-models (which does not clip ``top_k`` to the number of classes), top-5 accuracy is
#: reported whatever the number of classes; with 5 classes or fewer it is 1.0 by definition.
TOP_K = 5

#: Learning-rate schedules: name -> ``(base rate, train steps) -> learning_rate config``.
SCHEDULES = {"cosine": cosine, "step": step_decay(1 / 3, 2 / 3, 8 / 9)}

#: Every knob of ``task.options`` the task reads (see the table in the module docstring).
#: Dropout 0.2 and label smoothing 0.1 follow Vertex NAS's ``image_classification_nas``; the
#: L2 weight decay default 4e-5 (``COMMON_OPTIONS``) is MobileNetV2's.
OPTIONS: dict[str, Option] = {
    "dropout_rate": Option(0.2, lambda v: fraction().check(v) and v < 1, "a number in [0, 1)"),
    "add_head_batch_norm": flag(False),
    "label_smoothing": fraction(0.1),
    **COMMON_OPTIONS,
    "aug_rand_hflip": flag(True),
    "aug_crop": flag(True),
    "center_crop_fraction": fraction(0.875, positive=True),
    "decode_jpeg_only": flag(False),
    "shuffle_buffer_size": integer(1, 1000),
    "cache_data": flag(False),
    "optimizer": choice(OPTIMIZERS, "sgd"),
    "momentum": fraction(0.9),
    "lr_schedule": choice(SCHEDULES, "cosine"),
    "warmup_learning_rate": number(0, 0.0),
}


def _model_config(task: TaskSpec, opts: dict[str, Any]) -> Any:
    from official.vision.configs import backbones, common
    from official.vision.configs import image_classification as cfg

    return cfg.ImageClassificationModel(
        num_classes=task.num_classes,
        input_size=[task.image_size, task.image_size, 3],
        backbone=backbones.Backbone(type=None),  # The search space builds it.
        dropout_rate=float(opts["dropout_rate"]),
        add_head_batch_norm=opts["add_head_batch_norm"],
        norm_activation=common.NormActivation(
            use_sync_bn=False,
            norm_momentum=float(opts["norm_momentum"]),
            norm_epsilon=float(opts["norm_epsilon"]),
        ),
    )


def _data_config(pattern: str, batch_size: int, opts: dict[str, Any], *, training: bool) -> Any:
    from official.vision.configs import image_classification as cfg

    return cfg.DataConfig(
        input_path=pattern,
        global_batch_size=batch_size,
        is_training=training,
        drop_remainder=training,  # Validation keeps its last partial batch: every image counts.
        dtype="float32",
        shuffle_buffer_size=opts["shuffle_buffer_size"],
        cache=opts["cache_data"],
        aug_rand_hflip=training and opts["aug_rand_hflip"],
        aug_crop=opts["aug_crop"],
        center_crop_fraction=float(opts["center_crop_fraction"]),
        decode_jpeg_only=opts["decode_jpeg_only"],
    )


@functools.cache
def _searched_task_class() -> type:
    from official.vision.tasks import image_classification

    class SearchedImageClassificationTask(
        SearchedTask, image_classification.ImageClassificationTask
    ):
        """tf-models' image classification task with a searched backbone (``SearchedTask``).

        ``build_metrics`` names its metrics ``top_1_accuracy`` and ``top_5_accuracy`` (the task
        config always has ``losses.one_hot``, so they are the categorical accuracies tf-models
        uses then).
        """

        kind = CLASSIFICATION

        def build_metrics(self, training: bool = True) -> list[Any]:
            import tf_keras

            return [
                tf_keras.metrics.CategoricalAccuracy(name="top_1_accuracy"),
                tf_keras.metrics.TopKCategoricalAccuracy(k=TOP_K, name="top_5_accuracy"),
            ]

    return SearchedImageClassificationTask


def top_level_backbone(backbone: Any, input_specs: Any) -> Any:
    """``backbone``, or a wrapper giving only its top level where string order would mislead.

    ``ClassificationModel`` pools ``endpoints[max(endpoints)]``, a *string* maximum, which is the
    highest level only while every key is a single digit (``'10'`` < ``'9'``; extra keys such as
    ``'5/expanded'`` sort above ``'5'``). When that string maximum is not the numerically highest
    all-digit key, the result is a functional model around ``backbone`` whose only output is
    ``{top: endpoints[top]}``.

    Raises:
        ValueError: No endpoint key is a level number.
    """
    keys = list(backbone.output_specs)
    levels = [key for key in keys if key.isdigit()]
    if not levels:
        raise ValueError(
            f"the backbone's endpoints {keys} have no level key ('2', '3', ...): a classification "
            f"backbone must give its features by level, as official.vision backbones do"
        )
    top = max(levels, key=int)
    if max(keys) == top:
        return backbone
    import tf_keras

    inputs = tf_keras.Input(shape=input_specs.shape[1:], name="image")
    endpoints = backbone(inputs)
    return tf_keras.Model(inputs, {top: endpoints[top]}, name=f"{backbone.name}_level_{top}")


class ClassificationTask(OfficialTask):
    """The classification task kind (see the module docstring); ``CLASSIFICATION`` is one."""

    name = "classification"
    default_metric = "top_1_accuracy"
    # build_metrics names the metrics as kfnas does: the logs are keyed by those names.
    metric_names = tuple(METRIC_KEYS)
    options = OPTIONS
    serving_export = ServingExport(module="kfnas.export.serving:classification_module")
    base_rate = (0.1, 256)
    schedules = SCHEDULES
    warmup_share = 20

    def task_config(
        self, task: TaskSpec, data: DataSpec, budget: BudgetSpec, opts: dict[str, Any]
    ) -> Any:
        """An ``ImageClassificationTask`` config (one-hot labels, top-5 evaluation)."""
        from official.vision.configs import image_classification as cfg

        batch = opts.get("validation_batch_size", budget.batch_size)
        return cfg.ImageClassificationTask(
            model=_model_config(task, opts),
            train_data=_data_config(data.train, budget.batch_size, opts, training=True),
            validation_data=_data_config(data.validation, batch, opts, training=False),
            losses=cfg.Losses(
                one_hot=True,
                label_smoothing=float(opts["label_smoothing"]),
                l2_weight_decay=float(opts["l2_weight_decay"]),
            ),
            evaluation=cfg.Evaluation(top_k=TOP_K),
        )

    def searched_task_class(self) -> type:
        """``ImageClassificationTask`` with ``SearchedTask`` and kfnas metric names."""
        return _searched_task_class()

    def build_model(self, official_task: Any, network: Network) -> Any:
        """``ClassificationModel`` around ``network.backbone`` (``build_classification_model``).

        Raises:
            ValueError: ``network`` has a decoder (a classification model has none), or its
                backbone gives no level keys.
        """
        if network.decoder is not None:
            raise ValueError(
                f"a classification model pools the backbone's top level and has no decoder, but "
                f"the network has one ({type(network.decoder).__name__}): use a space that "
                f"searches a backbone for classification (its build_network leaves decoder None)"
            )
        import tf_keras
        from official.vision.modeling import factory

        config = official_task.task_config
        input_specs = tf_keras.layers.InputSpec(shape=[None, *config.model.input_size])
        return factory.build_classification_model(
            input_specs=input_specs,
            model_config=config.model,
            l2_regularizer=l2_regularizer(config.losses.l2_weight_decay),
            backbone=top_level_backbone(network.backbone, input_specs),
        )

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """See ``kfnas.data.classification.classification_data_problems``."""
        from kfnas.data.classification import classification_data_problems

        opts = self.resolved_options(task)
        return classification_data_problems(
            task,
            data,
            decode_jpeg_only=opts["decode_jpeg_only"] is True,
            aug_crop=opts["aug_crop"] is True,
        )


CLASSIFICATION = ClassificationTask()
option_problems = CLASSIFICATION.option_problems
resolved_options = CLASSIFICATION.resolved_options

__all__ = [
    "CLASSIFICATION",
    "METRIC_KEYS",
    "OPTIMIZERS",
    "OPTIONS",
    "SCHEDULES",
    "TOP_K",
    "ClassificationTask",
    "option_problems",
    "resolved_options",
    "top_level_backbone",
]
