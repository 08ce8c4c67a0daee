"""What the stage-table spaces ``mnasnet`` and ``efficientnet_v2`` share; imports no TensorFlow.

Both spaces search, per stage of a fixed reference table ``(repeats r, filters o)``, the same kind
of decisions (Vertex AI NAS, ``vertex_nas_reference.md`` sections 1.3 and 1.4). This module holds
the candidate rules they share (``repeat_candidates``, ``filter_candidates``), the refusal of a
fixed ``task.options.backbone`` and ``build_backbone``, which reads the backbone knobs from
``task.options`` and builds ``kfnas.spaces._mobile_backbone.MobileStageBackbone`` (importing
TensorFlow only then).

Backbone knobs read from ``task.options`` (missing ones take the defaults given):

==========================  ==============  ===================================================
option                      default         meaning
==========================  ==============  ===================================================
activation                  per space       stem, head conv and blocks without their own
                                            (``mnasnet``: relu, as MnasNet; ``efficientnet_v2``:
                                            swish, as EfficientNetV2)
endpoints_num_filters       1280 or 0       width of the 1x1 head conv on the top endpoint: 1280
                                            (MobileNetV2/MnasNet) for classification, 0 (none;
                                            the decoder sets the width) for other tasks
init_stochastic_depth_rate  0.0             stochastic depth drop rate of the last block
norm_momentum               0.99            batch normalization momentum
norm_epsilon                0.001           batch normalization epsilon
l2_weight_decay             4e-5            L2 weight decay of the conv kernels (halved, as
                                            official.vision's tasks do, to match tf.nn.l2_loss)
==========================  ==============  ===================================================

To add a knob: add it to ``BACKBONE_DEFAULTS`` and, with its check, to ``TASK_OPTIONS`` (the
knobs both spaces declare, so that specs may set it), and pass it to ``MobileStageBackbone`` in
``build_backbone``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kfnas.spaces.options import Option, choice, fraction, integer
from kfnas.spaces.regularizers import l2_regularizer

#: Backbone knobs that every task kind shares (see the table in the module docstring).
BACKBONE_DEFAULTS: dict[str, Any] = {
    "init_stochastic_depth_rate": 0.0,
    "norm_momentum": 0.99,
    "norm_epsilon": 0.001,
    "l2_weight_decay": 4e-5,
}
#: The knobs of the table above that no task reads, with their checks: both spaces declare them
#: (``task_options``). ``activation`` is also detection's own knob, whose check then applies.
TASK_OPTIONS: dict[str, Option] = {
    "endpoints_num_filters": integer(0),
    "init_stochastic_depth_rate": fraction(),
    "activation": choice(("relu", "relu6", "swish", "hard_swish")),
}
#: ``endpoints_num_filters`` by task kind; other kinds get 0 (no head conv).
ENDPOINTS_NUM_FILTERS_BY_TASK: dict[str, int] = {"classification": 1280}
#: Width of the stem conv (fixed in both spaces, as in MnasNet and EfficientNetV2-B0).
STEM_FILTERS = 32


def repeat_candidates(repeats: int) -> list[int]:
    """``[r, r - 1, r + 1]``, or ``[1, 2]`` when ``r`` is 1 (candidate order as in Vertex)."""
    return [repeats, repeats - 1, repeats + 1] if repeats > 1 else [1, 2]


def filter_candidates(filters: int) -> list[int]:
    """``[int(0.75 o), o, int(1.25 o)]`` (candidate order as in Vertex)."""
    return [int(0.75 * filters), filters, int(1.25 * filters)]


def backbone_problems(space_name: str, task: Any) -> list[str]:
    """A fixed ``task.options.backbone`` makes no sense under a space that is the backbone."""
    if task.options.get("backbone") is not None:
        return [
            f"task.options.backbone is set but {space_name} searches the backbone itself: "
            f"remove task.options.backbone (it is for spaces that search a decoder, nasfpn)"
        ]
    return []


def backbone_options(task: Any, activation: str) -> dict[str, Any]:
    """The backbone knobs: ``task.options`` over the defaults (``activation``: the space's)."""
    options = {
        **BACKBONE_DEFAULTS,
        "activation": activation,
        "endpoints_num_filters": ENDPOINTS_NUM_FILTERS_BY_TASK.get(task.kind, 0),
    }
    options.update((k, v) for k, v in task.options.items() if k in options)
    return options


def build_backbone(
    stages: Sequence[Mapping[str, Any]], task: Any, input_specs: Any, *, activation: str
) -> Any:
    """Builds ``MobileStageBackbone`` over ``stages`` with the knobs of ``task.options``.

    Args:
        stages: One dict per stage (``kfnas.spaces._mobile_backbone.STAGE_KEYS``).
        task: The ``kfnas.config.spec.TaskSpec``; see the module docstring for the knobs read.
        input_specs: The batched ``tf_keras.layers.InputSpec``.
        activation: The space's default activation.

    Returns:
        The backbone: a ``tf_keras.Model`` with ``output_specs`` and outputs keyed ``'2'``..``'5'``.
    """
    from kfnas.spaces._mobile_backbone import MobileStageBackbone

    options = backbone_options(task, activation)
    regularizer = l2_regularizer(float(options["l2_weight_decay"]))
    return MobileStageBackbone(
        stages=stages,
        input_specs=input_specs,
        stem_filters=STEM_FILTERS,
        endpoints_num_filters=int(options["endpoints_num_filters"]),
        activation=options["activation"],
        init_stochastic_depth_rate=float(options["init_stochastic_depth_rate"]),
        norm_momentum=float(options["norm_momentum"]),
        norm_epsilon=float(options["norm_epsilon"]),
        kernel_regularizer=regularizer,
    )


__all__ = [
    "BACKBONE_DEFAULTS",
    "ENDPOINTS_NUM_FILTERS_BY_TASK",
    "STEM_FILTERS",
    "backbone_options",
    "backbone_problems",
    "build_backbone",
    "filter_candidates",
    "repeat_candidates",
]
