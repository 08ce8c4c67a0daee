"""The 3-D medical UNet spaces ``unet_encoder``, ``unet_nasfpn`` and ``unet_baseline`` (PyTorch).

As in Vertex AI NAS's medical 3-D example (``vertex_nas_reference.md`` section 1.10,
``third_party/medical_3d/medical_3d_search_spaces.py``), for the ``segmentation_3d`` task kind. The
networks are PyTorch modules (``kfnas.torch.unet.build_unet``, loaded by ``build_network`` from
its name ``TORCH_BUILDER``; this module imports neither torch nor TensorFlow). Every network has 4
feature levels: level 1 at full resolution, levels 2..4 each max-pooled by 2 (stride
``2**(level - 1)``), so the image side must be a multiple of 8 (and at least 16).

``unet_encoder`` (Vertex ``tunable_unet_encoder``) searches the UNet encoder, decision for
decision, per level ``i`` (0..3) with the base filters ``f`` = 32, 64, 128, 256:

===============================  ===========================================================
decision id                      candidates (in this order)
===============================  ===========================================================
``blocks[i].block_type``         ``['basic_block', 'bottleneck_block']``
``blocks[i].num_filters``        ``[int(0.75 f), f, int(1.25 f)]``
``blocks[i].num_repeats``        ``[1, 2, 3]``
``blocks[i].kernel_size``        ``[3, 5]``
``blocks[i].id_skip``            ``[False, True]``
``blocks[i].se_ratio``           ``[0.0, 0.25, 0.5]``
``activation``                   ``['relu', 'swish']`` (one for the whole network)
===============================  ===========================================================

so 25 decision points and ``216**4 * 2 = 4,353,564,672`` architectures. A ``basic_block`` is two
kxk convs and outputs ``num_filters`` channels; a ``bottleneck_block`` is 1x1, kxk, 1x1 convs with
``num_filters`` the bottleneck width, and outputs ``BOTTLENECK_RATIO`` (4) times as many channels
(as Vertex's ``tunable_unet.py``). Every conv is followed by instance norm. The decoder is fixed:
MONAI's BasicUNet decoder (transposed-conv upsampling, concatenation of the encoder level's
features, two 3x3 convs; LeakyReLU(0.1)) back to full resolution. ``reference()`` is the plain
UNet (``plain_unet()``: one ``basic_block`` of the base width per level, kernel 3, no identity
skip, no squeeze-and-excitation, relu), which is BasicUNet's encoder with relu.

``unet_nasfpn`` (Vertex ``tunable_unet_nasfpn``) searches a 3-D NAS-FPN cell over the fixed plain
UNet encoder's levels 1..4: ``kfnas.spaces.nasfpn.NasFpnSpace(min_level=1, max_level=4,
level_candidates=[1, 2, 3, 4], num_intermediate_blocks=2)``'s hyper, with the same
``NasFpnArchitecture`` values and decision ids:

* per intermediate node ``i`` (0, 1): ``intermediate_blocks[i].level`` in ``[1, 2, 3, 4]``,
  ``intermediate_blocks[i].combine_fn`` in ``['sum', 'attention']``,
  ``intermediate_blocks[i].input_offsets``: 2 distinct sorted absolute indices from
  ``range(4 + i)``;
* per output node ``j`` (0..3): ``output_blocks[j].combine_fn``, ``output_blocks[j].input_offsets``
  (2 distinct sorted from ``range(6 + j)``);
* ``output_block_levels``: a permutation of ``[1, 2, 3, 4]``.

Size ``(4*2*6) * (4*2*10) * 2**4 * 15*21*28*36 * 4! = 468,202,291,200`` with 24 decision points.
``decoder_num_repeats`` stacked cells of ``decoder_num_filters`` channels (Vertex's search: 16 x 2)
follow a 1x1 projection of each encoder level (the plain UNet's, with LeakyReLU(0.1)), and
Vertex's fusion head merges the cell's outputs of all 4 levels with the encoder's features, from
level 4 up to level 1 (full resolution), into the class logits. The published NAS-FPN cell is
defined for levels 3..7 only, so ``reference()`` is ``None``.

``unet_baseline`` (Vertex ``static_unet``) is MONAI's BasicUNet with the features 32, 64, 128, 256
(the plain UNet's encoder and the same decoder, LeakyReLU(0.1) throughout), trained through the
same pipeline: one dummy decision ``dummy_param`` in ``[1]`` (size 1).

``kfnas.torch.unet`` documents the modules layer by layer.

``task.options`` knobs read by the torch builder (``task_options``; missing ones take these
defaults):

===================  =======  ====================================================================
option               default  meaning
===================  =======  ====================================================================
filter_size_scale    1.0      multiplies every encoder level's ``num_filters`` (and so the
                              BasicUNet decoder's widths), rounded, at least 1 (tests and proxy
                              tasks use e.g. 0.125); the width multiplier of the TensorFlow
                              spaces' knob of that name
in_channels          1        image modalities (channels of the input volume)
decoder_num_filters  16       ``unet_nasfpn`` only: channels of every NAS-FPN node (not scaled)
decoder_num_repeats  2        ``unet_nasfpn`` only: stacked NAS-FPN cells
===================  =======  ====================================================================

To extend: a new candidate is one more value in a ``pg.one_of`` list of a ``hyper()`` (the space
changes size and stored DNAs of the old space no longer fit it: give it a new name); a new knob is
one ``Option`` in ``SHARED_OPTIONS`` or ``NASFPN_OPTIONS`` and its use in ``kfnas.torch.unet``; a
new block type is one entry of ``BLOCK_TYPES`` here and of ``kfnas.torch.unet``'s block table; a
new space variant (other base filters) is one more instance below and one line in
``kfnas.spaces._BUILTINS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyglove as pg

from kfnas.registry import load_object
from kfnas.spaces.base import Network
from kfnas.spaces.nasfpn import NasFpnArchitecture, NasFpnSpace
from kfnas.spaces.options import Option, integer, number

#: The torch builder of all three spaces, named by a string: only ``kfnas.torch`` imports torch
#: (an import-linter contract), so ``build_network`` loads it on use.
TORCH_BUILDER = "kfnas.torch.unet:build_unet"
#: The task kinds every space here serves.
TASKS = ("segmentation_3d",)
#: Base filters of the 4 encoder levels (levels 1..4).
BASE_FILTERS = (32, 64, 128, 256)
#: Levels of every network here: 1 at full resolution, each next one downsampled by 2.
LEVELS = (1, 2, 3, 4)
#: The image side must be a multiple of this (the stride of the deepest level).
SIZE_MULTIPLE = 2 ** (len(LEVELS) - 1)
#: The smallest image side: instance norm needs more than one voxel at the deepest level.
MIN_IMAGE_SIZE = 2 * SIZE_MULTIPLE
BLOCK_TYPES = ("basic_block", "bottleneck_block")
NUM_REPEATS = (1, 2, 3)
KERNEL_SIZES = (3, 5)
ID_SKIPS = (False, True)
SE_RATIOS = (0.0, 0.25, 0.5)
ACTIVATIONS = ("relu", "swish")
#: Channel reduction inside a bottleneck block (1x1 reduce, kxk, 1x1 expand).
BOTTLENECK_RATIO = 4

#: Knobs every space here reads (see the module docstring).
SHARED_OPTIONS: dict[str, Option] = {
    "filter_size_scale": number(0, 1.0, strict=True),
    "in_channels": integer(1, 1),
}
#: ``unet_nasfpn``'s knobs: the shared ones and its decoder's.
NASFPN_OPTIONS: dict[str, Option] = {
    **SHARED_OPTIONS,
    "decoder_num_filters": integer(1, 16),
    "decoder_num_repeats": integer(1, 2),
}


@pg.members(
    [
        ("block_type", pg.typing.Str(), "'basic_block' (two kxk convs) or 'bottleneck_block'."),
        (
            "num_filters",
            pg.typing.Int(min_value=1),
            "Width of the level's blocks (basic: output; bottleneck: bottleneck, output x4).",
        ),
        ("num_repeats", pg.typing.Int(min_value=1), "Blocks in the level."),
        ("kernel_size", pg.typing.Int(min_value=1), "Kernel side of the blocks' kxk convs."),
        ("id_skip", pg.typing.Bool(), "Whether each block adds its input (a residual)."),
        (
            "se_ratio",
            pg.typing.Float(min_value=0.0, max_value=1.0),
            "Squeeze-and-excitation ratio; 0: none.",
        ),
    ]
)
class UNetEncoderBlock(pg.Object):
    """One encoder level: ``num_repeats`` blocks; the first one downsamples (levels 2..4)."""


@pg.members(
    [
        ("blocks", pg.typing.List(pg.typing.Object(UNetEncoderBlock)), "Levels 1..4."),
        ("activation", pg.typing.Str(), "'relu' or 'swish', encoder and decoder."),
    ]
)
class UNetEncoderArchitecture(pg.Object):
    """A UNet whose encoder levels are searched; inside ``hyper()`` the fields hold choices."""


@pg.members([("dummy_param", pg.typing.Int(), "Vertex's one dummy decision; always 1.")])
class UNetBaselineArchitecture(pg.Object):
    """The fixed BasicUNet (``unet_baseline``); its only field is a one-candidate decision."""


#: The plain UNet's level, with ``num_filters`` the base filters: (block_type, num_repeats,
#: kernel_size, id_skip, se_ratio).
PLAIN_UNET_BLOCK: tuple[str, int, int, bool, float] = ("basic_block", 1, 3, False, 0.0)
PLAIN_UNET_ACTIVATION = "relu"


def filter_candidates(filters: int) -> list[int]:
    """``[int(0.75 f), f, int(1.25 f)]`` (candidate order as in Vertex)."""
    return [int(0.75 * filters), filters, int(1.25 * filters)]


def plain_unet(base_filters: tuple[int, ...] = BASE_FILTERS) -> UNetEncoderArchitecture:
    """The plain UNet (``PLAIN_UNET_BLOCK`` at each level): ``unet_encoder``'s reference.

    With LeakyReLU(0.1) in place of relu, the fixed encoder of ``unet_nasfpn`` and
    ``unet_baseline`` (BasicUNet's).
    """
    block_type, num_repeats, kernel_size, id_skip, se_ratio = PLAIN_UNET_BLOCK
    return UNetEncoderArchitecture(
        blocks=[
            UNetEncoderBlock(
                block_type=block_type,
                num_filters=f,
                num_repeats=num_repeats,
                kernel_size=kernel_size,
                id_skip=id_skip,
                se_ratio=se_ratio,
            )
            for f in base_filters
        ],
        activation=PLAIN_UNET_ACTIVATION,
    )


def image_size_problems(space_name: str, task: Any) -> list[str]:
    """Why ``task.image_size`` does not fit 4 levels (multiple of 8, at least 16), as fixes."""
    size = task.image_size
    if size % SIZE_MULTIPLE:
        bigger = -(-size // SIZE_MULTIPLE) * SIZE_MULTIPLE
        return [
            f"task.image_size {size} is not divisible by {SIZE_MULTIPLE}: {space_name} "
            f"downsamples 3 times by 2 (levels 1..4), so the volume side must be a multiple of "
            f"{SIZE_MULTIPLE}; use {max(bigger, MIN_IMAGE_SIZE)}"
        ]
    if size < MIN_IMAGE_SIZE:
        return [
            f"task.image_size {size} is too small for {space_name}: its deepest level (stride "
            f"{SIZE_MULTIPLE}) would be one voxel, which instance norm cannot normalize; use "
            f"{MIN_IMAGE_SIZE} or more"
        ]
    return []


def resolved_options(space: Any, task: Any) -> dict[str, Any]:
    """The knobs of ``space.task_options``: ``task.options`` over their defaults, checked.

    Keys the table lacks (the task kind's own knobs) are left out.

    Raises:
        ValueError: A knob of the table has a bad value (the message says what is expected).
    """
    table: Mapping[str, Option] = space.task_options
    problems = [
        f"task.options.{key} must be {table[key].expected}, got {value!r}"
        for key, value in task.options.items()
        if key in table and not table[key].check(value)
    ]
    if problems:
        raise ValueError(f"{space.name}: " + "; ".join(problems))
    return {key: task.options.get(key, option.default) for key, option in table.items()}


def _build(space: Any, arch: Any, task: Any) -> Network:
    """The torch module of ``arch`` as a ``Network`` (imports torch); checks the task first."""
    problems = space.task_problems(task)
    if problems:
        raise ValueError("; ".join(problems))
    build_unet = load_object(TORCH_BUILDER)
    return Network(backbone=build_unet(arch, task))


@dataclass(frozen=True)
class UNetEncoderSpace:
    """The UNet encoder search space (Vertex ``tunable_unet_encoder``; see the module docstring).

    Attributes:
        name: Registry name.
        tasks: Task kinds the space serves.
        base_filters: Base filters ``f`` of the encoder levels 1..4.
    """

    name: str = "unet_encoder"
    tasks: tuple[str, ...] = TASKS
    base_filters: tuple[int, ...] = BASE_FILTERS
    #: The ``task.options`` knobs this space reads besides the task's.
    task_options: ClassVar[Mapping[str, Option]] = SHARED_OPTIONS

    def __post_init__(self) -> None:
        if len(self.base_filters) != len(LEVELS):
            raise ValueError(f"{self.name}: base_filters needs {len(LEVELS)} levels")

    def hyper(self) -> UNetEncoderArchitecture:
        """The hyper ``UNetEncoderArchitecture``; decision ids ``blocks[i].block_type`` ..."""
        return UNetEncoderArchitecture(
            blocks=[
                UNetEncoderBlock(
                    block_type=pg.one_of(list(BLOCK_TYPES)),
                    num_filters=pg.one_of(filter_candidates(f)),
                    num_repeats=pg.one_of(list(NUM_REPEATS)),
                    kernel_size=pg.one_of(list(KERNEL_SIZES)),
                    id_skip=pg.one_of(list(ID_SKIPS)),
                    se_ratio=pg.one_of(list(SE_RATIOS)),
                )
                for f in self.base_filters
            ],
            activation=pg.one_of(list(ACTIVATIONS)),
        )

    def encode(self, arch: UNetEncoderArchitecture) -> pg.DNA:
        """The DNA (bound to the space's DNA spec) of a materialized architecture.

        Raises:
            ValueError: ``arch`` holds a value the space lacks.
        """
        hyper = self.hyper()
        try:
            dna = pg.template(hyper).encode(arch)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"the architecture is not inside {self.name}: {e}") from e
        return dna.use_spec(pg.dna_spec(hyper))

    def reference(self) -> UNetEncoderArchitecture:
        """The plain UNet (``plain_unet``), materialized from its DNA of the space."""
        return pg.materialize(self.hyper(), self.encode(plain_unet(self.base_filters)))

    def task_problems(self, task: Any) -> list[str]:
        """What stops the space from serving ``task``: an image side that 4 levels do not fit."""
        return image_size_problems(self.name, task)

    def build_network(self, arch: UNetEncoderArchitecture, task: Any, input_specs: Any) -> Network:
        """The UNet of ``arch`` as a torch module in ``Network.backbone`` (imports torch).

        Args:
            arch: A materialized architecture of this space.
            task: The ``kfnas.config.spec.TaskSpec`` (``num_classes``, knobs in ``options``).
            input_specs: Ignored: the module takes ``(N, in_channels, S, S, S)`` volumes.

        Raises:
            ValueError: ``task_problems`` finds a problem, or a knob has a bad value.
        """
        return _build(self, arch, task)


@dataclass(frozen=True)
class UNetNasFpnSpace:
    """The 3-D NAS-FPN decoder space over a fixed UNet encoder (Vertex ``tunable_unet_nasfpn``).

    See the module docstring.

    Attributes:
        name: Registry name.
        tasks: Task kinds the space serves.
        cell: The NAS-FPN cell space whose hyper this space uses (levels 1..4).
    """

    name: str = "unet_nasfpn"
    tasks: tuple[str, ...] = TASKS
    cell: NasFpnSpace = field(
        default_factory=lambda: NasFpnSpace(
            name="unet_nasfpn",
            tasks=TASKS,
            min_level=LEVELS[0],
            max_level=LEVELS[-1],
            level_candidates=LEVELS,
            num_intermediate_blocks=2,
        )
    )
    #: The ``task.options`` knobs this space reads besides the task's.
    task_options: ClassVar[Mapping[str, Option]] = NASFPN_OPTIONS

    def hyper(self) -> NasFpnArchitecture:
        """The hyper ``NasFpnArchitecture`` of the cell over levels 1..4 (``NasFpnSpace.hyper``)."""
        return self.cell.hyper()

    def reference(self) -> None:
        """``None``: the published NAS-FPN cell is defined over levels 3..7, not 1..4."""
        return None

    def task_problems(self, task: Any) -> list[str]:
        """What stops the space from serving ``task``: an image side that 4 levels do not fit."""
        return image_size_problems(self.name, task)

    def build_network(self, arch: NasFpnArchitecture, task: Any, input_specs: Any) -> Network:
        """The UNet encoder and NAS-FPN decoder of ``arch`` as one torch module (imports torch).

        Args:
            arch: A materialized architecture of this space.
            task: The ``kfnas.config.spec.TaskSpec`` (``num_classes``, knobs in ``options``).
            input_specs: Ignored: the module takes ``(N, in_channels, S, S, S)`` volumes.

        Raises:
            ValueError: ``task_problems`` finds a problem, a knob has a bad value, or the cell is
                not one over levels 1..4.
        """
        return _build(self, arch, task)


@dataclass(frozen=True)
class UNetBaselineSpace:
    """The fixed BasicUNet (Vertex ``static_unet``): one one-candidate decision, size 1.

    Attributes:
        name: Registry name.
        tasks: Task kinds the space serves.
    """

    name: str = "unet_baseline"
    tasks: tuple[str, ...] = TASKS
    #: The ``task.options`` knobs this space reads besides the task's.
    task_options: ClassVar[Mapping[str, Option]] = SHARED_OPTIONS

    def hyper(self) -> UNetBaselineArchitecture:
        """The hyper ``UNetBaselineArchitecture``: ``dummy_param`` in ``[1]``."""
        return UNetBaselineArchitecture(dummy_param=pg.one_of([1]))

    def reference(self) -> UNetBaselineArchitecture:
        """The space's single point, materialized from its DNA."""
        hyper = self.hyper()
        return pg.materialize(hyper, pg.DNA(0).use_spec(pg.dna_spec(hyper)))

    def task_problems(self, task: Any) -> list[str]:
        """What stops the space from serving ``task``: an image side that 4 levels do not fit."""
        return image_size_problems(self.name, task)

    def build_network(self, arch: UNetBaselineArchitecture, task: Any, input_specs: Any) -> Network:
        """MONAI's BasicUNet (features 32, 64, 128, 256) as a torch module (imports torch).

        Args:
            arch: The space's single point.
            task: The ``kfnas.config.spec.TaskSpec`` (``num_classes``, knobs in ``options``).
            input_specs: Ignored: the module takes ``(N, in_channels, S, S, S)`` volumes.

        Raises:
            ValueError: ``task_problems`` finds a problem, or a knob has a bad value.
        """
        return _build(self, arch, task)


UNET_ENCODER = UNetEncoderSpace()
UNET_NASFPN = UNetNasFpnSpace()
UNET_BASELINE = UNetBaselineSpace()

__all__ = [
    "ACTIVATIONS",
    "BASE_FILTERS",
    "BLOCK_TYPES",
    "BOTTLENECK_RATIO",
    "LEVELS",
    "NASFPN_OPTIONS",
    "PLAIN_UNET_BLOCK",
    "SHARED_OPTIONS",
    "SIZE_MULTIPLE",
    "TORCH_BUILDER",
    "UNET_BASELINE",
    "UNET_ENCODER",
    "UNET_NASFPN",
    "UNetBaselineArchitecture",
    "UNetBaselineSpace",
    "UNetEncoderArchitecture",
    "UNetEncoderBlock",
    "UNetEncoderSpace",
    "UNetNasFpnSpace",
    "filter_candidates",
    "image_size_problems",
    "plain_unet",
    "resolved_options",
]
