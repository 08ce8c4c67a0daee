"""Tasks: what a trial learns (detection, segmentation, classification), in the registry ``TASKS``.

A task kind turns the experiment's ``TaskSpec``, ``DataSpec`` and a trial budget into a configured
tf-models-official ``base_task.Task`` (input pipeline, losses, metrics, evaluation), wraps a
searched network into its full model, checks ``task.options`` and the user's data before any trial
starts, and declares what the rest of kfnas looks up by kind (its ``serving_export``, default
``augmentation_space`` and model card ``known_limits``). ``TASKS`` lists the built-ins lazily, so
naming a task never imports TensorFlow.

A new task kind costs its module, its data module and one registry line each, no edits elsewhere:
write a module in this package with an object following ``kfnas.tasks.base.TaskKind`` (usually a
``kfnas.tasks.base.OfficialTask`` subclass: its options table, recipe and ``task_config``), write
its data checks in ``kfnas.data`` (add one line to ``kfnas.data.GENERATORS`` for a synthetic data
set), and add one line to ``_BUILTINS`` below (or call ``TASKS.register(name, kind)``).
"""

from __future__ import annotations

from kfnas.registry import Registry

_BUILTINS: dict[str, str] = {
    "detection": "kfnas.tasks.detection:DETECTION",
    "segmentation": "kfnas.tasks.segmentation:SEGMENTATION",
    "classification": "kfnas.tasks.classification:CLASSIFICATION",
    "lidar_detection": "kfnas.tasks.lidar_detection:LIDAR_DETECTION",
    # PyTorch kinds (the torch extra): listed and checked without importing torch.
    "segmentation_3d": "kfnas.torch.tasks:SEGMENTATION_3D",
    "torch_classification": "kfnas.torch.tasks:TORCH_CLASSIFICATION",
}

TASKS: Registry = Registry("task", _BUILTINS)

__all__ = ["TASKS"]
