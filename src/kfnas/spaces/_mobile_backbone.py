"""A mobile backbone built from a stage table: the network of ``mnasnet`` and ``efficientnet_v2``.

official.vision 2.20 has no MnasNet backbone and no searchable EfficientNetV2, so kfnas builds
``MobileStageBackbone`` itself, out of official.vision blocks (this module imports TensorFlow; only
a space's ``build_network`` imports it):

* stem: ``Conv2DBNBlock`` 3x3, stride 2, ``stem_filters`` (32) filters, batch norm, activation;
* stage ``i``: ``num_repeats`` blocks of its ``block_fn``; the first has the stage's stride and
  reads the previous stage's width, the others stride 1. Block functions (``BLOCK_FNS``, built
  by ``_block``): ``mbconv``, ``fused_mbconv`` (EfficientNetV2) and ``conv`` (MnasNet). A stage's
  ``activation`` overrides the backbone's (EfficientNetV2 searches it per stage);
* endpoints: the last stage at each feature stride ``2**level`` (level >= 2) is endpoint
  ``str(level)``. With ``endpoints_num_filters > 0`` the top endpoint is the last stage followed by
  a 1x1 ``Conv2DBNBlock`` of that width (the MobileNetV2/MnasNet head conv).

``output_specs`` and the outputs are dicts keyed by level string, like official.vision backbones,
so official.vision's classifier (top level), FPN and RetinaNet take the backbone as it is.

To add a block function: add its name to ``BLOCK_FNS`` and one branch to ``_block`` that builds it
from official.vision layers; the spaces then may offer it as a candidate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import mobilenet
from official.vision.modeling.layers import nn_blocks, nn_layers

#: Block functions a stage may use (built by ``_block``, which describes each).
BLOCK_FNS = ("conv", "mbconv", "fused_mbconv")
#: The keys of one stage dict; ``activation`` may be ``None`` (use the backbone's).
STAGE_KEYS = (
    "block_fn",
    "num_repeats",
    "expand_ratio",
    "kernel_size",
    "se_ratio",
    "filters",
    "strides",
    "activation",
)
#: Lowest endpoint level (stride 4); the stem output and stride-2 stages are not endpoints.
MIN_ENDPOINT_LEVEL = 2


def check_stages(stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The stages as plain dicts with every key of ``STAGE_KEYS``, checked.

    Raises:
        ValueError: A key is missing or unknown, a block function is unknown, a count, width or
            stride is not positive, or the strides never reach level ``MIN_ENDPOINT_LEVEL``.
    """
    out = []
    for i, stage in enumerate(stages):
        stage = {"activation": None, **stage}
        keys = set(stage)
        if keys != set(STAGE_KEYS):
            raise ValueError(
                f"stage {i}: keys {sorted(keys)} differ from {sorted(STAGE_KEYS)}: missing "
                f"{sorted(set(STAGE_KEYS) - keys)}, unknown {sorted(keys - set(STAGE_KEYS))}"
            )
        if stage["block_fn"] not in BLOCK_FNS:
            raise ValueError(f"stage {i}: block_fn {stage['block_fn']!r} is not in {BLOCK_FNS}")
        for key in ("num_repeats", "expand_ratio", "kernel_size", "filters", "strides"):
            if int(stage[key]) < 1:
                raise ValueError(f"stage {i}: {key} must be positive, got {stage[key]!r}")
        if not 0.0 <= float(stage["se_ratio"]) <= 1.0:
            raise ValueError(f"stage {i}: se_ratio must be in [0, 1], got {stage['se_ratio']!r}")
        out.append({key: stage[key] for key in STAGE_KEYS})
    if not out or 2 * math.prod(int(s["strides"]) for s in out) < 2**MIN_ENDPOINT_LEVEL:
        raise ValueError("the stage strides must reach at least stride 4 (level 2)")
    return out


def endpoint_stages(stages: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Level string -> index of the last stage at that stride (the stem has stride 2).

    The MnasNet strides ``[1, 2, 2, 2, 1, 2, 1]`` give ``'2'``..``'5'`` from stages 1, 2, 4 and 6;
    the EfficientNetV2 strides ``[1, 2, 2, 2, 1, 2]`` from stages 1, 2, 4 and 5.
    """
    stride, out = 2, {}
    for i, stage in enumerate(stages):
        stride *= int(stage["strides"])
        level = int(math.log2(stride))
        if level >= MIN_ENDPOINT_LEVEL:
            out[str(level)] = i
    return out


@tf_keras.utils.register_keras_serializable(package="kfnas")
class MobileStageBackbone(tf_keras.Model):
    """A stem and a table of mobile stages with multi-level endpoints (see the module docstring)."""

    def __init__(
        self,
        stages: Sequence[Mapping[str, Any]],
        input_specs: tf_keras.layers.InputSpec | None = None,
        stem_filters: int = 32,
        endpoints_num_filters: int = 0,
        activation: str = "relu",
        init_stochastic_depth_rate: float = 0.0,
        use_sync_bn: bool = False,
        norm_momentum: float = 0.99,
        norm_epsilon: float = 0.001,
        kernel_initializer: str = "VarianceScaling",
        kernel_regularizer: tf_keras.regularizers.Regularizer | None = None,
        bias_regularizer: tf_keras.regularizers.Regularizer | None = None,
        **kwargs: Any,
    ) -> None:
        """Builds the backbone.

        Args:
            stages: One dict per stage with the keys of ``STAGE_KEYS`` (``activation`` optional).
            input_specs: The batched image input; default ``[None, None, None, 3]``.
            stem_filters: Width of the stem conv.
            endpoints_num_filters: Width of a 1x1 conv on the last stage that becomes the top
                endpoint; 0 leaves the last stage's output as it is.
            activation: Activation of the stem, the head conv and stages without their own.
            init_stochastic_depth_rate: Drop rate of the last block's residual branch; block ``b``
                of ``n`` drops ``rate * b / n`` (official.vision's rule); 0 turns it off.
            use_sync_bn: Synchronized batch normalization.
            norm_momentum: Batch normalization momentum.
            norm_epsilon: Batch normalization epsilon.
            kernel_initializer: Initializer of every conv.
            kernel_regularizer: Regularizer of every conv kernel.
            bias_regularizer: Regularizer of every bias.
            **kwargs: Passed to ``tf_keras.Model``.

        Raises:
            ValueError: As ``check_stages``.
        """
        stages = check_stages(stages)
        if input_specs is None:
            input_specs = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
        self._config_dict = {
            "stages": stages,
            "input_specs": input_specs,
            "stem_filters": stem_filters,
            "endpoints_num_filters": endpoints_num_filters,
            "activation": activation,
            "init_stochastic_depth_rate": init_stochastic_depth_rate,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
        }
        common = {
            "kernel_initializer": kernel_initializer,
            "kernel_regularizer": kernel_regularizer,
            "bias_regularizer": bias_regularizer,
            "use_sync_bn": use_sync_bn,
            "norm_momentum": norm_momentum,
            "norm_epsilon": norm_epsilon,
        }
        inputs = tf_keras.Input(shape=input_specs.shape[1:])
        x = mobilenet.Conv2DBNBlock(
            filters=stem_filters,
            kernel_size=3,
            strides=2,
            activation=activation,
            name="stem",
            **common,
        )(inputs)
        num_blocks = sum(int(s["num_repeats"]) for s in stages)
        by_stage = {i: level for level, i in endpoint_stages(stages).items()}
        top = max(by_stage.values(), key=int)
        endpoints: dict[str, tf.Tensor] = {}
        in_filters, block_index = stem_filters, 0
        for i, stage in enumerate(stages):
            for j in range(int(stage["num_repeats"])):
                block_index += 1
                drop = nn_layers.get_stochastic_depth_rate(
                    init_stochastic_depth_rate, block_index, num_blocks
                )
                x = _block(
                    x,
                    stage,
                    in_filters=in_filters,
                    strides=int(stage["strides"]) if j == 0 else 1,
                    activation=stage["activation"] or activation,
                    drop_rate=drop or None,
                    name=f"stage{i}_block{j}",
                    common=common,
                )
                in_filters = int(stage["filters"])
            if i in by_stage:
                endpoints[by_stage[i]] = x
        if endpoints_num_filters > 0:
            # The head conv (1280 wide in the MobileNetV2/MnasNet papers). Vertex AI NAS labels
            # it endpoint '6' although its stride is 32 (reference section 10, quirk 6); here it
            # keeps its true level.
            endpoints[top] = mobilenet.Conv2DBNBlock(
                filters=endpoints_num_filters,
                kernel_size=1,
                strides=1,
                activation=activation,
                name="head_conv",
                **common,
            )(endpoints[top])
        self._output_specs = {level: feat.get_shape() for level, feat in endpoints.items()}
        super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments (official.vision's backbone convention)."""
        return dict(self._config_dict)

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> MobileStageBackbone:
        """Rebuilds the backbone from ``get_config``."""
        return cls(**config)

    @property
    def output_specs(self) -> dict[str, tf.TensorShape]:
        """Level string -> shape of that endpoint."""
        return self._output_specs


def _block(
    x: tf.Tensor,
    stage: Mapping[str, Any],
    *,
    in_filters: int,
    strides: int,
    activation: str,
    drop_rate: float | None,
    name: str,
    common: dict[str, Any],
) -> tf.Tensor:
    """Applies one block of ``stage`` to ``x``.

    Block functions (the squeeze-excite inner activation is the block's activation):

    - ``mbconv``: ``nn_blocks.InvertedBottleneckBlock`` (1x1 expansion by ``expand_ratio``, skipped
      at 1; depthwise ``kernel_size``; squeeze-excite of ``se_ratio`` x the block's input width when
      ``se_ratio > 0``; linear 1x1 projection; residual when stride 1 and the width is unchanged);
    - ``fused_mbconv`` (EfficientNetV2): with ``expand_ratio > 1``, ``InvertedBottleneckBlock`` with
      ``use_depthwise=False`` (a full ``kernel_size`` conv does the expansion and the stride, then
      squeeze-excite and the 1x1 projection). With ``expand_ratio == 1`` that block would skip its
      only strided conv, so the block is, as in EfficientNetV2, squeeze-excite (when searched)
      followed by one ``Conv2DBNBlock`` (``kernel_size``, stride, activation), with a residual add
      when stride 1 and the width is unchanged;
    - ``conv`` (MnasNet): ``mobilenet.Conv2DBNBlock`` (``kernel_size``, stride, activation);
      ``expand_ratio`` and ``se_ratio`` do not apply and no residual is added.
    """
    block_fn = stage["block_fn"]
    filters, kernel_size = int(stage["filters"]), int(stage["kernel_size"])
    expand_ratio, se_ratio = int(stage["expand_ratio"]), float(stage["se_ratio"])
    if block_fn == "conv":
        return mobilenet.Conv2DBNBlock(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            activation=activation,
            name=name,
            **common,
        )(x)
    if block_fn == "fused_mbconv" and expand_ratio == 1:
        return _fused_single_conv(
            x,
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            se_ratio=se_ratio,
            in_filters=in_filters,
            activation=activation,
            drop_rate=drop_rate,
            name=name,
            common=common,
        )
    return nn_blocks.InvertedBottleneckBlock(
        in_filters=in_filters,
        out_filters=filters,
        expand_ratio=expand_ratio,
        strides=strides,
        kernel_size=kernel_size,
        se_ratio=se_ratio or None,
        stochastic_depth_drop_rate=drop_rate,
        activation=activation,
        se_inner_activation=activation,
        use_depthwise=block_fn == "mbconv",
        name=name,
        **common,
    )(x)


def _fused_single_conv(
    x: tf.Tensor,
    *,
    filters: int,
    kernel_size: int,
    strides: int,
    se_ratio: float,
    in_filters: int,
    activation: str,
    drop_rate: float | None,
    name: str,
    common: dict[str, Any],
) -> tf.Tensor:
    """A Fused-MBConv block without expansion: [squeeze-excite] -> conv kxk + BN + act [+ x]."""
    shortcut = x
    if se_ratio > 0:
        x = nn_layers.SqueezeExcitation(
            in_filters=in_filters,
            out_filters=in_filters,
            se_ratio=se_ratio,
            activation=activation,
            kernel_initializer=common["kernel_initializer"],
            kernel_regularizer=common["kernel_regularizer"],
            bias_regularizer=common["bias_regularizer"],
            name=f"{name}_se",
        )(x)
    x = mobilenet.Conv2DBNBlock(
        filters=filters,
        kernel_size=kernel_size,
        strides=strides,
        activation=activation,
        name=f"{name}_conv",
        **common,
    )(x)
    if strides == 1 and in_filters == filters:
        if drop_rate:
            x = nn_layers.StochasticDepth(drop_rate, name=f"{name}_drop")(x)
        x = tf_keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return x


__all__ = [
    "BLOCK_FNS",
    "MIN_ENDPOINT_LEVEL",
    "STAGE_KEYS",
    "MobileStageBackbone",
    "check_stages",
    "endpoint_stages",
]
