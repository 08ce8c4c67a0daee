"""The 3-D UNet networks of the medical spaces ``unet_encoder``, ``unet_nasfpn``, ``unet_baseline``.

``build_unet(arch, task)`` turns a materialized architecture of one of the three spaces
(``kfnas.spaces.unet``) into a ``torch.nn.Module`` mapping a volume ``(N, in_channels, S, S, S)``
float32 to logits ``(N, task.num_classes, S, S, S)``, ``S`` a multiple of 8. Plain ``torch.nn``
only (MONAI is not used: importing it loads TensorFlow). Parameters take torch's default
initialization, so a network is the same given ``torch.manual_seed``.

The modules follow Vertex AI NAS's PyTorch code (``third_party/medical_3d``: ``basic_unet.py``,
``tunable_unet.py``, ``nasfpn.py``, ``tunable_unet_nasfpn.py``; MONAI's BasicUNet). Every conv is
3-D with 'same' padding; "norm" is ``InstanceNorm3d(affine=True)``, which follows every conv
except the decoder's transposed convs, the 1x1 skip projections, the SE layers and the logits
conv. A conv followed by a norm has no bias (the norm cancels it).

* Encoder: 4 levels; level 1 at full resolution, each of levels 2..4 max-pools by 2 and then
  runs its blocks (``num_repeats`` of them; Vertex's ``CustomDown``).
* ``basic_block``: kxk conv, norm, activation, kxk conv, norm, SE, skip, activation; its output
  has ``num_filters`` channels.
* ``bottleneck_block``: 1x1 conv to ``num_filters``, norm, activation, kxk conv, norm, activation,
  1x1 conv to ``4 * num_filters`` (``BOTTLENECK_RATIO``), norm, SE, skip, activation: as in Vertex,
  ``num_filters`` is the bottleneck width and the block outputs 4 times as many channels.
* SE (``se_ratio > 0``): global average pool, 1x1 conv to ``channels // int(1 / se_ratio)`` (at
  least 1), ReLU, 1x1 conv, sigmoid gate (MONAI's ``ChannelSELayer``).
* Skip (``id_skip``): the block's input is added, as it is when the channels match, else through a
  1x1 conv (no norm). Shapes differ only in channels: downsampling is the max pool before the
  level's blocks.
* Decoder (``unet_encoder``, ``unet_baseline``; MONAI's BasicUNet with ``upsample="deconv"``): from
  level 4 up, a 2x2x2 transposed conv of stride 2 (keeping its width into level 1, halving it
  into levels 2 and 3), concatenated after that level's encoder features, then two 3x3
  conv + norm + LeakyReLU(0.1); a 1x1 conv gives the logits. The decoder's activation is always
  LeakyReLU(0.1), as Vertex's; the searched ``activation`` is the encoder's.
* ``unet_baseline`` (Vertex ``static_unet``: BasicUNet with features 32, 64, 128, 256): the plain
  encoder (one basic block per level, kernel 3, no skip, no SE) with LeakyReLU(0.1).
* ``unet_nasfpn``: that same plain LeakyReLU encoder; each level projected to
  ``decoder_num_filters`` by a 1x1 conv + norm (when the widths differ); ``decoder_num_repeats``
  stacked NAS-FPN cells; then Vertex's ``FuseOutputFeatures``: from level 4 down, the encoder
  features, the cell's output and (below level 4) the fused level above, upsampled by a 2x2x2
  transposed conv + norm + LeakyReLU, are concatenated and merged by a 3x3 conv + norm + LeakyReLU;
  a 3x3 conv + norm + LeakyReLU and a 1x1 conv (no bias) on level 1 give the logits. Every cell
  output is used, so every parameter gets a gradient.
* A NAS-FPN node (tf-models' ``NASFPN._build_feature_pyramid``, Vertex's ``MergeCell``) resamples
  its two inputs to its level (max pool down, nearest upsampling up), combines them by ``sum`` or
  ``attention`` (``a + b * sigmoid(spatial max of a)``, ``a`` the input of the higher level), adds,
  when it is an output node, the earlier features of its level that no node used yet, then ReLU,
  3x3 conv, norm. A cell's outputs are its last 4 nodes, by level.

Widths follow ``task.options`` (``kfnas.spaces.unet.SHARED_OPTIONS`` and ``NASFPN_OPTIONS``):
every encoder ``num_filters`` becomes ``max(1, round(num_filters * filter_size_scale))``.

To add a block type: write a module class taking ``_block``'s arguments, and add it to ``BLOCKS``
with its output width rule in ``BLOCK_WIDTHS``; to add a space: write its builder and add its
architecture class to ``_BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's usual alias)
from torch import nn

from kfnas.spaces.nasfpn import BlockTuple, NasFpnArchitecture, block_specs
from kfnas.spaces.unet import (
    BOTTLENECK_RATIO,
    LEVELS,
    UNET_BASELINE,
    UNET_ENCODER,
    UNET_NASFPN,
    UNetBaselineArchitecture,
    UNetEncoderArchitecture,
    plain_unet,
    resolved_options,
)

#: Activation modules by name: the searched ones and BasicUNet's LeakyReLU(0.1).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "swish": nn.SiLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.1),
}
#: The activation of the decoders and of the fixed (baseline, NAS-FPN) encoder, as Vertex's.
BASIC_UNET_ACTIVATION = "leaky_relu"


def scaled(filters: int, scale: float) -> int:
    """``filters`` times ``scale``, rounded, at least 1."""
    return max(1, round(filters * scale))


def _activation(name: str) -> nn.Module:
    """A new activation module named ``name`` (a key of ``ACTIVATIONS``)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class ConvNormAct(nn.Sequential):
    """A 3-D conv (no bias, 'same' padding), ``InstanceNorm3d(affine=True)``, an activation.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Kernel side (odd).
        activation: A name of ``ACTIVATIONS``, or ``None`` for none.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, activation: str | None
    ) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"only odd kernel sizes keep the volume's size, got {kernel_size}")
        layers: list[nn.Module] = [
            nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
        ]
        if activation is not None:
            layers.append(_activation(activation))
        super().__init__(*layers)


class SqueezeExcite3d(nn.Module):
    """Squeeze-and-excitation (MONAI's ``ChannelSELayer``): channels gated by their averages.

    Args:
        channels: Channels in and out.
        se_ratio: In ``(0, 1]``; the gate's hidden width is ``channels // int(1 / se_ratio)``.
    """

    def __init__(self, channels: int, se_ratio: float) -> None:
        super().__init__()
        hidden = max(1, channels // int(1.0 / se_ratio))
        self.reduce = nn.Conv3d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` times its channel gate."""
        gate = self.expand(self.act(self.reduce(F.adaptive_avg_pool3d(x, 1))))
        return x * torch.sigmoid(gate)


class _ResidualBlock(nn.Module):
    """A block's body, then SE, then the skip (``id_skip``), then the activation."""

    def __init__(
        self,
        body: nn.Module,
        in_channels: int,
        out_channels: int,
        id_skip: bool,
        se_ratio: float,
        activation: str,
    ) -> None:
        super().__init__()
        self.body = body
        self.se = SqueezeExcite3d(out_channels, se_ratio) if se_ratio > 0 else None
        self.id_skip = id_skip
        self.projection = (
            nn.Conv3d(in_channels, out_channels, 1)
            if id_skip and in_channels != out_channels
            else None
        )
        self.act = _activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output."""
        out = self.body(x)
        if self.se is not None:
            out = self.se(out)
        if self.id_skip:
            out = out + (x if self.projection is None else self.projection(x))
        return self.act(out)


class BasicBlock3d(_ResidualBlock):
    """Two kxk convs; outputs ``num_filters`` channels (see the module docstring).

    Args:
        in_channels: Input channels.
        num_filters: The block's width (its output channels).
        kernel_size: Side of both convs' kernels.
        id_skip: Whether the input is added to the output.
        se_ratio: Squeeze-and-excitation ratio; 0: none.
        activation: A name of ``ACTIVATIONS``.
    """

    def __init__(
        self,
        in_channels: int,
        num_filters: int,
        kernel_size: int,
        id_skip: bool,
        se_ratio: float,
        activation: str,
    ) -> None:
        body = nn.Sequential(
            ConvNormAct(in_channels, num_filters, kernel_size, activation),
            ConvNormAct(num_filters, num_filters, kernel_size, None),
        )
        super().__init__(body, in_channels, num_filters, id_skip, se_ratio, activation)


class BottleneckBlock3d(_ResidualBlock):
    """1x1 to ``num_filters``, kxk, 1x1 to ``BOTTLENECK_RATIO * num_filters`` channels.

    Args:
        in_channels: Input channels.
        num_filters: The bottleneck width; the block outputs ``BOTTLENECK_RATIO`` times more.
        kernel_size: Side of the middle conv's kernel.
        id_skip: Whether the input is added to the output.
        se_ratio: Squeeze-and-excitation ratio; 0: none.
        activation: A name of ``ACTIVATIONS``.
    """

    def __init__(
        self,
        in_channels: int,
        num_filters: int,
        kernel_size: int,
        id_skip: bool,
        se_ratio: float,
        activation: str,
    ) -> None:
        out_channels = BOTTLENECK_RATIO * num_filters
        body = nn.Sequential(
            ConvNormAct(in_channels, num_filters, 1, activation),
            ConvNormAct(num_filters, num_filters, kernel_size, activation),
            ConvNormAct(num_filters, out_channels, 1, None),
        )
        super().__init__(body, in_channels, out_channels, id_skip, se_ratio, activation)


#: Block classes by the architectures' ``block_type``.
BLOCKS: dict[str, type[_ResidualBlock]] = {
    "basic_block": BasicBlock3d,
    "bottleneck_block": BottleneckBlock3d,
}
#: A block type's output channels, given its ``num_filters``.
BLOCK_WIDTHS: dict[str, Callable[[int], int]] = {
    "basic_block": lambda filters: filters,
    "bottleneck_block": lambda filters: BOTTLENECK_RATIO * filters,
}


class UNetEncoder3d(nn.Module):
    """The 4 encoder levels of a ``UNetEncoderArchitecture``; returns each level's features.

    Args:
        arch: A materialized ``UNetEncoderArchitecture``.
        in_channels: Channels of the input volume.
        filter_size_scale: Multiplies every level's ``num_filters``.
        activation: Overrides ``arch.activation`` (the fixed encoders use LeakyReLU).

    Attributes:
        widths: The output channels of levels 1..4.
    """

    def __init__(
        self,
        arch: UNetEncoderArchitecture,
        in_channels: int,
        filter_size_scale: float,
        activation: str | None = None,
    ) -> None:
        super().__init__()
        if len(arch.blocks) != len(LEVELS):
            raise ValueError(f"a UNet encoder has {len(LEVELS)} levels, got {len(arch.blocks)}")
        activation = activation or arch.activation
        self.widths: list[int] = []
        self.levels = nn.ModuleList()
        channels = in_channels
        for block in arch.blocks:
            if block.block_type not in BLOCKS:
                raise ValueError(
                    f"unknown block_type {block.block_type!r}; use one of {', '.join(BLOCKS)}"
                )
            filters = scaled(block.num_filters, filter_size_scale)
            layers = []
            for _ in range(block.num_repeats):
                layers.append(
                    BLOCKS[block.block_type](
                        channels,
                        filters,
                        block.kernel_size,
                        bool(block.id_skip),
                        float(block.se_ratio),
                        activation,
                    )
                )
                channels = BLOCK_WIDTHS[block.block_type](filters)
            self.levels.append(nn.Sequential(*layers))
            self.widths.append(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The features of levels 1..4 (strides 1, 2, 4, 8)."""
        features = []
        for index, level in enumerate(self.levels):
            if index > 0:
                x = F.max_pool3d(x, kernel_size=2)
            x = level(x)
            features.append(x)
        return features


class _UpCat3d(nn.Module):
    """BasicUNet's ``UpCat``: transposed conv x2, concatenation after the skip, two 3x3 convs."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, halves: bool):
        super().__init__()
        up_channels = max(1, in_channels // 2) if halves else in_channels
        self.up = nn.ConvTranspose3d(in_channels, up_channels, kernel_size=2, stride=2)
        self.convs = nn.Sequential(
            ConvNormAct(skip_channels + up_channels, out_channels, 3, BASIC_UNET_ACTIVATION),
            ConvNormAct(out_channels, out_channels, 3, BASIC_UNET_ACTIVATION),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """``x`` upsampled to ``skip``'s level, merged with it."""
        return self.convs(torch.cat([skip, self.up(x)], dim=1))


class UNet3d(nn.Module):
    """A UNet: ``UNetEncoder3d`` and MONAI BasicUNet's decoder, to per-voxel logits.

    Args:
        arch: A materialized ``UNetEncoderArchitecture``.
        in_channels: Channels of the input volume.
        num_classes: Output channels (logits).
        filter_size_scale: Multiplies every level's ``num_filters``.
        encoder_activation: Overrides ``arch.activation`` in the encoder.
    """

    def __init__(
        self,
        arch: UNetEncoderArchitecture,
        in_channels: int,
        num_classes: int,
        filter_size_scale: float,
        encoder_activation: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = UNetEncoder3d(arch, in_channels, filter_size_scale, encoder_activation)
        widths = self.encoder.widths
        # ups[i] merges level i + 2 into level i + 1 (BasicUNet's up_ops, deepest last).
        self.ups = nn.ModuleList(
            _UpCat3d(widths[i + 1], widths[i], widths[i], halves=i > 0)
            for i in range(len(widths) - 1)
        )
        self.head = nn.Conv3d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, S, S, S)`` of a volume ``(N, in_channels, S, S, S)``."""
        features = self.encoder(x)
        y = features[-1]
        for index in reversed(range(len(self.ups))):
            y = self.ups[index](y, features[index])
        return self.head(y)


def _resample(x: torch.Tensor, level: int, target: int) -> torch.Tensor:
    """``x`` of ``level`` at ``target``'s resolution: max pool down, nearest upsampling up."""
    if level < target:
        stride = 2 ** (target - level)
        return F.max_pool3d(x, kernel_size=stride, stride=stride)
    if level > target:
        return F.interpolate(x, scale_factor=2 ** (level - target), mode="nearest")
    return x


def _global_attention(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """NAS-FPN's global attention: ``high + low * sigmoid(spatial max of high)``."""
    return high + low * torch.sigmoid(torch.amax(high, dim=(2, 3, 4), keepdim=True))


class NasFpnCell3d(nn.Module):
    """One 3-D NAS-FPN cell over ``levels``; see the module docstring.

    Args:
        specs: The cell's node tuples (``kfnas.spaces.nasfpn.block_specs``).
        levels: The levels of the cell's inputs and outputs, lowest first.
        num_filters: Channels of every input, node and output.
    """

    def __init__(self, specs: Sequence[BlockTuple], levels: Sequence[int], num_filters: int):
        super().__init__()
        self.specs = [tuple(s) for s in specs]
        self.levels = list(levels)
        self.convs = nn.ModuleList(
            ConvNormAct(num_filters, num_filters, 3, None) for _ in self.specs
        )
        # The earlier features each output node adds (those of its level that no node used yet):
        # fixed by the specs, as tf-models counts uses while it builds the nodes in order.
        feat_levels = list(self.levels)
        uses = [0] * len(feat_levels)
        self.extra_inputs: list[list[int]] = []
        for level, _, inputs, is_output in self.specs:
            for index in inputs:
                if not 0 <= index < len(feat_levels):
                    raise ValueError(f"node input {index} is not among {len(feat_levels)} features")
                uses[index] += 1
            extra = []
            if is_output:
                for j, (feat_level, used) in enumerate(zip(feat_levels, uses, strict=True)):
                    if used == 0 and feat_level == level:
                        uses[j] += 1
                        extra.append(j)
            self.extra_inputs.append(extra)
            feat_levels.append(level)
            uses.append(0)
        self.feat_levels = feat_levels
        outputs = feat_levels[-len(self.levels) :]
        if sorted(outputs) != self.levels:
            raise ValueError(f"the cell's outputs have levels {outputs}, not {self.levels}")

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The cell's outputs, one per level of ``levels`` (lowest first)."""
        feats = list(features)
        for (level, combine_fn, (i0, i1), _), conv, extra in zip(
            self.specs, self.convs, self.extra_inputs, strict=True
        ):
            level0, level1 = self.feat_levels[i0], self.feat_levels[i1]
            x0 = _resample(feats[i0], level0, level)
            x1 = _resample(feats[i1], level1, level)
            if combine_fn == "sum":
                node = x0 + x1
            elif combine_fn == "attention":
                node = _global_attention(x0, x1) if level0 >= level1 else _global_attention(x1, x0)
            else:
                raise ValueError(f"unknown combine_fn {combine_fn!r}; use 'sum' or 'attention'")
            for j in extra:
                node = node + feats[j]
            feats.append(conv(F.relu(node)))
        count = len(self.levels)
        by_level = dict(zip(self.feat_levels[-count:], feats[-count:], strict=True))
        return [by_level[level] for level in self.levels]


class _FuseOutputs3d(nn.Module):
    """Vertex's ``FuseOutputFeatures``: all levels' encoder and NAS-FPN features into level 1."""

    def __init__(self, encoder_widths: Sequence[int], num_filters: int) -> None:
        super().__init__()
        deepest = len(encoder_widths) - 1
        self.ups = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose3d(num_filters, num_filters, kernel_size=2, stride=2),
                nn.InstanceNorm3d(num_filters, affine=True),
                _activation(BASIC_UNET_ACTIVATION),
            )
            for _ in range(deepest)
        )
        self.merges = nn.ModuleList(
            ConvNormAct(
                width + num_filters * (1 if index == deepest else 2),
                num_filters,
                3,
                BASIC_UNET_ACTIVATION,
            )
            for index, width in enumerate(encoder_widths)
        )
        self.post = ConvNormAct(num_filters, num_filters, 3, BASIC_UNET_ACTIVATION)

    def forward(self, fpn: list[torch.Tensor], encoder: list[torch.Tensor]) -> torch.Tensor:
        """The fused level-1 features."""
        deepest = len(encoder) - 1
        fused = self.merges[deepest](torch.cat([encoder[deepest], fpn[deepest]], dim=1))
        for index in reversed(range(deepest)):
            up = self.ups[index](fused)
            fused = self.merges[index](torch.cat([encoder[index], fpn[index], up], dim=1))
        return self.post(fused)


class NasFpnUNet3d(nn.Module):
    """The plain UNet encoder, a 3-D NAS-FPN decoder and Vertex's fusion head.

    Args:
        arch: A materialized ``NasFpnArchitecture`` over levels 1..4.
        in_channels: Channels of the input volume.
        num_classes: Output channels (logits).
        filter_size_scale: Multiplies the encoder's widths.
        num_filters: Channels of the decoder (``decoder_num_filters``).
        num_repeats: Stacked cells (``decoder_num_repeats``).
    """

    def __init__(
        self,
        arch: NasFpnArchitecture,
        in_channels: int,
        num_classes: int,
        filter_size_scale: float,
        num_filters: int,
        num_repeats: int,
    ) -> None:
        super().__init__()
        specs = block_specs(arch)
        levels = list(LEVELS)
        if any(s[0] not in levels for s in specs) or sorted(arch.output_block_levels) != levels:
            raise ValueError(
                f"the NAS-FPN cell is not one over levels {levels} (a unet_nasfpn architecture): "
                f"its node levels are {[s[0] for s in specs]}"
            )
        self.encoder = UNetEncoder3d(
            plain_unet(), in_channels, filter_size_scale, BASIC_UNET_ACTIVATION
        )
        self.laterals = nn.ModuleList(
            ConvNormAct(width, num_filters, 1, None) if width != num_filters else nn.Identity()
            for width in self.encoder.widths
        )
        self.cells = nn.ModuleList(
            NasFpnCell3d(specs, levels, num_filters) for _ in range(num_repeats)
        )
        self.fuse = _FuseOutputs3d(self.encoder.widths, num_filters)
        self.head = nn.Conv3d(num_filters, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes, S, S, S)`` of a volume ``(N, in_channels, S, S, S)``."""
        encoder = self.encoder(x)
        feats = [lateral(f) for lateral, f in zip(self.laterals, encoder, strict=True)]
        for cell in self.cells:
            feats = cell(feats)
        return self.head(self.fuse(feats, encoder))


def _encoder_unet(arch: UNetEncoderArchitecture, task: Any) -> nn.Module:
    """``unet_encoder``: the searched encoder and BasicUNet's decoder."""
    opts = resolved_options(UNET_ENCODER, task)
    return UNet3d(
        arch, int(opts["in_channels"]), task.num_classes, float(opts["filter_size_scale"])
    )


def _nasfpn_unet(arch: NasFpnArchitecture, task: Any) -> nn.Module:
    """``unet_nasfpn``: the plain encoder and the searched NAS-FPN decoder."""
    opts = resolved_options(UNET_NASFPN, task)
    return NasFpnUNet3d(
        arch,
        int(opts["in_channels"]),
        task.num_classes,
        float(opts["filter_size_scale"]),
        int(opts["decoder_num_filters"]),
        int(opts["decoder_num_repeats"]),
    )


def _baseline_unet(arch: UNetBaselineArchitecture, task: Any) -> nn.Module:
    """``unet_baseline``: BasicUNet (the plain encoder with LeakyReLU and its decoder)."""
    opts = resolved_options(UNET_BASELINE, task)
    return UNet3d(
        plain_unet(),
        int(opts["in_channels"]),
        task.num_classes,
        float(opts["filter_size_scale"]),
        encoder_activation=BASIC_UNET_ACTIVATION,
    )


#: Builders by architecture class (the materialized value of each space's ``hyper()``).
_BUILDERS: dict[type, Callable[[Any, Any], nn.Module]] = {
    UNetEncoderArchitecture: _encoder_unet,
    NasFpnArchitecture: _nasfpn_unet,
    UNetBaselineArchitecture: _baseline_unet,
}


def build_unet(arch: Any, task: Any) -> nn.Module:
    """The torch module of a materialized ``unet_encoder``/``unet_nasfpn``/``unet_baseline`` point.

    Args:
        arch: A ``UNetEncoderArchitecture``, ``NasFpnArchitecture`` (levels 1..4) or
            ``UNetBaselineArchitecture`` without choices left.
        task: The ``kfnas.config.spec.TaskSpec``: ``num_classes`` and the ``task.options`` knobs
            of ``kfnas.spaces.unet`` (``image_size`` is not read: any side divisible by 8 runs).

    Returns:
        A module mapping ``(N, in_channels, S, S, S)`` float32 to ``(N, num_classes, S, S, S)``.

    Raises:
        ValueError: ``arch`` is of another class or still holds choices, a knob has a bad value,
            or the NAS-FPN cell is not over levels 1..4.
    """
    builder = _BUILDERS.get(type(arch))
    if builder is None:
        names = ", ".join(cls.__name__ for cls in _BUILDERS)
        raise ValueError(f"build_unet builds a {names}, not a {type(arch).__name__}")
    if not arch.is_deterministic:
        raise ValueError("build_unet needs a materialized architecture (pg.materialize it first)")
    return builder(arch, task)


__all__ = [
    "ACTIVATIONS",
    "BASIC_UNET_ACTIVATION",
    "BLOCKS",
    "BLOCK_WIDTHS",
    "BasicBlock3d",
    "BottleneckBlock3d",
    "ConvNormAct",
    "NasFpnCell3d",
    "NasFpnUNet3d",
    "SqueezeExcite3d",
    "UNet3d",
    "UNetEncoder3d",
    "build_unet",
    "scaled",
]
