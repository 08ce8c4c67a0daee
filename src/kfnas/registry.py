"""One small generic registry, used for search spaces, algorithms and rewards.

A registry maps lower_snake names (the values users write in a spec) to objects. Built-ins are
listed in a *lazy table* of ``"name": "module.path:attribute"`` strings, resolved on first ``get``;
nothing is registered as a side effect of importing a module, so listing names is cheap and never
imports TensorFlow.

To extend: call ``REGISTRY.register("my_name")`` as a decorator on the object, or
``REGISTRY.register("my_name", obj)``; to add a built-in, add one line to the lazy table that the
registry is created with (see ``kfnas.spaces``, ``kfnas.search.algorithms``,
``kfnas.search.rewards``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar, overload

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate name; the message lists what is known."""

    def __str__(self) -> str:  # KeyError would quote the message.
        return str(self.args[0])


def load_object(path: str) -> object:
    """Imports ``"package.module:attribute"`` and returns the attribute.

    Args:
        path: A ``module:attribute`` reference; the attribute may be dotted.

    Returns:
        The object found.

    Raises:
        ImportError: The module cannot be imported or has no such attribute (the message says
        which).
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ImportError(f"{path!r} is not a 'package.module:attribute' reference")
    module = importlib.import_module(module_name)
    obj: object = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ImportError(
                f"module {module_name!r} has no attribute {attribute!r} (from {path!r})"
            )
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Maps names to objects of one kind, with lazily imported built-ins.

    Args:
        kind: What the registry holds, used in messages ("search space", "algorithm", ...).
        builtins: Lazy table of built-in names to ``"module:attribute"`` references.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str] | None = None):
        self.kind = kind
        self._lazy: dict[str, str] = dict(builtins or {})
        self._loaded: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None) -> T | Callable[[T], T]:
        """Registers ``obj`` under ``name``; without ``obj``, returns a decorator.

        Raises:
            RegistryError: ``name`` is already registered (built-in or not).
        """

        def add(value: T) -> T:
            if name in self._lazy or name in self._loaded:
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered; pick another name or call "
                    f"unregister({name!r}) first"
                )
            self._loaded[name] = value
            return value

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Removes a registered name (tests use it to clean up after themselves)."""
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)

    def get(self, name: str) -> T:
        """Returns the object registered as ``name``, importing a built-in on first use.

        Raises:
            RegistryError: No such name; the message lists the known names and the closest match.
        """
        if name in self._loaded:
            return self._loaded[name]
        if name in self._lazy:
            value = load_object(self._lazy[name])
            self._loaded[name] = value  # type: ignore[assignment]
            return value  # type: ignore[return-value]
        raise RegistryError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        """The message for an unknown ``name``: the known names and the closest match."""
        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return (
            f"unknown {self.kind} {name!r}{hint}. Known {self.kind}s: {', '.join(known) or 'none'}"
        )

    def names(self) -> list[str]:
        """All registered names, sorted, without importing anything."""
        return sorted({*self._lazy, *self._loaded})

    def __contains__(self, name: object) -> bool:
        return name in self._lazy or name in self._loaded
