"""Classification serving preprocesses as evaluation does, around a model that returns its input.

A model trained 2 steps answers almost the same whatever the image, so this is checked apart. The
exported models of every task kind (record, both signatures on generated images of any batch and
size) are checked on the SavedModels the pipeline runs export (``tests/e2e``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

pytestmark = pytest.mark.tf

NUM_CLASSES = 3


@pytest.mark.parametrize("signature", ["image_bytes", "image_tensor"])
def test_classification_serving_preprocesses_as_evaluation_does(signature):
    """Both signatures crop the task's ``center_crop_fraction`` once, then resize and normalize.

    official's ``ClassificationModule`` built for ``image_tensor`` crops encoded images twice and
    always 7/8 of the side; ``kfnas.export.serving`` adjusts it. The model here returns its input.
    """
    import tensorflow as tf
    import tf_keras
    from official.core import config_definitions
    from official.vision.dataloaders import classification_input

    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.export.serving import classification_module
    from kfnas.tasks.classification import CLASSIFICATION

    size, fraction = 64, 0.5
    task = TaskSpec(
        kind="classification",
        num_classes=NUM_CLASSES,
        image_size=size,
        options={"center_crop_fraction": fraction},
    )
    config = CLASSIFICATION.build_task(task, DataSpec("t", "v"), BudgetSpec()).task_config
    echo = tf_keras.Sequential([tf_keras.Input((size, size, 3)), tf_keras.layers.Flatten()])
    module = classification_module(
        params=config_definitions.ExperimentConfig(task=config),
        batch_size=None,
        input_image_size=[size, size],
        input_type="image_tensor",
        num_channels=3,
        model=echo,
    )
    rows, cols = np.mgrid[0:48, 0:80]
    image = np.stack([rows * 5, cols * 3, (rows + cols) * 2], axis=-1).astype(np.uint8)
    png = tf.io.encode_png(image)
    inputs = {"image_bytes": tf.stack([png]), "image_tensor": tf.constant(image[np.newaxis])}
    served = module.get_inference_signatures({signature: "f"})["f"](inputs[signature])["logits"]

    data = config.validation_data
    parser = classification_input.Parser(
        output_size=[size, size],
        num_classes=NUM_CLASSES,
        decode_jpeg_only=data.decode_jpeg_only,
        aug_crop=data.aug_crop,
        center_crop_fraction=data.center_crop_fraction,
        tf_resize_method=data.tf_resize_method,
    )
    evaluated = parser._parse_eval_image({"image/encoded": png})
    assert data.aug_crop and data.center_crop_fraction == fraction
    np.testing.assert_allclose(
        served.numpy().reshape(size, size, 3), evaluated.numpy(), rtol=1e-5, atol=1e-4
    )
