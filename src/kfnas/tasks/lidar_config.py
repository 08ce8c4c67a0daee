"""The tf-models task config of ``lidar_detection``: ``RetinaNetTask``'s plus the lidar settings.

Imported by ``kfnas.tasks.lidar_detection`` when it builds a task (it imports tf-models, hence
TensorFlow). Its annotations are evaluated by ``hyperparams.Config`` at run time, so this module
does not use postponed annotations. The fields mirror ``task.options`` (see the option table of
``kfnas.tasks.lidar_detection``); to add one: a field here, set in ``task_config`` there.
"""

import dataclasses

from official.modeling import hyperparams
from official.vision.configs import retinanet as cfg


@dataclasses.dataclass
class Lidar(hyperparams.Config):
    """The lidar settings of a task config (see ``kfnas.tasks.lidar_detection``'s options)."""

    point_range: list[float] = dataclasses.field(default_factory=list)
    pillar_size: float = 0.4
    max_pillars: int = 2048
    max_points_per_pillar: int = 16
    max_points: int = 4096
    class_names: list[str] = dataclasses.field(default_factory=list)
    iou_thresholds: list[float] = dataclasses.field(default_factory=list)
    loose_iou_thresholds: list[float] = dataclasses.field(default_factory=list)
    # [length, width] pairs as two lists: hyperparams configs hold flat lists only.
    anchor_lengths: list[float] = dataclasses.field(default_factory=list)
    anchor_widths: list[float] = dataclasses.field(default_factory=list)
    match_threshold: float = 0.5
    unmatched_threshold: float = 0.4
    aug_rand_flip: bool = True
    aug_rotation: float = 0.3927
    aug_scale_min: float = 0.95
    aug_scale_max: float = 1.05
    max_num_instances: int = 64


@dataclasses.dataclass
class LidarDetectionTaskConfig(cfg.RetinaNetTask):
    """tf-models' RetinaNet task config with the ``lidar`` settings."""

    lidar: Lidar = dataclasses.field(default_factory=Lidar)


__all__ = ["Lidar", "LidarDetectionTaskConfig"]
