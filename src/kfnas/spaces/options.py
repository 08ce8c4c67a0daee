"""Tables of ``task.options`` knobs: each knob's default and check, and the messages they give.

A task kind lists the knobs it reads as ``{name: Option}`` (built with ``integer``, ``number``,
``fraction``, ``flag``, ``choice``), and so does a search space (its ``task_options``: the
backbone or decoder knobs only it reads). ``table_problems`` gives the messages for unknown keys
(with a "did you mean" hint and the valid keys) and for values of the wrong type or range,
``resolve`` the options over a table's defaults, and ``merge`` one table from several spaces'.
It lives below both spaces and tasks, so each can declare its own knobs. No TensorFlow here.

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


def merge(tables: Iterable[Mapping[str, Option]]) -> dict[str, Option]:
    """One table from several (e.g. the spaces of one experiment).

    A knob declared by several tables accepts a value that any of them accepts: each space
    reads it for its own network.
    """
    declared: dict[str, list[Option]] = {}
    for table in tables:
        for key, option in table.items():
            declared.setdefault(key, []).append(option)
    out = {}
    for key, options in declared.items():
        if len(options) == 1:
            out[key] = options[0]
            continue
        checks = [o.check for o in options]
        expected = " or ".join(dict.fromkeys(o.expected for o in options))
        out[key] = Option(
            options[0].default, lambda v, checks=checks: any(c(v) for c in checks), expected
        )
    return out


#: Feature levels (stride ``2**level``) that the multi-level tasks and the spaces support.
LEVEL_RANGE = (3, 7)
#: The level knobs of multi-level tasks (detection, segmentation), which spaces read too.
LEVEL_OPTIONS: dict[str, Option] = {"min_level": integer(1, 3), "max_level": integer(1, 7)}


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
    "LEVEL_OPTIONS",
    "LEVEL_RANGE",
    "Option",
    "choice",
    "flag",
    "fraction",
    "integer",
    "is_int",
    "is_number",
    "merge",
    "number",
    "resolve",
    "table_problems",
]
