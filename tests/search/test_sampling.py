"""``kfnas.search.sampling`` draws the DNA PyGlove draws and leaves the RNG where PyGlove does."""

import json
import random

import pyglove as pg
import pytest

from kfnas.search import ALGORITHMS, deferred
from kfnas.search.sampling import (
    RandomSearch,
    UniformMutator,
    dna_decisions,
    dna_from_numbers,
    next_dna,
    random_dna,
)
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


def _keeps_its_key(dna: pg.DNA) -> None:
    """A DNA built here carries its novelty key: that of its decisions, as PyGlove writes them."""
    if deferred.KEY in dna.userdata:
        compact = dna.sym_jsonify(compact=True, type_info=False)
        assert dna.userdata[deferred.KEY] == json.dumps(pg.to_json(compact))


def _same_draw(spec: pg.DNASpec, seed: int) -> None:
    ours, theirs = random.Random(seed), random.Random(seed)
    drawn, expected = random_dna(spec, ours), pg.random_dna(spec, theirs)
    assert pg.to_json_str(drawn) == pg.to_json_str(expected)
    _keeps_its_key(drawn)
    assert drawn.spec is expected.spec
    assert ours.getstate() == theirs.getstate()


def _same_from_numbers(spec: pg.DNASpec, seed: int) -> None:
    numbers = pg.random_dna(spec, random.Random(seed)).to_numbers()
    assert dna_decisions(pg.random_dna(spec, random.Random(seed))) == numbers
    built, expected = dna_from_numbers(numbers, spec), pg.DNA.from_numbers(numbers, spec)
    assert pg.to_json_str(built) == pg.to_json_str(expected)
    _keeps_its_key(built)
    assert built.spec is expected.spec


@pytest.mark.parametrize("space", sorted(SPACES.names()))
def test_every_built_in_space_draws_and_builds_from_numbers_as_pyglove_does(space):
    spec = dna_spec(get_space(space))
    for seed in range(4):
        _same_draw(spec, seed)
        _same_from_numbers(spec, seed)


def test_every_kind_of_decision_draws_and_builds_from_numbers_as_pyglove_does():
    spec = pg.dna_spec(TEMPLATE)
    for seed in range(40):
        _same_draw(spec, seed)
        _same_from_numbers(spec, seed)


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


# chain 1 -> 1 -> 0; wide 1 (x, y, z); subset; repeats; nested 0 (k) and 2; rate.
VALID = [1, 1, 0, 1, 1, 0.4, 1, 1, 3, 0, 0, 1, 0, 1, 2, 0.5]
# The same DNA's compact value as stored (``pg.to_json_str``).
VALID_VALUE = [
    ["__tuple__", 1, 1, 0],
    ["__tuple__", 1, [1, 0.4, 1]],
    [1, 3],
    [0, 0, 1],
    [["__tuple__", 0, 1], 2],
    0.5,
]


@pytest.mark.parametrize(
    "numbers",
    [
        VALID[:5],  # too short
        [*VALID, 1],  # too long
        [5, *VALID[1:]],  # a candidate index out of range
        [*VALID[:7], 3, 1, *VALID[9:]],  # a sorted multi-choice out of order
    ],
    ids=["short", "long", "out-of-range", "unsorted"],
)
def test_numbers_that_are_not_a_dna_of_the_space_get_pyglove_s_error(numbers):
    spec = pg.dna_spec(TEMPLATE)
    assert pg.to_json_str(dna_from_numbers(VALID, spec)) == pg.to_json_str(
        pg.DNA.from_numbers(VALID, spec)
    )
    with pytest.raises(ValueError) as expected:
        pg.DNA.from_numbers(numbers, spec)
    with pytest.raises(ValueError) as ours:
        dna_from_numbers(numbers, spec)
    assert str(ours.value).split(".")[0] == str(expected.value).split(".")[0]


def _same_mutations(spec: pg.DNASpec, seed: int, generations: int) -> None:
    """A chain of mutations: each child of PyGlove's Uniform and of ours, from the same parent.

    Ours also mutates the parent's deferred stand-in (on its decisions), and, when the child's
    key is known, returns it deferred: the same child, the same random state.
    """
    theirs, ours = pg.evolution.mutators.Uniform(seed=seed), UniformMutator(seed=seed)
    on_stand_in, on_known = UniformMutator(seed=seed), UniformMutator(seed=seed)
    parent = pg.random_dna(spec, random.Random(seed))
    parent.set_metadata("generation", 3)  # dropped by a clone
    parent.set_metadata("lineage", "kept", cloneable=True)
    before = pg.to_json_str(parent)
    for _ in range(generations):
        theirs_state = theirs._random.getstate()
        expected, child = theirs.mutate(parent), ours.mutate(parent)
        assert pg.to_json_str(child) == pg.to_json_str(expected)
        _keeps_its_key(child)
        assert child.spec is expected.spec
        assert ours._random.getstate() == theirs._random.getstate()
        assert pg.to_json_str(parent) == before  # the parent is left as it was
        if deferred.supports(spec):
            stand_in = deferred.deferred_dna(json.loads(before), spec)
            built = on_stand_in.mutate(stand_in)
            assert pg.to_json_str(built) == pg.to_json_str(expected)
            assert built.spec is expected.spec
            with deferred.known_keys({deferred.dna_key(expected)}):
                repeat = on_known.mutate(stand_in)
            with deferred.known_keys(set()):  # a new child: built, its key kept on it
                fresh = UniformMutator(seed=seed)
                fresh._random.setstate(theirs_state)
                new = fresh.mutate(stand_in)
            assert new.userdata[deferred.KEY] == deferred.dna_key(expected)
            _keeps_its_key(new)
            assert deferred.is_deferred(repeat)
            assert deferred.json_tree(repeat) == expected.to_json()
            assert on_known._random.getstate() == on_stand_in._random.getstate()
            assert on_stand_in._random.getstate() == theirs._random.getstate()
        parent, before = expected, pg.to_json_str(expected)


@pytest.mark.parametrize(
    "value",
    [
        [["__tuple__", 5, 1, 0], *VALID_VALUE[1:]],
        [*VALID_VALUE[:2], [3, 1], *VALID_VALUE[3:]],
        [*VALID_VALUE[:2], [1, 1], *VALID_VALUE[3:]],
        VALID_VALUE[:-1],
        [*VALID_VALUE[:-1], 2.0],
        [*VALID_VALUE, 1],
    ],
    ids=["out-of-range", "unsorted", "repeated", "short", "float-out-of-range", "long"],
)
def test_a_stand_in_is_refused_where_use_spec_refuses_the_dna(value):
    spec = pg.dna_spec(TEMPLATE)
    tree = {"_type": pg.DNA.__serialization_key__, "format": "compact", "value": VALID_VALUE}
    assert deferred.dna_key(deferred.deferred_dna(tree, spec)) == json.dumps(VALID_VALUE)
    tree["value"] = value
    with pytest.raises(ValueError):
        pg.from_json(tree).use_spec(spec)
    with pytest.raises(ValueError):
        deferred.deferred_dna(tree, spec)


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


# Every kind of decision the grid steps through (floats have no next point in PyGlove).
GRID_TEMPLATE = pg.Dict(
    chain=pg.oneof([1, pg.Dict(b=pg.oneof([2, pg.Dict(c=pg.oneof([3, 4]))]))]),
    wide=pg.oneof([0, pg.Dict(x=pg.oneof([1, 2]), z=pg.oneof([3, 4]))]),
    subset=pg.manyof(2, [1, 2, 3, 4], distinct=True, sorted=True),
    ordered=pg.manyof(2, [1, 2, 3], distinct=True, sorted=False),
    repeats=pg.manyof(2, [1, 2], distinct=False, sorted=True),
    nested=pg.manyof(2, [pg.Dict(k=pg.oneof([5, 6])), 7, 8], distinct=False),
)


def _same_steps(spec: pg.DNASpec, start: pg.DNA | None, steps: int) -> int:
    """Steps through the grid both ways from ``start``; returns how many points it saw."""
    ours = theirs = start
    for seen in range(steps):
        ours, theirs = next_dna(spec, ours), spec.next_dna(theirs)
        if theirs is None:
            assert ours is None
            return seen
        assert pg.to_json_str(ours) == pg.to_json_str(theirs)
        assert ours.spec is theirs.spec
        _keeps_its_key(ours)
    return steps


@pytest.mark.parametrize("name", sorted(GRID_TEMPLATE))
def test_the_grid_steps_through_each_kind_of_decision_as_pyglove_does(name):
    spec = pg.dna_spec(pg.Dict({name: GRID_TEMPLATE[name], "last": pg.oneof([0, 1])}))
    assert _same_steps(spec, None, spec.space_size + 1) == spec.space_size


def test_the_grid_steps_through_all_kinds_together_as_pyglove_does():
    spec = pg.dna_spec(GRID_TEMPLATE)
    for seed in range(3):
        _same_steps(spec, pg.random_dna(spec, random.Random(seed)), 15)


@pytest.mark.parametrize("space", sorted(SPACES.names()))
def test_the_grid_steps_through_every_built_in_space_as_pyglove_does(space):
    spec = dna_spec(get_space(space))
    _same_steps(spec, None, 3)
    if not _has_floats(spec):  # and from the middle of the grid, where far digits turn over
        _same_steps(spec, pg.random_dna(spec, random.Random(3)), 8)


def _has_floats(spec: pg.DNASpec) -> bool:
    return any(isinstance(point, pg.geno.Float) for point in spec.decision_points)


def test_a_space_with_floats_is_stepped_by_pyglove():
    spec = pg.dna_spec(TEMPLATE)
    first = next_dna(spec, None)
    assert pg.to_json_str(first) == pg.to_json_str(spec.first_dna())
    with pytest.raises(NotImplementedError):
        next_dna(spec, first)


def test_the_grid_algorithm_proposes_as_pyglove_sweeping_does():
    spec = pg.dna_spec(pg.Dict(subset=GRID_TEMPLATE["subset"], nested=GRID_TEMPLATE["nested"]))
    ours, theirs = ALGORITHMS.get("grid").create({"full": False}, 0), pg.geno.Sweeping()
    ours.setup(spec)
    theirs.setup(spec)
    proposed = [pg.to_json_str(ours.propose()) for _ in range(spec.space_size)]
    assert proposed == [pg.to_json_str(theirs.propose()) for _ in range(spec.space_size)]
    with pytest.raises(StopIteration):
        ours.propose()
