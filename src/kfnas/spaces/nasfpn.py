"""The ``nasfpn`` search space: the NAS-FPN cell, a feature pyramid decoder over a fixed backbone.

A NAS-FPN cell turns the 5 pyramid features of levels ``min_level..max_level`` (3..7; features 0..4
of the cell's feature list) into 5 new ones, one per level, through *nodes*: each node resamples two
earlier features to its level, merges them with a combine function (``sum``, or ``attention``:
global attention of the coarser feature over the finer one), and appends the result to the list.
Input indices are **absolute** indices into that growing list. This space searches, as in Vertex AI
NAS (``vertex_nas_reference.md`` section 1.5, ``nasfpn_search_space(min_level=3, max_level=7,
level_candidates=[4, 5, 6, 7], num_intermediate_blocks=2)``), decision for decision:

* per intermediate node ``i`` (2 of them, features 5 and 6): ``intermediate_blocks[i].level`` in
  ``[4, 5, 6, 7]``, ``intermediate_blocks[i].combine_fn`` in ``['sum', 'attention']`` and
  ``intermediate_blocks[i].input_offsets``, 2 distinct sorted indices from ``range(5 + i)``;
* per output node ``j`` (5 of them, features 7..11): ``output_blocks[j].combine_fn`` and
  ``output_blocks[j].input_offsets``, 2 distinct sorted indices from ``range(7 + j)``;
* ``output_block_levels``: a permutation of ``[3, 4, 5, 6, 7]`` (distinct, unsorted), the level of
  each output node in network order.

Size ``(4*2*10) * (4*2*15) * 2**5 * 21*28*36*45*55 * 120 = 1,931,334,451,200,000`` and 28 decision
points (PyGlove flattens each 2-choice into 2 points; ids such as
``intermediate_blocks[1].input_offsets[0]`` and ``output_block_levels[3]``).

The materialized value is a ``NasFpnArchitecture`` (``pg.to_json_str`` and ``pg.from_json_str``
round-trip it); ``block_specs`` gives its 7 static ``(level, combine_fn, (input_0, input_1),
is_output)`` tuples, ``to_tf_block_specs`` the ``BlockSpec`` objects of
``official.vision.modeling.decoders.nasfpn``; ``reference()`` is the published cell
(``PUBLISHED_CELL``). ``NasFpnSpace.build_network`` builds tf-models' ``NASFPN`` decoder
(``num_repeats`` stacked copies of the cell, ``num_filters`` channels) over a fixed official.vision
backbone named by ``task.options.backbone`` (``BACKBONES``: ``resnet10`` ... ``resnet152`` ->
``ResNet(model_id)``, ``mobilenet_v1`` ... -> ``MobileNet(model_id)``). ``task.options`` knobs
read here (missing ones take the defaults shown):

==========================  ========  ==========================================================
option                      default   meaning
==========================  ========  ==========================================================
backbone                    resnet10  the fixed backbone; Vertex's NAS-FPN search used ResNet-10
                                      (full training ResNet-50), and it is CPU-friendly
filter_size_scale           1.0       backbone width multiplier (ResNet ``depth_multiplier``,
                                      MobileNet ``filter_size_scale``)
decoder_num_filters         256       channels of every NAS-FPN node (Vertex: 256)
decoder_num_repeats         5         stacked cells (Vertex: 3 in search, 5 in full training)
activation                  swish     backbone (ResNet only) and decoder activation
norm_momentum, norm_epsilon .99, 1e-3 batch normalization of backbone and decoder
l2_weight_decay             4e-5      L2 weight decay of backbone and decoder
==========================  ========  ==========================================================

The image side must be a multiple of ``2**max_level`` (128).

To extend: a new fixed backbone is one ``_FixedBackbone`` line in ``BACKBONES`` (a new
official.vision family also one ``_Family`` line in ``_FAMILIES``); a variant of the space (other
levels, candidates or node count, e.g. the medical one over levels 1..4) is one more ``NasFpnSpace``
instance and one line in ``kfnas.spaces._BUILTINS``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pyglove as pg

from kfnas.spaces.base import Network
from kfnas.spaces.options import Option, integer, number
from kfnas.spaces.regularizers import l2_regularizer
from kfnas.spaces.spinenet import SHARED_BACKBONE_DEFAULTS

#: One static node: (level, combine_fn, (input_index_0, input_index_1), is_output).
BlockTuple = tuple[int, str, tuple[int, int], bool]

#: The combine functions tf-models' ``NASFPN`` implements.
COMBINE_FNS = ("sum", "attention")

#: tf-models' ``NASFPN_BLOCK_SPECS``: the cell of the NAS-FPN paper (arXiv 1904.07392). It has 2
#: intermediate nodes at level 4 and 5 outputs at levels 3, 4, 5, 7, 6 whose inputs are sorted,
#: distinct and in range, so it lies inside the space (``NasFpnSpace.reference``).
PUBLISHED_CELL: tuple[BlockTuple, ...] = (
    (4, "attention", (1, 3), False),
    (4, "sum", (1, 5), False),
    (3, "sum", (0, 6), True),
    (4, "sum", (6, 7), True),
    (5, "attention", (7, 8), True),
    (7, "attention", (6, 9), True),
    (6, "attention", (9, 10), True),
)

DEFAULT_BACKBONE = "resnet10"

#: Decoder and backbone knobs of ``task.options`` read by ``build_network``, with their defaults.
#: The shared knobs default as the task kinds' own (``SHARED_BACKBONE_DEFAULTS``) so one
#: activation runs through the whole model.
OPTION_DEFAULTS: dict[str, Any] = {
    "backbone": DEFAULT_BACKBONE,
    "filter_size_scale": 1.0,
    "decoder_num_filters": 256,
    "decoder_num_repeats": 5,
    **SHARED_BACKBONE_DEFAULTS,
}


#: The knobs of ``OPTION_DEFAULTS`` that no task reads, with their checks (``task_options``).
TASK_OPTIONS: dict[str, Option] = {
    "backbone": Option(None, lambda v: isinstance(v, str) and bool(v), "a backbone name"),
    "filter_size_scale": number(0, strict=True),
    "decoder_num_filters": integer(1),
    "decoder_num_repeats": integer(1),
}


@dataclass(frozen=True)
class _Family:
    """An official.vision backbone class and how the shared knobs reach it.

    Attributes:
        class_name: The class in ``official.vision.modeling.backbones``.
        width_arg: Its constructor argument that ``filter_size_scale`` sets.
        takes_activation: Whether its constructor takes ``activation`` (MobileNet's is per block).
    """

    class_name: str
    width_arg: str
    takes_activation: bool


_FAMILIES: dict[str, _Family] = {
    "resnet": _Family("ResNet", "depth_multiplier", takes_activation=True),
    "mobilenet": _Family("MobileNet", "filter_size_scale", takes_activation=False),
}


@dataclass(frozen=True)
class _FixedBackbone:
    """A backbone the decoder can sit on.

    Attributes:
        family: A key of ``_FAMILIES``.
        model_id: Its ``model_id`` argument.
        levels: The levels of its endpoints (``output_specs`` keys), lowest to highest.
    """

    family: str
    model_id: int | str
    levels: tuple[int, ...]


_RESNET_LEVELS = (2, 3, 4, 5)
#: The fixed backbones by ``task.options.backbone`` name (endpoint levels checked by a test).
BACKBONES: dict[str, _FixedBackbone] = {
    **{f"resnet{d}": _FixedBackbone("resnet", d, _RESNET_LEVELS) for d in (10, 18, 34, 50, 101)},
    "resnet152": _FixedBackbone("resnet", 152, _RESNET_LEVELS),
    "mobilenet_v1": _FixedBackbone("mobilenet", "MobileNetV1", _RESNET_LEVELS),
    "mobilenet_v2": _FixedBackbone("mobilenet", "MobileNetV2", _RESNET_LEVELS),
    "mobilenet_v3_large": _FixedBackbone("mobilenet", "MobileNetV3Large", _RESNET_LEVELS),
    "mobilenet_v3_small": _FixedBackbone("mobilenet", "MobileNetV3Small", _RESNET_LEVELS),
    "mobilenet_v4_conv_small": _FixedBackbone("mobilenet", "MobileNetV4ConvSmall", _RESNET_LEVELS),
}


@pg.members(
    [
        ("level", pg.typing.Int(), "The node's level (stride 2**level)."),
        ("combine_fn", pg.typing.Str(), "How the two inputs merge: 'sum' or 'attention'."),
        (
            "input_offsets",
            pg.typing.List(pg.typing.Int(min_value=0), size=2),
            "Absolute indices of the two inputs in the cell's feature list.",
        ),
    ]
)
class NasFpnIntermediateBlock(pg.Object):
    """An intermediate node of the cell (not an output)."""


@pg.members(
    [
        ("combine_fn", pg.typing.Str(), "How the two inputs merge: 'sum' or 'attention'."),
        (
            "input_offsets",
            pg.typing.List(pg.typing.Int(min_value=0), size=2),
            "Absolute indices of the two inputs in the cell's feature list.",
        ),
    ]
)
class NasFpnOutputBlock(pg.Object):
    """An output node of the cell; its level comes from ``output_block_levels``."""


@pg.members(
    [
        ("intermediate_blocks", pg.typing.List(pg.typing.Object(NasFpnIntermediateBlock)), ""),
        ("output_blocks", pg.typing.List(pg.typing.Object(NasFpnOutputBlock)), ""),
        (
            "output_block_levels",
            pg.typing.List(pg.typing.Int()),
            "Level of each output node, in network order.",
        ),
    ]
)
class NasFpnArchitecture(pg.Object):
    """A NAS-FPN cell: intermediate nodes, then output nodes, after the input pyramid features.

    Inside a space's ``hyper()`` the fields hold PyGlove choices; after ``pg.materialize`` they are
    plain ints, strings and lists, and ``block_specs`` reads them.
    """


@dataclass(frozen=True)
class NasFpnSpace:
    """A NAS-FPN cell search space (Vertex NAS section 1.5).

    Attributes:
        name: Registry name.
        tasks: Task kinds the space serves.
        min_level: Lowest pyramid level of the cell's inputs and outputs.
        max_level: Highest pyramid level; the cell has ``max_level - min_level + 1`` inputs and
            outputs.
        level_candidates: Candidate levels of each intermediate node.
        num_intermediate_blocks: Intermediate nodes before the output nodes.
    """

    name: str = "nasfpn"
    tasks: tuple[str, ...] = ("detection", "segmentation")
    #: The ``task.options`` knobs this space reads besides the task's.
    task_options: ClassVar[Mapping[str, Option]] = TASK_OPTIONS
    min_level: int = 3
    max_level: int = 7
    level_candidates: tuple[int, ...] = (4, 5, 6, 7)
    num_intermediate_blocks: int = 2

    def __post_init__(self) -> None:
        if self.min_level > self.max_level or self.num_intermediate_blocks < 0:
            raise ValueError(f"{self.name}: need min_level <= max_level, num_intermediate >= 0")
        if not self.level_candidates or not all(
            self.min_level <= level <= self.max_level for level in self.level_candidates
        ):
            raise ValueError(f"{self.name}: level_candidates must lie in min_level..max_level")

    @property
    def levels(self) -> list[int]:
        """The pyramid levels ``min_level..max_level`` (inputs and outputs of the cell)."""
        return list(range(self.min_level, self.max_level + 1))

    def hyper(self) -> NasFpnArchitecture:
        """Returns the hyper ``NasFpnArchitecture``; decision ids as in Vertex NAS.

        A new value is built on each call; calls give equal values.
        """
        num_inputs = len(self.levels)
        first_output = num_inputs + self.num_intermediate_blocks
        return NasFpnArchitecture(
            intermediate_blocks=[
                NasFpnIntermediateBlock(
                    level=pg.one_of(list(self.level_candidates)),
                    combine_fn=pg.one_of(list(COMBINE_FNS)),
                    input_offsets=_two_inputs(num_inputs + i),
                )
                for i in range(self.num_intermediate_blocks)
            ],
            output_blocks=[
                NasFpnOutputBlock(
                    combine_fn=pg.one_of(list(COMBINE_FNS)),
                    input_offsets=_two_inputs(first_output + j),
                )
                for j in range(num_inputs)
            ],
            output_block_levels=pg.sublist_of(
                num_inputs, self.levels, choices_distinct=True, choices_sorted=False
            ),
        )

    def reference(self) -> NasFpnArchitecture:
        """The published NAS-FPN cell (``PUBLISHED_CELL``), materialized from a DNA of the space.

        Raises:
            ValueError: This instance's levels or candidates exclude the published cell (only for
                variants; the built-in ``nasfpn`` holds it).
        """
        return pg.materialize(self.hyper(), self.encode(PUBLISHED_CELL))

    def encode(self, blocks: tuple[BlockTuple, ...] | list[BlockTuple]) -> pg.DNA:
        """The DNA (bound to the space's DNA spec) of a cell given as static block tuples.

        The tuples are as ``block_specs`` gives them: intermediate nodes first.

        Raises:
            ValueError: The cell has another shape than the space's, or a value the space lacks.
        """
        blocks = list(blocks)
        num_intermediate = self.num_intermediate_blocks
        intermediate, outputs = blocks[:num_intermediate], blocks[num_intermediate:]
        if any(b[3] for b in intermediate) or not all(b[3] for b in outputs):
            raise ValueError(f"{self.name} needs {num_intermediate} intermediate nodes first")
        value = NasFpnArchitecture(
            intermediate_blocks=[
                NasFpnIntermediateBlock(level=b[0], combine_fn=b[1], input_offsets=list(b[2]))
                for b in intermediate
            ],
            output_blocks=[
                NasFpnOutputBlock(combine_fn=b[1], input_offsets=list(b[2])) for b in outputs
            ],
            output_block_levels=[b[0] for b in outputs],
        )
        hyper = self.hyper()
        try:
            dna = pg.template(hyper).encode(value)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"the cell {blocks} is not inside {self.name}: {e}") from e
        return dna.use_spec(pg.dna_spec(hyper))

    def task_problems(self, task: Any) -> list[str]:
        """What stops the cell from serving ``task``: its backbone, levels or image size.

        Checks ``task.options.backbone`` (a name of ``BACKBONES`` whose endpoints reach
        ``min_level``), that the task's ``min_level``/``max_level`` options lie within the cell's
        levels, and that ``task.image_size`` is a multiple of ``2**max_level``.
        """
        out = []
        name = task.options.get("backbone", DEFAULT_BACKBONE)
        backbone = BACKBONES.get(name) if isinstance(name, str) else None
        if backbone is None:
            close = difflib.get_close_matches(str(name), BACKBONES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(
                f"task.options.backbone {name!r} is not a backbone {self.name} can sit on{hint}; "
                f"use one of {', '.join(BACKBONES)}"
            )
        elif not min(backbone.levels) <= self.min_level <= max(backbone.levels):
            fits = [n for n, b in BACKBONES.items() if min(b.levels) <= self.min_level]
            out.append(
                f"task.options.backbone {name!r} has endpoint levels "
                f"{min(backbone.levels)}..{max(backbone.levels)}, which do not reach the "
                f"decoder's min level {self.min_level}: use one of {', '.join(fits) or '(none)'}"
            )
        for key in ("min_level", "max_level"):
            level = task.options.get(key)
            if isinstance(level, int) and not self.min_level <= level <= self.max_level:
                out.append(
                    f"task.options.{key} {level} is outside the levels {self.min_level}.."
                    f"{self.max_level} that the {self.name} decoder outputs: pick one inside"
                )
        stride = 2**self.max_level
        if task.image_size % stride:
            bigger = -(-task.image_size // stride) * stride
            out.append(
                f"task.image_size {task.image_size} is not a multiple of {stride}: the {self.name} "
                f"decoder always builds levels {self.min_level}..{self.max_level} (stride "
                f"2**{self.max_level}); use e.g. {bigger}"
            )
        return out

    def build_network(self, arch: NasFpnArchitecture, task: Any, input_specs: Any) -> Network:
        """The fixed backbone and the NAS-FPN decoder of ``arch`` (imports TensorFlow).

        tf-models 2.20 facts this relies on (``official/vision/modeling/decoders/nasfpn.py``): the
        cell's levels are fixed to ``min_level..max_level`` whatever the task's head levels (the
        head reads the levels it needs from the decoder's 3..7 outputs); missing backbone levels
        above its top are max-pooled from the one below, and a feature is resampled by nearest
        upsampling by ``2**d``, so the image side must be a multiple of ``2**max_level`` or
        upsampled shapes do not match; the outputs are the last 5 nodes, keyed by their levels.

        Args:
            arch: A materialized architecture of this space.
            task: The ``kfnas.config.spec.TaskSpec``; its ``options`` hold the knobs of the module
                docstring.
            input_specs: The batched ``tf_keras.layers.InputSpec``; a static side divisible by
                ``2 ** max_level``.

        Returns:
            ``Network(backbone, decoder)``: an official.vision ``ResNet``/``MobileNet`` and a
            ``NASFPN`` whose outputs are keyed by the level strings ``min_level..max_level``.

        Raises:
            ValueError: ``task_problems`` finds a problem, or tf-models rejects the cell.
        """
        from official.vision.modeling import backbones
        from official.vision.modeling.decoders import nasfpn

        problems = self.task_problems(task)
        if problems:
            raise ValueError("; ".join(problems))
        opts = {**OPTION_DEFAULTS, **task.options}
        regularizer = l2_regularizer(float(opts["l2_weight_decay"]))
        norm = {
            "norm_momentum": float(opts["norm_momentum"]),
            "norm_epsilon": float(opts["norm_epsilon"]),
        }
        fixed = BACKBONES[opts["backbone"]]
        family = _FAMILIES[fixed.family]
        extra = {"activation": opts["activation"]} if family.takes_activation else {}
        backbone = getattr(backbones, family.class_name)(
            model_id=fixed.model_id,
            input_specs=input_specs,
            kernel_regularizer=regularizer,
            **{family.width_arg: float(opts["filter_size_scale"])},
            **norm,
            **extra,
        )
        decoder = nasfpn.NASFPN(
            input_specs=backbone.output_specs,
            min_level=self.min_level,
            max_level=self.max_level,
            block_specs=to_tf_block_specs(arch),
            num_filters=int(opts["decoder_num_filters"]),
            num_repeats=int(opts["decoder_num_repeats"]),
            activation=opts["activation"],
            kernel_regularizer=regularizer,
            **norm,
        )
        return Network(backbone=backbone, decoder=decoder)


def _two_inputs(num_features: int) -> Any:
    """Two distinct, sorted input indices among the first ``num_features`` features."""
    return pg.manyof(2, list(range(num_features)), choices_distinct=True, choices_sorted=True)


def block_specs(arch: NasFpnArchitecture) -> list[BlockTuple]:
    """The static node tuples of a materialized cell, in tf-models' order.

    Returns:
        ``(level, combine_fn, (input_0, input_1), is_output)`` per intermediate node
        (``is_output=False``), then per output node with its level from ``output_block_levels``.

    Raises:
        ValueError: ``arch`` still holds choices, or its output levels and nodes differ in number.
    """
    if not arch.is_deterministic:
        raise ValueError("block_specs needs a materialized architecture (pg.materialize it first)")
    if len(arch.output_block_levels) != len(arch.output_blocks):
        raise ValueError(
            f"{len(arch.output_block_levels)} output levels for {len(arch.output_blocks)} nodes"
        )
    specs: list[BlockTuple] = [
        (int(b.level), b.combine_fn, (b.input_offsets[0], b.input_offsets[1]), False)
        for b in arch.intermediate_blocks
    ]
    specs.extend(
        (int(level), b.combine_fn, (b.input_offsets[0], b.input_offsets[1]), True)
        for level, b in zip(arch.output_block_levels, arch.output_blocks, strict=True)
    )
    return specs


def to_tf_block_specs(arch: NasFpnArchitecture) -> list[Any]:
    """The cell as new ``official.vision.modeling.decoders.nasfpn.BlockSpec`` objects.

    tf-models' ``BlockSpec`` has no ``__eq__``: compare ``block_specs`` tuples instead.
    """
    from official.vision.modeling.decoders import nasfpn

    return [nasfpn.BlockSpec(*spec) for spec in block_specs(arch)]


NASFPN = NasFpnSpace()

__all__ = [
    "BACKBONES",
    "COMBINE_FNS",
    "DEFAULT_BACKBONE",
    "NASFPN",
    "OPTION_DEFAULTS",
    "PUBLISHED_CELL",
    "BlockTuple",
    "NasFpnArchitecture",
    "NasFpnIntermediateBlock",
    "NasFpnOutputBlock",
    "NasFpnSpace",
    "block_specs",
    "to_tf_block_specs",
]
