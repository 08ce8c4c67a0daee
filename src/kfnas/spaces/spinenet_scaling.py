"""The ``spinenet_scaling`` space: how big to make a SpineNet detector that was already chosen.

A refinement space (``kfnas.spaces.base.RefinementSpace``): its study retrains the best trial of
the study before it (the validated SpineNet winner, or SpineNet-49 from a one-trial ``spinenet49``
study) once per point, each time with the task scaled by the point. As in Vertex AI NAS
(``vertex_nas_reference.md`` section 1.7), a point is a ``SpineNetScaling`` of 7 decisions, whose
ids are the field names (``"image_size"``, ...):

=====================  =================  ==============================================
field                  candidates         override
=====================  =================  ==============================================
image_size             512, 640           ``task.image_size``
endpoints_num_filters  192, 256           ``task.options.endpoints_num_filters``
filter_size_scale      0.8, 1.0, 1.2      ``task.options.filter_size_scale``
resample_alpha         0.75, 1.0, 1.25    ``task.options.resample_alpha``
block_repeats          2, 3, 4            ``task.options.block_repeats``
head_num_convs         4, 5               ``task.options.head_num_convs`` (RetinaNet head)
head_num_filters       192, 256           ``task.options.head_num_filters``
=====================  =================  ==============================================

That is 2 * 2 * 3 * 3 * 3 * 2 * 2 = 432 points, explored with ``grid`` unless the study names
another algorithm. The architecture is never changed: only these knobs, which the SpineNet spaces'
``build_backbone`` and the detection task read from the task. The chosen point is stored as the
trial's ``task_overrides`` (in its ``trial.json``), which every retraining of the trial (the final
training) keeps; that plays the part of Vertex's ``scaling_params.yaml``. The reward is the
experiment's (``objectives``): scaling is meant to meet its latency constraint, so give the
experiment a ``latency_ms`` constraint.

Which architectures it scales (``base_problems``): those built by tf-models-official's
``SpineNet`` (the spaces ``spinenet``, ``spinenet_v2``, ``spinenet49``, and a user's space of the
same classes). It refuses the others before any trial, ``spinenet_mbconv`` included.

To scale other knobs, or the same knobs with other candidates: build a ``SpineNetScalingSpace``
with other candidate tuples (a new knob also needs a field in ``SpineNetScaling`` and its override
in ``task_overrides``) and add one line for it in ``kfnas.spaces._BUILTINS``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pyglove as pg

from kfnas.registry import RegistryError
from kfnas.spaces.options import LEVEL_OPTIONS, LEVEL_RANGE
from kfnas.spaces.spinenet import SPINENET_MODULE, image_size_problems

#: The tf-models-official module whose ``SpineNet`` reads every knob this space scales.
SCALABLE_TF_MODULE = SPINENET_MODULE

#: The fields that become ``task.options`` knobs of the same name (``image_size`` is the task's).
OPTION_FIELDS = (
    "endpoints_num_filters",
    "filter_size_scale",
    "resample_alpha",
    "block_repeats",
    "head_num_convs",
    "head_num_filters",
)
#: Fields whose values are floats; the others are integers.
FLOAT_FIELDS = ("filter_size_scale", "resample_alpha")


@pg.members(
    [
        ("image_size", pg.typing.Int(min_value=8), "Side of the square model input, in pixels."),
        ("endpoints_num_filters", pg.typing.Int(min_value=1), "Backbone output channels."),
        ("filter_size_scale", pg.typing.Float(min_value=0.0), "Backbone width multiplier."),
        ("resample_alpha", pg.typing.Float(min_value=0.0), "Cross-scale resampling width."),
        ("block_repeats", pg.typing.Int(min_value=1), "Blocks per SpineNet node."),
        ("head_num_convs", pg.typing.Int(min_value=0), "RetinaNet head depth."),
        ("head_num_filters", pg.typing.Int(min_value=1), "RetinaNet head width."),
    ]
)
class SpineNetScaling(pg.Object):
    """One scaling of a SpineNet RetinaNet (a point of ``spinenet_scaling``)."""


@dataclasses.dataclass(frozen=True)
class SpineNetScalingSpace:
    """A grid of SpineNet scalings (Vertex NAS section 1.7); one candidate tuple per field.

    Attributes:
        name: Registry name.
        image_size: Candidate input sizes (each divisible by ``2**task.options.max_level``).
        endpoints_num_filters: Candidate backbone output channels.
        filter_size_scale: Candidate backbone width multipliers.
        resample_alpha: Candidate resampling widths.
        block_repeats: Candidate blocks per node.
        head_num_convs: Candidate RetinaNet head depths.
        head_num_filters: Candidate RetinaNet head widths.
        tasks: Task kinds it applies to (SpineNet serves detection here).
        default_algorithm: The algorithm of its studies unless the spec names one.
    """

    name: str = "spinenet_scaling"
    image_size: tuple[int, ...] = (512, 640)
    endpoints_num_filters: tuple[int, ...] = (192, 256)
    filter_size_scale: tuple[float, ...] = (0.8, 1.0, 1.2)
    resample_alpha: tuple[float, ...] = (0.75, 1.0, 1.25)
    block_repeats: tuple[int, ...] = (2, 3, 4)
    head_num_convs: tuple[int, ...] = (4, 5)
    head_num_filters: tuple[int, ...] = (192, 256)
    tasks: tuple[str, ...] = ("detection",)
    default_algorithm: str = "grid"

    def __post_init__(self) -> None:
        for field in ("image_size", *OPTION_FIELDS):
            values = getattr(self, field)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"{self.name}: {field} needs distinct candidates, got {values}")
            low = {"image_size": 8, "head_num_convs": 0}.get(field, 1)
            if field in FLOAT_FIELDS:
                if not all(isinstance(v, int | float) and v > 0 for v in values):
                    raise ValueError(f"{self.name}: {field} candidates must be > 0, got {values}")
            elif not all(isinstance(v, int) and v >= low for v in values):
                raise ValueError(
                    f"{self.name}: {field} candidates must be integers >= {low}, got {values}"
                )

    def hyper(self) -> SpineNetScaling:
        """A ``SpineNetScaling`` of ``pg.one_of`` choices, one per field, in field order."""
        return SpineNetScaling(
            **{
                field: pg.one_of(
                    [float(v) for v in values] if field in FLOAT_FIELDS else list(values)
                )
                for field, values in self.candidates().items()
            }
        )

    def candidates(self) -> dict[str, tuple[Any, ...]]:
        """The candidates of each field, in decision order."""
        return {field: getattr(self, field) for field in ("image_size", *OPTION_FIELDS)}

    def reference(self) -> None:
        """``None``: no published SpineNet scaling lies inside the default grid.

        SpineNet-49 (tf-models' RetinaNet at 640 px, endpoints 256, filter scale 1.0, head 4 x
        256) has ``resample_alpha`` 0.5 and ``block_repeats`` 1, neither a candidate; SpineNet-96
        has alpha 0.5 too. SpineNet-143's backbone knobs (256, 1.0, alpha 1.0, 3 repeats) are all
        candidates, but it was published at 1280 px, not 512 or 640. The grid explores around
        them instead.
        """
        return None

    def task_problems(self, task: Any) -> list[str]:
        """Candidate image sizes the scaled network cannot use, as messages.

        Each candidate must be divisible by ``2**task.options.max_level`` (the detection rule)
        and line up at every SpineNet block level up to 7 (``spinenet.image_size_problems``).
        """
        max_level = task.options.get("max_level", LEVEL_OPTIONS["max_level"].default)
        if not isinstance(max_level, int):
            return []  # The task's own checks report it.
        stride = 2**max_level
        out = [
            problem
            for size in self.image_size
            for problem in image_size_problems(size, LEVEL_RANGE[1], f"{self.name} image_size")
        ]
        bad = [size for size in self.image_size if size % stride]
        if bad:
            out.append(
                f"the candidate image sizes {bad} of {self.name} are not divisible by "
                f"2**max_level = {stride} (task.options.max_level = {max_level}): lower "
                f"task.options.max_level, or use a scaling space whose image sizes are multiples "
                f"of {stride}"
            )
        return out

    def objective_problems(self, objectives: Any) -> list[str]:
        """Scaling trades accuracy for latency: the reward needs a ``latency_ms`` target."""
        if any(c.measure == "latency_ms" for c in objectives.constraints):
            return []
        return [
            "a scaling study needs a latency target in its reward (scaling trades accuracy for "
            "latency; without one the grid's largest model wins): add objectives.constraints: "
            "[{measure: latency_ms, target: <ms>}] or set the pipeline's latency_target_ms"
        ]

    def base_problems(self, space_name: str) -> list[str]:
        """Refuses architectures that tf-models' ``SpineNet`` does not build.

        ``spinenet_mbconv`` is refused too: tf-models 2.20's ``SpineNetMobile`` has no
        ``resample_alpha`` at all, and its ``_block_group`` applies each of the ``block_repeats``
        blocks to the group's input and keeps only the last one, which has stride 1 (checked in
        ``official/vision/modeling/backbones/spinenet_mobile.py``): the earlier blocks drop out of
        the graph and the stride-2 stem block loses its stride, so every feature map of the
        network comes out twice as large as its level says.

        A space that cannot be loaded gives no message here (the study naming it reports it).
        """
        from kfnas.spaces import get_space

        try:
            base = get_space(space_name)
        except RegistryError:
            return []
        modules = getattr(base, "tf_modules", None)
        if modules == frozenset({SCALABLE_TF_MODULE}):
            return []
        what = (
            "SpineNetMobile (mbconv blocks), which has no resample_alpha and whose block_repeats "
            "> 1 drops blocks and loses the stem's stride in tf-models-official 2.20"
            if modules and any(m.endswith("spinenet_mobile") for m in modules)
            else "no SpineNet backbone"
        )
        return [
            f"it scales SpineNet backbones built by tf-models-official's SpineNet (image size, "
            f"endpoints_num_filters, filter_size_scale, resample_alpha, block_repeats and the "
            f"RetinaNet head), but the architecture study's space {space_name!r} builds {what}: "
            f"search spinenet or spinenet_v2 in the first study, or run a one-trial spinenet49 "
            f"study to scale the published SpineNet-49, or remove the {self.name} study"
        ]

    def task_overrides(self, point: SpineNetScaling, task: Any) -> list[str]:
        """``task.image_size`` and the six ``task.options`` knobs of ``point``.

        Args:
            point: A materialized ``SpineNetScaling``.
            task: The task before the overrides; every scaled knob replaces its value there.

        Returns:
            E.g. ``["task.image_size=512", "task.options.endpoints_num_filters=192", ...,
            "task.options.head_num_filters=256"]``.
        """
        del task  # Every knob is set outright.
        return [f"task.image_size={json.dumps(point.image_size)}"] + [
            f"task.options.{field}={json.dumps(getattr(point, field))}" for field in OPTION_FIELDS
        ]


SPINENET_SCALING = SpineNetScalingSpace()

__all__ = [
    "FLOAT_FIELDS",
    "OPTION_FIELDS",
    "SCALABLE_TF_MODULE",
    "SPINENET_SCALING",
    "SpineNetScaling",
    "SpineNetScalingSpace",
]
