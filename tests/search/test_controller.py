"""Algorithm-specific behaviour of the stateless controller (``kfnas.search``).

The contract every algorithm shares (valid DNA, failed trials, determinism, resume) is tested in
``tests/conformance/test_algorithms.py``; this module tests what differs between algorithms, the
argument checks, and the replay guarantee: how a stateless run (fresh generator + ``recover``
every round, history through JSON) compares with one uninterrupted in-process generator.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pyglove as pg
import pytest

from kfnas.config.spec import AlgorithmSpec, StudySpec
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.registry import RegistryError
from kfnas.search import (
    ALGORITHMS,
    HistoryEntry,
    SpaceExhausted,
    history_from_records,
    propose,
)
from kfnas.search.controller import recover_generator
from kfnas.spaces import SPACES
from kfnas.spaces.base import dna_spec
from kfnas.store.trials import CorruptRecordWarning

EVOLUTION = ("regularized_evolution", "hill_climb", "nsga2")
SMALL_OPTIONS: dict[str, dict[str, Any]] = {
    "regularized_evolution": {"population_size": 3, "tournament_size": 2},
    "hill_climb": {"init_population_size": 2},
    "nsga2": {"population_size": 2},
}


@dataclasses.dataclass(frozen=True)
class Space:
    name: str
    choices: dict[str, tuple[int, ...]]
    tasks: tuple[str, ...] = ("classification",)

    def hyper(self) -> Any:
        return pg.Dict({key: pg.oneof(list(values)) for key, values in self.choices.items()})


SMALL = Space("unit_small", {"kernel": (3, 5, 7), "width": (16, 32, 64), "depth": (1, 2, 3, 4)})
TINY = Space("unit_tiny", {"kernel": (3, 5, 7), "width": (16, 64)})
WIDE = Space("unit_wide", {f"x{i}": (0, 1, 2, 3, 4) for i in range(6)})  # 15625 points.


@pytest.fixture(scope="module", autouse=True)
def spaces() -> Iterator[None]:
    for space in (SMALL, TINY, WIDE):
        SPACES.register(space.name, space)
    yield
    for space in (SMALL, TINY, WIDE):
        SPACES.unregister(space.name)


def evaluate(dna: pg.DNA) -> tuple[float, tuple[float, float]]:
    """(reward, (quality, -cost)) from the decisions: higher choices are better and costlier."""
    values = dna.to_numbers()
    return float(sum(values)), (float(sum(values)), -float(sum(v * v for v in values)))


def make_study(name: str, space: Space = SMALL, seed: int = 0, **options: Any) -> StudySpec:
    options = options or SMALL_OPTIONS.get(name, {})
    return StudySpec(space=space.name, algorithm=AlgorithmSpec(name, options), seed=seed)


def entry(dna: pg.DNA, round_index: int, multi: bool, failed: bool = False) -> HistoryEntry:
    """The history entry of an evaluated trial, its DNA read back from JSON as the store does."""
    stored = pg.from_json_str(pg.to_json_str(dna))
    if failed:
        return HistoryEntry(stored, round_index)
    reward, objectives = evaluate(dna)
    return HistoryEntry(stored, round_index, reward, objectives if multi else None)


def stateless_run(
    study: StudySpec, rounds: int, per_round: int, fails: Callable[[int], bool] = lambda i: False
) -> tuple[list[pg.DNA], list[HistoryEntry]]:
    assert study.algorithm is not None
    multi = ALGORITHMS.get(study.algorithm.name).multi_objective
    history: list[HistoryEntry] = []
    proposed: list[pg.DNA] = []
    for round_index in range(1, rounds + 1):
        for dna in propose(study, history, per_round, round_index=round_index):
            history.append(entry(dna, round_index, multi, fails(len(history))))
            proposed.append(dna)
    return proposed, history


def in_process_run(
    study: StudySpec,
    seed: int,
    rounds: int,
    per_round: int,
    fails: Callable[[int], bool] = lambda i: False,
) -> tuple[list[pg.DNA], list[HistoryEntry], pg.DNAGenerator]:
    """One generator for the whole run, fed after each round (PyGlove's own propose/feedback)."""
    assert study.algorithm is not None
    algorithm = ALGORITHMS.get(study.algorithm.name)
    generator = algorithm.create(study.algorithm.options, seed)
    generator.setup(dna_spec(SPACES.get(study.space)))
    proposed, history = [], []
    for round_index in range(1, rounds + 1):
        batch = [generator.propose() for _ in range(per_round)]
        for dna in batch:
            failed = fails(len(history))
            history.append(entry(dna, round_index, algorithm.multi_objective, failed))
            if not failed:
                reward, objectives = evaluate(dna)
                generator.feedback(dna, objectives if algorithm.multi_objective else reward)
        proposed.extend(batch)
    return proposed, history, generator


def numbers(dnas: list[pg.DNA]) -> list[tuple[int, ...]]:
    return [tuple(dna.to_numbers()) for dna in dnas]


# Algorithm-specific behaviour.


def test_grid_visits_every_point_once_then_raises() -> None:
    study = make_study("grid", TINY)
    history: list[HistoryEntry] = []
    sizes = []
    for round_index in (1, 2):
        batch = propose(study, history, 4, round_index=round_index)
        sizes.append(len(batch))
        history += [entry(dna, round_index, multi=False) for dna in batch]
    assert sizes == [4, 2]  # The last round gets what is left.
    points = numbers([e.dna for e in history])
    assert sorted(points) == [(k, w) for k in range(3) for w in range(2)]
    with pytest.raises(SpaceExhausted) as raised:
        propose(study, history, 4, round_index=3)
    assert str(raised.value) == (
        "search space exhausted: all 6 points of unit_tiny have been proposed; lower the budget "
        "or pick another algorithm"
    )


@pytest.mark.parametrize("name", ["random", "hill_climb"])
def test_other_algorithms_also_fill_then_exhaust_a_tiny_space(name: str) -> None:
    # Hill climbing soon repeats the neighbours of its best point: random draws take over.
    proposed, history = stateless_run(make_study(name, TINY), rounds=3, per_round=2)
    assert sorted(numbers(proposed)) == [(k, w) for k in range(3) for w in range(2)]
    with pytest.raises(SpaceExhausted, match="all 6 points of unit_tiny"):
        propose(make_study(name, TINY), history, 1, round_index=4)


@pytest.mark.parametrize("name", ["random", "regularized_evolution", "hill_climb", "nsga2"])
def test_no_duplicates_even_when_most_of_the_space_is_proposed(name: str) -> None:
    proposed, _ = stateless_run(make_study(name), rounds=3, per_round=6)
    assert len(set(numbers(proposed))) == 18  # Of 36 points.
    one_batch = propose(make_study(name), [], 12, round_index=1)
    assert len(set(numbers(one_batch))) == 12


def test_regularized_evolution_improves_on_its_first_round() -> None:
    study = make_study("regularized_evolution", WIDE, population_size=10, tournament_size=3)
    proposed, history = stateless_run(study, rounds=8, per_round=5)
    means = [statistics.mean(e.reward for e in history[i : i + 5]) for i in range(0, 40, 5)]
    late = statistics.mean(means[-2:])
    # Random sampling averages 12 (sd of a 10-trial mean about 1.2); evolution climbs well above.
    assert late > means[0] + 2
    assert late > 15
    assert not any(dna.metadata["initial_population"] for dna in proposed[-10:])


@pytest.mark.parametrize("name", EVOLUTION)
def test_evolution_draws_fresh_randomness_each_round(name: str) -> None:
    # recover() cannot restore the operators' RNGs, so each round gets its own derived seed;
    # with the study seed every round, each would start with the same random choices.
    assert ALGORITHMS.get(name).seed_per_round
    study = make_study(name, WIDE)
    _, history = stateless_run(study, rounds=2, per_round=3)
    later = [numbers(propose(study, history, 4, round_index=r)) for r in (3, 4, 5)]
    assert later[0] != later[1] != later[2] != later[0]


def test_nsga2_with_two_objectives_evolves_a_front() -> None:
    proposed, history = stateless_run(make_study("nsga2"), rounds=5, per_round=3)
    assert len(set(numbers(proposed))) == 15
    evolved = [dna for dna in proposed if not dna.metadata["initial_population"]]
    assert evolved, "after 2 x population_size trials NSGA-II evolves its elites"
    generator = recover_generator(make_study("nsga2"), history, round_index=6)
    elites = generator.global_state.elites
    assert len(elites) == 2
    assert all(len(elite.metadata["reward"]) == 2 for elite in elites)


def test_nsga2_needs_two_objectives() -> None:
    nsga2 = ALGORITHMS.get("nsga2")
    assert nsga2.problems({}, 2) == []
    assert nsga2.problems({}, 1) == [
        "nsga2 needs two or more objectives: add a constraint to objectives.constraints "
        "(e.g. latency_ms)"
    ]
    assert ALGORITHMS.get("regularized_evolution").problems({}, 3) == []
    first = propose(make_study("nsga2"), [], 1, round_index=1)
    history = [HistoryEntry(first[0], 1, reward=1.0, objectives=None)]
    with pytest.raises(ValueError, match="must record two or more objectives"):
        propose(make_study("nsga2"), history, 1, round_index=2)


def test_unknown_algorithm_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError) as raised:
        propose(make_study("evolution"), [], 1, round_index=1)
    message = str(raised.value)
    assert "unknown algorithm 'evolution'" in message
    assert all(name in message for name in ALGORITHMS.names())


def test_bad_options_say_what_to_change() -> None:
    evolution = ALGORITHMS.get("regularized_evolution")
    assert evolution.problems({"pop_size": 5}, 1) == [
        "unknown option(s) pop_size for regularized_evolution; valid options: population_size, "
        "tournament_size"
    ]
    assert evolution.problems({"population_size": 0}, 1) == [
        "option population_size must be a positive integer, got 0"
    ]
    assert "tournament_size (8) must not exceed population_size (4)" in " ".join(
        evolution.problems({"population_size": 4, "tournament_size": 8}, 1)
    )
    assert "tournament_size must be at least 2" in " ".join(
        evolution.problems({"tournament_size": 1}, 1)
    )
    assert "must be int, got '5'" in " ".join(evolution.problems({"population_size": "5"}, 1))
    assert "must be int, got True" in " ".join(evolution.problems({"population_size": True}, 1))
    assert ALGORITHMS.get("grid").problems({"seed": 1}, 1) == [
        "unknown option(s) seed for grid; valid options: full"
    ]
    assert ALGORITHMS.get("random").problems({"seed": 1}, 1) == [
        "unknown option(s) seed for random; valid options: none (it takes no options)"
    ]
    with pytest.raises(ValueError, match="invalid options for algorithm 'hill_climb'"):
        propose(make_study("hill_climb", batch_size=-1), [], 1, round_index=1)


def test_argument_checks() -> None:
    study = make_study("random")
    first = propose(study, [], 2, round_index=1)
    history = [HistoryEntry(first[0], 2), HistoryEntry(first[1], 1)]
    with pytest.raises(ValueError, match=r"n \(trials to propose\) must be at least 1"):
        propose(study, [], 0, round_index=1)
    with pytest.raises(ValueError, match="round_index must be at least 1"):
        propose(study, [], 1, round_index=0)
    with pytest.raises(ValueError, match="history rounds go backwards: entry 1"):
        propose(study, history, 1, round_index=3)
    with pytest.raises(ValueError, match="round 2 has no trials but round 3 has"):
        propose(study, [HistoryEntry(first[0], 3)], 1, round_index=2)
    with pytest.raises(ValueError, match="resolved study"):
        propose(StudySpec(space=SMALL.name), [], 1, round_index=1)
    with pytest.raises(ValueError, match="lacks the metadata"):  # A random DNA fed to evolution.
        propose(make_study("hill_climb"), [HistoryEntry(first[0], 1, 1.0)], 1, round_index=2)
    with pytest.raises(ValueError, match="not a DNA of this space"):
        propose(make_study("hill_climb"), [HistoryEntry(pg.DNA([0, 9, 0]), 1)], 1, round_index=2)


def test_history_from_records() -> None:
    dnas = propose(make_study("grid"), [], 5, round_index=1)

    def trial(trial_id: int) -> TrialSpec:
        dna_json = pg.to_json_str(dnas[trial_id])
        return TrialSpec("e", "proxy", trial_id, 1, SMALL.name, dna_json, "{}")

    records: list[tuple[TrialSpec, TrialResult | None]] = [
        (trial(3), TrialResult(3, TrialStatus.INFEASIBLE, error="NaN loss")),
        (trial(0), TrialResult(0, TrialStatus.COMPLETED, reward=0.5, objectives=(0.5, -2.0))),
        (trial(1), TrialResult(1, TrialStatus.FAILED, error="preempted")),
        (trial(2), None),
        (trial(4), TrialResult(4, TrialStatus.COMPLETED, reward=0.25)),
    ]
    history = history_from_records(records)
    assert numbers([e.dna for e in history]) == numbers(dnas)  # Sorted by trial id.
    assert [(e.reward, e.objectives) for e in history] == [
        (0.5, (0.5, -2.0)),
        (None, None),
        (None, None),
        (None, None),
        (0.25, None),
    ]
    # A damaged or crafted DNA is left out, with a warning naming the trial and the type.
    damaged = dataclasses.replace(trial(0), dna_json="{oops")
    crafted = dataclasses.replace(trial(1), dna_json='{"_type": "no_such_module_q.Payload"}')
    with pytest.warns(CorruptRecordWarning) as caught:
        kept = history_from_records([(damaged, None), (crafted, None), (trial(2), None)])
    assert numbers([e.dna for e in kept]) == numbers(dnas[2:3])
    said = [str(w.message) for w in caught]
    assert "proxy trial 0: dna_json is not valid JSON" in said[0]
    assert "no_such_module_q.Payload" in said[1] and "no_such_module_q" not in sys.modules
    with pytest.raises(ValueError, match="paired with the result of trial 1"):
        history_from_records([(trial(0), TrialResult(1, TrialStatus.FAILED, error="x"))])


# The replay guarantee: stateless (fresh generator + recover each round) vs uninterrupted.


def test_replay_grid_equals_an_uninterrupted_run() -> None:
    def fails(i: int) -> bool:
        return i % 3 == 1

    stateless, _ = stateless_run(make_study("grid"), rounds=4, per_round=3, fails=fails)
    uninterrupted, _, _ = in_process_run(make_study("grid"), 0, rounds=4, per_round=3, fails=fails)
    assert numbers(stateless) == numbers(uninterrupted)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_rounds_depend_on_seed_and_round_not_on_history_length(seed: int) -> None:
    # Random search learns nothing from results, so the controller does not replay the history
    # (PyGlove's Random._replay redraws one DNA per stored trial, which grows without bound):
    # each round draws from derive_seed(seed, "round", r), skipping points already tried. A
    # stateless run is therefore reproducible and duplicate-free, but it is not the sequence one
    # uninterrupted pg.geno.Random(seed) would draw.
    def fails(i: int) -> bool:
        return i % 4 == 0

    study = make_study("random", seed=seed)
    stateless, _ = stateless_run(study, rounds=4, per_round=3, fails=fails)
    again, _ = stateless_run(study, rounds=4, per_round=3, fails=fails)
    assert numbers(again) == numbers(stateless)
    assert len(set(numbers(stateless))) == 12
    other_seed, _ = stateless_run(make_study("random", seed=seed + 7), rounds=4, per_round=3)
    assert numbers(other_seed) != numbers(stateless)


@pytest.mark.parametrize("name", EVOLUTION)
def test_replay_evolution_rebuilds_the_state_not_the_rng(name: str) -> None:
    # PyGlove's Evolution.recover rebuilds the population (decisions and fitness), the generation
    # count, the feedback count and the end of the initial population exactly, failed trials
    # included. It cannot restart the selection and mutation RNGs where an uninterrupted run left
    # them, so a stateless run does not equal an uninterrupted one; what holds is that the state is
    # equal, and that stateless runs are reproducible, valid and duplicate-free.
    def fails(i: int) -> bool:
        return i % 4 == 0

    study = make_study(name)
    _, history, generator = in_process_run(study, 0, rounds=5, per_round=3, fails=fails)
    rebuilt = recover_generator(study, history, round_index=6)

    def state(g: pg.DNAGenerator) -> tuple[Any, ...]:
        population = [(tuple(d.to_numbers()), d.metadata["reward"]) for d in g.population]
        return population, g.num_generations, g.num_proposals, g.num_feedbacks

    assert state(rebuilt) == state(generator)
    assert rebuilt.num_feedbacks == 11  # 15 trials, 4 of them failed.

    stateless, _ = stateless_run(study, rounds=3, per_round=3, fails=fails)
    again, _ = stateless_run(study, rounds=3, per_round=3, fails=fails)
    assert [pg.to_json_str(d) for d in again] == [pg.to_json_str(d) for d in stateless]
    assert len(set(numbers(stateless))) == 9
    for dna in stateless:
        dna_spec(SMALL).validate(dna)
