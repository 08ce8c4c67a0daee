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
* ``UniformMutator``: ``pg.evolution.mutators.Uniform``, about half the time per mutation.

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
from typing import Any

import pyglove as pg

__all__ = ["PYGLOVE_VERSIONS", "RandomSearch", "UniformMutator", "random_dna"]

#: The PyGlove versions whose draw order ``random_dna`` reproduces.
PYGLOVE_VERSIONS = ("0.4.5",)


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
    # As PyGlove's own compact-JSON decoding does: type checks off while the nodes are made,
    # then ``use_spec`` validates the whole tree against the space.
    with pg.symbolic.enable_type_check(False):
        dna = pg.DNA(value)
    return dna.use_spec(spec)


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
