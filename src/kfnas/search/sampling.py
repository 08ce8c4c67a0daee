"""Random DNA and mutations made as PyGlove makes them, each DNA built as one tree.

PyGlove (0.4.5) builds a DNA node by node and re-parents each node, which clones the subtree
under it again at every level: ``pg.random_dna`` takes about 80 ms on ``spinenet`` (94 nodes),
and its ``Uniform`` mutator deep-clones the parent (about 50 ms) before it draws the new
subtree. Here the same random calls are made in the same order (so a seeded ``random.Random``
gives the same DNA and ends in the same state), the decisions are collected as PyGlove's nested
value form (an int per chosen candidate, a tuple for a choice whose candidate has decisions of its
own, a list for several decisions), and the DNA is built once from it as PyGlove decodes a compact
JSON DNA (type checks off while the nodes are made, then ``use_spec`` validates the tree):

* ``random_dna(spec, rng)``: ``pg.random_dna``, about a third of the time on ``spinenet``;
  ``RandomSearch`` is ``pg.geno.Random`` drawing through it (the ``random`` algorithm and the
  evolution algorithms' initial populations), and the controller's fallback draws use it;
* ``UniformMutator``: ``pg.evolution.mutators.Uniform``, about half the time per mutation;
* ``dna_from_numbers(numbers, spec)``: ``pg.DNA.from_numbers`` (the decisions as a flat list, in
  depth-first order), about a sixth of the time on ``spinenet``; ``ppo`` and ``local_search``
  build their proposals with it;
* ``next_dna(spec, dna)``: ``spec.next_dna(dna)`` (the grid's order: the last decision turns
  fastest, a conditional subspace starts again at its first point), computed on the decisions
  and built once; ``GridSearch`` is ``pg.geno.Sweeping`` stepping through it (the ``grid``
  algorithm).

``tests/search/test_sampling.py`` checks, for every built-in space and a space with every kind of
decision, that the DNA (metadata included) and the random state equal PyGlove's. The draw order
is PyGlove's: ``Space`` draws its elements in order; ``Choices`` draws ``random.sample`` of the
candidate indices when distinct, else one ``randint`` per choice, sorts them when sorted, then
draws each chosen candidate's space in choice order; ``Float`` draws ``uniform(min, max)``; a
mutation picks one mutable node in preorder with ``choice``, then a free candidate (a distinct
sub-choice) or a new draw of that node. A space with a custom decision point (drawn by its own
function) is left to PyGlove. To support another PyGlove version, compare its ``_random_dna``
methods and ``Uniform.mutate`` with the above and add it to ``PYGLOVE_VERSIONS``; with any other
version PyGlove's own functions run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

import pyglove as pg

__all__ = [
    "PYGLOVE_VERSIONS",
    "GridSearch",
    "RandomSearch",
    "UniformMutator",
    "dna_decisions",
    "dna_from_numbers",
    "next_dna",
    "random_dna",
]

#: The PyGlove versions whose draw order ``random_dna`` reproduces.
PYGLOVE_VERSIONS = ("0.4.5",)


_END = object()


class _CustomDecisionError(Exception):
    """A custom decision point: drawn by its own function, so by PyGlove."""


def _space(spec: pg.geno.Space, rng: random.Random) -> Any:
    values = [_draw(element, rng) for element in spec.elements]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _choice(index: int, sub: Any) -> Any:
    if sub is None:
        return index
    if isinstance(sub, tuple):  # a chain of conditional choices is one flat tuple
        return (index, *sub)
    return (index, sub)


def _choices(spec: pg.geno.Choices, rng: random.Random) -> Any:
    count = len(spec.candidates)
    if spec.distinct:
        picked = rng.sample(list(range(count)), spec.num_choices)
    else:
        picked = [rng.randint(0, count - 1) for _ in range(spec.num_choices)]
    if spec.sorted:
        picked = sorted(picked)
    values = [_choice(i, _space(spec.candidates[i], rng)) for i in picked]
    return values[0] if len(values) == 1 else values


def _draw(spec: pg.DNASpec, rng: random.Random) -> Any:
    if isinstance(spec, pg.geno.Space):
        return _space(spec, rng)
    if isinstance(spec, pg.geno.Choices):
        return _choices(spec, rng)
    if isinstance(spec, pg.geno.Float):
        return rng.uniform(spec.min_value, spec.max_value)
    raise _CustomDecisionError(type(spec).__name__)


def _build(value: Any, spec: pg.DNASpec) -> pg.DNA:
    """The DNA of a nested value form, built once and validated against ``spec``.

    As PyGlove's own compact-JSON decoding does: type checks off while the nodes are made, then
    ``use_spec`` validates the whole tree against the space.
    """
    with pg.symbolic.enable_type_check(False):
        dna = pg.DNA(value)
    return dna.use_spec(spec)


def _bind(spec: pg.DNASpec, numbers: Iterator[Any]) -> Any:
    """The nested value form of the decisions ``numbers`` yields, in ``from_numbers``' order."""
    if isinstance(spec, pg.geno.Space):
        values = [_bind(element, numbers) for element in spec.elements]
        if not values:
            return None
        return values[0] if len(values) == 1 else values
    if isinstance(spec, pg.geno.Choices):
        values = []
        for _ in range(spec.num_choices):
            index = next(numbers)
            if type(index) is not int or not 0 <= index < len(spec.candidates):
                raise _CustomDecisionError("out of range")  # PyGlove says what is wrong
            values.append(_choice(index, _bind(spec.candidates[index], numbers)))
        return values[0] if len(values) == 1 else values
    if isinstance(spec, pg.geno.Float):
        return next(numbers)
    raise _CustomDecisionError(type(spec).__name__)


def dna_from_numbers(numbers: Sequence[Any], spec: pg.DNASpec) -> pg.DNA:
    """``pg.DNA.from_numbers(numbers, spec)``: the same DNA, with ``spec`` attached, built faster.

    Numbers that do not fit the space (too few, too many, a candidate index out of range, a
    custom decision point) go to ``pg.DNA.from_numbers``, which raises its own error.

    Args:
        numbers: One decision per active decision point, depth first (``DNA.to_numbers()``).
        spec: The space's ``DNASpec``.

    Returns:
        The DNA.

    Raises:
        ValueError: The numbers are not a DNA of the space (PyGlove's message).
    """
    if pg.__version__ in PYGLOVE_VERSIONS:
        rest = iter(numbers)
        try:
            value = _bind(spec, rest)
        except (_CustomDecisionError, StopIteration):
            pass
        else:
            if value is not None and next(rest, _END) is _END:  # None: a space without decisions
                return _build(value, spec)
    return pg.DNA.from_numbers(list(numbers), spec)


# The grid's order on the decisions: a space is a list with one item per element, a choice a
# list of ``(candidate index, its space)`` pairs, one per choice ("points" below).


def _point(spec: pg.DNASpec, numbers: Iterator[Any]) -> Any:
    """The point of a DNA's decisions (``to_numbers()``), for a space of choices only."""
    if isinstance(spec, pg.geno.Space):
        return [_point(element, numbers) for element in spec.elements]
    if isinstance(spec, pg.geno.Choices):
        picked = []
        for _ in range(spec.num_choices):
            index = next(numbers)
            picked.append((index, _point(spec.candidates[index], numbers)))
        return picked
    raise _CustomDecisionError(type(spec).__name__)  # floats and custom points: PyGlove's


def _first(spec: pg.DNASpec) -> Any:
    if isinstance(spec, pg.geno.Space):
        return [_first(element) for element in spec.elements]
    if isinstance(spec, pg.geno.Choices):
        return [
            (index, _first(spec.candidates[index]))
            for index in (range(spec.num_choices) if spec.distinct else [0] * spec.num_choices)
        ]
    raise _CustomDecisionError(type(spec).__name__)


def _next(spec: pg.DNASpec, point: Any) -> Any:
    """The point after ``point`` in PyGlove's ``next_dna`` order; None after the last."""
    if isinstance(spec, pg.geno.Space):
        out = list(point)
        for i in reversed(range(len(spec.elements))):
            following = _next(spec.elements[i], out[i])
            if following is not None:
                out[i] = following
                return out
            out[i] = _first(spec.elements[i])
        return None
    return _next_choices(spec, point)


def _next_choices(spec: pg.geno.Choices, point: list[tuple[int, Any]]) -> Any:
    """``Choices._next_dna``: the last choice's subspace, then its value, then the one before."""
    count = len(spec.candidates)
    for at in reversed(range(spec.num_choices)):
        index, sub = point[at]
        prior = [value for value, _ in point[:at]]
        following = _next(spec.candidates[index], sub)
        if following is not None:
            new = (index, following)
        else:
            value = index + 1
            if spec.distinct:
                free = set(range(value, count)) - set(prior)
                value = min(free) if free else count
            if value >= count:
                continue
            new = (value, _first(spec.candidates[value]))
        rest = _least_remaining(spec, [*prior, new[0]])
        if rest is not None:
            return [*point[:at], new, *((v, _first(spec.candidates[v])) for v in rest)]
    return None


def _least_remaining(spec: pg.geno.Choices, prior: list[int]) -> list[int] | None:
    """The smallest values the choices after ``prior`` can take, or None if there are none."""
    start = prior[-1] if spec.sorted and prior else 0
    free = set(range(start, len(spec.candidates)))
    if spec.distinct:
        free -= set(prior)
    out = []
    for _ in range(spec.num_choices - len(prior)):
        if not free:
            return None
        value = min(free)
        if spec.distinct:
            free.remove(value)
        out.append(value)
    return out


def _point_form(spec: pg.DNASpec, point: Any) -> Any:
    """A point's nested value form (what ``pg.DNA(value)`` takes)."""
    if isinstance(spec, pg.geno.Space):
        values = [_point_form(e, p) for e, p in zip(spec.elements, point, strict=True)]
        if not values:
            return None
        return values[0] if len(values) == 1 else values
    items = [_choice(i, _point_form(spec.candidates[i], sub)) for i, sub in point]
    return items[0] if len(items) == 1 else items


def dna_decisions(dna: pg.DNA) -> list[Any]:
    """``dna.to_numbers()`` with one walk of the tree and no symbolic lookups (much faster).

    Reads each node's ``value`` and ``children`` from its ``sym_init_args``, calling the property's
    getter directly (a ``pg.Object``'s ``__getattribute__`` costs as much as the rest of the walk)
    and with ``dict``'s own ``__getitem__``, which skips the symbolic dict's resolution of inferred
    values (a DNA holds none).
    """
    init_args = pg.DNA.sym_init_args.fget
    get = dict.__getitem__
    out: list[Any] = []
    stack = [dna]
    while stack:
        args = init_args(stack.pop())
        value = get(args, "value")
        if value is not None:
            out.append(value)
        children = get(args, "children")
        if children:
            stack.extend(reversed(children))
    return out


def next_dna(spec: pg.DNASpec, dna: pg.DNA | None) -> pg.DNA | None:
    """``spec.next_dna(dna)``: the same DNA (or None after the last), built faster.

    Args:
        spec: The space's ``DNASpec``.
        dna: A DNA of the space, or None for the first.

    Returns:
        The next DNA in PyGlove's grid order, with ``spec`` attached; None after the last. A
        space with floats or custom decision points goes to ``spec.next_dna``.
    """
    if pg.__version__ in PYGLOVE_VERSIONS:
        try:
            point = _first(spec)
            if dna is not None:
                point = _next(spec, _point(spec, iter(dna_decisions(dna))))
        except (_CustomDecisionError, IndexError, StopIteration):
            pass  # PyGlove's: it raises what is wrong, if anything
        else:
            if point is None:
                return None
            value = _point_form(spec, point)
            if value is not None:
                return _build(value, spec)
    return spec.next_dna(dna)


class GridSearch(pg.geno.Sweeping):
    """``pg.geno.Sweeping`` (the grid) stepping through ``next_dna``."""

    def _propose(self) -> pg.DNA:
        following = next_dna(self.dna_spec, self._last_proposed_dna)
        if following is None:
            raise StopIteration()
        self._last_proposed_dna = following
        return following


def random_dna(spec: pg.DNASpec, rng: random.Random) -> pg.DNA:
    """``pg.random_dna(spec, rng)``: the same DNA, with ``spec`` attached, built faster.

    Args:
        spec: The space's ``DNASpec``.
        rng: The random generator; it advances exactly as PyGlove's draw advances it.

    Returns:
        A random DNA of the space.
    """
    if pg.__version__ not in PYGLOVE_VERSIONS:
        return pg.random_dna(spec, rng)
    state = rng.getstate()
    try:
        value = _draw(spec, rng)
    except _CustomDecisionError:
        rng.setstate(state)
        return pg.random_dna(spec, rng)
    return _build(value, spec)


class RandomSearch(pg.geno.Random):
    """``pg.geno.Random`` whose draws (proposals and replays) go through ``random_dna``."""

    def _propose(self) -> pg.DNA:
        return random_dna(self.dna_spec, self._random)

    def _replay(self, trial_id: int, dna: pg.DNA, reward: Any) -> None:
        del trial_id, dna, reward
        if self.seed is not None:  # the same sequence as an uninterrupted run, as PyGlove's
            random_dna(self.dna_spec, self._random)


def _has_custom(spec: pg.DNASpec) -> bool:
    if isinstance(spec, pg.geno.Space):
        return any(_has_custom(element) for element in spec.elements)
    if isinstance(spec, pg.geno.Choices):
        return any(_has_custom(candidate) for candidate in spec.candidates)
    return not isinstance(spec, pg.geno.Float)


def _form(node: pg.DNA, swap: pg.DNA, new: Any, sort: bool) -> Any:
    """``node``'s nested value form, with the subtree ``swap`` replaced by the form ``new``."""
    if node is swap:
        return new
    items = [_form(child, swap, new, sort) for child in node.children]
    if sort and any(child is swap for child in node.children):
        items.sort(key=lambda item: item[0] if isinstance(item, tuple) else item)
    if node.value is None:
        return items if items else None
    if not items:
        return node.value
    return _choice(node.value, items[0] if len(items) == 1 else items)


class UniformMutator(pg.evolution.mutators.Uniform):
    """PyGlove's ``Uniform`` mutator: the same mutation from the same random state, built once.

    ``Uniform.mutate`` deep-clones the parent (about 50 ms on ``spinenet``), draws the new
    subtree node by node and re-parents it. This makes the same random calls (the node to mutate,
    then its new value: a distinct candidate, or a draw of the node's decision as
    ``random_dna`` draws it) and builds the child once from the parent's decisions with the new
    subtree in place; the child keeps only the metadata a clone keeps. The DNA it returns equals
    ``Uniform``'s (``tests/search/test_sampling.py`` mutates chains of DNA of every built-in space
    both ways). A DNA without a spec, a space with custom decision points, nodes below the root
    that carry metadata, or another PyGlove version go to ``Uniform.mutate`` itself.
    """

    def mutate(self, dna: pg.DNA, step: int = 0) -> pg.DNA:
        """The mutated copy of ``dna`` (``dna`` is left as it is)."""
        spec = dna.spec
        if pg.__version__ not in PYGLOVE_VERSIONS or spec is None or _has_custom(spec):
            return super().mutate(dna, step)
        # The mutable nodes with their parents, in preorder: the list PyGlove picks one from.
        nodes: list[tuple[pg.DNA, pg.DNA | None]] = []
        stack: list[tuple[pg.DNA, pg.DNA | None]] = [(dna, None)]
        while stack:
            node, parent = stack.pop()
            if parent is not None and (node.metadata or node.userdata):
                return super().mutate(dna, step)
            if self._is_mutable_node(node):
                nodes.append((node, parent))
            stack.extend((child, node) for child in reversed(node.children))
        if not nodes:
            raise RuntimeError(f"Immutable DNA: {dna!r}")
        node, parent = self._random.choice(nodes)
        if parent is None:
            return random_dna(node.spec, self._random)
        choices = node.spec
        if isinstance(choices, pg.geno.Choices) and choices.is_subchoice and choices.distinct:
            free = set(range(len(choices.candidates))) - {c.value for c in parent.children}
            if not free:
                return self._copy(dna, _form(dna, None, None, False))
            value = self._random.choice(list(free))
            new = _choice(value, _space(choices.candidates[value], self._random))
        else:
            new = _draw(node.spec, self._random)
        sort = isinstance(choices, pg.geno.Choices) and choices.is_subchoice and choices.sorted
        return self._copy(dna, _form(dna, node, new, sort))

    @staticmethod
    def _copy(dna: pg.DNA, value: Any) -> pg.DNA:
        with pg.symbolic.enable_type_check(False):
            child = pg.DNA(value)
        child.use_spec(dna.spec)
        keys = dna._cloneable_metadata_keys
        for key, item in dna.metadata.items():
            if key in keys:
                child.set_metadata(key, item, cloneable=True)
        for key in dna._cloneable_userdata_keys:
            child.set_userdata(key, dna.userdata[key], cloneable=True)
        return child
