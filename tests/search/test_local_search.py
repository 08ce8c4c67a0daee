"""Tests of ``local_search`` (``kfnas.search.local_search``), alone and through the controller.

The contract every algorithm shares (valid new DNA, failed trials, determinism, resume) is also
checked for it by ``tests/conformance/test_algorithms.py``; this module tests what is particular to
local search: its neighbourhoods (plain, conditional and constrained), moving, restarting, replay
and the state snapshot.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyglove as pg
import pytest

from kfnas.config.spec import AlgorithmSpec, StudySpec
from kfnas.search import ALGORITHMS, HistoryEntry, propose
from kfnas.search.local_search import LOCAL_SEARCH, LocalSearchGenerator
from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import dna_spec


@dataclasses.dataclass(frozen=True)
class Space:
    name: str
    make: Callable[[], Any]
    tasks: tuple[str, ...] = ("classification",)

    def hyper(self) -> Any:
        return self.make()


def _flat(num: int, size: int) -> Callable[[], Any]:
    return lambda: pg.Dict({f"x{i}": pg.oneof(list(range(size))) for i in range(num)})


def _conditional() -> Any:
    """Choices inside candidates, two levels deep, and inside a (distinct) pg.manyof."""
    return pg.Dict(
        a=pg.oneof(
            [pg.oneof([1, 2, 3]), pg.Dict(x=pg.oneof([4, 5]), y=pg.oneof([pg.oneof([6, 7]), 8])), 9]
        ),
        b=pg.manyof(2, [pg.oneof([10, 11]), 12, 13]),
    )


def _constrained() -> Any:
    """Each kind of pg.manyof: sorted and distinct, an ordering (distinct), sorted only."""
    return pg.Dict(
        pair=pg.manyof(2, [0, 1, 2, 3], choices_distinct=True, choices_sorted=True),
        order=pg.manyof(3, [0, 1, 2], choices_distinct=True),
        multiset=pg.manyof(2, [0, 1], choices_distinct=False, choices_sorted=True),
    )


TOY = Space("ls_toy", _flat(6, 4))  # 4096 points; reward: the fraction of zeros.
TINY = Space("ls_tiny", _flat(2, 3))  # 9 points, 4 neighbours each.
SMALL = Space("ls_small", _flat(3, 3))  # 27 points, 6 neighbours each.
WIDE = Space("ls_wide", _flat(10, 5))
CONDITIONAL = Space("ls_conditional", _conditional)
CONSTRAINED = Space("ls_constrained", _constrained)
SPACES_HERE = (TOY, TINY, SMALL, WIDE, CONDITIONAL, CONSTRAINED)


@pytest.fixture(scope="module", autouse=True)
def spaces() -> Iterator[None]:
    for space in SPACES_HERE:
        SPACES.register(space.name, space)
    yield
    for space in SPACES_HERE:
        SPACES.unregister(space.name)


def spec_of(space: Space) -> pg.DNASpec:
    return pg.dna_spec(space.hyper())


def generator(space: Space, seed: int = 0, **options: Any) -> LocalSearchGenerator:
    made = LOCAL_SEARCH.create(options, seed)
    assert isinstance(made, LocalSearchGenerator)
    made.setup(spec_of(space))
    return made


def recovered(
    space: Space, history: list[tuple[pg.DNA, float | None]], seed: int = 0, **options: Any
) -> LocalSearchGenerator:
    made = generator(space, seed, **options)
    made.recover(history)
    return made


def nums(dna: pg.DNA | None) -> tuple[int, ...] | None:
    return None if dna is None else tuple(dna.to_numbers())


def distance(a: pg.DNA, b: pg.DNA) -> int:
    """How many decisions of two DNA of a flat space differ."""
    return sum(x != y for x, y in zip(nums(a), nums(b), strict=True))


def zeros(dna: pg.DNA) -> float:
    """The toy reward: the fraction of decisions that chose candidate 0 (1.0 at the optimum)."""
    values = dna.to_numbers()
    return values.count(0) / len(values)


def study(space: Space, seed: int = 0, **options: Any) -> StudySpec:
    return StudySpec(space=space.name, algorithm=AlgorithmSpec("local_search", options), seed=seed)


def stateless_run(
    spec: StudySpec,
    rounds: int,
    per_round: int,
    reward: Callable[[pg.DNA], float] = zeros,
    fails: Callable[[int], bool] = lambda i: False,
    stop: Callable[[list[HistoryEntry]], bool] = lambda history: False,
) -> list[HistoryEntry]:
    """Rounds of the controller's ``propose``, each reading the history back from JSON."""
    history: list[HistoryEntry] = []
    for round_index in range(1, rounds + 1):
        for dna in propose(spec, history, per_round, round_index=round_index):
            stored = pg.from_json_str(pg.to_json_str(dna))
            value = None if fails(len(history)) else reward(dna)
            history.append(HistoryEntry(stored, round_index, value))
        if stop(history):
            break
    return history


def pairs(history: list[HistoryEntry]) -> list[tuple[pg.DNA, float | None]]:
    return [(entry.dna, entry.reward) for entry in history]


def decisions(dna: pg.DNA) -> dict[str, int]:
    """The DNA's active decisions, by decision point id."""
    return {
        str(key): int(value.split("/")[0])
        for key, value in dna.to_dict(key_type="id", value_type="choice").items()
    }


def change(base: dict[str, int], other: dict[str, int]) -> frozenset[tuple[str, int]] | None:
    """The decisions ``other`` changes in ``base`` (both by ``decisions``), as (id, new value).

    None if it also differs elsewhere than below the changed decisions (decisions that only one of
    them has must sit under a changed one: deactivated or newly activated by the change).
    """
    changed = {(key, other[key]) for key in base.keys() & other.keys() if base[key] != other[key]}
    roots = [key for key, _ in changed]
    for key in base.keys() ^ other.keys():
        if not any(key.startswith(root + "[=") for root in roots):
            return None
    return frozenset(changed)


def is_swap(base: dict[str, int], changed: frozenset[tuple[str, int]]) -> bool:
    """Whether ``changed`` swaps the values of two subchoices of one pg.manyof."""
    if len(changed) != 2:
        return False
    (first, v1), (second, v2) = sorted(changed)
    one, two = re.fullmatch(r"(.*)\[\d+\]", first), re.fullmatch(r"(.*)\[\d+\]", second)
    same = one is not None and two is not None and one.group(1) == two.group(1)
    return same and (base[first], base[second]) == (v2, v1)


def expected_changes(
    everything: list[dict[str, int]], base: dict[str, int]
) -> set[frozenset[tuple[str, int]]]:
    """The neighbourhood of ``base``, by brute force over every point of the space.

    Each one-decision change that gives a valid DNA, and each swap of two subchoices of a distinct,
    unsorted pg.manyof (the spaces here hold no other kind of manyof with swaps).
    """
    out = set()
    for other in everything:
        changed = change(base, other)
        if changed and (len(changed) == 1 or is_swap(base, changed)):
            out.add(changed)
    return out


# Neighbourhoods.


def test_neighbours_differ_in_exactly_one_decision_and_are_valid() -> None:
    spec = spec_of(SMALL)
    made = generator(SMALL)
    for seed in range(5):
        base = pg.random_dna(spec, random.Random(seed))
        neighbours = made.neighbours(base)
        assert len(neighbours) == 3 * 2  # Two other candidates for each of three decisions.
        assert len({nums(n) for n in neighbours}) == len(neighbours)
        for neighbour in neighbours:
            spec.validate(neighbour)
            assert distance(base, neighbour) == 1


def test_neighbour_order_is_seeded_and_random() -> None:
    base = pg.DNA.from_numbers([0] * 6, spec_of(TOY))
    order = [nums(n) for n in generator(TOY, seed=1).neighbours(base)]
    assert len(order) == 18 and order != sorted(order)
    changed = [next(i for i, v in enumerate(n) if v) for n in order[:6]]
    assert len(set(changed)) > 2  # Not one decision's candidates after another.
    assert order != [nums(n) for n in generator(TOY, seed=2).neighbours(base)]


@pytest.mark.parametrize("space", [CONDITIONAL, CONSTRAINED], ids=lambda space: space.name)
def test_conditional_and_constrained_neighbourhoods_are_complete_and_valid(space: Space) -> None:
    spec = spec_of(space)
    everything = [decisions(dna) for dna in spec.iter_dna()]
    made = generator(space, seed=3)
    for seed in range(4):
        base = pg.random_dna(spec, random.Random(seed))
        neighbours = made.neighbours(base)
        for neighbour in neighbours:
            spec.validate(neighbour)
        changes = [change(decisions(base), decisions(neighbour)) for neighbour in neighbours]
        assert None not in changes, "a neighbour differs elsewhere than under its change"
        assert len(set(changes)) == len(changes), "one neighbour per change"
        assert set(changes) == expected_changes(everything, decisions(base))
    again = [nums(n) for n in generator(space, seed=3).neighbours(base)]
    assert again == [nums(n) for n in neighbours], "activated decisions draw seeded values"


def test_a_change_that_activates_decisions_fills_them() -> None:
    spec = spec_of(CONDITIONAL)
    base = pg.DNA.from_numbers([2, 1, 2], spec)  # a=9 (no sub-decision), b=[12, 13].
    activated = [n for n in generator(CONDITIONAL).neighbours(base) if nums(n)[0] == 1]
    assert len(activated) == 1  # a: 9 -> {x, y}, with y's own sub-decision when y chose 0.
    assert len(decisions(activated[0])) in (5, 6)


def test_an_ordering_moves_by_swaps() -> None:
    # A pg.manyof of 3 distinct candidates out of 3 has no valid one-decision change.
    spec = pg.dna_spec(pg.manyof(3, [0, 1, 2], choices_distinct=True))
    made = LOCAL_SEARCH.create({}, 0)
    made.setup(spec)
    base = pg.DNA.from_numbers([0, 1, 2], spec)
    assert sorted(nums(n) for n in made.neighbours(base)) == [(0, 2, 1), (1, 0, 2), (2, 1, 0)]


def test_neighbours_in_a_real_space_with_an_ordering() -> None:
    # SpineNet: 75 decisions, sorted pairs of inputs and a permutation of block levels.
    spec = dna_spec(get_space("spinenet"))
    made = LOCAL_SEARCH.create({}, 0)
    made.setup(spec)
    base = pg.random_dna(spec, random.Random(0))
    first = made.neighbours(base, limit=8)
    assert len(first) == 8
    kinds = set()
    for neighbour in first:
        spec.validate(neighbour)
        changed = change(decisions(base), decisions(neighbour))
        assert changed and (len(changed) == 1 or is_swap(decisions(base), changed))
        kinds.add(len(changed))
    assert kinds == {1, 2}, "single changes and swaps of the block-level ordering"


def test_float_decisions_are_refused() -> None:
    made = LOCAL_SEARCH.create({}, 0)
    with pytest.raises(ValueError, match=r"categorical decisions only .* is a Float"):
        made.setup(pg.dna_spec(pg.Dict(x=pg.oneof([1, 2]), lr=pg.floatv(0.1, 1.0))))


# Moving and restarting.


def test_proposes_the_neighbours_of_the_current_point_in_order() -> None:
    start = generator(SMALL).propose()
    made = recovered(SMALL, [(start, 0.5)])
    assert nums(made.current) == nums(start) and made.current_reward == 0.5
    assert [nums(made.propose()) for _ in range(6)] == [nums(n) for n in made.neighbours(start)]


def test_moves_to_a_better_neighbour() -> None:
    start = generator(SMALL).propose()
    first, second, *_ = generator(SMALL).neighbours(start)
    history = [(start, 0.5), (first, 0.4), (second, 0.9)]
    made = recovered(SMALL, history)
    assert nums(made.current) == nums(second) and made.moves == 1
    proposed = {nums(dna) for dna, _ in history}
    untried = [nums(n) for n in made.neighbours(second) if nums(n) not in proposed]
    assert [nums(made.propose()) for _ in range(3)] == untried[:3]
    # With a margin, 0.9 is not enough of an improvement on 0.5: the climb stays at the start.
    stays = recovered(SMALL, history, min_improvement=0.5)
    assert nums(stays.current) == nums(start) and stays.moves == 0
    assert nums(stays.best) == nums(second) and stays.best_reward == 0.9


def test_restarts_at_a_local_optimum() -> None:
    start = generator(TINY).propose()
    neighbours = generator(TINY).neighbours(start)
    assert len(neighbours) == 4
    optimum = [(start, 1.0)] + [(n, 0.5) for n in neighbours]
    made = recovered(TINY, optimum)
    assert made.restarts == 1 and made.current is None
    assert nums(made.best) == nums(start)
    restart = made.propose()
    assert nums(restart) not in {nums(dna) for dna, _ in optimum}
    # The restart point starts a new climb even though it is worse than the old optimum.
    history = [*optimum, (restart, 0.1)]
    climbing = recovered(TINY, history)
    assert nums(climbing.current) == nums(restart) and climbing.restarts == 1
    proposed = {nums(dna) for dna, _ in history}
    untried = [nums(n) for n in climbing.neighbours(restart) if nums(n) not in proposed]
    assert untried and nums(climbing.propose()) == untried[0]


def test_a_pending_last_neighbour_counts_as_proposed() -> None:
    start = generator(TINY).propose()
    neighbours = generator(TINY).neighbours(start)
    pending = [(start, 1.0)] + [(n, 0.5) for n in neighbours[:-1]] + [(neighbours[-1], None)]
    assert recovered(TINY, pending).restarts == 1
    # Once its reward is in and beats the optimum, the replay moves there instead.
    improved = [*pending[:-1], (neighbours[-1], 2.0)]
    made = recovered(TINY, improved)
    assert made.restarts == 0 and nums(made.current) == nums(neighbours[-1])


def test_a_round_that_uses_up_the_neighbourhood_fills_up_with_random_points() -> None:
    start = generator(TINY).propose()
    made = recovered(TINY, [(start, 1.0)])
    batch = [nums(made.propose()) for _ in range(6)]
    assert batch[:4] == [nums(n) for n in made.neighbours(start)]
    assert len(set(batch)) == 6 and nums(start) not in batch
    assert made.restarts == 1


def test_initial_random_points_come_first() -> None:
    spec = study(WIDE, initial_random=5)
    history = stateless_run(spec, rounds=3, per_round=2, reward=lambda dna: sum(dna.to_numbers()))
    initial = [entry.dna for entry in history[:5]]
    # Random points of a 10 x 5 space: far apart, not neighbours of one another.
    assert min(distance(a, b) for i, a in enumerate(initial) for b in initial[i + 1 :]) > 1
    best = max(history[:5], key=lambda entry: entry.reward)
    assert distance(history[5].dna, best.dna) == 1  # Then the neighbours of the best of them.


# Failures, determinism, replay.


def test_failed_trials_move_nothing() -> None:
    start, other = generator(SMALL).propose(), generator(SMALL, seed=9).propose()
    made = recovered(SMALL, [(start, None), (other, 0.3)])
    assert nums(made.current) == nums(other)  # The first evaluated trial starts the climb.
    better = generator(SMALL).neighbours(other)[0]
    failed = recovered(SMALL, [(start, None), (other, 0.3), (better, None)])
    assert nums(failed.current) == nums(other)
    assert nums(failed.propose()) not in {nums(start), nums(other), nums(better)}
    nan = recovered(SMALL, [(other, 0.3), (better, float("nan"))])
    assert nums(nan.current) == nums(other) and nan.best_reward == 0.3


def test_a_history_of_failures_gives_new_random_points() -> None:
    history = stateless_run(study(TOY), rounds=3, per_round=3, fails=lambda i: True)
    assert len({nums(entry.dna) for entry in history}) == 9
    made = recovered(TOY, pairs(history))
    assert made.current is None and made.best is None
    fresh = [nums(made.propose()) for _ in range(3)]
    assert not set(fresh) & {nums(entry.dna) for entry in history}


@pytest.mark.parametrize("space", [TOY, CONDITIONAL], ids=lambda space: space.name)
def test_deterministic_for_a_seed(space: Space) -> None:
    def run(seed: int) -> list[str]:
        history = stateless_run(study(space, seed=seed), rounds=4, per_round=3, reward=_score)
        return [pg.to_json_str(entry.dna) for entry in history]

    assert run(0) == run(0)
    assert run(0) != run(1)


def _score(dna: pg.DNA) -> float:
    """A reward for any space: deterministic, with ties rare."""
    return random.Random(str(dna.to_numbers())).random()


def test_stateless_rounds_of_one_follow_an_uninterrupted_generator() -> None:
    def fails(i: int) -> bool:
        return i % 7 == 3

    history = stateless_run(study(TOY, seed=4), rounds=25, per_round=1, fails=fails)
    made = generator(TOY, seed=4)
    sequence = []
    for i in range(25):
        dna = made.propose()
        sequence.append(nums(dna))
        if not fails(i):
            made.feedback(dna, zeros(dna))
    assert sequence == [nums(entry.dna) for entry in history]
    assert made.moves > 0


def test_conditional_space_through_the_controller() -> None:
    spec = spec_of(CONDITIONAL)
    history = stateless_run(study(CONDITIONAL, seed=2), rounds=8, per_round=4, reward=_score)
    assert len({nums(entry.dna) for entry in history}) == len(history) == 32
    for entry in history:
        spec.validate(entry.dna.use_spec(spec))
    made = recovered(CONDITIONAL, pairs(history), seed=2)
    assert made.moves + made.restarts > 0


# The flat-cost hook.


def _run_with_restarts() -> list[HistoryEntry]:
    """27 trials on the 27-point space, with failures: it climbs, and restarts."""
    return stateless_run(
        study(SMALL, seed=5), rounds=9, per_round=3, reward=_score, fails=lambda i: i % 5 == 2
    )


def test_snapshot_and_restore_equal_a_full_replay() -> None:
    history = pairs(_run_with_restarts())
    full = recovered(SMALL, history, seed=5)
    assert full.restarts > 0 and full.moves > 0
    for split in (0, 1, 4, 10, 17, len(history) - 1, len(history)):
        state = json.loads(json.dumps(recovered(SMALL, history[:split], seed=5).snapshot_state()))
        resumed = generator(SMALL, seed=5)
        resumed.restore_state(state)
        resumed.recover(history[split:])
        replayed = recovered(SMALL, history, seed=5)
        assert resumed.snapshot_state() == replayed.snapshot_state()
        assert [nums(resumed.propose()) for _ in range(4)] == [
            nums(replayed.propose()) for _ in range(4)
        ]


def test_snapshot_between_proposals() -> None:
    history = pairs(_run_with_restarts())[:12]
    going = recovered(SMALL, history, seed=5)
    first = [nums(going.propose()) for _ in range(2)]
    resumed = generator(SMALL, seed=5)
    resumed.restore_state(json.loads(json.dumps(going.snapshot_state())))
    later = [nums(going.propose()) for _ in range(3)]
    assert [nums(resumed.propose()) for _ in range(3)] == later
    assert len(set(first + later)) == 5


def test_snapshot_on_a_conditional_space() -> None:
    history = pairs(stateless_run(study(CONDITIONAL, seed=1), rounds=6, per_round=4, reward=_score))
    state = recovered(CONDITIONAL, history[:13], seed=1).snapshot_state()
    resumed = generator(CONDITIONAL, seed=1)
    resumed.restore_state(json.loads(json.dumps(state)))
    resumed.recover(history[13:])
    replayed = recovered(CONDITIONAL, history, seed=1)
    assert [nums(resumed.propose()) for _ in range(5)] == [
        nums(replayed.propose()) for _ in range(5)
    ]


def test_snapshot_is_compact_and_checked() -> None:
    history = pairs(_run_with_restarts())
    state = recovered(SMALL, history, seed=5).snapshot_state()
    assert state["version"] == LocalSearchGenerator.STATE_VERSION == 1
    assert len(state["proposed"]) == len({nums(dna) for dna, _ in history})
    assert all(len(key) == 16 for key in state["proposed"])
    with pytest.raises(ValueError, match="version 2 is not 1: replay the history"):
        generator(SMALL, seed=5).restore_state({**state, "version": 2})
    with pytest.raises(ValueError, match="another seed or other options"):
        generator(SMALL, seed=6).restore_state(state)
    with pytest.raises(ValueError, match="another space"):
        generator(TINY, seed=5).restore_state(state)


# Search quality and options.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reaches_the_optimum_of_a_toy_problem(seed: int) -> None:
    # 6 decisions x 4 candidates; random search needs 4096 trials on average to hit the optimum.
    def found(history: list[HistoryEntry]) -> bool:
        return any(entry.reward == 1.0 for entry in history)

    history = stateless_run(study(TOY, seed=seed), rounds=38, per_round=4, stop=found)
    assert found(history) and len(history) <= 150
    assert len({nums(entry.dna) for entry in history}) == len(history)


def test_options_are_checked() -> None:
    assert LOCAL_SEARCH.problems({}, 1) == []
    assert LOCAL_SEARCH.problems({"initial_random": 8, "min_improvement": 0.01}, 1) == []
    (negative,) = LOCAL_SEARCH.problems({"min_improvement": -0.1}, 1)
    assert "option min_improvement must be a finite number of at least 0" in negative
    assert LOCAL_SEARCH.problems({"min_improvement": float("inf")}, 1)
    (zero,) = LOCAL_SEARCH.problems({"initial_random": 0}, 1)
    assert zero == "option initial_random must be a positive integer, got 0"
    (unknown,) = LOCAL_SEARCH.problems({"neighbourhood": 3}, 1)
    assert "valid options: initial_random, min_improvement" in unknown


def test_registered_without_a_seed_per_round() -> None:
    assert ALGORITHMS.get("local_search") is LOCAL_SEARCH
    assert not LOCAL_SEARCH.seed_per_round and LOCAL_SEARCH.replays_history
    assert not LOCAL_SEARCH.multi_objective
