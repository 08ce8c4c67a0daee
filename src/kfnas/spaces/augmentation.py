"""Augmentation-policy spaces: the RandAugment or AutoAugment policy to train a chosen network with.

Refinement spaces (``kfnas.spaces.base.RefinementSpace``), as in Vertex AI NAS
(``vertex_nas_reference.md`` sections 1.8 and 7): a study over one of them retrains the best trial
of the study before it once per point, with ``task.options.augmentation`` set to the point's
policy (``kfnas.augment.tables`` documents the format; the detection and segmentation tasks apply
it to their training images, boxes and masks following every geometric op). Augmentation trials
are meant to train to the end of their budget and report the best of several evaluations
(``budget.evaluations``), not to run a shortened proxy.

=============================  ============  ======================================  ===========
space                          task          point                                   size
=============================  ============  ======================================  ===========
``randaugment_detection``      detection     ``RandAugmentPoint``: num_layers in      20 (grid)
``randaugment_segmentation``   segmentation  {1, 2}, magnitude in 1..10 (2 decisions)
``autoaugment_detection``      detection     5 sub-policies x 2 ops, each an op of    1.12e34
``autoaugment_segmentation``   segmentation  the kind's table (21 / 13), a magnitude  9.27e31
                                             0..10 and a probability 0.0..1.0
                                             (30 decisions)
=============================  ============  ======================================  ===========

An AutoAugment point is ``[op indices, magnitudes, probabilities]``, each a list of 5 sub-policies
of 2 values, so the decision ids read ``[list][sub-policy][slot]`` as in Vertex. Op indices refer
to ``kfnas.augment.tables.AUTOAUGMENT_OPS[kind]``; the override names the ops. ``reference()`` is
RandAugment N=2, M=9 and AutoAugment detection policy v0 (the segmentation space has none).

To add a space: build a ``RandAugmentSpace`` or ``AutoAugmentSpace`` with other candidates (or
task kind with op tables in ``kfnas.augment.tables``) and add one line to
``kfnas.spaces._BUILTINS``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pyglove as pg

from kfnas.augment.tables import AUTOAUGMENT_OPS, MAGNITUDES, MAX_MAGNITUDE, PROBABILITIES
from kfnas.registry import RegistryError

#: A RandAugment point inside the RandAugment spaces: N=2, M=9 (the ImageNet setting of the
#: RandAugment paper).
RANDAUGMENT_REFERENCE = (2, 9)

#: AutoAugment detection policy v0 as (op name, magnitude, probability) per sub-policy; Equalize
#: takes no magnitude (0 here). Zoph et al. 2019, "Learning Data Augmentation Strategies for
#: Object Detection"; its ops all lie in the detection table.
DETECTION_POLICY_V0: tuple[tuple[tuple[str, int, float], ...], ...] = (
    (("TranslateX", 4, 0.6), ("Equalize", 0, 0.8)),
    (("TranslateYOnlyBBoxes", 2, 0.2), ("CutoutImage", 8, 0.8)),
    (("Sharpness", 8, 0.0), ("ShearX", 0, 0.4)),
    (("ShearY", 2, 1.0), ("TranslateYOnlyBBoxes", 6, 0.6)),
    (("Rotate", 10, 0.6), ("Color", 6, 1.0)),
)


@pg.members(
    [
        ("num_layers", pg.typing.Int(min_value=1), "Ops applied to each image."),
        (
            "magnitude",
            pg.typing.Int(min_value=0, max_value=MAX_MAGNITUDE),
            "Magnitude of every op.",
        ),
    ]
)
class RandAugmentPoint(pg.Object):
    """One RandAugment policy (a point of the RandAugment spaces)."""


def _base_problems(space_name: str) -> list[str]:
    """Any network space may be refined; a refinement space may not."""
    from kfnas.spaces import get_space
    from kfnas.spaces.base import is_refinement

    try:
        base = get_space(space_name)
    except RegistryError:
        return []  # The study naming it reports it.
    if not is_refinement(base):
        return []
    return [
        f"it retrains a network with an augmentation policy, but the first study's space "
        f"{space_name!r} builds no network: put an architecture study (e.g. spinenet) first"
    ]


def _override(policy: dict[str, Any]) -> list[str]:
    # JSON is YAML flow text: ``--set`` parsing reads it back to the same dict.
    return [f"task.options.augmentation={json.dumps(policy)}"]


@dataclasses.dataclass(frozen=True)
class RandAugmentSpace:
    """RandAugment's two knobs for one task kind (see the module docstring).

    Attributes:
        name: Registry name.
        tasks: The one task kind whose op list RandAugment draws from.
        num_layers: Candidate numbers of ops per image.
        magnitudes: Candidate magnitudes (0..10).
        default_algorithm: ``grid``: 20 points.
    """

    name: str
    tasks: tuple[str, ...]
    num_layers: tuple[int, ...] = (1, 2)
    magnitudes: tuple[int, ...] = tuple(range(1, MAX_MAGNITUDE + 1))
    default_algorithm: str = "grid"

    def hyper(self) -> RandAugmentPoint:
        """``RandAugmentPoint(num_layers=one_of(...), magnitude=one_of(...))``."""
        return RandAugmentPoint(
            num_layers=pg.one_of(list(self.num_layers)), magnitude=pg.one_of(list(self.magnitudes))
        )

    def reference(self) -> RandAugmentPoint | None:
        """N=2, M=9 (RandAugment paper, ImageNet), when both are candidates."""
        num_layers, magnitude = RANDAUGMENT_REFERENCE
        if num_layers in self.num_layers and magnitude in self.magnitudes:
            return RandAugmentPoint(num_layers=num_layers, magnitude=magnitude)
        return None

    def task_problems(self, task: Any) -> list[str]:
        """None: the task kind was checked against ``tasks``; any size or option fits."""
        del task
        return []

    def base_problems(self, space_name: str) -> list[str]:
        """Refuses refinement spaces; every network space can be retrained with augmentation."""
        return _base_problems(space_name)

    def objective_problems(self, objectives: Any) -> list[str]:
        """None: a policy is judged by the metric alone (the network, so latency, is fixed)."""
        del objectives
        return []

    def task_overrides(self, point: RandAugmentPoint, task: Any) -> list[str]:
        """``["task.options.augmentation={"randaugment": {"num_layers": N, "magnitude": M}}"]``."""
        del task
        policy = {"randaugment": {"num_layers": point.num_layers, "magnitude": point.magnitude}}
        return _override(policy)


@dataclasses.dataclass(frozen=True)
class AutoAugmentSpace:
    """AutoAugment search policies for one task kind (see the module docstring).

    Attributes:
        name: Registry name.
        tasks: The one task kind whose op table (``AUTOAUGMENT_OPS``) the ops index.
        num_sub_policies: Sub-policies per policy.
        ops_per_sub_policy: Ops per sub-policy.
        default_algorithm: ``regularized_evolution`` (the space is far too large for a grid).
    """

    name: str
    tasks: tuple[str, ...]
    num_sub_policies: int = 5
    ops_per_sub_policy: int = 2
    default_algorithm: str = "regularized_evolution"

    @property
    def ops(self) -> tuple[str, ...]:
        """The op index table of the task kind."""
        return AUTOAUGMENT_OPS[self.tasks[0]]

    def _choices(self, candidates: list[Any]) -> list[Any]:
        return [
            pg.manyof(
                self.ops_per_sub_policy, candidates, choices_distinct=False, choices_sorted=False
            )
            for _ in range(self.num_sub_policies)
        ]

    def hyper(self) -> pg.List:
        """``pg.List([op index choices, magnitude choices, probability choices])``.

        Each of the three is a list of ``num_sub_policies`` ``pg.manyof(ops_per_sub_policy, ...,
        choices_distinct=False, choices_sorted=False)``, so the decision ids read
        ``[list][sub-policy][slot]`` as in Vertex.
        """
        return pg.List(
            [
                self._choices(list(range(len(self.ops)))),
                self._choices(list(MAGNITUDES)),
                self._choices(list(PROBABILITIES)),
            ]
        )

    def reference(self) -> pg.List | None:
        """AutoAugment detection policy v0 when every op of it is in the table, else ``None``.

        The segmentation table lacks ``TranslateYOnlyBBoxes``, which v0 uses, and no published
        AutoAugment policy was searched over it.
        """
        if any(name not in self.ops for sub in DETECTION_POLICY_V0 for name, _, _ in sub):
            return None
        if (len(DETECTION_POLICY_V0), len(DETECTION_POLICY_V0[0])) != (
            self.num_sub_policies,
            self.ops_per_sub_policy,
        ):
            return None
        return pg.List(
            [
                [[self.ops.index(op[0]) for op in sub] for sub in DETECTION_POLICY_V0],
                [[op[1] for op in sub] for sub in DETECTION_POLICY_V0],
                [[op[2] for op in sub] for sub in DETECTION_POLICY_V0],
            ]
        )

    def task_problems(self, task: Any) -> list[str]:
        """None: the task kind was checked against ``tasks``; any size or option fits."""
        del task
        return []

    def base_problems(self, space_name: str) -> list[str]:
        """Refuses refinement spaces; every network space can be retrained with augmentation."""
        return _base_problems(space_name)

    def objective_problems(self, objectives: Any) -> list[str]:
        """None: a policy is judged by the metric alone (the network, so latency, is fixed)."""
        del objectives
        return []

    def task_overrides(self, point: Any, task: Any) -> list[str]:
        """``["task.options.augmentation={"autoaugment": [[[op, magnitude, prob], ...], ...]}"]``.

        Args:
            point: A materialized point: ``[op indices, magnitudes, probabilities]``, each a list
                of ``num_sub_policies`` lists of ``ops_per_sub_policy`` values.
            task: Unused: the policy replaces any augmentation the task had.
        """
        del task
        indices, magnitudes, probs = point
        sub_policies = [
            [
                [self.ops[index], int(magnitude), float(prob)]
                for index, magnitude, prob in zip(ops, mags, ps, strict=True)
            ]
            for ops, mags, ps in zip(indices, magnitudes, probs, strict=True)
        ]
        return _override({"autoaugment": sub_policies})


RANDAUGMENT_DETECTION = RandAugmentSpace("randaugment_detection", ("detection",))
RANDAUGMENT_SEGMENTATION = RandAugmentSpace("randaugment_segmentation", ("segmentation",))
AUTOAUGMENT_DETECTION = AutoAugmentSpace("autoaugment_detection", ("detection",))
AUTOAUGMENT_SEGMENTATION = AutoAugmentSpace("autoaugment_segmentation", ("segmentation",))

__all__ = [
    "AUTOAUGMENT_DETECTION",
    "AUTOAUGMENT_SEGMENTATION",
    "DETECTION_POLICY_V0",
    "RANDAUGMENT_DETECTION",
    "RANDAUGMENT_REFERENCE",
    "RANDAUGMENT_SEGMENTATION",
    "AutoAugmentSpace",
    "RandAugmentPoint",
    "RandAugmentSpace",
]
