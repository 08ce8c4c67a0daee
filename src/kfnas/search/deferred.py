"""Stand-in DNA: a stored DNA's metadata now, its decision tree only if something needs it.

Building a PyGlove DNA costs about 25 ms on ``spinenet`` (one symbolic object per node), however
it is built. The stateless controller rebuilds an evolution's population and replays the trials
since its snapshot on every proposal, but evolution reads only the metadata of most of those DNA
(fitness, generation, proposal id) and mutates a few of them. So the evolution snapshot adapter
and the replay hand the algorithm *deferred* DNA: a real ``pg.DNA`` root node without children
that carries the stored metadata (set as ``DNA.from_json`` sets it) and, in its user data (kept
by PyGlove's clones), the stored compact value, the decisions checked against the space, and the
space's ``DNASpec``:

* ``deferred_dna(tree, spec)``: the stand-in for a stored DNA (``pg.to_json_str``'s layout, as
  ``plain_tree`` accepts it); raises ``ValueError`` when the decisions are not a point of the
  space, as ``use_spec`` would;
* ``json_tree(dna)``: what ``dna.to_json()`` gives for the DNA it stands for (snapshots);
* ``materialize(dna)``: the DNA it stands for, built (``recover_generator``'s inspection);
* ``dna_key(dna)``: the controller's novelty key of any DNA;
* ``known_keys(keys)``: while proposing, the mutator (``kfnas.search.sampling.UniformMutator``)
  returns a deferred child instead of building a DNA whose key is in ``keys``: the controller
  drops such a repeat unseen, so building it would be wasted.

Only the evolution adapter and the mutator create deferred DNA, and only for spaces without
custom decision points; everything that reads a DNA's tree must go through ``materialize`` or
``payload`` (``kfnas.search.sampling.dna_decisions`` does). To defer another algorithm's DNA,
check first that it reads nothing but metadata from the DNA it keeps.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import json
from collections.abc import Container, Iterator, Mapping
from typing import Any

import pyglove as pg

from kfnas.search import points
from kfnas.spaces.base import type_names

__all__ = [
    "DEFERRED",
    "Deferred",
    "deferred_dna",
    "dna_key",
    "is_deferred",
    "json_tree",
    "known_keys",
    "materialize",
    "plain_tree",
    "supports",
]

#: The user-data key of a deferred DNA's payload (cloneable: PyGlove's clones keep it).
DEFERRED = "kfnas_deferred"
#: The user-data key of the novelty key a DNA was built with (``kfnas.search.sampling`` sets it
#: on every DNA it builds; not cloneable, so a changed copy never carries it).
KEY = "kfnas_key"

TUPLE = "__tuple__"
_TOP_KEYS = frozenset({"_type", "format", "value", "metadata", "_cloneable_metadata_keys"})
_KNOWN: contextvars.ContextVar[Container[str] | None] = contextvars.ContextVar(
    "kfnas_known_keys", default=None
)


@dataclasses.dataclass(frozen=True)
class Deferred:
    """What a deferred DNA stands for.

    Attributes:
        value: The compact value as stored (JSON: tuples written as ``["__tuple__", ...]``).
        key: Its novelty key (``dna_key`` of the built DNA).
        point: The decisions as a point (``kfnas.search.points``), checked; None for a repeat
            the mutator returned (``known_keys``), whose decisions nothing reads
            (``Deferred.decisions_point`` computes them).
        spec: The space's ``DNASpec``.
    """

    value: Any
    key: str
    point: Any
    spec: pg.DNASpec

    def decisions_point(self) -> Any:
        """The point of the decisions (checked); not shared: the caller may change it."""
        if self.point is None:
            return points.checked_point(self.spec, _flatten(self.value))
        return points.copy_point(self.point)


@functools.cache
def _dna_type_names() -> frozenset[str]:
    return type_names([pg.DNA])


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compact_value(value: Any) -> bool:
    """Whether ``value`` is a compact DNA value ``DNA.parse`` decodes (no other types)."""
    if value is None or _number(value) or isinstance(value, str):
        return True
    if not isinstance(value, list):
        return False
    if value and value[0] == TUPLE:
        items = value[1:]
        return len(items) >= 2 and _number(items[0]) and all(map(_compact_value, items[1:]))
    return not (value and isinstance(value[0], str) and value[0].startswith("__")) and all(
        map(_compact_value, value)
    )


def _plain_json(value: Any) -> bool:
    """Whether metadata is plain JSON: no ``_type`` or other special keys, tuples allowed."""
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and not k.startswith("_") and _plain_json(v)
            for k, v in value.items()
        )
    if isinstance(value, list):
        if value and isinstance(value[0], str) and value[0].startswith("__"):
            return value[0] == TUPLE and all(map(_plain_json, value[1:]))
        return all(map(_plain_json, value))
    return value is None or isinstance(value, bool | int | float | str)


def plain_tree(tree: Any) -> bool:
    """Whether ``tree`` is a DNA in the layout ``pg.to_json_str`` writes, and nothing else.

    Such a tree holds only the DNA type, ``format: compact``, a ``value`` of nested numbers and
    strings (lists, and tuples written as ``["__tuple__", ...]`` with a number first), plain JSON
    ``metadata`` and the list of cloneable metadata keys: ``load_dna`` accepts it and
    ``DNA.parse`` decodes it. Anything else must be decoded by ``load_dna``, which refuses what
    must be refused.
    """
    if not isinstance(tree, dict) or set(tree) - _TOP_KEYS:
        return False
    if tree.get("_type") not in _dna_type_names() or tree.get("format") != "compact":
        return False
    if "value" not in tree or not _compact_value(tree["value"]):
        return False
    if not isinstance(tree.get("metadata", {}), dict) or not _plain_json(tree.get("metadata", {})):
        return False
    keys = tree.get("_cloneable_metadata_keys", [])
    return isinstance(keys, list) and all(isinstance(k, str) for k in keys)


def supports(spec: pg.DNASpec) -> bool:
    """Whether DNA of ``spec`` can be deferred: choices and floats only, under a space of several.

    A space of a single decision collapses its root into that decision, which the mutator's
    point layout does not model; such spaces are small, so their DNA are simply built.
    """
    root = points.plan(spec)  # compiled once per spec, with whether it is plain
    return (
        pg.__version__ in points.PYGLOVE_VERSIONS
        and isinstance(root, points.SpaceNode)
        and len(root.elements) > 1
        and points.plain(spec)
    )


def _from_json_value(value: Any) -> Any:
    """A compact value as ``pg.DNA`` takes it (``["__tuple__", ...]`` back to tuples)."""
    if isinstance(value, list):
        if value and value[0] == TUPLE:
            return tuple(_from_json_value(v) for v in value[1:])
        return [_from_json_value(v) for v in value]
    return value


def to_json_value(value: Any) -> Any:
    """A value form as ``pg.to_json`` writes it (tuples as ``["__tuple__", ...]``)."""
    if isinstance(value, tuple):
        return [TUPLE, *(to_json_value(v) for v in value)]
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    return value


def key_of_value(json_value: Any) -> str:
    """The novelty key of a compact value in its JSON form (what ``dna_key`` gives)."""
    return json.dumps(json_value)


def _set_metadata(dna: pg.DNA, tree: Mapping[str, Any]) -> None:
    """The stored metadata and cloneable keys, set as ``DNA.from_json`` sets them."""
    if "metadata" in tree:
        with pg.symbolic.enable_type_check(False):
            dna.rebind(
                metadata=pg.from_json(tree["metadata"]),
                raise_on_no_change=False,
                skip_notification=True,
            )
    if keys := tree.get("_cloneable_metadata_keys"):
        dna._cloneable_metadata_keys = set(keys)


def deferred_dna(tree: Mapping[str, Any], spec: pg.DNASpec) -> pg.DNA:
    """The stand-in for the stored DNA ``tree`` of the space ``spec`` (see the module).

    Args:
        tree: A stored DNA's JSON tree, as ``plain_tree`` accepts it.
        spec: The space's ``DNASpec``; ``supports(spec)`` must hold.

    Raises:
        ValueError: The decisions are not a point of the space (the message says which).
    """
    value = tree["value"]
    point = points.checked_point(spec, _flatten(value))
    return _stand_in(Deferred(value, key_of_value(value), point, spec), tree)


def _stand_in(payload: Deferred, tree: Mapping[str, Any]) -> pg.DNA:
    with pg.symbolic.enable_type_check(False):
        dna = pg.DNA(None)
    _set_metadata(dna, tree)
    dna.set_userdata(DEFERRED, payload, cloneable=True)
    return dna


def deferred_child(payload: Deferred, parent: pg.DNA) -> pg.DNA:
    """A deferred DNA for a mutation's child, with the metadata a clone of ``parent`` keeps."""
    child = _stand_in(payload, {})
    keys = parent._cloneable_metadata_keys
    for key, item in parent.metadata.items():
        if key in keys:
            child.set_metadata(key, item, cloneable=True)
    for key in parent._cloneable_userdata_keys:
        if key != DEFERRED:
            child.set_userdata(key, parent.userdata[key], cloneable=True)
    return child


def _flatten(value: Any) -> Iterator[Any]:
    """The decisions of a compact value in its JSON form, depth first."""
    if isinstance(value, list):
        for item in value[1:] if value and value[0] == TUPLE else value:
            yield from _flatten(item)
    elif value is not None:
        yield value


def decisions_of_value(json_value: Any) -> list[Any]:
    """``DNA.to_numbers()`` of the DNA a compact value (JSON form) stands for."""
    return list(_flatten(json_value))


def payload(dna: pg.DNA) -> Deferred | None:
    """The payload of a deferred DNA; None for a built one."""
    found = dna._userdata.get(DEFERRED)
    return found if isinstance(found, Deferred) else None


def is_deferred(dna: pg.DNA) -> bool:
    """Whether ``dna`` is a stand-in (see the module)."""
    return payload(dna) is not None


def json_tree(dna: pg.DNA) -> dict[str, Any]:
    """``dna.to_json()``, also for a deferred DNA (its stored value, its current metadata)."""
    found = payload(dna)
    if found is None:
        return dna.to_json()
    tree: dict[str, Any] = {
        pg.JSONConvertible.TYPE_NAME_KEY: pg.DNA.__serialization_key__,
        "format": "compact",
        "value": found.value,
    }
    if dna.metadata:
        tree["metadata"] = pg.to_json(dna.metadata)
    if dna._cloneable_metadata_keys:
        tree["_cloneable_metadata_keys"] = list(dna._cloneable_metadata_keys)
    return tree


def materialize(dna: pg.DNA) -> pg.DNA:
    """The DNA a deferred one stands for, built with its spec and metadata; others as they are."""
    found = payload(dna)
    if found is None:
        return dna
    with pg.symbolic.enable_type_check(False):
        built = pg.DNA(_from_json_value(found.value))
    built.use_spec(found.spec)
    _set_metadata(built, json_tree(dna))
    for key in dna._cloneable_userdata_keys:
        if key != DEFERRED:
            built.set_userdata(key, dna.userdata[key], cloneable=True)
    return built


def dna_key(dna: pg.DNA) -> str:
    """The DNA's decisions without metadata, as text: equal keys, equal architectures.

    The ``value`` that ``pg.to_json_str(dna)`` writes, as JSON text: the same text that
    ``HistoryEntry.from_json`` reads from a stored DNA without decoding it.
    """
    found = payload(dna)
    if found is not None:
        return found.key
    if isinstance(known := dna._userdata.get(KEY), str):
        return known
    return key_of_value(pg.to_json(dna.sym_jsonify(compact=True, type_info=False)))


@contextlib.contextmanager
def known_keys(keys: Container[str]) -> Iterator[None]:
    """While inside, a mutation whose child's key is in ``keys`` returns a deferred child."""
    token = _KNOWN.set(keys)
    try:
        yield
    finally:
        _KNOWN.reset(token)


def known() -> Container[str] | None:
    """The keys ``known_keys`` set, or None outside it."""
    return _KNOWN.get()
