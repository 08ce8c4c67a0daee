"""Data augmentation policies (RandAugment, AutoAugment) for the detection and segmentation tasks.

A task applies ``task.options.augmentation`` to its training images (boxes and masks follow every
geometric op). The modules:

* ``tables``: the op tables of each task kind and the option format, with its checks; no
  TensorFlow, so specs are validated and search spaces are built without it;
* ``ops``: the ops (TensorFlow), ``OPS`` name -> op;
* ``policies``: ``RandAugment``, ``AutoAugment`` and ``policy_from_options`` (TensorFlow);
* ``inputs``: the tasks' training input pipelines with a policy (TensorFlow).

Only ``tables`` is imported here; import the others where TensorFlow is already loaded (trials).
To add an op or a policy form, see the docstrings of ``ops`` and ``policies``.
"""

from __future__ import annotations

from kfnas.augment.tables import (
    AUTOAUGMENT_OPS,
    MAX_MAGNITUDE,
    RANDAUGMENT_OPS,
    augmentation_problems,
    parse_augmentation,
)

__all__ = [
    "AUTOAUGMENT_OPS",
    "MAX_MAGNITUDE",
    "RANDAUGMENT_OPS",
    "augmentation_problems",
    "parse_augmentation",
]
