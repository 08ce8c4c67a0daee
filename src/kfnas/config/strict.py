"""Strict conversion between plain data (YAML/JSON) and typed dataclasses.

``from_data(cls, data)`` builds a dataclass from dicts and lists, checking every key and value
against the type hints and naming the exact place of a problem (``studies.proxy.budget.rounds``).
Unknown keys are errors that list the valid ones. ``set_dotted`` applies one ``key.path=value``
override to plain data. Used by ``kfnas.config.spec``; any other strict config dataclass can use it
as it is.

Supported hints: ``str``, ``int``, ``float`` (ints accepted), ``bool``, ``Any``, ``X | None``,
``Literal[...]``, ``list[X]``, ``dict[str, X]`` and nested dataclasses. To support another type, add
a branch to ``_convert``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import yaml


class SpecError(ValueError):
    """A spec that cannot be used; the message names the key and says what to change."""


class _Loader(yaml.SafeLoader):
    """YAML's safe loader that also reads ``1e-3`` as a number, as YAML 1.2 and people do.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent (``1.0e-3``), so
    ``learning_rate: 1e-3`` would otherwise arrive as the string ``"1e-3"``.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """Parses YAML text safely, reading scientific notation such as ``1e-3`` as numbers."""
    return yaml.load(text, Loader=_Loader)


def _type_name(hint: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(hint):
        return "a mapping"
    return str(hint)


def from_data(cls: type, data: Any, where: str = "") -> Any:
    """Builds dataclass ``cls`` from plain ``data``, strictly.

    Args:
        cls: A dataclass type.
        data: A mapping (missing keys take the field defaults).
        where: Dotted location of ``data``, used in messages.

    Returns:
        An instance of ``cls``.

    Raises:
        SpecError: A key is unknown, a required key is missing, or a value has the wrong type.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{where or 'the spec'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(
                f"unknown key {_join(where, str(key))!r}{hint}; valid keys"
                f"{' of ' + where if where else ''}: {', '.join(fields)}"
            )
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], _join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SpecError(f"missing required key {_join(where, name)!r}")
    return cls(**values)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if origin is typing.Literal:
        if value not in args:
            raise SpecError(f"{where} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_data(hint, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise SpecError(f"{where} must be a list, got {value!r}")
        return [_convert(args[0], v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise SpecError(f"{where} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    return _convert_scalar(hint, value, where)


def _convert_scalar(hint: Any, value: Any, where: str) -> Any:
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise SpecError(f"{where} must be {_type_name(hint)}, got {value!r}")
    return value


def to_data(obj: Any) -> Any:
    """The plain-data form of a dataclass (the inverse of ``from_data``)."""
    return dataclasses.asdict(obj)


def set_dotted(data: dict[str, Any], assignment: str) -> None:
    """Applies one ``dotted.key=value`` override to plain ``data`` in place.

    The value is parsed as YAML (``4`` is an int, ``true`` a bool, ``[a, b]`` a list). Missing or
    null intermediate mappings are created; list items are addressed by index (``constraints.0``).

    Raises:
        SpecError: The assignment has no ``=``, or a path step cannot be followed.
    """
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(f"override {assignment!r} must look like key.path=value")
    try:
        value = load_yaml(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise SpecError(f"override {assignment!r}: the value is not valid YAML ({e})") from e
    *parents, last = key.split(".")
    node: Any = data
    for i, part in enumerate(parents):
        node = _step(node, part, ".".join(parents[: i + 1]), create=True)
    if isinstance(node, list):
        _step(node, last, key, create=False)
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(f"override path {key!r}: cannot go into {node!r}")


def _step(node: Any, part: str, where: str, *, create: bool) -> Any:
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise SpecError(f"override path {where!r}: no item {part!r} in a list of {len(node)}")
        return node[int(part)]
    if not isinstance(node, dict):
        raise SpecError(f"override path {where!r}: cannot go into {node!r}")
    if node.get(part) is None and create:
        node[part] = {}
    return node[part]
