"""The ``pointpillars`` search space: the featurizer, BEV backbone and decoder of PointPillars.

A PointPillars detector (``lidar_detection``, ``kfnas.tasks.pillars``) groups a point cloud into
pillars (vertical columns of the x-y grid), turns the points of each pillar into one feature vector
(the *featurizer*: PointNet-style shared per-point layers, then the max over the pillar's points),
scatters those vectors into a bird's-eye-view (BEV) pseudo-image and runs a 2-D *backbone* (levels
1..3, stride ``2**level`` of the pillar grid) and *decoder* (one width at every level) on it. As in
Vertex AI NAS (``vertex_nas_reference.md`` section 1.9, ``pointpillars_search_space(max_level=3,
base_output_filters=64)``), this space searches all three, block by block. A block is a
``PointPillarsBlock`` (Vertex's ``TunableBlockSpec``: ``block_fn``, ``block_repeats``,
``kernel_size``, ``expand_ratio``, ``se_ratio``, ``activation_fn``, ``output_filters``,
``level``); the decision ids are Vertex's (``featurizer[0].block_repeats``,
``backbone[3].se_ratio``, ``decoder[2].block_fn``, ...):

==========  ======  ==============================  =======  ======  ======  ======  ============
part        blocks  block_fn                        repeats  kernel  expand  se      filters
==========  ======  ==============================  =======  ======  ======  ======  ============
featurizer  1       ``conv`` (fixed, kernel 1)      1, 2, 3  --      --      --      48, 64, 80
backbone 1  1       residual, bottleneck, mbconv    1, 2, 3  3, 5    1, 3, 6 0, 0.25 48, 64, 80
backbone 2  2       same                            same     same    same    same    96, 128, 160
backbone 3  2       same                            same     same    same    same    192, 256, 320
decoder     1/level conv, residual, bottleneck,     1, 2, 3  3, 5    1, 3, 6 0, 0.25 128 (fixed)
                    mbconv
==========  ======  ==============================  =======  ======  ======  ======  ============

and every block searches ``activation_fn`` in ``['swish', 'relu']``. Filter candidates are
``[0.75 f, f, 1.25 f]`` with ``f = base_output_filters * 2**(level - 1)`` (the featurizer uses
level 1's). Size ``18 * 648**5 * 288**3 = 49,127,537,715,718,523,977,728`` with 56 decision points
(3 featurizer, 35 backbone, 18 decoder). ``reference()`` is the architecture Vertex NAS discovered
(``PUBLISHED_BLOCKS``, the default of its tunable PointPillars model), which lies inside the space.

The network (``PointPillarsSpace.build_network``; every part a lazily built subclassed
``tf_keras`` layer, since the BEV grid is the task's, not the space's):

* featurizer (``Network.featurizer``): ``block_repeats`` times a 1x1 ``conv`` block over the pillar
  points ``[batch, pillars, points, features]``, then the max over each pillar's real points
  (padded points are zeroed first and never reach the max; a pillar without a real point gives
  zeros). Output ``[batch, pillars, output_filters]``.
* backbone: the blocks of each level in order on the BEV image; the first block of each level has
  stride 2, so level ``l`` is at stride ``2**l`` of the grid. Outputs ``{"1": ..., "2": ...,
  "3": ...}``, the last block of each level.
* decoder: per level, the level's block with stride 1 from the backbone's width to the decoder's
  ("pre-hoc"); then top-down from level 2 to 1, ``level l += nearest_upsample(level l + 1)``; then
  the same block spec again with its own weights ("post-hoc"). Every output has the decoder width.

Each block is repeated ``block_repeats`` times (the later repeats stride 1, input width = output
width). Block functions (``_block``), built from official.vision's ``nn_blocks``:

* ``conv``: Conv2D (``kernel_size``, no bias) + batch norm + activation; ``expand_ratio`` and
  ``se_ratio`` do not apply.
* ``residual``: ``ResidualBlock`` (two 3x3 convs, 1x1 projection shortcut when the width or stride
  changes); ``bottleneck``: ``BottleneckBlock`` with ``output_filters / 4`` inner filters (its
  output is 4 times that, so output widths must be divisible by 4). Both have fixed 3x3 kernels, so
  ``kernel_size`` and ``expand_ratio`` do not apply to them; ``se_ratio`` does.
* ``mbconv``: ``InvertedBottleneckBlock`` (1x1 expansion by ``expand_ratio``, depthwise
  ``kernel_size`` conv, squeeze-excite, 1x1 projection, residual when the shape is kept).

``task.options`` knobs read here (missing ones take the defaults shown; the lidar task declares
the last three):

==========================  ========  ==========================================================
option                      default   meaning
==========================  ========  ==========================================================
filter_size_scale           1.0       multiplies every searched width of featurizer and backbone
                                      (rounded to a multiple of 8, at least 8); a proxy knob
decoder_num_filters         128       the decoder width (the architecture's fixed 128 unless
                                      set); at least 8 and divisible by 4 (bottleneck blocks)
norm_momentum, norm_epsilon .99, 1e-3 batch normalization of all three parts
l2_weight_decay             4e-5      L2 weight decay of every conv kernel (depthwise excepted)
==========================  ========  ==========================================================

``filter_size_scale`` and ``decoder_num_filters`` are declared with the same checks as in
``nasfpn`` (they mean the same there: a width multiplier, the decoder's width).

Fidelity: the reference architecture's network with the default knobs and the lidar task's 10
point features per point has **5,212,592** parameters (``REFERENCE_NUM_PARAMS``: featurizer
896, backbone 389,680, decoder 4,822,016; every weight ``tf_keras``'s ``count_params`` counts,
batch-norm moving statistics included), checked against a count from the layer shapes in
``tests/spaces/test_pointpillars_space.py``.

To extend: a variant of the space (other levels, blocks per level or base width) is one more
``PointPillarsSpace`` instance and one line in ``kfnas.spaces._BUILTINS``; a new block function is
one more candidate name and one branch in ``_block``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyglove as pg

from kfnas.spaces.base import Network
from kfnas.spaces.options import Option, integer, is_int, is_number, number
from kfnas.spaces.regularizers import l2_regularizer

#: One static block: (block_fn, block_repeats, kernel_size, expand_ratio, se_ratio,
#: activation_fn, output_filters, level), Vertex's ``TunableBlockSpec`` fields in order.
BlockTuple = tuple[str, int, int, int, float, str, int, int]

#: The parts of an architecture, in decision order.
PARTS = ("featurizer", "backbone", "decoder")
BACKBONE_BLOCK_FNS = ("residual", "bottleneck", "mbconv")
DECODER_BLOCK_FNS = ("conv", "residual", "bottleneck", "mbconv")
REPEATS = (1, 2, 3)
KERNEL_SIZES = (3, 5)
EXPAND_RATIOS = (1, 3, 6)
SE_RATIOS = (0.0, 0.25)
ACTIVATIONS = ("swish", "relu")
#: Every block function the network builds (``_block``).
BLOCK_FNS = DECODER_BLOCK_FNS

#: The architecture Vertex NAS discovered (the default of its tunable PointPillars model).
PUBLISHED_BLOCKS: Mapping[str, tuple[BlockTuple, ...]] = {
    "featurizer": (("conv", 1, 1, 1, 0.0, "relu", 64, 0),),
    "backbone": (
        ("mbconv", 2, 5, 1, 0.0, "relu", 80, 1),
        ("bottleneck", 3, 5, 3, 0.0, "relu", 160, 2),
        ("mbconv", 1, 3, 1, 0.0, "relu", 128, 2),
        ("mbconv", 2, 3, 1, 0.0, "swish", 192, 3),
        ("bottleneck", 2, 3, 1, 0.0, "relu", 256, 3),
    ),
    "decoder": (
        ("conv", 3, 5, 1, 0.0, "relu", 128, 1),
        ("residual", 3, 5, 1, 0.0, "swish", 128, 2),
        ("conv", 2, 3, 3, 0.0, "swish", 128, 3),
    ),
}

#: Parameters of the reference network with the default knobs and 10 point features (see the
#: module docstring).
REFERENCE_NUM_PARAMS = 5_212_592

#: The knobs read by ``build_network`` with their defaults (``decoder_num_filters``: the
#: architecture's decoder width).
OPTION_DEFAULTS: dict[str, Any] = {
    "filter_size_scale": 1.0,
    "norm_momentum": 0.99,
    "norm_epsilon": 0.001,
    "l2_weight_decay": 4e-5,
}
#: The knobs no task reads, with their checks; the same definitions as ``nasfpn``'s.
TASK_OPTIONS: dict[str, Option] = {
    "filter_size_scale": number(0, strict=True),
    "decoder_num_filters": integer(1),
}
#: The smallest width a scaled layer or the decoder may have.
MIN_FILTERS = 8


@pg.members(
    [
        ("block_fn", pg.typing.Str(default="conv"), "'conv', 'residual', 'bottleneck', 'mbconv'."),
        ("block_repeats", pg.typing.Int(min_value=1, default=1), "Times the block is repeated."),
        ("kernel_size", pg.typing.Int(min_value=1, default=1), "Conv or depthwise kernel size."),
        ("expand_ratio", pg.typing.Int(min_value=1, default=1), "MBConv expansion ratio."),
        ("se_ratio", pg.typing.Float(min_value=0.0, max_value=1.0, default=0.0), "0: no SE."),
        ("activation_fn", pg.typing.Str(default="swish"), "'swish' or 'relu'."),
        ("output_filters", pg.typing.Int(min_value=1, default=64), "Output width."),
        ("level", pg.typing.Int(min_value=0, default=0), "Level (stride 2**level of the grid)."),
    ]
)
class PointPillarsBlock(pg.Object):
    """One block of the featurizer, backbone or decoder; fields and defaults as in Vertex."""


@pg.members(
    [
        ("featurizer", pg.typing.List(pg.typing.Object(PointPillarsBlock)), "Per-point layers."),
        ("backbone", pg.typing.List(pg.typing.Object(PointPillarsBlock)), "BEV blocks by level."),
        ("decoder", pg.typing.List(pg.typing.Object(PointPillarsBlock)), "One block per level."),
    ]
)
class PointPillarsArchitecture(pg.Object):
    """The blocks of the three parts; inside ``hyper()`` their fields hold PyGlove choices."""


@dataclass(frozen=True)
class PointPillarsSpace:
    """A PointPillars search space (Vertex NAS section 1.9; see the module docstring).

    Attributes:
        name: Registry name.
        tasks: Task kinds the space serves.
        blocks_per_level: Backbone blocks of levels 1, 2, ... (the top level is their count).
        base_output_filters: Middle width candidate of level 1 (doubling per level).
        decoder_filters: The decoder's fixed width in the architecture.
    """

    name: str = "pointpillars"
    tasks: tuple[str, ...] = ("lidar_detection",)
    #: The ``task.options`` knobs this space reads besides the task's.
    task_options: ClassVar[Mapping[str, Option]] = TASK_OPTIONS
    blocks_per_level: tuple[int, ...] = (1, 2, 2)
    base_output_filters: int = 64
    decoder_filters: int = 128

    def __post_init__(self) -> None:
        if not self.blocks_per_level or min(self.blocks_per_level) < 1:
            raise ValueError(f"{self.name}: every level needs at least one backbone block")
        if self.decoder_filters % 4:
            raise ValueError(f"{self.name}: decoder_filters must be divisible by 4")

    @property
    def levels(self) -> list[int]:
        """The backbone and decoder levels ``1..max_level``."""
        return list(range(1, len(self.blocks_per_level) + 1))

    def filter_candidates(self, level: int) -> list[int]:
        """``[0.75 f, f, 1.25 f]`` with ``f = base_output_filters * 2**(level - 1)``."""
        f = self.base_output_filters * 2 ** (level - 1)
        return [int(0.75 * f), f, int(1.25 * f)]

    def hyper(self) -> PointPillarsArchitecture:
        """The hyper ``PointPillarsArchitecture``; decision ids as in Vertex.

        A new value is built on each call; calls give equal values.
        """
        return PointPillarsArchitecture(
            featurizer=[
                PointPillarsBlock(
                    block_fn="conv",
                    block_repeats=pg.one_of(list(REPEATS)),
                    kernel_size=1,
                    expand_ratio=1,
                    se_ratio=0.0,
                    activation_fn=pg.one_of(list(ACTIVATIONS)),
                    output_filters=pg.one_of(self.filter_candidates(1)),
                    level=0,
                )
            ],
            backbone=[
                self._searched_block(BACKBONE_BLOCK_FNS, self.filter_candidates(level), level)
                for level, count in zip(self.levels, self.blocks_per_level, strict=True)
                for _ in range(count)
            ],
            decoder=[
                self._searched_block(DECODER_BLOCK_FNS, self.decoder_filters, level)
                for level in self.levels
            ],
        )

    @staticmethod
    def _searched_block(
        block_fns: Sequence[str], output_filters: Any, level: int
    ) -> PointPillarsBlock:
        """A block whose function, repeats, kernel, expansion, SE and activation are searched."""
        return PointPillarsBlock(
            block_fn=pg.one_of(list(block_fns)),
            block_repeats=pg.one_of(list(REPEATS)),
            kernel_size=pg.one_of(list(KERNEL_SIZES)),
            expand_ratio=pg.one_of(list(EXPAND_RATIOS)),
            se_ratio=pg.one_of(list(SE_RATIOS)),
            activation_fn=pg.one_of(list(ACTIVATIONS)),
            output_filters=(
                pg.one_of(output_filters) if isinstance(output_filters, list) else output_filters
            ),
            level=level,
        )

    def reference(self) -> PointPillarsArchitecture:
        """The architecture Vertex NAS discovered (``PUBLISHED_BLOCKS``), materialized from a DNA.

        Raises:
            ValueError: This instance's levels or candidates exclude it (only for variants).
        """
        return pg.materialize(self.hyper(), self.encode(PUBLISHED_BLOCKS))

    def encode(self, blocks: Mapping[str, Sequence[BlockTuple]]) -> pg.DNA:
        """The DNA (bound to the space's DNA spec) of an architecture given as block tuples.

        Args:
            blocks: ``{part: [BlockTuple, ...]}`` for the parts ``PARTS``, as ``block_specs``
                gives them.

        Raises:
            ValueError: The architecture has another shape than the space's, or a value the
                space lacks.
        """
        value = PointPillarsArchitecture(
            **{part: [PointPillarsBlock(*block) for block in blocks[part]] for part in PARTS}
        )
        hyper = self.hyper()
        try:
            dna = pg.template(hyper).encode(value)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"the architecture is not inside {self.name}: {e}") from e
        return dna.use_spec(pg.dna_spec(hyper))

    def task_problems(self, task: Any) -> list[str]:
        """A fixed ``task.options.backbone`` (this space is the backbone), a bad decoder width.

        The decoder width (``decoder_num_filters``) must be at least 8 and divisible by 4: a
        ``bottleneck`` decoder block has a quarter of it inside and 4 times that at its output.
        """
        out = []
        if task.options.get("backbone") is not None:
            out.append(
                f"task.options.backbone is set but {self.name} searches the backbone itself: "
                f"remove task.options.backbone (it is for spaces that search a decoder, nasfpn)"
            )
        width = task.options.get("decoder_num_filters")
        if is_int(width) and (width < MIN_FILTERS or width % 4):
            fixed = max(MIN_FILTERS, -(-width // 4) * 4)
            out.append(
                f"task.options.decoder_num_filters {width} must be at least {MIN_FILTERS} and "
                f"divisible by 4 (a bottleneck decoder block has a quarter of it inside): "
                f"use e.g. {fixed}"
            )
        return out

    def build_network(self, arch: PointPillarsArchitecture, task: Any, input_specs: Any) -> Network:
        """The featurizer, backbone and decoder of ``arch`` (imports TensorFlow).

        Args:
            arch: A materialized architecture of this space.
            task: The ``kfnas.config.spec.TaskSpec``; its ``options`` hold the knobs of the module
                docstring.
            input_specs: The model input (the point cloud); unused: every part is built on its
                first call, from the shapes it receives.

        Returns:
            ``Network(backbone, decoder, featurizer)``: the BEV backbone (outputs keyed ``"1"``
            .. ``"3"``), the decoder (same keys, the decoder width) and the pillar featurizer.

        Raises:
            ValueError: ``task_problems`` finds a problem, or ``arch`` is not materialized.
        """
        del input_specs  # the parts are built from the shapes of their first call
        problems = self.task_problems(task)
        if problems:
            raise ValueError("; ".join(problems))
        specs = block_specs(arch)
        opts = {**OPTION_DEFAULTS, **task.options}
        scale = float(opts["filter_size_scale"])
        common = {
            "norm_momentum": float(opts["norm_momentum"]),
            "norm_epsilon": float(opts["norm_epsilon"]),
            "kernel_regularizer": l2_regularizer(float(opts["l2_weight_decay"])),
        }
        decoder_width = opts.get("decoder_num_filters")

        def scaled(spec: BlockTuple) -> dict[str, Any]:
            return {**_block_dict(spec), "output_filters": scale_filters(spec[6], scale)}

        def decoder_block(spec: BlockTuple) -> dict[str, Any]:
            width = spec[6] if decoder_width is None else int(decoder_width)
            return {**_block_dict(spec), "output_filters": width}

        layers = _layers()
        featurizer = layers.PillarFeaturizer(
            [scaled(spec) for spec in specs["featurizer"]], name="pillar_featurizer", **common
        )
        backbone = layers.PillarsBackbone(
            [scaled(spec) for spec in specs["backbone"]], name="pillars_backbone", **common
        )
        decoder = layers.PillarsDecoder(
            [decoder_block(spec) for spec in specs["decoder"]], name="pillars_decoder", **common
        )
        return Network(backbone=backbone, decoder=decoder, featurizer=featurizer)


def scale_filters(filters: int, scale: float) -> int:
    """``filters * scale`` rounded to the nearest multiple of 8 (halves up), at least 8."""
    if not is_number(scale) or scale <= 0:
        raise ValueError(f"filter_size_scale must be a number > 0, got {scale!r}")
    return max(MIN_FILTERS, int(filters * scale / 8 + 0.5) * 8)


def block_specs(arch: PointPillarsArchitecture) -> dict[str, list[BlockTuple]]:
    """The static block tuples of a materialized architecture, per part (``PARTS``).

    Raises:
        ValueError: ``arch`` still holds choices, or a block has an unknown function, an output
            width not divisible by 4 for a bottleneck, or the featurizer is not 1x1 ``conv``.
    """
    if not arch.is_deterministic:
        raise ValueError("block_specs needs a materialized architecture (pg.materialize it first)")
    out: dict[str, list[BlockTuple]] = {}
    for part in PARTS:
        out[part] = [
            (
                str(b.block_fn),
                int(b.block_repeats),
                int(b.kernel_size),
                int(b.expand_ratio),
                float(b.se_ratio),
                str(b.activation_fn),
                int(b.output_filters),
                int(b.level),
            )
            for b in getattr(arch, part)
        ]
    for part, blocks in out.items():
        for i, (block_fn, *_, filters, _level) in enumerate(blocks):
            if block_fn not in BLOCK_FNS:
                raise ValueError(f"{part}[{i}]: block_fn {block_fn!r} is not in {BLOCK_FNS}")
            if block_fn == "bottleneck" and filters % 4:
                raise ValueError(f"{part}[{i}]: a bottleneck needs filters divisible by 4")
    if any(b[0] != "conv" or b[2] != 1 for b in out["featurizer"]):
        raise ValueError("the featurizer's blocks must be 1x1 'conv' blocks")
    return out


def _block_dict(spec: BlockTuple) -> dict[str, Any]:
    """A block tuple as the keyword dict the layers take."""
    keys = (
        "block_fn",
        "block_repeats",
        "kernel_size",
        "expand_ratio",
        "se_ratio",
        "activation_fn",
        "output_filters",
        "level",
    )
    return dict(zip(keys, spec, strict=True))


@functools.cache
def _layers() -> Any:
    """The ``tf_keras`` layers of the network, defined on first use (importing TensorFlow)."""
    import tensorflow as tf
    import tf_keras
    from official.modeling import tf_utils
    from official.vision.modeling.layers import nn_blocks

    class ConvBN(tf_keras.layers.Layer):
        """The ``conv`` block: Conv2D (no bias, ``same`` padding) + batch norm + activation."""

        def __init__(
            self,
            filters: int,
            kernel_size: int,
            strides: int,
            activation: str,
            norm_momentum: float,
            norm_epsilon: float,
            kernel_regularizer: Any,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self._conv = tf_keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=strides,
                padding="same",
                use_bias=False,
                kernel_initializer="VarianceScaling",
                kernel_regularizer=kernel_regularizer,
            )
            self._norm = tf_keras.layers.BatchNormalization(
                momentum=norm_momentum, epsilon=norm_epsilon
            )
            self._activation = tf_utils.get_activation(activation, use_keras_layer=True)

        def call(self, inputs: Any, training: Any = None) -> Any:
            return self._activation(self._norm(self._conv(inputs), training=training))

    def _block(
        spec: Mapping[str, Any], in_filters: int, strides: int, common: Mapping[str, Any]
    ) -> Any:
        """One repeat of ``spec``'s block function (see the module docstring)."""
        block_fn, out_filters = spec["block_fn"], int(spec["output_filters"])
        activation, se_ratio = spec["activation_fn"], float(spec["se_ratio"]) or None
        keep = in_filters == out_filters and strides == 1
        if block_fn == "conv":
            return ConvBN(out_filters, int(spec["kernel_size"]), strides, activation, **common)
        if block_fn == "residual":
            return nn_blocks.ResidualBlock(
                filters=out_filters,
                strides=strides,
                use_projection=not keep,
                se_ratio=se_ratio,
                activation=activation,
                **common,
            )
        if block_fn == "bottleneck":
            return nn_blocks.BottleneckBlock(
                filters=out_filters // 4,
                strides=strides,
                use_projection=not keep,
                se_ratio=se_ratio,
                activation=activation,
                **common,
            )
        if block_fn == "mbconv":
            return nn_blocks.InvertedBottleneckBlock(
                in_filters=in_filters,
                out_filters=out_filters,
                expand_ratio=int(spec["expand_ratio"]),
                strides=strides,
                kernel_size=int(spec["kernel_size"]),
                se_ratio=se_ratio,
                activation=activation,
                **common,
            )
        raise ValueError(f"unknown block_fn {block_fn!r}; known: {BLOCK_FNS}")

    def _repeats(
        spec: Mapping[str, Any], in_filters: int, strides: int, common: Mapping[str, Any]
    ) -> list[Any]:
        """``block_repeats`` blocks of ``spec``: the first strided, the others stride 1."""
        out, width = [], in_filters
        for i in range(int(spec["block_repeats"])):
            out.append(_block(spec, width, strides if i == 0 else 1, common))
            width = int(spec["output_filters"])
        return out

    def _run(blocks: Sequence[Any], x: Any, training: Any) -> Any:
        for block in blocks:
            x = block(x, training=training)
        return x

    class _Part:
        """What the three parts share: their block dicts and the knobs of their layers."""

        def _init_part(
            self,
            blocks: Sequence[Mapping[str, Any]],
            norm_momentum: float,
            norm_epsilon: float,
            kernel_regularizer: Any,
        ) -> None:
            self._specs = tuple(dict(b) for b in blocks)
            self._common = {
                "norm_momentum": norm_momentum,
                "norm_epsilon": norm_epsilon,
                "kernel_regularizer": tf_keras.regularizers.get(kernel_regularizer),
            }

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),  # type: ignore[misc]
                "blocks": [dict(s) for s in self._specs],
                "norm_momentum": self._common["norm_momentum"],
                "norm_epsilon": self._common["norm_epsilon"],
                "kernel_regularizer": tf_keras.regularizers.serialize(
                    self._common["kernel_regularizer"]
                )
                if self._common["kernel_regularizer"] is not None
                else None,
            }

    class PillarFeaturizer(_Part, tf_keras.layers.Layer):
        """Pillar points ``[B, P, N, F]`` (and a mask ``[B, P, N]``) -> features ``[B, P, C]``."""

        def __init__(
            self,
            blocks: Sequence[Mapping[str, Any]],
            norm_momentum: float = 0.99,
            norm_epsilon: float = 0.001,
            kernel_regularizer: Any = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self._init_part(blocks, norm_momentum, norm_epsilon, kernel_regularizer)
            self._convs = [
                ConvBN(int(s["output_filters"]), 1, 1, s["activation_fn"], **self._common)
                for s in self._specs
                for _ in range(int(s["block_repeats"]))
            ]

        def call(self, points: Any, mask: Any = None, training: Any = None) -> Any:
            x = points
            if mask is not None:
                real = tf.cast(mask, tf.float32) > 0
                x = x * tf.cast(real, x.dtype)[..., None]  # padding never reaches the layers
            for conv in self._convs:
                x = conv(x, training=training)
            if mask is None:
                return tf.reduce_max(x, axis=2)
            pooled = tf.reduce_max(tf.where(real[..., None], x, x.dtype.min), axis=2)
            return tf.where(tf.reduce_any(real, axis=2)[..., None], pooled, tf.zeros_like(pooled))

    class PillarsBackbone(_Part, tf_keras.Model):
        """BEV image ``[B, H, W, C]`` -> ``{"1": ..., "2": ..., ...}`` (stride ``2**level``)."""

        def __init__(
            self,
            blocks: Sequence[Mapping[str, Any]],
            norm_momentum: float = 0.99,
            norm_epsilon: float = 0.001,
            kernel_regularizer: Any = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self._init_part(blocks, norm_momentum, norm_epsilon, kernel_regularizer)
            self._output_specs: dict[str, Any] | None = None

        @property
        def output_specs(self) -> dict[str, Any] | None:
            """Level -> output ``TensorShape``, once built (``None`` before)."""
            return self._output_specs

        def build(self, input_shape: Any) -> None:
            shape = tf.TensorShape(input_shape)
            width, previous = int(shape[-1]), None
            height, cols = shape[1], shape[2]
            self._stages: list[list[Any]] = []
            self._stage_levels: list[str] = []
            specs: dict[str, Any] = {}
            for spec in self._specs:
                level = int(spec["level"])
                strides = 2 if level != previous else 1
                if strides == 2:
                    height = None if height is None else -(-height // 2)
                    cols = None if cols is None else -(-cols // 2)
                self._stages.append(_repeats(spec, width, strides, self._common))
                self._stage_levels.append(str(level))
                width, previous = int(spec["output_filters"]), level
                specs[str(level)] = tf.TensorShape([shape[0], height, cols, width])
            self._output_specs = specs

        def call(self, inputs: Any, training: Any = None) -> dict[str, Any]:
            x, out = inputs, {}
            for level, blocks in zip(self._stage_levels, self._stages, strict=True):
                x = _run(blocks, x, training)
                out[level] = x
            return out

    class PillarsDecoder(_Part, tf_keras.Model):
        """Backbone levels -> the same levels at the decoder width (pre-hoc, top-down, post-hoc)."""

        def __init__(
            self,
            blocks: Sequence[Mapping[str, Any]],
            norm_momentum: float = 0.99,
            norm_epsilon: float = 0.001,
            kernel_regularizer: Any = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(**kwargs)
            self._init_part(blocks, norm_momentum, norm_epsilon, kernel_regularizer)
            self._levels = [str(s["level"]) for s in self._specs]
            self._output_specs: dict[str, Any] | None = None

        @property
        def output_specs(self) -> dict[str, Any] | None:
            """Level -> output ``TensorShape``, once built (``None`` before)."""
            return self._output_specs

        def build(self, input_shape: Any) -> None:
            self._pre: list[list[Any]] = []
            self._post: list[list[Any]] = []
            specs = {}
            for level, spec in zip(self._levels, self._specs, strict=True):
                shape = tf.TensorShape(input_shape[level])
                width = int(spec["output_filters"])
                self._pre.append(_repeats(spec, int(shape[-1]), 1, self._common))
                self._post.append(_repeats(spec, width, 1, self._common))
                specs[level] = tf.TensorShape([*shape[:-1], width])
            self._output_specs = specs

        def call(self, inputs: Mapping[str, Any], training: Any = None) -> dict[str, Any]:
            feats = [
                _run(blocks, inputs[level], training)
                for level, blocks in zip(self._levels, self._pre, strict=True)
            ]
            for i in range(len(feats) - 2, -1, -1):  # top-down: each level gets the one above
                feats[i] = feats[i] + _upsample_to(feats[i + 1], feats[i])
            return {
                level: _run(blocks, x, training)
                for level, blocks, x in zip(self._levels, self._post, feats, strict=True)
            }

    def _upsample_to(x: Any, target: Any) -> Any:
        """``x`` nearest-upsampled by 2, cropped to ``target``'s height and width."""
        up = tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)
        size = tf.shape(target)
        return up[:, : size[1], : size[2], :]

    class _Layers:
        pass

    _Layers.ConvBN = ConvBN  # type: ignore[attr-defined]
    _Layers.PillarFeaturizer = PillarFeaturizer  # type: ignore[attr-defined]
    _Layers.PillarsBackbone = PillarsBackbone  # type: ignore[attr-defined]
    _Layers.PillarsDecoder = PillarsDecoder  # type: ignore[attr-defined]
    return _Layers


POINTPILLARS = PointPillarsSpace()

__all__ = [
    "ACTIVATIONS",
    "BACKBONE_BLOCK_FNS",
    "BLOCK_FNS",
    "DECODER_BLOCK_FNS",
    "EXPAND_RATIOS",
    "KERNEL_SIZES",
    "OPTION_DEFAULTS",
    "PARTS",
    "POINTPILLARS",
    "PUBLISHED_BLOCKS",
    "REFERENCE_NUM_PARAMS",
    "REPEATS",
    "SE_RATIOS",
    "TASK_OPTIONS",
    "BlockTuple",
    "PointPillarsArchitecture",
    "PointPillarsBlock",
    "PointPillarsSpace",
    "block_specs",
    "scale_filters",
]
