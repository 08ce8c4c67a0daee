"""The ``mnasnet`` and ``mnasnet_a1`` architectures as PyTorch classifiers: ``build_mnasnet``.

``build_mnasnet(arch, task)`` builds, with ``torch.nn`` only, the network that the TensorFlow
``classification`` task builds for the same architecture and ``TaskSpec``: ``MobileStageBackbone``
(``kfnas.spaces._mobile_backbone``) inside official.vision's ``ClassificationModel``
(``kfnas.tasks.classification``). Layer for layer:

* stem: 3x3 conv, stride 2, ``STEM_FILTERS`` (32) filters, batch norm, activation;
* stage ``i`` of ``kfnas.spaces.mnasnet.stages(arch)``: ``num_repeats`` blocks of its
  ``block_fn``, the first with the stage's stride and the previous width, the others stride 1:

  - ``conv``: kxk conv, batch norm, activation (``expand_ratio`` and ``se_ratio`` ignored, no
    residual), as ``mobilenet.Conv2DBNBlock``;
  - ``mbconv``: as ``nn_blocks.InvertedBottleneckBlock``: 1x1 expansion to ``make_divisible(in *
    expand_ratio, 1)`` channels with batch norm and activation (skipped when the ratio is 1),
    depthwise kxk with the block's stride, batch norm and activation, squeeze-and-excitation when
    ``se_ratio > 0`` (global mean, 1x1 conv with bias to ``make_divisible(max(1, int(in *
    se_ratio)), 1)`` channels, the activation, 1x1 conv with bias back to the expanded width,
    sigmoid gate; ``in`` is the block's *input* width, as official.vision computes it), linear
    1x1 projection with batch norm, and a residual add (after stochastic depth) when the stride
    is 1 and the width is unchanged;

* head: a 1x1 conv, batch norm and activation of ``endpoints_num_filters`` (1280) channels on the
  last stage (the backbone's top endpoint, which the TF model pools), an optional batch norm
  (``add_head_batch_norm``), global average pooling, dropout, and a linear layer of logits.

Knobs read from ``task.options``, with the TF build's defaults: the backbone's ``activation``
(relu; relu6, swish, hard_swish), ``endpoints_num_filters`` (1280, the TF classification
default: this builder always builds a classifier, whatever ``task.kind`` says),
``init_stochastic_depth_rate`` (0: block ``b`` of ``n`` drops its residual branch with rate
``init * b / n``), ``norm_momentum`` (0.99) and ``norm_epsilon`` (1e-3) of every batch norm
(torch ``momentum = 1 - tf momentum``), and the head's ``dropout_rate`` (0.2) and
``add_head_batch_norm`` (false). The defaults come from the same tables the TF build reads
(``kfnas.spaces._mobile_space`` and ``kfnas.tasks.classification.OPTIONS``). Weights start as the
TF layers' initializers draw them (conv kernels: truncated normal variance scaling on Keras's
``fan_in``; the dense layer: uniform in [-0.05, 0.05]; biases zero). Weight decay is the trainer's
business, not the module's.

Padding: every conv pads like TF's ``'same'``: ``Conv2dSame`` pads symmetrically (``k // 2``) at
stride 1 and, at stride 2, computes TF's split from the input size (on an even side the extra
pixel goes after: 0 before and 1 after for k=3, 1 and 2 for k=5). So output shapes *and* values
match the TF build for every input size, odd intermediate sides included, not just shapes for
even ``S``.

To extend: write a function with the signature of ``BlockBuilder`` and add it to ``BLOCKS`` under
the ``block_fn`` name the space offers; ``build_mnasnet`` dispatches on that dict. A new
activation: one entry in ``ACTIVATIONS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from kfnas.spaces._mobile_space import (
    BACKBONE_DEFAULTS,
    ENDPOINTS_NUM_FILTERS_BY_TASK,
    STEM_FILTERS,
)
from kfnas.spaces.mnasnet import DEFAULT_ACTIVATION, stages
from kfnas.tasks.classification import OPTIONS as CLASSIFICATION_OPTIONS

if TYPE_CHECKING:
    from kfnas.config.spec import TaskSpec
    from kfnas.spaces.mnasnet import MnasNetArchitecture

#: Activation names of ``task.options.activation`` -> the torch module of the same function
#: (TF's ``swish`` is SiLU; official.vision's ``hard_swish`` is ``x * relu6(x + 3) / 6``).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "swish": nn.SiLU,
    "hard_swish": nn.Hardswish,
}
#: The head knobs of the TF classification model, with its defaults.
HEAD_KNOBS = ("dropout_rate", "add_head_batch_norm")
#: Keras's truncated normal is cut at 2 standard deviations; this corrects its variance.
_TRUNCATED_STDDEV = 0.87962566103423978
#: Keras's ``RandomUniform`` default bound (official.vision's dense logits initializer).
_DENSE_INIT_BOUND = 0.05


def make_divisible(
    value: float, divisor: int, min_value: float | None = None, round_down_protect: bool = True
) -> int:
    """``official.vision.modeling.layers.nn_layers.make_divisible``, the same rounding.

    Args:
        value: The width to round.
        divisor: The width becomes a multiple of this.
        min_value: The smallest width; default ``divisor``.
        round_down_protect: Add one ``divisor`` when rounding lost more than 10 %.

    Returns:
        The rounded width.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if round_down_protect and new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TF's ``'same'`` padding of one spatial side: (before, after).

    Args:
        size: Input side.
        kernel_size: Kernel side (dilation 1).
        stride: Stride.

    Returns:
        The pixels TF pads before and after (the odd one goes after).
    """
    remainder = size % stride
    total = max(kernel_size - (stride if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` (no bias unless asked) padding exactly as TF's ``padding='same'``.

    At stride 1 with an odd kernel TF pads ``k // 2`` on each side, which ``nn.Conv2d`` does
    itself. Otherwise (stride 2) TF pads asymmetrically, depending on the input size; ``forward``
    pads so, hence the same output shape and values as TF for every input size.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        """Builds the conv.

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            kernel_size: Square kernel side.
            stride: Stride of both spatial axes.
            groups: ``in_channels`` for a depthwise conv.
            bias: Whether the conv has a bias.
        """
        self.static_padding = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2 if self.static_padding else 0,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The conv of ``x`` (N, C, H, W) with TF's ``'same'`` padding."""
        if not self.static_padding:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            x = nn.functional.pad(x, (left, right, top, bottom))
        return super().forward(x)


@dataclass(frozen=True)
class NormConfig:
    """Batch normalization and activation of every layer, from ``task.options``.

    Attributes:
        momentum: TF's momentum (0.99); torch's is ``1 - momentum``.
        epsilon: Added to the variance.
        activation: A key of ``ACTIVATIONS``.
    """

    momentum: float
    epsilon: float
    activation: str

    def norm(self, channels: int) -> nn.BatchNorm2d:
        """A batch norm behaving as ``tf_keras.layers.BatchNormalization(momentum, epsilon)``."""
        return nn.BatchNorm2d(channels, eps=self.epsilon, momentum=1.0 - self.momentum)

    def act(self) -> nn.Module:
        """A new activation module."""
        return ACTIVATIONS[self.activation]()


class ConvBN(nn.Sequential):
    """Conv (TF ``'same'`` padding, no bias), batch norm, activation (``mobilenet.Conv2DBNBlock``).

    With ``activation=False`` the activation is left out (the linear projection of an MBConv).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: NormConfig,
        stride: int = 1,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        """Builds the layers.

        Args:
            in_channels: Input channels.
            out_channels: Output channels.
            kernel_size: Square kernel side.
            norm: Batch norm settings and activation.
            stride: Stride.
            groups: ``in_channels`` for a depthwise conv.
            activation: Whether to end with the activation.
        """
        layers: list[nn.Module] = [
            Conv2dSame(in_channels, out_channels, kernel_size, stride=stride, groups=groups),
            norm.norm(out_channels),
        ]
        if activation:
            layers.append(norm.act())
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """``nn_layers.SqueezeExcitation`` as ``InvertedBottleneckBlock`` uses it (``divisible_by=1``).

    The reduced width is ``make_divisible(max(1, int(in_filters * se_ratio)), 1)`` of the block's
    *input* width; the gate has ``out_filters`` (the expanded width) channels.
    """

    def __init__(self, in_filters: int, out_filters: int, se_ratio: float, norm: NormConfig):
        """Builds the two 1x1 convs (with bias).

        Args:
            in_filters: The block's input width (sets the reduced width).
            out_filters: Channels of the gated tensor.
            se_ratio: Reduction ratio in (0, 1].
            norm: Its activation is the inner activation.
        """
        super().__init__()
        reduced = make_divisible(max(1, int(in_filters * se_ratio)), 1, round_down_protect=True)
        self.reduce = nn.Conv2d(out_filters, reduced, 1, bias=True)
        self.act = norm.act()
        self.expand = nn.Conv2d(reduced, out_filters, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` times its sigmoid gate."""
        scale = x.mean(dim=(2, 3), keepdim=True)
        scale = torch.sigmoid(self.expand(self.act(self.reduce(scale))))
        return x * scale


class StochasticDepth(nn.Module):
    """official.vision's ``StochasticDepth``: drops whole samples of a residual branch in training.

    A kept sample is scaled by ``1 / (1 - rate)``; in evaluation the input passes unchanged.
    """

    def __init__(self, rate: float) -> None:
        """Args: rate: Drop probability in [0, 1)."""
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with each sample kept with probability ``1 - rate`` (training only)."""
        if not self.training or not self.rate:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        mask = torch.floor(keep + torch.rand(shape, dtype=x.dtype, device=x.device))
        return x / keep * mask

    def extra_repr(self) -> str:
        """The rate, for ``print(model)``."""
        return f"rate={self.rate}"


class InvertedBottleneck(nn.Module):
    """``nn_blocks.InvertedBottleneckBlock`` with ``use_depthwise=True`` (the ``mbconv`` block)."""

    def __init__(
        self,
        in_filters: int,
        out_filters: int,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
        se_ratio: float,
        drop_rate: float,
        norm: NormConfig,
    ) -> None:
        """Builds the block (see the module docstring for its layers).

        Args:
            in_filters: Input width.
            out_filters: Output width.
            expand_ratio: Expansion of the 1x1 conv; 1 skips it.
            kernel_size: Depthwise kernel side.
            stride: Depthwise stride.
            se_ratio: Squeeze-and-excitation ratio; 0 leaves it out.
            drop_rate: Stochastic depth rate of the residual branch (with a residual only).
            norm: Batch norm settings and activation.
        """
        super().__init__()
        expanded = make_divisible(in_filters * expand_ratio, 1)
        self.expand = ConvBN(in_filters, expanded, 1, norm) if expand_ratio > 1 else nn.Identity()
        self.depthwise = ConvBN(expanded, expanded, kernel_size, norm, stride, groups=expanded)
        self.se = (
            SqueezeExcitation(in_filters, expanded, se_ratio, norm)
            if 0 < se_ratio <= 1
            else nn.Identity()
        )
        self.project = ConvBN(expanded, out_filters, 1, norm, activation=False)
        self.residual = stride == 1 and in_filters == out_filters
        self.drop = StochasticDepth(drop_rate) if self.residual and drop_rate else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block output, plus ``x`` when the block is residual."""
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return x + self.drop(out) if self.residual else out


class BlockBuilder(Protocol):
    """Builds one block of a stage (an entry of ``BLOCKS``)."""

    def __call__(
        self,
        stage: Mapping[str, Any],
        *,
        in_filters: int,
        stride: int,
        drop_rate: float,
        norm: NormConfig,
    ) -> nn.Module:
        """One block of ``stage`` (a dict of ``kfnas.spaces.mnasnet.stages``).

        Args:
            stage: The stage's ``block_fn``, ``expand_ratio``, ``kernel_size``, ``se_ratio``,
                ``filters``.
            in_filters: Input width of this block.
            stride: This block's stride (the stage's for its first block, else 1).
            drop_rate: Stochastic depth rate of this block.
            norm: Batch norm settings and activation.
        """
        ...


def conv_block(
    stage: Mapping[str, Any], *, in_filters: int, stride: int, drop_rate: float, norm: NormConfig
) -> nn.Module:
    """``conv``: kxk conv, batch norm, activation; no residual, ``drop_rate`` unused."""
    return ConvBN(in_filters, int(stage["filters"]), int(stage["kernel_size"]), norm, stride)


def mbconv_block(
    stage: Mapping[str, Any], *, in_filters: int, stride: int, drop_rate: float, norm: NormConfig
) -> nn.Module:
    """``mbconv``: the inverted bottleneck of ``InvertedBottleneck``."""
    return InvertedBottleneck(
        in_filters=in_filters,
        out_filters=int(stage["filters"]),
        expand_ratio=int(stage["expand_ratio"]),
        kernel_size=int(stage["kernel_size"]),
        stride=stride,
        se_ratio=float(stage["se_ratio"]),
        drop_rate=drop_rate,
        norm=norm,
    )


#: ``block_fn`` -> its builder (the blocks the ``mnasnet`` spaces offer).
BLOCKS: dict[str, BlockBuilder] = {"conv": conv_block, "mbconv": mbconv_block}


class MnasNetClassifier(nn.Module):
    """Stem, stage blocks, head conv and classifier (see the module docstring).

    Attributes:
        stem: The stride-2 3x3 ``ConvBN``.
        blocks: Every block of every stage, in order.
        head: The 1x1 head ``ConvBN`` (``nn.Identity`` when ``endpoints_num_filters`` is 0) and
            the optional head batch norm.
        dropout: Dropout before the logits.
        classifier: The linear layer of logits.
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: list[nn.Module],
        head: nn.Module,
        features: int,
        num_classes: int,
        dropout_rate: float,
    ) -> None:
        """Assembles the network.

        Args:
            stem: The stem.
            blocks: The blocks in order.
            head: Applied to the last block's output before pooling.
            features: Channels after ``head`` (the classifier's input width).
            num_classes: Logits per image.
            dropout_rate: Dropout before the logits.
        """
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head
        self.dropout = nn.Dropout(dropout_rate)
        self.classifier = nn.Linear(features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features (N, features) of images ``x`` (N, 3, S, S)."""
        x = self.head(self.blocks(self.stem(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) of images ``x`` (N, 3, S, S) float32."""
        return self.classifier(self.dropout(self.forward_features(x)))


def model_options(task: TaskSpec) -> dict[str, Any]:
    """The knobs the TF classification build reads, ``task.options`` over its defaults.

    Backbone knobs default as in ``kfnas.spaces._mobile_space.backbone_options`` for a
    classification task (``endpoints_num_filters`` 1280, activation ``relu``); head knobs as in
    ``kfnas.tasks.classification.OPTIONS``.
    """
    options: dict[str, Any] = {
        **BACKBONE_DEFAULTS,
        "activation": DEFAULT_ACTIVATION,
        "endpoints_num_filters": ENDPOINTS_NUM_FILTERS_BY_TASK["classification"],
        **{key: CLASSIFICATION_OPTIONS[key].default for key in HEAD_KNOBS},
    }
    options.update((k, v) for k, v in task.options.items() if k in options)
    return options


def init_like_tf(model: nn.Module) -> None:
    """Initializes ``model``'s weights as the TF build's layers draw them.

    Convs: Keras ``VarianceScaling`` (scale 1, ``fan_in``, truncated normal), with Keras's
    ``fan_in = k * k * in_channels`` (for a depthwise kernel too); biases zero. Linear: Keras
    ``RandomUniform`` in [-0.05, 0.05], bias zero. Batch norms: gamma 1, beta 0 (torch's default).
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels * math.prod(module.kernel_size)
            std = math.sqrt(1.0 / fan_in) / _TRUNCATED_STDDEV
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.uniform_(module.weight, -_DENSE_INIT_BOUND, _DENSE_INIT_BOUND)
            nn.init.zeros_(module.bias)


def build_mnasnet(arch: MnasNetArchitecture, task: TaskSpec) -> nn.Module:
    """The torch classifier of a materialized ``mnasnet``/``mnasnet_a1`` architecture.

    Args:
        arch: A materialized ``MnasNetArchitecture`` (``pg.materialize(space.hyper(), dna)``,
            ``space.reference()`` or ``kfnas.spaces.base.load_architecture``).
        task: The experiment's ``TaskSpec``: ``num_classes`` and the ``task.options`` knobs of
            the module docstring (``image_size`` does not change the module).

    Returns:
        A ``MnasNetClassifier``: input (N, 3, S, S) float32 NCHW, output logits
        (N, ``task.num_classes``).

    Raises:
        ValueError: ``arch`` still holds choices or does not have 7 stages, a stage's
            ``block_fn`` has no entry in ``BLOCKS``, or ``task.options.activation`` none in
            ``ACTIVATIONS``.
    """
    table = stages(arch)
    options = model_options(task)
    activation = str(options["activation"])
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"task.options.activation {activation!r} is not one of {sorted(ACTIVATIONS)}"
        )
    unknown = sorted({str(s["block_fn"]) for s in table} - set(BLOCKS))
    if unknown:
        raise ValueError(f"block_fn {unknown} have no torch builder; known: {sorted(BLOCKS)}")
    norm = NormConfig(
        momentum=float(options["norm_momentum"]),
        epsilon=float(options["norm_epsilon"]),
        activation=activation,
    )
    stem = ConvBN(3, STEM_FILTERS, 3, norm, stride=2)
    init_rate = float(options["init_stochastic_depth_rate"])
    num_blocks = sum(int(s["num_repeats"]) for s in table)
    blocks: list[nn.Module] = []
    in_filters, index = STEM_FILTERS, 0
    for stage in table:
        for j in range(int(stage["num_repeats"])):
            index += 1
            blocks.append(
                BLOCKS[str(stage["block_fn"])](
                    stage,
                    in_filters=in_filters,
                    stride=int(stage["strides"]) if j == 0 else 1,
                    # official.vision's get_stochastic_depth_rate: init * i / n.
                    drop_rate=init_rate * index / num_blocks,
                    norm=norm,
                )
            )
            in_filters = int(stage["filters"])
    head: list[nn.Module] = []
    features = in_filters
    head_filters = int(options["endpoints_num_filters"])
    if head_filters > 0:
        head.append(ConvBN(in_filters, head_filters, 1, norm))
        features = head_filters
    if options["add_head_batch_norm"]:
        head.append(norm.norm(features))
    model = MnasNetClassifier(
        stem=stem,
        blocks=blocks,
        head=nn.Sequential(*head),
        features=features,
        num_classes=int(task.num_classes),
        dropout_rate=float(options["dropout_rate"]),
    )
    init_like_tf(model)
    return model


__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "BlockBuilder",
    "Conv2dSame",
    "ConvBN",
    "InvertedBottleneck",
    "MnasNetClassifier",
    "NormConfig",
    "SqueezeExcitation",
    "StochasticDepth",
    "build_mnasnet",
    "conv_block",
    "init_like_tf",
    "make_divisible",
    "mbconv_block",
    "model_options",
    "same_padding",
]
