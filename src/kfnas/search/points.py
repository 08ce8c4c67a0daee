"""A space's decisions as plain Python values ("points"), for work that needs no DNA object.

Reading a PyGlove ``DNASpec``'s attributes goes through its symbolic machinery (microseconds
each), and building a DNA costs about 25 ms on ``spinenet``. The grid's stepping, the decisions of
a stored DNA, and mutations of an evolution's stand-in parents (``kfnas.search.deferred``) work
here on plain values instead, against a ``plan`` of the spec compiled once per spec:

* a point of a ``Space`` is a list with one item per element; of a ``Choices``, a list of
  ``(candidate index, point of that candidate's space)`` pairs, one per choice; of a ``Float``,
  its value;
* ``checked_point(spec, numbers)``: the point of a DNA's decisions (``DNA.to_numbers()``),
  checked as ``DNA.use_spec`` checks a DNA; ``point_form`` turns a point into the nested value
  form ``pg.DNA(value)`` takes;
* ``first``/``following``: PyGlove's ``next_dna`` order (the grid);
* ``sites``: the nodes PyGlove's ``Uniform`` mutator picks from, in its order and with the spec
  PyGlove attaches to each; ``draw`` makes ``pg.random_dna``'s random calls in its order.

``tests/search/test_sampling.py`` checks every one of these against PyGlove on every built-in
space and on a space with every kind of decision. To support a new kind of decision point, add a
node class and its case to each function (custom decision points are PyGlove's: they raise
``NotPlain``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Iterator
from typing import Any

import pyglove as pg

__all__ = [
    "PYGLOVE_VERSIONS",
    "ChoicesNode",
    "FloatNode",
    "NotPlain",
    "Site",
    "SpaceNode",
    "checked_point",
    "choice_form",
    "copy_point",
    "draw",
    "first",
    "following",
    "plain",
    "plan",
    "point_form",
    "sites",
]

#: The PyGlove versions whose DNA layout, ``next_dna`` order, mutation sites and draw order these
#: functions reproduce (``kfnas.search.sampling`` uses PyGlove's own functions with any other).
PYGLOVE_VERSIONS = ("0.4.5",)

_END = object()


class NotPlain(Exception):  # noqa: N818 (a signal to hand the work to PyGlove, not a failure)
    """A decision point these functions leave to PyGlove (custom ones; floats for the grid)."""


@dataclasses.dataclass(frozen=True, eq=False)
class SpaceNode:
    """A ``pg.geno.Space``: its elements' nodes."""

    spec: pg.DNASpec
    elements: tuple[Node, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class ChoicesNode:
    """A ``pg.geno.Choices`` (or one choice of a multi-choice: ``subchoice``).

    Attributes:
        choices: The nodes of its choices (each with its own copy of the candidates, as PyGlove
            attaches them); ``(self,)`` for a single choice.
    """

    spec: pg.DNASpec
    name: str
    num_choices: int
    distinct: bool
    sorted: bool
    subchoice: bool
    candidates: tuple[SpaceNode, ...]
    choices: tuple[ChoicesNode, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class FloatNode:
    """A ``pg.geno.Float``."""

    spec: pg.DNASpec
    name: str
    low: float
    high: float


@dataclasses.dataclass(frozen=True, eq=False)
class CustomNode:
    """A decision point drawn by its own function: PyGlove's."""

    spec: pg.DNASpec


Node = SpaceNode | ChoicesNode | FloatNode | CustomNode


def _compile(spec: pg.DNASpec) -> Node:
    if isinstance(spec, pg.geno.Space):
        return SpaceNode(spec, tuple(_compile(element) for element in spec.elements))
    if isinstance(spec, pg.geno.Choices):
        return _compile_choices(spec)
    if isinstance(spec, pg.geno.Float):
        return FloatNode(spec, str(spec.id), spec.min_value, spec.max_value)
    return CustomNode(spec)


def _compile_choices(spec: pg.geno.Choices) -> ChoicesNode:
    candidates = tuple(_compile(candidate) for candidate in spec.candidates)
    common = dict(
        name=str(spec.id),
        num_choices=spec.num_choices,
        distinct=bool(spec.distinct),
        sorted=bool(spec.sorted),
        subchoice=spec.is_subchoice,
        candidates=candidates,
    )
    if spec.num_choices == 1:
        node = ChoicesNode(spec, choices=(), **common)  # type: ignore[arg-type]
        object.__setattr__(node, "choices", (node,))
        return node
    choices = tuple(_compile_choices(spec.subchoice(j)) for j in range(spec.num_choices))
    return ChoicesNode(spec, choices=choices, **common)  # type: ignore[arg-type]


# Specs are built once per space and process (``kfnas.spaces``): the spec is kept with its plan
# (and whether it is plain) so that an id is never reused for another spec while it is cached.
_PLANS: dict[int, tuple[pg.DNASpec, Node, bool]] = {}


def _cached(spec: pg.DNASpec) -> tuple[pg.DNASpec, Node, bool]:
    cached = _PLANS.get(id(spec))
    if cached is None or cached[0] is not spec:
        node = _compile(spec)
        cached = (spec, node, _plain(node))
        _PLANS[id(spec)] = cached
    return cached


def plan(spec: pg.DNASpec) -> Node:
    """The compiled plan of ``spec`` (cached per spec object)."""
    return _cached(spec)[1]


def _plain(node: Node) -> bool:
    if isinstance(node, SpaceNode):
        return all(map(_plain, node.elements))
    if isinstance(node, ChoicesNode):
        return all(map(_plain, node.candidates))
    return isinstance(node, FloatNode)


def plain(spec: pg.DNASpec) -> bool:
    """Whether ``spec`` has choices and floats only (no custom decision point)."""
    return _cached(spec)[2]


def _point(node: Node, numbers: Iterator[Any], floats: bool) -> Any:
    if isinstance(node, SpaceNode):
        return [_point(element, numbers, floats) for element in node.elements]
    if isinstance(node, ChoicesNode):
        picked = []
        count = len(node.candidates)
        for _ in range(node.num_choices):
            index = next(numbers, None)
            if type(index) is not int or not 0 <= index < count:
                raise ValueError(
                    f"decision {node.name}: {index!r} is not one of {count} candidates"
                )
            picked.append((index, _point(node.candidates[index], numbers, floats)))
        if node.num_choices > 1:
            values = [index for index, _ in picked]
            if node.distinct and len(set(values)) != len(values):
                raise ValueError(f"decision {node.name}: the choices {values} are not distinct")
            if node.sorted and sorted(values) != values:
                raise ValueError(f"decision {node.name}: the choices {values} are not sorted")
        return picked
    if floats and isinstance(node, FloatNode):
        value = next(numbers, None)
        if not isinstance(value, float) or not node.low <= value <= node.high:
            raise ValueError(
                f"decision {node.name}: {value!r} is not a float in [{node.low}, {node.high}]"
            )
        return value
    raise NotPlain(type(node.spec).__name__)


def checked_point(spec: pg.DNASpec, numbers: Iterable[Any], *, floats: bool = True) -> Any:
    """The point of a DNA's decisions (``DNA.to_numbers()``), checked as ``use_spec`` checks.

    Raises:
        ValueError: A decision out of range or of the wrong type, multi-choices that are not
            distinct or sorted as the space says, too few or too many decisions.
        NotPlain: A custom decision point (or a float, unless ``floats``).
    """
    rest = iter(numbers)
    point = _point(plan(spec), rest, floats)
    if next(rest, _END) is not _END:
        raise ValueError("the DNA has more decisions than the space")
    return point


def copy_point(point: Any) -> Any:
    """A copy of ``point`` that shares no list with it (``copy.deepcopy``, a few times faster)."""
    if isinstance(point, list):
        return [copy_point(item) for item in point]
    if isinstance(point, tuple):
        return tuple(copy_point(item) for item in point)
    return point


def choice_form(index: int, sub: Any) -> Any:
    """A choice's value form: its index, with its candidate's decisions as PyGlove nests them."""
    if sub is None:
        return index
    if isinstance(sub, tuple):  # a chain of conditional choices is one flat tuple
        return (index, *sub)
    return (index, sub)


def _form(node: Node, point: Any) -> Any:
    if isinstance(node, FloatNode):
        return point
    if isinstance(node, SpaceNode):
        values = [_form(e, p) for e, p in zip(node.elements, point, strict=True)]
        if not values:
            return None
        return values[0] if len(values) == 1 else values
    assert isinstance(node, ChoicesNode)
    items = [choice_form(i, _form(node.candidates[i], sub)) for i, sub in point]
    return items[0] if len(items) == 1 else items


def point_form(spec: pg.DNASpec, point: Any) -> Any:
    """A point's nested value form (what ``pg.DNA(value)`` takes)."""
    return _form(plan(spec), point)


def _first(node: Node) -> Any:
    if isinstance(node, SpaceNode):
        return [_first(element) for element in node.elements]
    if isinstance(node, ChoicesNode):
        indices = range(node.num_choices) if node.distinct else [0] * node.num_choices
        return [(index, _first(node.candidates[index])) for index in indices]
    raise NotPlain(type(node.spec).__name__)


def first(spec: pg.DNASpec) -> Any:
    """The first point in PyGlove's ``next_dna`` order (``NotPlain`` for floats, custom)."""
    return _first(plan(spec))


def _following(node: Node, point: Any) -> Any:
    if isinstance(node, SpaceNode):
        out = list(point)
        for i in reversed(range(len(node.elements))):
            after = _following(node.elements[i], out[i])
            if after is not None:
                out[i] = after
                return out
            out[i] = _first(node.elements[i])
        return None
    assert isinstance(node, ChoicesNode)
    return _following_choices(node, point)


def _following_choices(node: ChoicesNode, point: list[tuple[int, Any]]) -> Any:
    """``Choices._next_dna``: the last choice's subspace, then its value, then the one before."""
    count = len(node.candidates)
    for at in reversed(range(node.num_choices)):
        index, sub = point[at]
        prior = [value for value, _ in point[:at]]
        after = _following(node.candidates[index], sub)
        if after is not None:
            new = (index, after)
        else:
            value = index + 1
            if node.distinct:
                free = set(range(value, count)) - set(prior)
                value = min(free) if free else count
            if value >= count:
                continue
            new = (value, _first(node.candidates[value]))
        rest = _least_remaining(node, [*prior, new[0]])
        if rest is not None:
            return [*point[:at], new, *((v, _first(node.candidates[v])) for v in rest)]
    return None


def _least_remaining(node: ChoicesNode, prior: list[int]) -> list[int] | None:
    """The smallest values the choices after ``prior`` can take, or None if there are none."""
    start = prior[-1] if node.sorted and prior else 0
    free = set(range(start, len(node.candidates)))
    if node.distinct:
        free -= set(prior)
    out = []
    for _ in range(node.num_choices - len(prior)):
        if not free:
            return None
        value = min(free)
        if node.distinct:
            free.remove(value)
        out.append(value)
    return out


def following(spec: pg.DNASpec, point: Any) -> Any:
    """The point after ``point`` in PyGlove's ``next_dna`` order; None after the last."""
    return _following(plan(spec), point)


@dataclasses.dataclass
class Site:
    """A node of a DNA that a mutation can change, in the point layout.

    Attributes:
        node: The plan of the spec PyGlove attaches to the node.
        holder: The list holding the node's point (a space's elements, or a multi-choice's
            ``(index, subspace)`` pairs for a node that is one of its choices).
        index: The node's position in ``holder``.
    """

    node: ChoicesNode | FloatNode
    holder: list[Any]
    index: int


def sites(spec: pg.DNASpec, point: list[Any]) -> list[Site]:
    """The mutable nodes of the DNA of ``point``, in PyGlove's preorder.

    ``spec`` must be a space of several elements (its root node is a space, which is not
    mutable); ``point`` is changed in place through the sites' holders.
    """
    root = plan(spec)
    assert isinstance(root, SpaceNode) and len(root.elements) > 1, "a space of several elements"
    out: list[Site] = []
    _space_sites(root, point, out)
    return out


def _space_sites(space: SpaceNode, point: list[Any], out: list[Site]) -> None:
    for i, element in enumerate(space.elements):
        if isinstance(element, CustomNode):
            raise NotPlain(type(element.spec).__name__)
        out.append(Site(element, point, i))  # a choice, a multi-choice's container, a float
        if isinstance(element, ChoicesNode):
            if element.num_choices == 1:
                index, sub = point[i][0]
                _candidate_sites(element.candidates[index], sub, out)
            else:
                _choice_sites(element, point[i], out)


def _choice_sites(node: ChoicesNode, pairs: list[Any], out: list[Site]) -> None:
    """The nodes of a multi-choice's choices: each choice, then its candidate's subtree."""
    for j, (index, sub) in enumerate(pairs):
        choice = node.choices[j]
        out.append(Site(choice, pairs, j))
        _candidate_sites(choice.candidates[index], sub, out)


def _candidate_sites(space: SpaceNode, point: list[Any], out: list[Site]) -> None:
    """A chosen candidate's nodes: a single multi-choice hangs its choices on the choice's node."""
    only = space.elements[0] if len(space.elements) == 1 else None
    if isinstance(only, ChoicesNode) and only.num_choices > 1:
        _choice_sites(only, point[0], out)
    else:
        _space_sites(space, point, out)


def draw(node: Node, rng: random.Random) -> Any:
    """A random point of ``node``: ``pg.random_dna``'s random calls, in its order."""
    if isinstance(node, SpaceNode):
        return [draw(element, rng) for element in node.elements]
    if isinstance(node, ChoicesNode):
        count = len(node.candidates)
        if node.distinct:
            picked = rng.sample(list(range(count)), node.num_choices)
        else:
            picked = [rng.randint(0, count - 1) for _ in range(node.num_choices)]
        if node.sorted:
            picked = sorted(picked)
        return [(i, draw(node.candidates[i], rng)) for i in picked]
    if isinstance(node, FloatNode):
        return rng.uniform(node.low, node.high)
    raise NotPlain(type(node.spec).__name__)
