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


__all__ = ["classification_module"]
