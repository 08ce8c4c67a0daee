"""Tasks: what a trial learns (detection, and later segmentation and classification).

A task kind turns the experiment's ``TaskSpec``, ``DataSpec`` and a trial budget into a configured
tf-models-official ``base_task.Task`` (input pipeline, losses, metrics, evaluation), wraps a
searched
backbone into its full model, and checks user data before any trial starts. The registry ``TASKS``
lists the built-ins lazily, so naming a task never imports TensorFlow.

To add a task kind: write one module in this package with an object following
``kfnas.tasks.base.TaskKind`` and add one line to ``_BUILTINS``.
"""

from __future__ import annotations

from kfnas.registry import Registry

_BUILTINS: dict[str, str] = {
    "detection": "kfnas.tasks.detection:DETECTION",
    "segmentation": "kfnas.tasks.segmentation:SEGMENTATION",
    "classification": "kfnas.tasks.classification:CLASSIFICATION",
}

TASKS: Registry = Registry("task", _BUILTINS)

__all__ = ["TASKS"]
