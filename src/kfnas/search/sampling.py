"""Random DNA, drawn as PyGlove draws them, built as one tree instead of node by node.

``pg.random_dna`` (PyGlove 0.4.5) builds every node of a DNA as it draws it and then re-parents
it, which clones the subtree under it again at each level: about 80 ms per DNA on ``spinenet``
(94 nodes). ``random_dna`` here makes the same random calls in the same order (so a seeded
``random.Random`` gives the same DNA and ends in the same state), collects the decisions as
PyGlove's nested value form (an int per chosen candidate, a tuple for a choice whose candidate
has decisions of its own, a list for several decisions) and builds the DNA once from it,
as PyGlove decodes a compact JSON DNA: about half the time. ``RandomSearch`` is PyGlove's
``pg.geno.Random`` drawing through it; the ``random`` algorithm, the evolution algorithms'
initial populations and the controller's fallback draws use it.

``tests/search/test_sampling.py`` checks, for every built-in space and many seeds, that the DNA
and the random state equal PyGlove's. The draw order is PyGlove's: ``Space`` draws its elements
in order; ``Choices`` draws ``random.sample`` of the candidate indices when distinct, else one
``randint`` per choice, sorts them when sorted, then draws each chosen candidate's space in
choice order; ``Float`` draws ``uniform(min, max)``. A space with a custom decision point (drawn
by its own function) is drawn by ``pg.random_dna`` itself. To support another PyGlove version,
compare its ``_random_dna`` methods with the above and add it to ``PYGLOVE_VERSIONS``; with any
other version ``random_dna`` is ``pg.random_dna``.
"""

from __future__ import annotations

import random
from typing import Any

import pyglove as pg

__all__ = ["PYGLOVE_VERSIONS", "RandomSearch", "random_dna"]

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
