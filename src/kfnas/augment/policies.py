"""Augmentation policies (TensorFlow): RandAugment and AutoAugment over the ops of ``OPS``.

Imported at trial time only. ``policy_from_options(value, kind)`` turns a
``task.options.augmentation`` value (see ``kfnas.augment.tables``) into a ``Policy``: a callable
``policy(image, boxes=None, mask=None) -> (image, boxes, mask)`` on one decoded uint8 image, its
normalized boxes and/or its ``[H, W, 1]`` mask, usable inside ``tf.data`` maps and eagerly.

* ``RandAugment``: ``num_layers`` times, one op of its list drawn uniformly (with replacement) and
  applied at ``magnitude``.
* ``AutoAugment``: one sub-policy drawn uniformly; its ops applied in order, each with its own
  probability (``*OnlyBBoxes`` ops take it per box instead).

To add a policy form: add its config and check to ``kfnas.augment.tables`` and its class here, with
one entry in ``_BUILDERS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import tensorflow as tf

from kfnas.augment.ops import OPS, Tensors, apply_op
from kfnas.augment.tables import (
    AutoAugmentConfig,
    OpConfig,
    RandAugmentConfig,
    parse_augmentation,
)

_KEYS = ("image", "boxes", "mask")
Branch = Callable[[tf.Tensor, tf.Tensor | None, tf.Tensor | None], Tensors]


class Policy(Protocol):
    """An augmentation policy: ``(image, boxes, mask) -> (image, boxes, mask)``."""

    def __call__(
        self, image: tf.Tensor, boxes: tf.Tensor | None = None, mask: tf.Tensor | None = None
    ) -> Tensors:
        """Augments one image with its boxes and/or mask; ``None`` ones stay ``None``."""
        ...


def _switch(
    index: tf.Tensor, branches: Sequence[Branch], image: tf.Tensor, boxes: Any, mask: Any
) -> Tensors:
    """Runs ``branches[index]`` on the tensors given (``None`` ones are passed through)."""
    present = [
        key for key, value in zip(_KEYS, (image, boxes, mask), strict=True) if value is not None
    ]

    def run(branch: Branch) -> Callable[[], dict[str, tf.Tensor]]:
        def fn() -> dict[str, tf.Tensor]:
            out = dict(zip(_KEYS, branch(image, boxes, mask), strict=True))
            return {key: out[key] for key in present}

        return fn

    result = tf.switch_case(index, [run(b) for b in branches])
    return result["image"], result.get("boxes"), result.get("mask")


def _identity(image: tf.Tensor, boxes: Any, mask: Any) -> Tensors:
    return image, boxes, mask


def _op_branch(name: str, magnitude: int, prob: float = 1.0) -> Branch:
    return lambda image, boxes, mask: apply_op(name, image, boxes, mask, magnitude, prob)


def _uniform_index(n: int) -> tf.Tensor:
    return tf.random.uniform([], 0, n, tf.int32)


@dataclasses.dataclass(frozen=True)
class RandAugment:
    """RandAugment: ``config.num_layers`` ops drawn uniformly from ``config.ops``, one magnitude."""

    config: RandAugmentConfig

    def __call__(
        self, image: tf.Tensor, boxes: tf.Tensor | None = None, mask: tf.Tensor | None = None
    ) -> Tensors:
        """Augments one image with its boxes and/or mask."""
        branches = [_op_branch(name, self.config.magnitude) for name in self.config.ops]
        for _ in range(self.config.num_layers):
            image, boxes, mask = _switch(
                _uniform_index(len(branches)), branches, image, boxes, mask
            )
        return image, boxes, mask


def _with_probability(op: OpConfig) -> Branch:
    """The op applied with its probability (per box for ``*OnlyBBoxes`` ops)."""
    if OPS[op.name].per_box:
        return _op_branch(op.name, op.magnitude, op.prob)
    if op.prob <= 0:
        return _identity
    branch = _op_branch(op.name, op.magnitude)
    if op.prob >= 1:
        return branch

    def gated(image: tf.Tensor, boxes: Any, mask: Any) -> Tensors:
        apply = tf.cast(tf.random.uniform([]) < op.prob, tf.int32)
        return _switch(apply, [_identity, branch], image, boxes, mask)

    return gated


@dataclasses.dataclass(frozen=True)
class AutoAugment:
    """AutoAugment: one of ``config.sub_policies`` drawn uniformly, its ops applied in order."""

    config: AutoAugmentConfig

    def __call__(
        self, image: tf.Tensor, boxes: tf.Tensor | None = None, mask: tf.Tensor | None = None
    ) -> Tensors:
        """Augments one image with its boxes and/or mask."""

        def sub_policy(ops: tuple[OpConfig, ...]) -> Branch:
            steps = [_with_probability(op) for op in ops]

            def run(image: tf.Tensor, boxes: Any, mask: Any) -> Tensors:
                for step in steps:
                    image, boxes, mask = step(image, boxes, mask)
                return image, boxes, mask

            return run

        branches = [sub_policy(ops) for ops in self.config.sub_policies]
        return _switch(_uniform_index(len(branches)), branches, image, boxes, mask)


_BUILDERS: dict[type, Callable[[Any], Policy]] = {
    RandAugmentConfig: RandAugment,
    AutoAugmentConfig: AutoAugment,
}


def policy_from_options(value: Any, kind: str) -> Policy:
    """The policy of a ``task.options.augmentation`` value for task kind ``kind``.

    Args:
        value: E.g. ``{"randaugment": {"num_layers": 2, "magnitude": 7}}`` or
            ``{"autoaugment": [[["TranslateX", 4, 0.6], ["Equalize", 0, 0.8]], ...]}``.
        kind: ``detection`` or ``segmentation`` (selects the op tables).

    Raises:
        ValueError: The value is not a valid policy for ``kind`` (the message says why).
    """
    config = parse_augmentation(value, kind)
    return _BUILDERS[type(config)](config)


__all__ = ["AutoAugment", "Policy", "RandAugment", "policy_from_options"]
