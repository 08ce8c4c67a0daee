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
  a deferred parent (``kfnas.search.deferred``) is mutated on its decisions
  (``kfnas.search.points``) without building it, and inside ``deferred.known_keys`` a child
  that repeats a known architecture is returned deferred instead of built;
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
from collections.abc import Sequence
from typing import Any

import pyglove as pg

from kfnas.search import deferred, points

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
PYGLOVE_VERSIONS = points.PYGLOVE_VERSIONS


def _draw(spec: pg.DNASpec, rng: random.Random) -> Any:
    """A random value form of ``spec``, drawn as ``pg.random_dna`` draws (``points.draw``)."""
    return points.point_form(spec, points.draw(points.plan(spec), rng))


def _build(value: Any, spec: pg.DNASpec) -> pg.DNA:
    """The DNA of a nested value form, built once and validated against ``spec``.

    As PyGlove's own compact-JSON decoding does: type checks off while the nodes are made, then
    ``use_spec`` validates the whole tree against the space.
    """
    with pg.symbolic.enable_type_check(False):
        dna = pg.DNA(value)
    dna.use_spec(spec)
    # Its novelty key, for the controller (``deferred.dna_key``) to read without another walk.
    dna.set_userdata(deferred.KEY, deferred.key_of_value(deferred.to_json_value(value)))
    return dna


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
        try:
            value = points.point_form(spec, points.checked_point(spec, numbers))
        except (points.NotPlain, ValueError):
            pass  # PyGlove's: it raises what is wrong, if anything
        else:
            if value is not None:  # None: a space without decisions
                return _build(value, spec)
    return pg.DNA.from_numbers(list(numbers), spec)


def dna_decisions(dna: pg.DNA) -> list[Any]:
    """``dna.to_numbers()`` with one walk of the tree and no symbolic lookups (much faster).

    Reads each node's ``value`` and ``children`` from its ``sym_init_args``, calling the property's
    getter directly (a ``pg.Object``'s ``__getattribute__`` costs as much as the rest of the walk)
    and with ``dict``'s own ``__getitem__``, which skips the symbolic dict's resolution of inferred
    values (a DNA holds none).
    """
    if (found := deferred.payload(dna)) is not None:
        return deferred.decisions_of_value(found.value)
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
            point = points.first(spec)
            if dna is not None:
                decisions = dna_decisions(dna)
                point = points.following(spec, points.checked_point(spec, decisions, floats=False))
        except (points.NotPlain, ValueError):
            pass  # PyGlove's: it raises what is wrong, if anything
        else:
            if point is None:
                return None
            value = points.point_form(spec, point)
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
    except points.NotPlain:
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


def has_custom(spec: pg.DNASpec) -> bool:
    """Whether ``spec`` has a custom decision point (drawn by its own function: PyGlove's)."""
    return not points.plain(spec)


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
    return points.choice_form(node.value, items[0] if len(items) == 1 else items)


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
        if (found := deferred.payload(dna)) is not None:
            if self.where is None:
                return self._mutate_point(dna, found)
            dna = deferred.materialize(dna)
        spec = dna.spec
        if pg.__version__ not in PYGLOVE_VERSIONS or spec is None or has_custom(spec):
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
                return self._child(dna, _form(dna, None, None, False), spec)
            value = self._random.choice(list(free))
            new = points.choice_form(value, _draw(choices.candidates[value], self._random))
        else:
            new = _draw(node.spec, self._random)
        sort = isinstance(choices, pg.geno.Choices) and choices.is_subchoice and choices.sorted
        return self._child(dna, _form(dna, node, new, sort), spec)

    def _mutate_point(self, dna: pg.DNA, found: deferred.Deferred) -> pg.DNA:
        """``mutate`` of a deferred DNA, on its decisions: the same random calls, the same child.

        The sites are the nodes PyGlove's ``Uniform`` picks from, in the same (pre)order, each
        with the spec PyGlove attaches to it (``points.sites``).
        """
        spec = found.spec
        point = found.decisions_point()
        mutable = points.sites(spec, point)
        if not mutable:
            raise RuntimeError(f"Immutable DNA: {dna!r}")
        site = self._random.choice(mutable)
        node = site.node
        subchoice = isinstance(node, points.ChoicesNode) and node.subchoice
        if subchoice and node.distinct:  # type: ignore[union-attr]
            free = set(range(len(node.candidates))) - {index for index, _ in site.holder}  # type: ignore[union-attr]
            if not free:
                return self._child(dna, points.point_form(spec, point), spec)
            value = self._random.choice(list(free))
            new = (value, points.draw(node.candidates[value], self._random))  # type: ignore[union-attr]
            site.holder[site.index] = new
        else:
            drawn = points.draw(node, self._random)
            site.holder[site.index] = drawn[0] if subchoice else drawn
        if subchoice and node.sorted:  # type: ignore[union-attr]
            site.holder.sort(key=lambda pair: pair[0])
        return self._child(dna, points.point_form(spec, point), spec)

    @staticmethod
    def _child(dna: pg.DNA, value: Any, spec: pg.DNASpec) -> pg.DNA:
        """The child of ``dna`` with the decisions ``value``; deferred if it is a known repeat.

        Inside ``deferred.known_keys(keys)`` (the controller, which drops repeats), a child whose
        key is in ``keys`` is returned deferred instead of built: the same metadata, no tree.
        """
        known = deferred.known()
        if known is not None and deferred.supports(spec):
            json_value = deferred.to_json_value(value)
            key = deferred.key_of_value(json_value)
            if key in known:  # dropped unread by the controller: no tree, no point
                found = deferred.Deferred(json_value, key, None, spec)
                return deferred.deferred_child(found, dna)
        child = _build(value, spec)
        keys = dna._cloneable_metadata_keys
        for key, item in dna.metadata.items():
            if key in keys:
                child.set_metadata(key, item, cloneable=True)
        for key in dna._cloneable_userdata_keys:
            if key != deferred.DEFERRED:
                child.set_userdata(key, dna.userdata[key], cloneable=True)
        return child
