"""The ``spinenet49`` space: one point, the published SpineNet-49 topology.

A fixed architecture as a search space, so that the studies that refine a trained network can start
from SpineNet-49 itself: a one-trial proxy study of ``spinenet49`` followed by a
``spinenet_scaling`` study scales the published network, as Vertex AI NAS's scaling search does
(``vertex_nas_reference.md`` sections 1.7 and 8.1). It is also a baseline to compare searched
SpineNets with.

The point is tf-models-official's default ``SPINENET_BLOCK_SPECS`` (SpineNet-49: 10 intermediate
blocks, then 6 output blocks at levels 4, 3, 5, 7, 6 and 2; the level-2 output lies outside 3..7
and tf-models leaves it unused), typed out here because spaces must not import TensorFlow at import
time; a test checks it against the installed tf-models. It is stored as a ``SpineNetArchitecture``
(every level offset 0) and built by the same ``SpineNetSpace.build_backbone`` as the searched
SpineNets, so every ``task.options`` knob of the SpineNet spaces applies (``filter_size_scale``,
``endpoints_num_filters``, ``resample_alpha``, ``block_repeats``, levels, ...). The space has no
decision point: ``pg.dna_spec(hyper())`` has size 1 and its only DNA is ``DNA(None)``.

To add another fixed SpineNet (say a topology found by an earlier search): add one
``FixedSpineNetSpace(name, block_specs)`` below and one line for it in ``kfnas.spaces._BUILTINS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kfnas.spaces.base import Network
from kfnas.spaces.options import Option
from kfnas.spaces.spinenet import (
    SPINENET,
    SPINENET_MODULE,
    SPINENET_OPTIONS,
    BlockTuple,
    SpineNetArchitecture,
    SpineNetBlock,
    image_size_problems,
    tf_module_name,
)

#: tf-models-official's ``SPINENET_BLOCK_SPECS`` (SpineNet-49), after the two level-2 stem blocks.
SPINENET_49_BLOCK_SPECS: tuple[BlockTuple, ...] = (
    (2, "bottleneck", (0, 1), False),
    (4, "residual", (0, 1), False),
    (3, "bottleneck", (2, 3), False),
    (4, "bottleneck", (2, 4), False),
    (6, "residual", (3, 5), False),
    (4, "bottleneck", (3, 5), False),
    (5, "residual", (6, 7), False),
    (7, "residual", (6, 8), False),
    (5, "bottleneck", (8, 9), False),
    (5, "bottleneck", (8, 10), False),
    (4, "bottleneck", (5, 10), True),
    (3, "bottleneck", (4, 10), True),
    (5, "bottleneck", (7, 12), True),
    (7, "bottleneck", (5, 14), True),
    (6, "bottleneck", (12, 14), True),
    (2, "bottleneck", (2, 13), True),
)


def architecture_from_block_specs(specs: tuple[BlockTuple, ...]) -> SpineNetArchitecture:
    """The ``SpineNetArchitecture`` whose ``block_specs`` are ``specs`` (level offsets 0).

    Raises:
        ValueError: An intermediate block follows an output block (tf-models' lists put every
            output block last).
    """
    outputs = [i for i, spec in enumerate(specs) if spec[3]]
    if outputs and outputs != list(range(outputs[0], len(specs))):
        raise ValueError("the output blocks must come after every intermediate block")
    split = outputs[0] if outputs else len(specs)

    def blocks(group: tuple[BlockTuple, ...]) -> list[SpineNetBlock]:
        return [
            SpineNetBlock(level_offset=0, block_fn=fn, input_offsets=list(inputs))
            for _, fn, inputs, _ in group
        ]

    return SpineNetArchitecture(
        intermediate_block_levels=[spec[0] for spec in specs[:split]],
        intermediate_blocks=blocks(specs[:split]),
        output_block_levels=[spec[0] for spec in specs[split:]],
        output_blocks=blocks(specs[split:]),
    )


@dataclass(frozen=True)
class FixedSpineNetSpace:
    """A one-point ``SearchSpace``: a fixed SpineNet topology, built like the SpineNet spaces.

    Attributes:
        name: Registry name.
        specs: The static blocks after the stem, as ``(level, block_fn, inputs, is_output)``.
        tasks: Task kinds the space serves.
    """

    name: str
    specs: tuple[BlockTuple, ...]
    tasks: tuple[str, ...] = ("detection",)
    #: The ``task.options`` knobs this space reads besides the task's (as the SpineNet spaces).
    task_options: ClassVar[Mapping[str, Option]] = SPINENET_OPTIONS

    def __post_init__(self) -> None:
        tf_module_name(self.hyper())  # Raises for unknown or mixed block functions.

    @property
    def tf_modules(self) -> frozenset[str]:
        """The tf-models-official module whose backbone builds the architecture."""
        return frozenset({tf_module_name(self.hyper())})

    def hyper(self) -> SpineNetArchitecture:
        """The architecture itself: no decision point, a DNA spec of size 1."""
        return architecture_from_block_specs(self.specs)

    def reference(self) -> SpineNetArchitecture:
        """The published architecture: the space's only point."""
        return self.hyper()

    def task_problems(self, task: Any) -> list[str]:
        """A fixed ``task.options.backbone`` (this space is the backbone), a bad image size."""
        if task.options.get("backbone") is not None:
            return [
                f"task.options.backbone is set but {self.name} is itself the backbone: remove "
                f"task.options.backbone (it is for spaces that search a decoder, nasfpn)"
            ]
        if SPINENET_MODULE in self.tf_modules:
            return image_size_problems(task.image_size, max(spec[0] for spec in self.specs))
        return []

    def build_network(self, arch: SpineNetArchitecture, task: Any, input_specs: Any) -> Network:
        """The tf-models ``SpineNet`` of ``arch`` with the knobs of ``task.options``.

        Built by ``SpineNetSpace.build_backbone`` (levels default to 3..7), so the knobs and
        defaults are those of the SpineNet spaces.

        Raises:
            ValueError: ``arch`` is not a materialized SpineNet architecture.
        """
        return Network(backbone=SPINENET.build_backbone(arch, task, input_specs))


SPINENET49 = FixedSpineNetSpace(name="spinenet49", specs=SPINENET_49_BLOCK_SPECS)

__all__ = [
    "SPINENET49",
    "SPINENET_49_BLOCK_SPECS",
    "FixedSpineNetSpace",
    "architecture_from_block_specs",
]
