"""The augmentation op tables and the ``task.options.augmentation`` format, without TensorFlow.

Two forms of policy are accepted, as plain JSON-able data (what ``--set`` and the refinement
spaces write):

* RandAugment: ``{"randaugment": {"num_layers": N, "magnitude": M}}`` applies ``N`` ops drawn
  uniformly, with replacement, from the task kind's RandAugment list (``RANDAUGMENT_OPS``), all at
  magnitude ``M`` (0..10).
* AutoAugment: ``{"autoaugment": [[[op, magnitude, prob], ...], ...]}``, a list of sub-policies,
  each a list of ``[op name, magnitude 0..10, probability 0..1]``. One sub-policy is drawn
  uniformly per image; its ops are applied in order, each with its own probability (the
  ``*OnlyBBoxes`` ops use it as the probability of each box, divided by 3, as Vertex does).

Op names are those of Vertex AI NAS's augmentation library (``TranslateX``, ``CutoutImage``, ...).
``AUTOAUGMENT_OPS`` holds each task kind's op index table (the order of Vertex's AutoAugment search
spaces: index 11 repeats ``CutoutImage``); the ops a kind accepts are the names in its table.

``augmentation_problems`` checks a value and returns messages that say what to write;
``parse_augmentation`` turns a valid value into a ``RandAugmentConfig`` or ``AutoAugmentConfig``
(``kfnas.augment.policies.policy_from_options`` builds the TensorFlow policy from it).

To add an op: implement it in ``kfnas.augment.ops`` (its ``OPS`` table) and add its name to the
op tables here of the task kinds it suits; to add a task kind, add its tables here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

#: Largest magnitude; the op parameters scale with ``magnitude / MAX_MAGNITUDE``.
MAX_MAGNITUDE = 10
#: The magnitudes an AutoAugment search space chooses from.
MAGNITUDES: tuple[int, ...] = tuple(range(MAX_MAGNITUDE + 1))
#: The probabilities an AutoAugment search space chooses from (0.0, 0.1, ..., 1.0).
PROBABILITIES: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))

#: The op index table shared by every task kind (section 7.4 of the reference; 11 repeats 3).
_BASE_OPS: tuple[str, ...] = (
    "Equalize",
    "Solarize",
    "Color",
    "CutoutImage",
    "SolarizeAdd",
    "TranslateX",
    "TranslateY",
    "ShearX",
    "ShearY",
    "Rotate",
    "Sharpness",
    "CutoutImage",
)

#: Task kind -> its AutoAugment op index table (detection 21 ops, segmentation 13).
AUTOAUGMENT_OPS: dict[str, tuple[str, ...]] = {
    "detection": (
        *_BASE_OPS,
        "SolarizeOnlyBBoxes",
        "CutoutOnlyBBoxes",
        "TranslateXOnlyBBoxes",
        "TranslateYOnlyBBoxes",
        "ShearXOnlyBBoxes",
        "ShearYOnlyBBoxes",
        "RotateOnlyBBoxes",
        "EqualizeOnlyBBoxes",
        "FlipOnlyBBoxes",
    ),
    "segmentation": (*_BASE_OPS, "CutoutSegmentation"),
}

_RANDAUGMENT_COMMON = ("Equalize", "Solarize", "Color")
_RANDAUGMENT_GEOMETRIC = ("SolarizeAdd", "TranslateX", "TranslateY", "ShearX", "ShearY", "Rotate")

#: Task kind -> the ops RandAugment draws from (10 each; section 7.3 of the reference).
RANDAUGMENT_OPS: dict[str, tuple[str, ...]] = {
    "detection": (*_RANDAUGMENT_COMMON, "CutoutImage", *_RANDAUGMENT_GEOMETRIC),
    "segmentation": (*_RANDAUGMENT_COMMON, "CutoutSegmentation", *_RANDAUGMENT_GEOMETRIC),
}

_EXAMPLE = (
    "{randaugment: {num_layers: 2, magnitude: 9}} or "
    "{autoaugment: [[[TranslateX, 4, 0.6], [Equalize, 0, 0.8]], [[Rotate, 10, 0.6], "
    "[Color, 6, 1.0]]]}"
)


@dataclasses.dataclass(frozen=True)
class RandAugmentConfig:
    """RandAugment: ``num_layers`` ops drawn uniformly from ``ops``, each at ``magnitude``."""

    num_layers: int
    magnitude: int
    ops: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class OpConfig:
    """One op of an AutoAugment sub-policy: its name, magnitude (0..10) and probability."""

    name: str
    magnitude: int
    prob: float


@dataclasses.dataclass(frozen=True)
class AutoAugmentConfig:
    """AutoAugment: one sub-policy drawn uniformly per image, its ops applied in order."""

    sub_policies: tuple[tuple[OpConfig, ...], ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _randaugment_problems(value: Any, kind: str, where: str) -> list[str]:
    if not isinstance(value, Mapping):
        return [f"{where} must be a mapping {{num_layers: N, magnitude: M}}, got {value!r}"]
    out = []
    unknown = sorted(set(value) - {"num_layers", "magnitude"})
    if unknown:
        out.append(f"{where} has unknown keys {unknown}; it takes num_layers and magnitude")
    num_layers = value.get("num_layers")
    if not (_is_int(num_layers) and num_layers >= 1):
        out.append(
            f"{where}.num_layers must be an integer >= 1 (ops applied per image), "
            f"got {num_layers!r}"
        )
    magnitude = value.get("magnitude")
    if not (_is_int(magnitude) and 0 <= magnitude <= MAX_MAGNITUDE):
        out.append(f"{where}.magnitude must be an integer in 0..{MAX_MAGNITUDE}, got {magnitude!r}")
    return out


def _op_problems(op: Any, kind: str, where: str) -> list[str]:
    names = sorted(set(AUTOAUGMENT_OPS[kind]))
    if not (isinstance(op, list | tuple) and len(op) == 3):
        return [f"{where} must be [op name, magnitude 0..10, probability 0..1], got {op!r}"]
    name, magnitude, prob = op
    out = []
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        out.append(
            f"{where}: {name!r} is not a {kind} augmentation op{hint}; use one of "
            f"{', '.join(names)}"
        )
    if not (_is_int(magnitude) and 0 <= magnitude <= MAX_MAGNITUDE):
        out.append(
            f"{where}: the magnitude must be an integer in 0..{MAX_MAGNITUDE}, got {magnitude!r}"
        )
    if not (_is_number(prob) and 0 <= prob <= 1):
        out.append(f"{where}: the probability must be a number in [0, 1], got {prob!r}")
    return out


def _autoaugment_problems(value: Any, kind: str, where: str) -> list[str]:
    if not (isinstance(value, list | tuple) and value):
        return [
            f"{where} must be a non-empty list of sub-policies, each a list of "
            f"[op name, magnitude, probability], got {value!r}"
        ]
    out = []
    for i, sub in enumerate(value):
        if not (isinstance(sub, list | tuple) and sub):
            out.append(
                f"{where}.{i} must be a non-empty list of [op name, magnitude, probability], "
                f"got {sub!r}"
            )
            continue
        for j, op in enumerate(sub):
            out.extend(_op_problems(op, kind, f"{where}.{i}.{j}"))
    return out


_FORMS = {"randaugment": _randaugment_problems, "autoaugment": _autoaugment_problems}


def augmentation_problems(
    value: Any, kind: str, where: str = "task.options.augmentation"
) -> list[str]:
    """What is wrong with an augmentation policy value for task kind ``kind``, as fixes.

    Args:
        value: The ``task.options.augmentation`` value.
        kind: The task kind (``detection`` or ``segmentation``).
        where: The dotted place of ``value``, for messages.

    Returns:
        One message per problem (unknown op names with the valid ones, magnitudes outside
        0..10, probabilities outside 0..1, a malformed value with an example); empty if valid.
    """
    if kind not in AUTOAUGMENT_OPS:
        return [
            f"{where}: the {kind} task has no augmentation ops; augmentation policies serve "
            f"{', '.join(AUTOAUGMENT_OPS)}"
        ]
    if not (isinstance(value, Mapping) and len(value) == 1 and next(iter(value)) in _FORMS):
        return [
            f"{where} must be a mapping with one key, {' or '.join(_FORMS)}, e.g. {_EXAMPLE}; "
            f"got {value!r}"
        ]
    ((form, body),) = value.items()
    return _FORMS[form](body, kind, f"{where}.{form}")


def parse_augmentation(value: Any, kind: str) -> RandAugmentConfig | AutoAugmentConfig:
    """The policy a valid ``task.options.augmentation`` value describes.

    Raises:
        ValueError: ``augmentation_problems`` found problems (the message lists them).
    """
    problems = augmentation_problems(value, kind)
    if problems:
        raise ValueError("invalid augmentation policy:\n  - " + "\n  - ".join(problems))
    ((form, body),) = value.items()
    if form == "randaugment":
        return RandAugmentConfig(
            num_layers=body["num_layers"], magnitude=body["magnitude"], ops=RANDAUGMENT_OPS[kind]
        )
    return AutoAugmentConfig(
        sub_policies=tuple(
            tuple(OpConfig(name, int(magnitude), float(prob)) for name, magnitude, prob in sub)
            for sub in body
        )
    )


__all__ = [
    "AUTOAUGMENT_OPS",
    "MAGNITUDES",
    "MAX_MAGNITUDE",
    "PROBABILITIES",
    "RANDAUGMENT_OPS",
    "AutoAugmentConfig",
    "OpConfig",
    "RandAugmentConfig",
    "augmentation_problems",
    "parse_augmentation",
]
