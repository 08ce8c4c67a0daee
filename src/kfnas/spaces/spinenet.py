"""The SpineNet family of search spaces: ``spinenet``, ``spinenet_v2`` and ``spinenet_mbconv``.

A SpineNet backbone is two fixed stem blocks followed by a *scale-permuted* list of blocks; each
block has a level (feature stride ``2**level``), a block function and two parent blocks, given as
absolute indices into the list of features built so far (0 and 1 are the stem blocks). These spaces
search, as in Vertex AI NAS (``vertex_nas_reference.md`` section 1.6), decision for decision:

* ``intermediate_block_levels``: a permutation of the multiset of intermediate base levels (a
  ``pg.sublist_of`` over the multiset entries, distinct and unsorted, so equal levels in other
  orders are distinct DNA, as in Vertex);
* per intermediate block ``i``: ``level_offset`` (final level = base + offset), ``block_fn`` and
  ``input_offsets``, 2 distinct sorted indices from the window ``range(max(0, 2 + i - 4), 2 + i)``;
* per output block ``j`` (5 of them): ``block_fn`` and ``input_offsets``, 2 distinct sorted indices
  from all earlier blocks (``level_offset`` is fixed to 0);
* ``output_block_levels``: a permutation of the output levels ``[3, 4, 5, 6, 7]``.

PyGlove flattens each 2-choice into 2 decision points and keeps one-candidate choices, so
``spinenet`` has 11 + 11 * 4 + 5 * 3 + 5 = 75 decision points, ``spinenet_v2`` 70 and
``spinenet_mbconv`` 75 (``len(pg.dna_spec(hyper).decision_points)``).

The materialized value is a ``SpineNetArchitecture`` (``pg.to_json_str`` / ``pg.from_json_str``
round-trip it); ``block_specs`` and ``to_tf_block_specs`` turn it into tf-models-official's static
block tuples and ``BlockSpec`` objects; ``SpineNetSpace.build_network`` builds tf-models'
``SpineNet`` or ``SpineNetMobile``, whose knobs every space declares as ``task.options``
(``SPINENET_OPTIONS``, defaults in ``_BACKBONES`` and ``SHARED_BACKBONE_DEFAULTS``).

To add a SpineNet variant: add one ``SpineNetSpace(...)`` instance below and one line for it in
``kfnas.spaces._BUILTINS``. A new block function also needs one line in ``_TF_MODULE_BY_BLOCK_FN``
naming the tf-models module whose ``BlockSpec`` builds it, and a new module one line in
``_BACKBONES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pyglove as pg

from kfnas.spaces.base import Network
from kfnas.spaces.options import Option, fraction, integer, number
from kfnas.spaces.regularizers import l2_regularizer

#: One static block: (level, block_fn, (input_index_0, input_index_1), is_output).
BlockTuple = tuple[int, str, tuple[int, int], bool]

#: Number of fixed stem blocks; they are features 0 and 1 of the network.
NUM_STEM_BLOCKS = 2

#: The tf-models-official module whose ``BlockSpec`` and backbone build each block function.
#: tf-models 2.20 (``official/vision/modeling/backbones/spinenet.py``): ``SpineNet``'s
#: ``block_fn`` must be ``"residual"`` or ``"bottleneck"``; ``spinenet_mobile.py``'s
#: ``SpineNetMobile`` builds every block as an ``InvertedBottleneckBlock`` whatever ``block_fn``
#: says.
_TF_MODULE_BY_BLOCK_FN: dict[str, str] = {
    "residual": "official.vision.modeling.backbones.spinenet",
    "bottleneck": "official.vision.modeling.backbones.spinenet",
    "mbconv": "official.vision.modeling.backbones.spinenet_mobile",
}


#: Backbone knobs shared with the task head, with the published SpineNet RetinaNet values.
SHARED_BACKBONE_DEFAULTS: dict[str, Any] = {
    "activation": "swish",
    "norm_momentum": 0.99,
    "norm_epsilon": 0.001,
    "l2_weight_decay": 4e-5,
}


@dataclass(frozen=True)
class _Backbone:
    """How to build a tf-models SpineNet module's backbone.

    Attributes:
        class_name: The backbone class in the module.
        defaults: Its ``task.options`` knobs (constructor arguments of the same name) with the
            module's published SpineNet-49 values.
    """

    class_name: str
    defaults: dict[str, Any]


#: The backbone of each tf-models module in ``_TF_MODULE_BY_BLOCK_FN``.
_BACKBONES: dict[str, _Backbone] = {
    "official.vision.modeling.backbones.spinenet": _Backbone(
        "SpineNet",
        {
            "filter_size_scale": 1.0,
            "endpoints_num_filters": 256,
            "resample_alpha": 0.5,
            "block_repeats": 1,
            "init_stochastic_depth_rate": 0.0,
        },
    ),
    "official.vision.modeling.backbones.spinenet_mobile": _Backbone(
        "SpineNetMobile",
        {
            "filter_size_scale": 1.0,
            "endpoints_num_filters": 48,
            # tf-models 2.20 quirk: SpineNetMobile's ``block_repeats > 1`` loop reapplies the
            # block to the group's input, not to the previous repeat's output: keep 1.
            "block_repeats": 1,
            "se_ratio": 0.2,
            "expand_ratio": 6,
            "init_stochastic_depth_rate": 0.0,
        },
    ),
}


#: The module of tf-models' ``SpineNet`` (residual and bottleneck blocks).
SPINENET_MODULE = "official.vision.modeling.backbones.spinenet"


def image_size_problems(
    image_size: int, top_level: int, where: str = "task.image_size"
) -> list[str]:
    """Refuses an input size that tf-models' ``SpineNet`` cannot line up at every block level.

    ``SpineNet`` builds every block at its own level (up to ``top_level``, 7 in every SpineNet
    space), whatever ``task.options.max_level`` says. A level's width is ``ceil(size / 2**level)``
    and a parent is upsampled by the integer ratio of the widths, so the sum of two parents only
    lines up when ``size`` is a multiple of ``2**top_level`` or a power of two (96 px: level 5 is
    3 wide, level 6 is 2, and level 6 upsampled is 4: the model fails to build).

    Args:
        image_size: The input side in pixels.
        top_level: The highest block level of the architectures.
        where: How messages name the size.
    """
    stride = 2**top_level
    if image_size % stride == 0 or image_size & (image_size - 1) == 0:
        return []
    return [
        f"{where} {image_size} is neither a multiple of 2**{top_level} = {stride} nor a power of "
        f"two: SpineNet builds blocks up to level {top_level} whatever task.options.max_level "
        f"says, and at other sizes their feature maps do not line up; use a multiple of {stride} "
        f"(e.g. {-(-image_size // stride) * stride}) or a power of two"
    ]


#: The ``task.options`` knobs of tf-models' SpineNet and SpineNetMobile that no task reads, with
#: their checks (their defaults are each module's, in ``_BACKBONES``). Every SpineNet space
#: declares them (``task_options``).
SPINENET_OPTIONS: dict[str, Option] = {
    "filter_size_scale": number(0, strict=True),
    "endpoints_num_filters": integer(1),
    "resample_alpha": number(0, strict=True),
    "block_repeats": integer(1),
    "se_ratio": fraction(),
    "expand_ratio": integer(1),
    "init_stochastic_depth_rate": fraction(),
}


def backbone_option_defaults(module_name: str) -> dict[str, Any]:
    """The ``task.options`` knobs of one tf-models SpineNet module, with their defaults."""
    return {**SHARED_BACKBONE_DEFAULTS, **_BACKBONES[module_name].defaults}


@pg.members(
    [
        ("level_offset", pg.typing.Int(), "Added to the block's base level to give its level."),
        ("block_fn", pg.typing.Str(), "Block function, e.g. 'residual', 'bottleneck', 'mbconv'."),
        (
            "input_offsets",
            pg.typing.List(pg.typing.Int(min_value=0), size=2),
            "Absolute indices of the two parent features (0 and 1 are the stem blocks).",
        ),
    ]
)
class SpineNetBlock(pg.Object):
    """The searched part of one SpineNet block (its base level is chosen separately)."""


@pg.members(
    [
        (
            "intermediate_block_levels",
            pg.typing.List(pg.typing.Int()),
            "Base level of each intermediate block, in network order.",
        ),
        ("intermediate_blocks", pg.typing.List(pg.typing.Object(SpineNetBlock)), ""),
        (
            "output_block_levels",
            pg.typing.List(pg.typing.Int()),
            "Level of each output block, in network order.",
        ),
        ("output_blocks", pg.typing.List(pg.typing.Object(SpineNetBlock)), ""),
    ]
)
class SpineNetArchitecture(pg.Object):
    """A SpineNet topology: intermediate blocks, then output blocks, after two stem blocks.

    Inside a space's ``hyper()`` the fields hold PyGlove choices; after ``pg.materialize`` they are
    plain ints, strings and lists, and ``block_specs`` reads them.
    """


@dataclass(frozen=True)
class SpineNetSpace:
    """A SpineNet search space over levels ``min_level..max_level`` (Vertex NAS section 1.6).

    Attributes:
        name: Registry name.
        intermediate_blocks_alloc: ``(base_level, count)`` pairs; their multiset of base levels is
            permuted over the intermediate blocks.
        level_offsets: Candidate offsets added to each intermediate block's base level.
        block_fns: Candidate block functions (keys of ``_TF_MODULE_BY_BLOCK_FN``).
        tasks: Task kinds the space serves.
        min_level: Lowest output level.
        max_level: Highest output level; one output block per level in ``min_level..max_level``.
        input_window: Intermediate block ``i`` picks its parents from the ``input_window`` features
            before it, ``range(max(0, 2 + i - input_window), 2 + i)``.
    """

    name: str
    intermediate_blocks_alloc: tuple[tuple[int, int], ...]
    level_offsets: tuple[int, ...]
    block_fns: tuple[str, ...]
    tasks: tuple[str, ...] = ("detection",)
    #: The ``task.options`` knobs this space reads besides the task's (``SPINENET_OPTIONS``).
    task_options: ClassVar[Mapping[str, Option]] = SPINENET_OPTIONS
    min_level: int = 3
    max_level: int = 7
    input_window: int = 4

    def __post_init__(self) -> None:
        if not self.intermediate_blocks_alloc or any(
            count < 1 for _, count in self.intermediate_blocks_alloc
        ):
            raise ValueError(f"{self.name}: intermediate_blocks_alloc needs positive counts")
        if not self.level_offsets or not self.block_fns:
            raise ValueError(f"{self.name}: level_offsets and block_fns must not be empty")
        unknown = sorted(set(self.block_fns) - set(_TF_MODULE_BY_BLOCK_FN))
        if unknown:
            raise ValueError(
                f"{self.name}: unknown block_fns {unknown}; known: {sorted(_TF_MODULE_BY_BLOCK_FN)}"
            )
        if self.min_level > self.max_level or self.input_window < 2:
            raise ValueError(f"{self.name}: need min_level <= max_level and input_window >= 2")

    @property
    def tf_modules(self) -> frozenset[str]:
        """The tf-models-official modules whose backbones build this space's architectures."""
        return frozenset(_TF_MODULE_BY_BLOCK_FN[fn] for fn in self.block_fns)

    @property
    def intermediate_levels(self) -> list[int]:
        """The multiset of intermediate base levels, e.g. ``[2, 3, 3, 3, 4, ...]``."""
        return [level for level, count in self.intermediate_blocks_alloc for _ in range(count)]

    @property
    def output_levels(self) -> list[int]:
        """The output levels ``min_level..max_level``; the output blocks permute them."""
        return list(range(self.min_level, self.max_level + 1))

    def hyper(self) -> SpineNetArchitecture:
        """Returns the hyper ``SpineNetArchitecture``; decision ids as in Vertex NAS.

        Ids look like ``intermediate_block_levels[7]``, ``intermediate_blocks[3].level_offset``,
        ``intermediate_blocks[3].input_offsets[0]``, ``output_blocks[2].block_fn`` and
        ``output_block_levels[4]``. A new value is built on each call; calls give equal values.
        """
        levels = self.intermediate_levels
        num_intermediate = len(levels)
        intermediate_blocks = [
            SpineNetBlock(
                level_offset=pg.one_of(list(self.level_offsets)),
                block_fn=pg.one_of(list(self.block_fns)),
                input_offsets=_two_inputs(
                    range(max(0, NUM_STEM_BLOCKS + i - self.input_window), NUM_STEM_BLOCKS + i)
                ),
            )
            for i in range(num_intermediate)
        ]
        output_levels = self.output_levels
        output_blocks = [
            SpineNetBlock(
                level_offset=0,
                block_fn=pg.one_of(list(self.block_fns)),
                input_offsets=_two_inputs(range(NUM_STEM_BLOCKS + num_intermediate + j)),
            )
            for j in range(len(output_levels))
        ]
        return SpineNetArchitecture(
            intermediate_block_levels=pg.sublist_of(
                num_intermediate, levels, choices_distinct=True, choices_sorted=False
            ),
            intermediate_blocks=intermediate_blocks,
            output_block_levels=pg.sublist_of(
                len(output_levels), output_levels, choices_distinct=True, choices_sorted=False
            ),
            output_blocks=output_blocks,
        )

    def reference(self) -> None:
        """``None``: the published SpineNet-49 lies outside these spaces.

        It has 10 intermediate blocks and an output block at level 2; these spaces have 11 (or 10)
        intermediate blocks and 5 outputs at levels 3..7. Neither tf-models module's default
        ``SPINENET_BLOCK_SPECS`` (SpineNet-49: 10 intermediate + 6 output blocks) lies inside them.
        """
        return None

    @property
    def top_level(self) -> int:
        """The highest level a block of this space can have."""
        intermediate = max(level for level, _ in self.intermediate_blocks_alloc)
        return max(intermediate + max(self.level_offsets), self.max_level)

    def task_problems(self, task: Any) -> list[str]:
        """A fixed ``task.options.backbone`` (this space is the backbone), a bad image size.

        The image size rule (``image_size_problems``) applies to tf-models' ``SpineNet`` only:
        ``SpineNetMobile`` clips block levels to ``max_level``, which the task's own check covers.
        """
        if task.options.get("backbone") is not None:
            return [
                f"task.options.backbone is set but {self.name} searches the backbone itself: "
                f"remove task.options.backbone (it is for spaces that search a decoder, nasfpn)"
            ]
        if SPINENET_MODULE in self.tf_modules:
            return image_size_problems(task.image_size, self.top_level)
        return []

    def build_network(self, arch: SpineNetArchitecture, task: Any, input_specs: Any) -> Network:
        """The backbone of ``arch`` (``build_backbone``); the task supplies the decoder."""
        return Network(backbone=self.build_backbone(arch, task, input_specs))

    def build_backbone(self, arch: SpineNetArchitecture, task: Any, input_specs: Any) -> Any:
        """Builds tf-models' ``SpineNet`` or ``SpineNetMobile`` for ``arch`` (imports TensorFlow).

        Knobs come from ``task.options``: ``min_level``/``max_level`` (default the space's 3..7),
        the module's knobs in ``SPINENET_OPTIONS`` and those shared with the task head
        (``SHARED_BACKBONE_DEFAULTS``: ``activation``, ``norm_momentum``, ``norm_epsilon``,
        ``l2_weight_decay``), defaulting to the published SpineNet-49 values of each module.

        tf-models 2.20 facts this relies on (``official/vision/modeling/backbones/spinenet.py``
        and ``spinenet_mobile.py``): ``SpineNet``'s stem blocks are both level-2 bottlenecks and
        its ``FILTER_SIZE_MAP`` covers levels 1..7, so the level-1 intermediate blocks these
        spaces allow (base 2, offset -1) are valid; ``SpineNetMobile``'s stem blocks are at levels
        1 (net index 0) and 2 (net index 1). In both, output levels must be unique (guaranteed: a
        permutation of 3..7); an unknown input width falls back to ``2**max(level)``, so give a
        static input size divisible by ``2**7``; a dangling block whose width or channels match no
        output block is left out of the Keras graph (no error).

        When a proxy task shrinks the levels (say to 3..5), the searched output blocks still span
        3..7; they are passed on unchanged and tf-models handles them (checked in 2.20):
        ``SpineNet`` builds every block at its own level and only warns about output blocks
        outside ``[min_level, max_level]``: they are not endpoints (and drop out of the graph
        unless a later block reads them). ``SpineNetMobile`` clips every block's level to
        ``max_level`` before building it, so the output blocks at 5, 6 and 7 all become level-5
        outputs. Its "Duplicate feats" check never fires (it looks an int level up among string
        keys); each later one of them sums in the earlier ones that nothing reads (same width and
        channels), and the last one in network order is endpoint 5.

        Args:
            arch: A materialized architecture of this space.
            task: The ``kfnas.config.spec.TaskSpec``; its ``options`` set the levels and the knobs
                above (missing ones take the published defaults).
            input_specs: The batched ``tf_keras.layers.InputSpec``; give a static height and width
                divisible by ``2 ** max_level``.

        Returns:
            The backbone: a ``tf_keras.Model`` whose ``output_specs`` and outputs are keyed by
            the level strings ``min_level..max_level``.

        Raises:
            ValueError: As ``to_tf_block_specs``, or tf-models rejects a knob.
        """
        module_name = tf_module_name(arch)
        backbone = _BACKBONES[module_name]
        options = {
            "min_level": self.min_level,
            "max_level": self.max_level,
            **backbone_option_defaults(module_name),
        }
        options.update((k, v) for k, v in task.options.items() if k in options)
        min_level, max_level = int(options["min_level"]), int(options["max_level"])
        regularizer = l2_regularizer(float(options["l2_weight_decay"]))
        backbone_class = getattr(importlib.import_module(module_name), backbone.class_name)
        return backbone_class(
            input_specs=input_specs,
            min_level=min_level,
            max_level=max_level,
            block_specs=to_tf_block_specs(arch),
            kernel_regularizer=regularizer,
            activation=options["activation"],
            norm_momentum=float(options["norm_momentum"]),
            norm_epsilon=float(options["norm_epsilon"]),
            **{name: options[name] for name in backbone.defaults},
        )


def _two_inputs(candidates: range) -> Any:
    """Two distinct, sorted parent indices chosen from ``candidates``."""
    return pg.manyof(2, list(candidates), choices_distinct=True, choices_sorted=True)


def block_specs(arch: SpineNetArchitecture) -> list[BlockTuple]:
    """The static block tuples of a materialized architecture, in tf-models-official's order.

    Args:
        arch: A materialized ``SpineNetArchitecture`` (no choices left).

    Returns:
        ``(level, block_fn, (input_0, input_1), is_output)`` for each intermediate block (level =
        base level + offset, ``is_output=False``), then for each output block (``is_output=True``).
        The two stem blocks are not included; they are features 0 and 1 that input indices refer to.

    Raises:
        ValueError: ``arch`` still holds choices, or its level and block lists differ in length.
    """
    if not arch.is_deterministic:
        raise ValueError("block_specs needs a materialized architecture (pg.materialize it first)")
    groups = (
        (arch.intermediate_block_levels, arch.intermediate_blocks, False),
        (arch.output_block_levels, arch.output_blocks, True),
    )
    specs: list[BlockTuple] = []
    for levels, blocks, is_output in groups:
        if len(levels) != len(blocks):
            raise ValueError(f"{len(levels)} levels for {len(blocks)} blocks in {arch!r}")
        for level, block in zip(levels, blocks, strict=True):
            first, second = block.input_offsets
            specs.append(
                (int(level + block.level_offset), block.block_fn, (first, second), is_output)
            )
    return specs


def tf_module_name(arch: SpineNetArchitecture) -> str:
    """The tf-models-official backbone module that builds ``arch`` (from its block functions).

    Raises:
        ValueError: A block function is unknown, or the blocks need more than one module.
    """
    block_fns = {spec[1] for spec in block_specs(arch)}
    unknown = sorted(block_fns - set(_TF_MODULE_BY_BLOCK_FN))
    if unknown:
        raise ValueError(f"no tf-models SpineNet builds block_fn {unknown}")
    modules = {_TF_MODULE_BY_BLOCK_FN[fn] for fn in block_fns}
    if len(modules) != 1:
        raise ValueError(f"block functions {sorted(block_fns)} need different backbones {modules}")
    return modules.pop()


def to_tf_block_specs(arch: SpineNetArchitecture) -> list[Any]:
    """The architecture as new tf-models-official ``BlockSpec`` objects (imports TensorFlow).

    Architectures of ``residual``/``bottleneck`` blocks get the ``BlockSpec`` class of
    ``official.vision.modeling.backbones.spinenet`` (for ``SpineNet``); ``mbconv`` ones get that of
    ``spinenet_mobile`` (for ``SpineNetMobile``, which clips each spec's ``level`` to
    ``max_level`` in place: never share ``BlockSpec`` objects between models, hence fresh ones per
    call). tf-models' ``BlockSpec`` has no ``__eq__``: compare ``block_specs`` tuples instead.

    Raises:
        ValueError: As ``block_specs`` and ``tf_module_name``.
    """
    module = importlib.import_module(tf_module_name(arch))
    return [
        module.BlockSpec(level, block_fn, input_offsets, is_output)
        for level, block_fn, input_offsets, is_output in block_specs(arch)
    ]


SPINENET = SpineNetSpace(
    name="spinenet",
    intermediate_blocks_alloc=((2, 1), (3, 3), (4, 5), (5, 2)),
    level_offsets=(-1, 0, 1, 2),
    block_fns=("residual", "bottleneck"),
)
SPINENET_V2 = SpineNetSpace(
    name="spinenet_v2",
    intermediate_blocks_alloc=((2, 1), (3, 3), (4, 5), (5, 1)),
    level_offsets=(-1, 0, 1),
    block_fns=("bottleneck",),
)
SPINENET_MBCONV = SpineNetSpace(  # EfficientNet-B0-like allocation.
    name="spinenet_mbconv",
    intermediate_blocks_alloc=((2, 1), (3, 1), (4, 5), (5, 4)),
    level_offsets=(-1, 0, 1, 2),
    block_fns=("mbconv",),
)

__all__ = [
    "NUM_STEM_BLOCKS",
    "SHARED_BACKBONE_DEFAULTS",
    "SPINENET",
    "SPINENET_MBCONV",
    "SPINENET_MODULE",
    "SPINENET_V2",
    "BlockTuple",
    "SpineNetArchitecture",
    "SpineNetBlock",
    "SpineNetSpace",
    "backbone_option_defaults",
    "block_specs",
    "image_size_problems",
    "tf_module_name",
    "to_tf_block_specs",
]
