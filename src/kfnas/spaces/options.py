"""Tables of ``task.options`` knobs: each knob's default and check, and the messages they give.

A task kind lists its knobs as ``{name: Option}`` (built with ``integer``, ``number``,
``fraction``, ``flag``, ``choice``) and gets from ``table_problems`` the messages for unknown keys
(with a "did you mean" hint and the valid keys) and for values of the wrong type or range, and
from ``resolve`` the options over the table's defaults. Nothing here imports TensorFlow.

To add a kind of check: write one more constructor returning an ``Option``.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (``bool`` is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or a float (``bool`` is not)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Option:
    """One knob: its default (``None``: computed elsewhere, e.g. from the budget) and its check.

    Attributes:
        default: The value used when ``task.options`` does not set the knob, or ``None``.
        check: Whether a value is acceptable.
        expected: What an acceptable value is, for messages ("an integer >= 1").
    """

    default: Any
    check: Callable[[Any], bool]
    expected: str


def integer(low: int, default: Any = None) -> Option:
    """An integer knob ``>= low``."""
    return Option(default, lambda v: is_int(v) and v >= low, f"an integer >= {low}")


def number(low: float, default: Any = None, *, strict: bool = False) -> Option:
    """A number knob ``>= low`` (``> low`` when ``strict``)."""
    if strict:
        return Option(default, lambda v: is_number(v) and v > low, f"a number > {low:g}")
    return Option(default, lambda v: is_number(v) and v >= low, f"a number >= {low:g}")


def fraction(default: Any = None, *, positive: bool = False) -> Option:
    """A number knob in ``[0, 1]`` (``(0, 1]`` when ``positive``)."""
    if positive:
        return Option(default, lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]")
    return Option(default, lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]")


def flag(default: bool) -> Option:
    """A boolean knob."""
    return Option(default, lambda v: isinstance(v, bool), "true or false")


def choice(values: Iterable[str], default: Any = None) -> Option:
    """A knob that takes one of ``values``."""
    allowed = tuple(values)
    return Option(default, lambda v: v in allowed, "one of " + ", ".join(map(repr, allowed)))


def table_problems(kind: str, options: Mapping[str, Any], table: Mapping[str, Option]) -> list[str]:
    """Unknown keys and badly typed or out-of-range values of ``options``, as messages.

    Args:
        kind: The task kind, for messages ("... is not a classification option").
        options: The user's ``task.options``.
        table: The kind's knobs.

    Returns:
        One message per bad key, saying what to write instead.
    """
    out = []
    for key, value in options.items():
        if key not in table:
            close = difflib.get_close_matches(key, table, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(
                f"task.options.{key} is not a {kind} option{hint}; valid options: "
                f"{', '.join(sorted(table))}"
            )
        elif not table[key].check(value):
            out.append(f"task.options.{key} must be {table[key].expected}, got {value!r}")
    return out


def resolve(options: Mapping[str, Any], table: Mapping[str, Option]) -> dict[str, Any]:
    """``options`` over the table's defaults (knobs without a default are left out unless set)."""
    defaults = {key: o.default for key, o in table.items() if o.default is not None}
    return {**defaults, **options}


__all__ = [
    "Option",
    "choice",
    "flag",
    "fraction",
    "integer",
    "is_int",
    "is_number",
    "number",
    "resolve",
    "table_problems",
]
