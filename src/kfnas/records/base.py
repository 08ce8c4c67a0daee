"""``Record``: the versioned JSON round trip of every document kfnas stores.

Contract: a record kind is a frozen dataclass subclassing ``Record`` with a class-level ``KIND``
(its name in messages) and ``SCHEMA_VERSION``. ``to_dict`` gives its fields as JSON-ready data
(enums as their values, tuples as lists) with ``schema_version``; ``to_json`` is the stored text.
``from_dict``/``from_json`` read a record of its version or older, bringing an older one forward
with the upgrades registered in ``UPGRADES``, and refuse a newer one ("written by a newer kfnas;
upgrade kfnas"), unknown or missing fields (naming them) and malformed JSON, all with ``ERROR``:
``RecordError`` (a ``ValueError``) or a subclass of it. Tuple and enum fields are decoded from the
field types. A kind may add checks in ``_check`` (the handoff checks its JSON schema there).

To add a record kind: a frozen dataclass subclassing ``Record`` with ``KIND`` and
``SCHEMA_VERSION = 1``. To add a field: give it a default (meaning "not set" in older records),
bump ``SCHEMA_VERSION``, and register in ``UPGRADES`` under the old version a function filling it
from older data if the default cannot stand for it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Self

from kfnas.version import __version__

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


class RecordError(ValueError):
    """A stored record that cannot be read: malformed JSON, wrong fields or a newer schema."""


class Record:
    """Base of the stored records: frozen dataclasses that round-trip through versioned JSON.

    Class attributes:
        KIND: What the record is, in messages (``trial spec``, ``handoff manifest``).
        SCHEMA_VERSION: The version this kfnas writes; it reads this one and older ones.
        UPGRADES: Version ``v`` -> a function bringing data of version ``v`` (without
            ``schema_version``) to ``v + 1``; a version without one needs nothing.
        UNVERSIONED_UNTIL: Versions up to this one are written without ``schema_version`` and a
            document without it is read as this version (for a record that predates the key);
            0: the key is always written and required.
        SORT_KEYS: Whether ``to_json`` sorts the keys (else ``schema_version`` first, then the
            fields in order).
        ERROR: The error raised for a record that cannot be read.
    """

    KIND: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int]
    UPGRADES: ClassVar[Mapping[int, Upgrade]] = {}
    UNVERSIONED_UNTIL: ClassVar[int] = 0
    SORT_KEYS: ClassVar[bool] = False
    ERROR: ClassVar[type[RecordError]] = RecordError

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-ready data, ``schema_version`` first."""
        data: dict[str, Any] = {}
        if self.SCHEMA_VERSION > self.UNVERSIONED_UNTIL:
            data["schema_version"] = self.SCHEMA_VERSION
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            data[field.name] = _encode(getattr(self, field.name))
        return data

    def to_json(self) -> str:
        """The record as the indented JSON text that is stored."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=self.SORT_KEYS, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, source: str = "") -> Self:
        """Parses a record written by ``to_json``.

        Args:
            text: The JSON text.
            source: Where it came from (a URI), for messages; default: ``KIND``.

        Raises:
            RecordError: (``ERROR``) The text is not a record of this kind or comes from a newer
                kfnas.
        """
        source = source or cls.KIND
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise cls.ERROR(f"{source} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise cls.ERROR(f"{source} must be a JSON object, got {type(data).__name__}")
        return cls.from_dict(data, source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "") -> Self:
        """Builds a record from ``to_dict`` data, of this version or an older one upgraded.

        Raises:
            RecordError: (``ERROR``) See ``from_json``.
        """
        source = source or cls.KIND
        version = cls._version(data, source)
        values = {k: v for k, v in data.items() if k != "schema_version"}
        for old in range(version, cls.SCHEMA_VERSION):
            if upgrade := cls.UPGRADES.get(old):
                values = upgrade(values)
        cls._check({"schema_version": cls.SCHEMA_VERSION, **values}, source)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        names = [f.name for f in fields]
        if unknown := sorted(set(values) - set(names)):
            raise cls.ERROR(f"{source} has unknown fields {unknown}; known: {sorted(names)}")
        required = {
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        if missing := sorted(required - set(values)):
            raise cls.ERROR(f"{source} is missing fields {missing}")
        decoders = _decoders(cls)
        try:
            decoded = {k: decoders[k](v) if k in decoders else v for k, v in values.items()}
        except _UnknownMemberError as e:
            raise cls.ERROR(str(e)) from None
        return cls(**decoded)

    @classmethod
    def _version(cls, data: Mapping[str, Any], source: str) -> int:
        """The record's ``schema_version``, checked: a known version, not a newer one."""
        version = data.get("schema_version", cls.UNVERSIONED_UNTIL or None)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise cls.ERROR(
                f"{source} has no valid schema_version (got {version!r}): it is not a kfnas "
                f"{cls.KIND} or it is damaged"
            )
        if version > cls.SCHEMA_VERSION:
            raise cls.ERROR(
                f"{source} has schema_version {version}, newer than {cls.SCHEMA_VERSION} that "
                f"kfnas {__version__} reads: it was written by a newer kfnas; upgrade kfnas to "
                f"read it"
            )
        return version

    @classmethod
    def _check(cls, data: Mapping[str, Any], source: str) -> None:
        """More checks of the upgraded data (with ``schema_version``); raise ``ERROR`` to refuse."""


class _UnknownMemberError(ValueError):
    """A stored enum value that the field's enum does not have."""


def _encode(value: Any) -> Any:
    """``value`` as JSON-ready data: enums as their values, tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


@functools.cache
def _decoders(cls: type) -> dict[str, Callable[[Any], Any]]:
    """Field name -> how its JSON value becomes the field's type, for tuple and enum fields."""
    hints = typing.get_type_hints(cls)
    decoders = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        unions = (typing.Union, types.UnionType)
        options = typing.get_args(hint) if typing.get_origin(hint) in unions else (hint,)
        for option in options:
            if typing.get_origin(option) is tuple:
                decoders[field.name] = _optional(tuple)
            elif isinstance(option, type) and issubclass(option, enum.Enum):
                decoders[field.name] = _optional(functools.partial(_member, option))
    return decoders


def _optional(decode: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else decode(value)


def _member(kind: type[enum.Enum], value: Any) -> enum.Enum:
    try:
        return kind(value)
    except ValueError:
        name = re.sub(r"(?<!^)(?=[A-Z])", " ", kind.__name__).lower()
        known = ", ".join(str(m.value) for m in kind)
        raise _UnknownMemberError(f"unknown {name} {value!r}; known: {known}") from None
