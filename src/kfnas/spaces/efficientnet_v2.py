"""The EfficientNetV2 search space ``efficientnet_v2``: MBConv and Fused-MBConv stages.

As in Vertex AI NAS (``vertex_nas_reference.md`` section 1.4), decision for decision: a fixed
stem (3x3 conv, stride 2, 32 filters) and 6 stages with the fixed strides ``[1, 2, 2, 2, 1, 2]``.
Around the base table of repeats ``r = [1, 2, 2, 3, 5, 8]`` and output filters
``o = [16, 32, 48, 96, 112, 192]``, each stage ``i`` searches

==============================  ==============================================
decision id                     candidates (in this order)
==============================  ==============================================
``blocks[i].num_repeats``       ``[r, r - 1, r + 1]``, or ``[1, 2]`` if r = 1
``blocks[i].block_type``        ``['mbconv', 'fused_mbconv']``
``blocks[i].expand_ratio``      ``[1, 2, 4, 6]``
``blocks[i].kernel_size``       ``[3, 5]``
``blocks[i].se_ratio``          ``[0.0, 0.25]``
``blocks[i].output_filters``    ``[int(0.75 o), o, int(1.25 o)]``
``blocks[i].act_fn``            ``['swish', 'relu']``
==============================  ==============================================

so it has 42 decision points and 384 * 576**5 = 24,346,898,290,704,384 architectures. (Vertex's
block type enum also knows ``'conv'``; it is not searched, so it is not a candidate here either.)

``reference()`` is EfficientNetV2-B0, which lies inside the space. The materialized value is an
``EfficientNetV2Architecture`` holding 6 ``EfficientNetV2Block``; ``stages`` turns it into the
stage table of ``kfnas.spaces._mobile_backbone.MobileStageBackbone``. Each stage uses its own
``act_fn``; the stem and head conv use ``task.options.activation`` (default swish). Endpoints
``'2'``..``'5'`` (strides 4..32); other backbone knobs: ``kfnas.spaces._mobile_space``. It serves
classification and detection.

To change the candidates: edit the tuples below (the decision ids and candidate order are the
contract with stored DNA, so a changed space needs a new name and one line in
``kfnas.spaces._BUILTINS``).
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

#: Stage strides (fixed, as in Vertex's model).
STRIDES = (1, 2, 2, 2, 1, 2)
BASE_REPEATS = (1, 2, 2, 3, 5, 8)
BASE_FILTERS = (16, 32, 48, 96, 112, 192)
BLOCK_TYPES = ("mbconv", "fused_mbconv")
EXPAND_RATIOS = (1, 2, 4, 6)
KERNEL_SIZES = (3, 5)
SE_RATIOS = (0.0, 0.25)
ACT_FNS = ("swish", "relu")
#: The stem and head activation (EfficientNetV2's); ``task.options.activation`` wins.
#: Vertex builds this space only in its TF1 trainer (reference section 10, quirk 1); here it
#: serves classification and detection like ``mnasnet``.
DEFAULT_ACTIVATION = "swish"

#: EfficientNetV2-B0: (num_repeats, block_type, expand_ratio, kernel_size, se_ratio, filters).
#: Tan and Le 2021, the published ``efficientnetv2-b0`` block table, width and depth 1.0:
#: Fused-MBConv1 3x3 16 x1, Fused-MBConv4 3x3 32 x2, Fused-MBConv4 3x3 48 x2, MBConv4 3x3 SE0.25
#: 96 x3, MBConv6 3x3 SE0.25 112 x5, MBConv6 3x3 SE0.25 192 x8, all swish. Its repeats, widths
#: and strides are exactly this space's base table and every choice is a candidate, so B0 lies
#: inside the space; the stem (32 filters) and the optional 1x1 head conv
#: (``endpoints_num_filters``, 1280 for classification) match B0 too. What the space does not
#: hold are B0's training details (dropout, stochastic depth schedule), which are task settings.
EFFICIENTNET_V2_B0 = (
    (1, "fused_mbconv", 1, 3, 0.0, 16),
    (2, "fused_mbconv", 4, 3, 0.0, 32),
    (2, "fused_mbconv", 4, 3, 0.0, 48),
    (3, "mbconv", 4, 3, 0.25, 96),
    (5, "mbconv", 6, 3, 0.25, 112),
    (8, "mbconv", 6, 3, 0.25, 192),
)


@pg.members(
    [
        ("num_repeats", pg.typing.Int(min_value=1, default=1), "Blocks in the stage."),
        ("block_type", pg.typing.Str(default="mbconv"), "'mbconv' or 'fused_mbconv'."),
        ("expand_ratio", pg.typing.Int(min_value=1, default=1), "Expansion ratio."),
        ("kernel_size", pg.typing.Int(min_value=1, default=3), "Depthwise or fused kernel size."),
        ("se_ratio", pg.typing.Float(min_value=0.0, max_value=1.0, default=0.0), "0: no SE."),
        ("output_filters", pg.typing.Int(min_value=1), "Output width of the stage."),
        ("act_fn", pg.typing.Str(default="swish"), "Activation of the stage's blocks."),
    ]
)
class EfficientNetV2Block(pg.Object):
    """One EfficientNetV2 stage."""


@pg.members([("blocks", pg.typing.List(pg.typing.Object(EfficientNetV2Block)), "The 6 stages.")])
class EfficientNetV2Architecture(pg.Object):
    """An EfficientNetV2 stage table; inside ``hyper()`` its fields hold PyGlove choices."""


@dataclass(frozen=True)
class EfficientNetV2Space:
    """The ``efficientnet_v2`` search space (see the module docstring).

    Attributes:
        name: Registry name.
        tasks: Task kinds the space serves.
    """

    name: str = "efficientnet_v2"
    tasks: tuple[str, ...] = ("classification", "detection")
    #: The ``task.options`` knobs this space reads besides the task's.
    task_options: ClassVar[Mapping[str, Option]] = TASK_OPTIONS

    def hyper(self) -> EfficientNetV2Architecture:
        """The hyper architecture; ids ``blocks[i].num_repeats`` ... ``blocks[i].act_fn``."""
        return EfficientNetV2Architecture(
            blocks=[
                EfficientNetV2Block(
                    num_repeats=pg.one_of(repeat_candidates(r)),
                    block_type=pg.one_of(list(BLOCK_TYPES)),
                    expand_ratio=pg.one_of(list(EXPAND_RATIOS)),
                    kernel_size=pg.one_of(list(KERNEL_SIZES)),
                    se_ratio=pg.one_of(list(SE_RATIOS)),
                    output_filters=pg.one_of(filter_candidates(o)),
                    act_fn=pg.one_of(list(ACT_FNS)),
                )
                for r, o in zip(BASE_REPEATS, BASE_FILTERS, strict=True)
            ]
        )

    def reference(self) -> EfficientNetV2Architecture:
        """EfficientNetV2-B0, materialized from its DNA in this space."""
        hyper = self.hyper()
        published = EfficientNetV2Architecture(
            blocks=[
                EfficientNetV2Block(
                    num_repeats=r,
                    block_type=block_type,
                    expand_ratio=expand_ratio,
                    kernel_size=kernel_size,
                    se_ratio=se_ratio,
                    output_filters=filters,
                    act_fn="swish",
                )
                for r, block_type, expand_ratio, kernel_size, se_ratio, filters in (
                    EFFICIENTNET_V2_B0
                )
            ]
        )
        return pg.materialize(hyper, pg.template(hyper).encode(published))

    def task_problems(self, task: Any) -> list[str]:
        """A fixed ``task.options.backbone`` makes no sense here: this space is the backbone."""
        return backbone_problems(self.name, task)

    def build_network(
        self, arch: EfficientNetV2Architecture, task: Any, input_specs: Any
    ) -> Network:
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


def stages(arch: EfficientNetV2Architecture) -> list[dict[str, Any]]:
    """The stage table of a materialized architecture, for ``MobileStageBackbone``.

    ``MobileStageBackbone`` builds it from official.vision blocks: ``InvertedBottleneckBlock`` for
    ``mbconv``; for ``fused_mbconv`` the same block with ``use_depthwise=False``, or, at expansion
    1, one ``Conv2DBNBlock`` (see ``kfnas.spaces._mobile_backbone``). Endpoints ``'2'``..``'5'``
    (strides 4..32) are the outputs of stages 1, 2, 4 and 5.

    Raises:
        ValueError: ``arch`` still holds choices, or it does not have 6 stages.
    """
    if not arch.is_deterministic:
        raise ValueError("stages needs a materialized architecture (pg.materialize it first)")
    if len(arch.blocks) != len(STRIDES):
        raise ValueError(
            f"an EfficientNetV2 architecture has {len(STRIDES)} stages, got {len(arch.blocks)}"
        )
    return [
        {
            "block_fn": block.block_type,
            "num_repeats": block.num_repeats,
            "expand_ratio": block.expand_ratio,
            "kernel_size": block.kernel_size,
            "se_ratio": block.se_ratio,
            "filters": block.output_filters,
            "strides": strides,
            "activation": block.act_fn,
        }
        for block, strides in zip(arch.blocks, STRIDES, strict=True)
    ]


EFFICIENTNET_V2 = EfficientNetV2Space()

__all__ = [
    "ACT_FNS",
    "BASE_FILTERS",
    "BASE_REPEATS",
    "BLOCK_TYPES",
    "DEFAULT_ACTIVATION",
    "EFFICIENTNET_V2",
    "EFFICIENTNET_V2_B0",
    "EXPAND_RATIOS",
    "KERNEL_SIZES",
    "SE_RATIOS",
    "STRIDES",
    "EfficientNetV2Architecture",
    "EfficientNetV2Block",
    "EfficientNetV2Space",
    "stages",
]
