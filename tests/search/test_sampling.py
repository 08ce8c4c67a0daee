"""``kfnas.search.sampling`` draws the DNA PyGlove draws and leaves the RNG where PyGlove does."""

import random

import pyglove as pg
import pytest

from kfnas.search import ALGORITHMS
from kfnas.search.sampling import RandomSearch, UniformMutator, random_dna
from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import dna_spec

# Every kind of decision PyGlove draws: nested conditional choices (a chain of tuples), a
# candidate with several decisions of its own, sorted distinct and repeated multi-choices, floats.
TEMPLATE = pg.Dict(
    chain=pg.oneof([1, pg.Dict(b=pg.oneof([2, pg.Dict(c=pg.oneof([3, 4]))]))]),
    wide=pg.oneof([0, pg.Dict(x=pg.oneof([1, 2]), y=pg.floatv(0.0, 1.0), z=pg.oneof([3, 4]))]),
    subset=pg.manyof(2, [1, 2, 3, 4], distinct=True, sorted=True),
    repeats=pg.manyof(3, [1, 2], distinct=False),
    nested=pg.manyof(2, [pg.Dict(k=pg.oneof([5, 6])), 7, 8]),
    rate=pg.floatv(0.1, 0.5),
)


def _same_draw(spec: pg.DNASpec, seed: int) -> None:
    ours, theirs = random.Random(seed), random.Random(seed)
    drawn, expected = random_dna(spec, ours), pg.random_dna(spec, theirs)
    assert pg.to_json_str(drawn) == pg.to_json_str(expected)
    assert drawn.spec is expected.spec
    assert ours.getstate() == theirs.getstate()


@pytest.mark.parametrize("space", sorted(SPACES.names()))
def test_every_built_in_space_draws_as_pyglove_does(space):
    spec = dna_spec(get_space(space))
    for seed in range(4):
        _same_draw(spec, seed)


def test_every_kind_of_decision_draws_as_pyglove_does():
    spec = pg.dna_spec(TEMPLATE)
    for seed in range(40):
        _same_draw(spec, seed)


def test_a_custom_decision_point_is_drawn_by_pyglove_from_the_same_state():
    def draw(rng, previous):
        del previous
        return pg.DNA(str(rng.randint(0, 9)))

    custom = pg.geno.CustomDecisionPoint(random_dna_fn=draw)
    spec = pg.geno.Space([pg.geno.Choices(1, [pg.geno.Space([]), pg.geno.Space([])]), custom])
    for seed in range(10):
        _same_draw(spec, seed)


def test_random_search_proposes_and_recovers_as_pyglove_random_does():
    spec = dna_spec(get_space("mnasnet"))
    ours, theirs = RandomSearch(seed=7), pg.geno.Random(seed=7)
    ours.setup(spec)
    theirs.setup(spec)
    first = [(ours.propose(), theirs.propose()) for _ in range(3)]
    assert [pg.to_json_str(a) for a, _ in first] == [pg.to_json_str(b) for _, b in first]
    # A fresh generator replaying those three continues with the fourth of the same sequence.
    resumed = RandomSearch(seed=7)
    resumed.setup(spec)
    resumed.recover([(dna, None) for dna, _ in first])
    assert pg.to_json_str(resumed.propose()) == pg.to_json_str(theirs.propose())


def _same_mutations(spec: pg.DNASpec, seed: int, generations: int) -> None:
    """A chain of mutations: each child of PyGlove's Uniform and of ours, from the same parent."""
    theirs, ours = pg.evolution.mutators.Uniform(seed=seed), UniformMutator(seed=seed)
    parent = pg.random_dna(spec, random.Random(seed))
    parent.set_metadata("generation", 3)  # dropped by a clone
    parent.set_metadata("lineage", "kept", cloneable=True)
    before = pg.to_json_str(parent)
    for _ in range(generations):
        expected, child = theirs.mutate(parent), ours.mutate(parent)
        assert pg.to_json_str(child) == pg.to_json_str(expected)
        assert child.spec is expected.spec
        assert ours._random.getstate() == theirs._random.getstate()
        assert pg.to_json_str(parent) == before  # the parent is left as it was
        parent, before = expected, pg.to_json_str(expected)


@pytest.mark.parametrize(
    "space", [name for name in sorted(SPACES.names()) if len(dna_spec(get_space(name))) > 1]
)
def test_every_built_in_space_mutates_as_pyglove_does(space):
    _same_mutations(dna_spec(get_space(space)), 1, 8)


def test_every_kind_of_decision_mutates_as_pyglove_does():
    spec = pg.dna_spec(TEMPLATE)
    for seed in range(15):
        _same_mutations(spec, seed, 10)


@pytest.mark.parametrize("name", ["regularized_evolution", "hill_climb", "nsga2"])
def test_the_evolution_algorithms_draw_and_mutate_through_it(name):
    generator = ALGORITHMS.get(name).create({}, 3)
    init, _ = generator.population_init
    assert type(init) is RandomSearch and init.seed == 3
    mutators = pg.query(generator, where=lambda v: isinstance(v, pg.evolution.mutators.Uniform))
    assert mutators and all(type(m) is UniformMutator for m in mutators.values())
