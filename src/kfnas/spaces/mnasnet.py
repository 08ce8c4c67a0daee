"""The MnasNet search spaces ``mnasnet`` (MobileNetV2 stage table) and ``mnasnet_a1``.

As in Vertex AI NAS (``vertex_nas_reference.md`` section 1.3), decision for decision: a fixed
stem (3x3 conv, stride 2, 32 filters) and 7 stages with the fixed strides ``[1, 2, 2, 2, 1, 2, 1]``.
Around a reference stage table of repeats ``r`` and output filters ``o``, each stage ``i`` searches

==============================  ==============================================
decision id                     candidates (in this order)
==============================  ==============================================
``blocks[i].num_repeats``       ``[r, r - 1, r + 1]``, or ``[1, 2]`` if r = 1
``blocks[i].block_fn``          ``['conv', 'mbconv']``
``blocks[i].expand_ratio``      ``[1, 3, 6]``
``blocks[i].kernel_size``       ``[3, 5]``
``blocks[i].se_ratio``          ``[0.0, 0.25]``
``blocks[i].output_filters``    ``[int(0.75 o), o, int(1.25 o)]``
==============================  ==============================================

so both spaces have 42 decision points and 144**2 * 216**5 = 9,749,755,840,167,936 architectures.
The reference table is chosen by the space name, which is how a user selects it (Vertex's
``reference=`` argument):

* ``mnasnet``: MobileNetV2's table, repeats ``[1, 2, 3, 4, 3, 3, 1]``, filters
  ``[16, 24, 32, 64, 96, 160, 320]``; ``reference()`` is MobileNetV2.
* ``mnasnet_a1``: the MnasNet-A1 table, repeats ``[1, 2, 3, 4, 2, 3, 1]``, filters
  ``[16, 24, 40, 80, 112, 160, 320]`` (same decisions, same size); ``reference()`` is MnasNet-A1.

Both references lie inside their space. The materialized value is a ``MnasNetArchitecture``
(``pg.to_json_str``/``pg.from_json_str`` round-trip it) holding 7 ``MnasNetBlock``; ``stages``
turns it into the stage table of ``kfnas.spaces._mobile_backbone.MobileStageBackbone``, with
endpoints ``'2'``..``'5'`` (strides 4..32). The backbone knobs read from ``task.options`` are
listed in ``kfnas.spaces._mobile_space``; the default activation is relu. The spaces serve
classification and detection.

To add a reference table: add one ``MnasNetSpace(...)`` instance below with its table and its
published block choices, and one line for it in ``kfnas.spaces._BUILTINS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pyglove as pg

from kfnas.spaces._mobile_space import (
    TASK_OPTIONS,
    backbone_problems,
    build_backbone,
    filter_candidates,
    repeat_candidates,
)
from kfnas.spaces.base import Network
from kfnas.spaces.options import Option

#: Stage strides (fixed; Vertex ``MNASNET_NUM_BLOCKS`` = 7 stages).
STRIDES = (1, 2, 2, 2, 1, 2, 1)
BLOCK_FNS = ("conv", "mbconv")
EXPAND_RATIOS = (1, 3, 6)
KERNEL_SIZES = (3, 5)
SE_RATIOS = (0.0, 0.25)
#: The default activation of these spaces' backbone (MnasNet's); ``task.options.activation`` wins.
DEFAULT_ACTIVATION = "relu"

#: Published block choices of one stage: (block_fn, expand_ratio, kernel_size, se_ratio).
BlockChoice = tuple[str, int, int, float]


@pg.members(
    [
        ("num_repeats", pg.typing.Int(min_value=1, default=1), "Blocks in the stage."),
        ("block_fn", pg.typing.Str(default="mbconv"), "'conv' or 'mbconv'."),
        ("expand_ratio", pg.typing.Int(min_value=1, default=1), "MBConv expansion ratio."),
        ("kernel_size", pg.typing.Int(min_value=1, default=3), "Conv or depthwise kernel size."),
        ("se_ratio", pg.typing.Float(min_value=0.0, max_value=1.0, default=0.0), "0: no SE."),
        ("output_filters", pg.typing.Int(min_value=1), "Output width of the stage."),
    ]
)
class MnasNetBlock(pg.Object):
    """One MnasNet stage (Vertex's ``TunableBlockSpec``); defaults as in Vertex."""


@pg.members([("blocks", pg.typing.List(pg.typing.Object(MnasNetBlock)), "The 7 stages.")])
class MnasNetArchitecture(pg.Object):
    """A MnasNet stage table; inside ``hyper()`` its fields hold PyGlove choices."""


@dataclass(frozen=True)
class MnasNetSpace:
    """A MnasNet search space around one reference stage table (see the module docstring).

    Attributes:
        name: Registry name.
        repeats: Reference repeats of the 7 stages.
        filters: Reference output filters of the 7 stages.
        reference_blocks: The published architecture's block choices per stage.
        reference_name: What ``reference()`` is, for messages and docs.
        tasks: Task kinds the space serves.
    """

    name: str
    repeats: tuple[int, ...]
    filters: tuple[int, ...]
    reference_blocks: tuple[BlockChoice, ...]
    reference_name: str
    tasks: tuple[str, ...] = ("classification", "detection", "torch_classification")
    #: The ``task.options`` knobs this space reads besides the task's.
    task_options: ClassVar[Mapping[str, Option]] = TASK_OPTIONS

    def __post_init__(self) -> None:
        sizes = {len(self.repeats), len(self.filters), len(self.reference_blocks)}
        if sizes != {len(STRIDES)}:
            raise ValueError(f"{self.name}: the stage table needs {len(STRIDES)} stages")

    def hyper(self) -> MnasNetArchitecture:
        """The hyper ``MnasNetArchitecture``; ids ``blocks[i].num_repeats`` ... as in Vertex."""
        return MnasNetArchitecture(
            blocks=[
                MnasNetBlock(
                    num_repeats=pg.one_of(repeat_candidates(r)),
                    block_fn=pg.one_of(list(BLOCK_FNS)),
                    expand_ratio=pg.one_of(list(EXPAND_RATIOS)),
                    kernel_size=pg.one_of(list(KERNEL_SIZES)),
                    se_ratio=pg.one_of(list(SE_RATIOS)),
                    output_filters=pg.one_of(filter_candidates(o)),
                )
                for r, o in zip(self.repeats, self.filters, strict=True)
            ]
        )

    def reference(self) -> MnasNetArchitecture:
        """The published architecture (``reference_name``), materialized from its DNA.

        Both built-in references lie inside their space exactly; encoding them into a DNA of the
        space and materializing that DNA builds them like any searched architecture.

        Raises:
            ValueError: The published choices are not candidates of the space.
        """
        hyper = self.hyper()
        published = MnasNetArchitecture(
            blocks=[
                MnasNetBlock(
                    num_repeats=r,
                    block_fn=block_fn,
                    expand_ratio=expand_ratio,
                    kernel_size=kernel_size,
                    se_ratio=se_ratio,
                    output_filters=o,
                )
                for r, o, (block_fn, expand_ratio, kernel_size, se_ratio) in zip(
                    self.repeats, self.filters, self.reference_blocks, strict=True
                )
            ]
        )
        return pg.materialize(hyper, pg.template(hyper).encode(published))

    def task_problems(self, task: Any) -> list[str]:
        """A fixed ``task.options.backbone`` makes no sense here: this space is the backbone."""
        return backbone_problems(self.name, task)

    def build_network(self, arch: MnasNetArchitecture, task: Any, input_specs: Any) -> Network:
        """The backbone of ``arch`` (imports TensorFlow); the task supplies the decoder.

        Args:
            arch: A materialized architecture of this space.
            task: The ``kfnas.config.spec.TaskSpec``; its ``options`` set the backbone knobs
                (``kfnas.spaces._mobile_space``).
            input_specs: The batched ``tf_keras.layers.InputSpec``.

        Returns:
            The ``Network`` of a ``MobileStageBackbone`` with endpoints ``'2'``..``'5'``.

        Raises:
            ValueError: ``arch`` still holds choices or has the wrong number of stages.
        """
        backbone = build_backbone(stages(arch), task, input_specs, activation=DEFAULT_ACTIVATION)
        return Network(backbone=backbone)


def stages(arch: MnasNetArchitecture) -> list[dict[str, Any]]:
    """The stage table of a materialized architecture, for ``MobileStageBackbone``.

    official.vision has no MnasNet backbone: kfnas builds ``MobileStageBackbone`` itself from
    official.vision blocks (``InvertedBottleneckBlock`` with squeeze-excite for ``mbconv``,
    ``Conv2DBNBlock`` for ``conv``, which ignores ``expand_ratio`` and ``se_ratio``). Endpoints
    ``'2'``..``'5'`` are the outputs of stages 1, 2, 4 and 6; a RetinaNet puts an FPN on them to
    make levels 6 and 7.

    Raises:
        ValueError: ``arch`` still holds choices, or it does not have 7 stages.
    """
    if not arch.is_deterministic:
        raise ValueError("stages needs a materialized architecture (pg.materialize it first)")
    if len(arch.blocks) != len(STRIDES):
        raise ValueError(
            f"a MnasNet architecture has {len(STRIDES)} stages, got {len(arch.blocks)}"
        )
    return [
        {
            "block_fn": block.block_fn,
            "num_repeats": block.num_repeats,
            "expand_ratio": block.expand_ratio,
            "kernel_size": block.kernel_size,
            "se_ratio": block.se_ratio,
            "filters": block.output_filters,
            "strides": strides,
            "activation": None,
        }
        for block, strides in zip(arch.blocks, STRIDES, strict=True)
    ]


# MobileNetV2: ``mbconv`` everywhere, expansion 6 (1 in the first stage), kernel 3, no
# squeeze-excite, the table's repeats and filters.
MNASNET = MnasNetSpace(
    name="mnasnet",
    repeats=(1, 2, 3, 4, 3, 3, 1),
    filters=(16, 24, 32, 64, 96, 160, 320),
    reference_blocks=(("mbconv", 1, 3, 0.0),) + (("mbconv", 6, 3, 0.0),) * 6,
    reference_name="MobileNetV2",
)
# MnasNet-A1 as published (Tan et al. 2019, figure 7): SepConv 3x3 (``mbconv`` expansion 1),
# MBConv6 3x3, MBConv3 5x5 SE, MBConv6 3x3, MBConv6 3x3 SE, MBConv6 5x5 SE, MBConv6 3x3; SE ratio
# 0.25.
MNASNET_A1 = MnasNetSpace(
    name="mnasnet_a1",
    repeats=(1, 2, 3, 4, 2, 3, 1),
    filters=(16, 24, 40, 80, 112, 160, 320),
    reference_blocks=(
        ("mbconv", 1, 3, 0.0),  # SepConv 3x3
        ("mbconv", 6, 3, 0.0),  # MBConv6 3x3
        ("mbconv", 3, 5, 0.25),  # MBConv3 5x5, SE
        ("mbconv", 6, 3, 0.0),  # MBConv6 3x3
        ("mbconv", 6, 3, 0.25),  # MBConv6 3x3, SE
        ("mbconv", 6, 5, 0.25),  # MBConv6 5x5, SE
        ("mbconv", 6, 3, 0.0),  # MBConv6 3x3
    ),
    reference_name="MnasNet-A1",
)

__all__ = [
    "BLOCK_FNS",
    "DEFAULT_ACTIVATION",
    "EXPAND_RATIOS",
    "KERNEL_SIZES",
    "MNASNET",
    "MNASNET_A1",
    "SE_RATIOS",
    "STRIDES",
    "BlockChoice",
    "MnasNetArchitecture",
    "MnasNetBlock",
    "MnasNetSpace",
    "stages",
]
