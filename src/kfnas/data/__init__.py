"""Data: the TFRecord formats kfnas trains on, their checks, and a synthetic dataset writer.

kfnas reads the TFRecord formats of tf-models-official as they are (for detection, the
``tf.train.Example`` features that ``official.vision.dataloaders.tf_example_decoder`` decodes), so
data prepared for tf-models-official works unchanged. Per task kind:

* ``synthetic``: ``write_detection_dataset`` writes a small, seeded, easy detection dataset
  (shapes on a plain background) for tests, demos and smoke runs; no download needed.
* ``detection``: ``detection_data_problems`` checks a user's detection data before any trial starts.
* ``synthetic_segmentation``: ``write_segmentation_dataset`` writes the same shapes as per-pixel
  class masks (official.vision's segmentation TFRecord format).
* ``segmentation``: ``segmentation_data_problems`` checks a user's segmentation data.
* ``synthetic_classification``: ``write_classification_dataset`` writes one shape per image, its
  class the shape and colour (official.vision's classification TFRecord format).
* ``classification``: ``classification_data_problems`` checks a user's classification data.
* ``lidar_detection`` (``lidar`` for short): ``kfnas.data.lidar`` defines the LiDAR scene TFRecord
  format (``scene_example`` writes a scene, ``parse_scene`` reads one) and
  ``lidar_data_problems`` checks a user's scenes; ``kfnas.data.synthetic_lidar``'s
  ``write_lidar_dataset`` writes boxes of points on a ground plane; ``kfnas.data.kitti``'s
  ``convert_kitti`` converts KITTI object data (``docs/lidar.md``).

Modules here import TensorFlow inside their functions only, so importing ``kfnas.data`` is cheap.

To add a task kind: write one module with its checks (``<kind>_data_problems(task, data)``
returning messages that say what to fix, called by the task's ``data_problems``) and, if tests or
``kfnas make-data`` need it, its writer, registered with one line in ``GENERATORS``.
"""

from __future__ import annotations

from kfnas.data.classification import classification_data_problems
from kfnas.data.detection import detection_data_problems
from kfnas.data.synthetic import SHAPES, DatasetFiles, write_detection_dataset
from kfnas.data.synthetic_classification import write_classification_dataset
from kfnas.registry import Registry

#: Synthetic dataset writers by task kind (``kfnas make-data KIND``); each takes ``out_dir`` and the
#: keyword arguments ``num_train``, ``num_validation``, ``image_size``, ``num_classes``, ``seed``
#: and returns a ``DatasetFiles`` (for LiDAR, ``image_size`` is the side of the bird's-eye-view grid
#: of 0.4 m pillars; ``lidar`` is ``lidar_detection``'s short name).
GENERATORS: Registry = Registry(
    "data generator",
    {
        "detection": "kfnas.data.synthetic:write_detection_dataset",
        "segmentation": "kfnas.data.synthetic_segmentation:write_segmentation_dataset",
        "classification": "kfnas.data.synthetic_classification:write_classification_dataset",
        "lidar_detection": "kfnas.data.synthetic_lidar:write_lidar_dataset",
        "lidar": "kfnas.data.synthetic_lidar:write_lidar_dataset",
        "segmentation_3d": "kfnas.data.synthetic_medical3d:write_medical3d_dataset",
        "medical3d": "kfnas.data.synthetic_medical3d:write_medical3d_dataset",
    },
)

__all__ = [
    "GENERATORS",
    "SHAPES",
    "DatasetFiles",
    "classification_data_problems",
    "detection_data_problems",
    "write_classification_dataset",
    "write_detection_dataset",
]
