"""Training input pipelines that apply ``task.options.augmentation`` (TensorFlow, trial time only).

The detection and segmentation tasks call these from their ``build_inputs`` for the training data
when the experiment sets an augmentation policy. They build the same reader, decoder and parser as
official.vision's ``RetinaNetTask.build_inputs`` / ``SemanticSegmentationTask.build_inputs``, with a
parser subclass that applies the policy first, on the decoded uint8 image with its boxes or mask:
before normalization, random flips and scale jitter, as Vertex AI NAS does (section 7.3 of the
reference). Validation data never passes through a policy.

To support another task kind: write its parser subclass (apply the policy where its parser holds
the decoded uint8 image) and an ``*_inputs`` function here, and call it from the task's
``build_inputs``.
"""

from __future__ import annotations

import functools
from typing import Any

import tensorflow as tf

from kfnas.augment.policies import Policy, policy_from_options


@functools.cache
def _retinanet_parser_class() -> type:
    from official.vision.dataloaders import retinanet_input

    class AugmentingRetinaNetParser(retinanet_input.Parser):
        """official.vision's RetinaNet parser that applies ``policy`` to decoded training data."""

        def __init__(self, policy: Policy, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._policy = policy

        def _parse_train_data(self, data, anchor_labeler=None, input_anchor=None):
            image, boxes, _ = self._policy(data["image"], data["groundtruth_boxes"], None)
            data = {**data, "image": image, "groundtruth_boxes": boxes}
            return super()._parse_train_data(data, anchor_labeler, input_anchor)

    return AugmentingRetinaNetParser


@functools.cache
def _segmentation_parser_class() -> type:
    from official.vision.dataloaders import segmentation_input
    from official.vision.ops import preprocess_ops

    class AugmentingSegmentationParser(segmentation_input.Parser):
        """official.vision's segmentation parser that applies ``policy`` to the decoded image.

        ``_prepare_image_and_label`` decodes the image and its mask as official.vision's does,
        applies the policy to both (uint8), then normalizes and resizes as official's does.
        """

        def __init__(self, policy: Policy, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._policy = policy

        def _prepare_image_and_label(self, data):
            if self._additional_dense_features:
                raise ValueError(
                    "augmentation policies support images without additional dense features"
                )
            height, width = data["image/height"], data["image/width"]
            feature = self._image_feature
            label = tf.io.decode_image(data["image/segmentation/class/encoded"], channels=1)
            label = tf.reshape(label, (height, width, 1))
            image = tf.io.decode_image(
                data[feature.feature_name], channels=feature.num_channels, dtype=tf.uint8
            )
            image = tf.reshape(image, (height, width, feature.num_channels))
            image, _, label = self._policy(image, None, label)
            image = preprocess_ops.normalize_image(
                image, [m / 255.0 for m in feature.mean], [s / 255.0 for s in feature.stddev]
            )
            label = tf.cast(label, tf.float32)
            if not self._preserve_aspect_ratio:
                image = tf.image.resize(image, self._output_size, method="bilinear")
                label = tf.image.resize(label, self._output_size, method="nearest")
            return image, tf.transpose(label, [2, 0, 1])  # [1, H, W], as official's.

    return AugmentingSegmentationParser


def _read(params: Any, decoder: Any, parser: Any, input_context: Any) -> tf.data.Dataset:
    from official.common import dataset_fn
    from official.vision.dataloaders import input_reader, input_reader_factory

    reader = input_reader_factory.input_reader_generator(
        params,
        dataset_fn=dataset_fn.pick_dataset_fn(params.file_type),
        decoder_fn=decoder.decode,
        combine_fn=input_reader.create_combine_fn(params),
        parser_fn=parser.parse_fn(params.is_training),
    )
    return reader.read(input_context=input_context)


def _no_tfds(params: Any) -> None:
    if params.tfds_name:
        raise ValueError(
            f"task.options.augmentation applies to TFRecord data; the input config names the "
            f"TFDS data set {params.tfds_name!r}"
        )


def detection_inputs(
    official_task: Any, params: Any, input_context: Any, augmentation: Any
) -> tf.data.Dataset:
    """The RetinaNet training data of ``params``, augmented by the policy ``augmentation``.

    Args:
        official_task: The configured ``RetinaNetTask``.
        params: Its ``train_data`` config.
        input_context: The distribution input context, or ``None``.
        augmentation: A ``task.options.augmentation`` value.
    """
    from official.vision.dataloaders import tf_example_decoder, tf_example_label_map_decoder

    _no_tfds(params)
    decoder_cfg = params.decoder.get()
    if params.decoder.type == "label_map_decoder":
        decoder = tf_example_label_map_decoder.TfExampleDecoderLabelMap(
            label_map=decoder_cfg.label_map, regenerate_source_id=decoder_cfg.regenerate_source_id
        )
    else:
        decoder = tf_example_decoder.TfExampleDecoder(
            regenerate_source_id=decoder_cfg.regenerate_source_id,
            attribute_names=decoder_cfg.attribute_names,
        )
    model = official_task.task_config.model
    parser = _retinanet_parser_class()(
        policy=policy_from_options(augmentation, "detection"),
        output_size=model.input_size[:2],
        min_level=model.min_level,
        max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=model.anchor.aspect_ratios,
        anchor_size=model.anchor.anchor_size,
        dtype=params.dtype,
        match_threshold=params.parser.match_threshold,
        unmatched_threshold=params.parser.unmatched_threshold,
        box_coder_weights=model.detection_generator.box_coder_weights,
        aug_type=params.parser.aug_type,
        aug_rand_hflip=params.parser.aug_rand_hflip,
        aug_rand_jpeg=params.parser.aug_rand_jpeg,
        aug_scale_min=params.parser.aug_scale_min,
        aug_scale_max=params.parser.aug_scale_max,
        skip_crowd_during_training=params.parser.skip_crowd_during_training,
        max_num_instances=params.parser.max_num_instances,
        pad=params.parser.pad,
        keep_aspect_ratio=params.parser.keep_aspect_ratio,
    )
    return _read(params, decoder, parser, input_context)


def segmentation_inputs(
    official_task: Any, params: Any, input_context: Any, augmentation: Any
) -> tf.data.Dataset:
    """The segmentation training data of ``params``, augmented by the policy ``augmentation``.

    Args:
        official_task: The configured ``SemanticSegmentationTask``.
        params: Its ``train_data`` config.
        input_context: The distribution input context, or ``None``.
        augmentation: A ``task.options.augmentation`` value.
    """
    from official.vision.dataloaders import segmentation_input

    _no_tfds(params)
    decoder = segmentation_input.Decoder(
        image_feature=params.image_feature,
        additional_dense_features=params.additional_dense_features,
    )
    losses = official_task.task_config.losses
    parser = _segmentation_parser_class()(
        policy=policy_from_options(augmentation, "segmentation"),
        output_size=params.output_size,
        crop_size=params.crop_size,
        ignore_label=losses.ignore_label,
        resize_eval_groundtruth=params.resize_eval_groundtruth,
        gt_is_matting_map=losses.gt_is_matting_map,
        groundtruth_padded_size=params.groundtruth_padded_size,
        aug_scale_min=params.aug_scale_min,
        aug_scale_max=params.aug_scale_max,
        aug_rand_hflip=params.aug_rand_hflip,
        preserve_aspect_ratio=params.preserve_aspect_ratio,
        dtype=params.dtype,
        image_feature=params.image_feature,
        additional_dense_features=params.additional_dense_features,
        centered_crop=params.centered_crop,
    )
    return _read(params, decoder, parser, input_context)


__all__ = ["detection_inputs", "segmentation_inputs"]
