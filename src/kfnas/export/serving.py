"""official.vision serving modules, adjusted where kfnas's two-signature export needs it.

``kfnas.export.saved_model`` builds one ``official.vision.serving`` export module per task kind and
traces both of its signatures from it: ``serving_default`` (encoded images) and ``image_tensor``
(uint8 pixels). Most of official's modules serve both alike; the ones that do not get a subclass
here, named in a task kind's ``serving_export`` (``kfnas.tasks.base.ServingExport``) through a
factory taking the module's constructor arguments.

``classification_module``: official's ``ClassificationModule`` is written for one signature per
export. Built for ``image_tensor``, its ``image_bytes`` path center-crops and resizes each image
when decoding and again in ``_build_inputs`` (so the two signatures see different crops), and its
crop is always 7/8 of the short side whatever the task's ``center_crop_fraction``. The subclass
decodes only, and crops and resizes every image once, as the task's evaluation input does
(``validation_data``'s ``aug_crop``, ``center_crop_fraction`` and ``tf_resize_method``).

``lidar_module``: no official.vision module serves point clouds. Its ``serving_default`` takes
``inputs``, float32 ``[batch, points, 4]`` (x, y, z, intensity in metres, sensor frame; any number
of points, padding rows NaN) and returns ``detection_boxes`` ``[batch, N, 7]`` (centre x, y, z,
length, width, height, heading), ``detection_scores``, ``detection_classes`` (int32,
``1..num_classes``) and ``num_detections`` (``kfnas.tasks.pillars``).

To adjust another kind's module: subclass it inside a cached ``_<kind>_module_class`` function
(TensorFlow is imported there, never when this module is imported) and add a factory like
``classification_module``.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _classification_module_class() -> type:
    import tensorflow as tf
    from official.vision.ops import preprocess_ops
    from official.vision.serving import export_base, image_classification

    class ClassificationModule(image_classification.ClassificationModule):
        """official.vision's classification module; both signatures preprocess alike."""

        def _decode_image(self, encoded_image_bytes: Any) -> Any:
            # Decoding only: ``_build_inputs`` crops and resizes once, whatever the signature.
            return export_base.ExportModule._decode_image(self, encoded_image_bytes)

        def _crop_and_resize(self, image: Any) -> Any:
            data = self.params.task.validation_data
            if data.aug_crop:
                image = preprocess_ops.center_crop_image(image, data.center_crop_fraction)
            size = list(self._input_image_size)
            image = tf.image.resize(image, size, method=data.tf_resize_method)
            return tf.reshape(image, [*size, 3])

    return ClassificationModule


def classification_module(**kwargs: Any) -> Any:
    """The ``ClassificationModule`` of official.vision, adjusted (see the module docstring).

    Args:
        **kwargs: The ``official.vision.serving.export_base.ExportModule`` constructor arguments
            (``params``, ``batch_size``, ``input_image_size``, ``input_type``, ``num_channels``,
            ``model``).

    Returns:
        The export module; its ``serve`` returns ``logits`` and ``probs`` (softmax).
    """
    return _classification_module_class()(**kwargs)


@functools.cache
def _lidar_module_class() -> type:
    import tensorflow as tf
    from official.core import export_base

    from kfnas.tasks.lidar_detection import task_voxelization
    from kfnas.tasks.pillars import boxes_3d

    class LidarModule(export_base.ExportModule):
        """Serves a ``lidar_detection`` model on raw point clouds (see the module docstring)."""

        def serve(self, inputs: Any) -> dict[str, Any]:
            # One cloud at a time: official's suppression with attributes needs a static batch.
            detections = self.params.task.model.detection_generator.max_num_detections
            signature = {
                "detection_boxes": tf.TensorSpec([detections, 7], tf.float32),
                "detection_scores": tf.TensorSpec([detections], tf.float32),
                "detection_classes": tf.TensorSpec([detections], tf.int32),
                "num_detections": tf.TensorSpec([], tf.int32),
            }
            return tf.map_fn(self._detect, inputs, fn_output_signature=signature)

        def _detect(self, cloud: Any) -> dict[str, Any]:
            outputs = self.model(cloud[tf.newaxis], training=False)
            vox = task_voxelization(self.params.task)
            boxes = boxes_3d(outputs["detection_boxes"], outputs["detection_attributes"], vox)
            return {
                "detection_boxes": boxes[0],
                "detection_scores": outputs["detection_scores"][0],
                "detection_classes": tf.cast(outputs["detection_classes"][0], tf.int32),
                "num_detections": tf.cast(outputs["num_detections"][0], tf.int32),
            }

        def get_inference_signatures(self, function_keys: dict[str, str]) -> dict[str, Any]:
            spec = tf.TensorSpec([None, None, 4], tf.float32, name="inputs")
            serve = tf.function(self.serve)
            return {name: serve.get_concrete_function(spec) for name in function_keys.values()}

    return LidarModule


def lidar_module(**kwargs: Any) -> Any:
    """The export module of ``lidar_detection`` (see the module docstring).

    Args:
        **kwargs: The arguments ``kfnas.export.saved_model`` gives every module factory; only
            ``params`` and ``model`` are used (a cloud may hold any number of points).
    """
    return _lidar_module_class()(params=kwargs["params"], model=kwargs["model"])


__all__ = ["classification_module", "lidar_module"]
