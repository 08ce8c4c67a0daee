"""Conformance of every registered algorithm with the stateless controller's contract.

Parametrised over ``ALGORITHMS.names()``: a new algorithm is tested here for free.
Algorithm-specific behaviour (grid exhaustion, evolution improving, NSGA-II objectives) is in
``tests/search/test_controller.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyglove as pg
import pytest

from kfnas.config.spec import AlgorithmSpec, BudgetSpec, StudySpec
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.search import ALGORITHMS, HistoryEntry, history_from_records, propose
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json, dna_spec, materialize

pytestmark = pytest.mark.usefixtures("search_spaces")

ALGORITHM_NAMES = ALGORITHMS.names()
SPACE = "conformance_small"

Records = list[tuple[TrialSpec, TrialResult | None]]


def small_options(name: str) -> dict[str, Any]:
    """Integer options shrunk to at most 2 (if still valid), so evolution starts within a test."""
    algorithm = ALGORITHMS.get(name)
    shrunk = {key: min(value, 2) for key, value in algorithm.options.items() if type(value) is int}
    num_objectives = 2 if algorithm.multi_objective else 1
    return shrunk if not algorithm.problems(shrunk, num_objectives) else {}


def make_study(name: str, seed: int = 0) -> StudySpec:
    return StudySpec(
        space=SPACE,
        algorithm=AlgorithmSpec(name=name, options=small_options(name)),
        budget=BudgetSpec(rounds=4, trials_per_round=3),
        seed=seed,
    )


def make_record(
    study: StudySpec, trial_id: int, round_index: int, dna: pg.DNA, evaluator, outcome: str
) -> tuple[TrialSpec, TrialResult | None]:
    """What the stages store for one trial; ``outcome`` is completed, failed or unfinished."""
    spec = TrialSpec(
        experiment="conformance",
        study="proxy",
        trial_id=trial_id,
        round=round_index,
        space=study.space,
        dna_json=pg.to_json_str(dna),
        arch_json=architecture_json(get_space(study.space), dna),
    )
    if outcome == "unfinished":
        return spec, None
    if outcome == "failed":
        return spec, TrialResult(trial_id, TrialStatus.FAILED, error="out of memory")
    reward, objectives = evaluator(study.space, dna)
    assert study.algorithm is not None
    multi = ALGORITHMS.get(study.algorithm.name).multi_objective
    result = TrialResult(
        trial_id, TrialStatus.COMPLETED, reward=reward, objectives=objectives if multi else None
    )
    return spec, result


def run_rounds(
    study: StudySpec,
    evaluator,
    rounds: int = 4,
    per_round: int = 3,
    outcome: Callable[[int], str] = lambda trial_id: "completed",
) -> tuple[list[list[pg.DNA]], Records]:
    """A stateless search: each round reads its history back from JSON records, like the store."""
    records: Records = []
    batches = []
    for round_index in range(1, rounds + 1):
        batch = propose(study, history_from_records(records), per_round, round_index=round_index)
        batches.append(batch)
        for dna in batch:
            trial_id = len(records)
            records.append(
                make_record(study, trial_id, round_index, dna, evaluator, outcome(trial_id))
            )
    return batches, records


def as_json(batches: list[list[pg.DNA]]) -> list[list[str]]:
    return [[pg.to_json_str(dna) for dna in batch] for batch in batches]


def assert_valid(dna: pg.DNA) -> None:
    spec = dna_spec(get_space(SPACE))
    assert dna.spec is not None, "proposals must have the DNASpec attached"
    spec.validate(dna)
    arch = materialize(get_space(SPACE), dna)
    assert set(arch) == {"kernel", "width", "depth"}


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_proposes_only_valid_new_dna(name: str) -> None:
    proposals = propose(make_study(name), [], 5, round_index=1)
    assert 1 <= len(proposals) <= 5
    for dna in proposals:
        assert_valid(dna)
    assert len({pg.to_json_str(d.to_numbers()) for d in proposals}) == len(proposals)


@pytest.fixture(scope="module")
def completed_runs(search_spaces, evaluator) -> dict[str, tuple[list[list[pg.DNA]], Records]]:
    """One 4 x 3 stateless run per algorithm, every trial completed, shared by the tests below."""
    del search_spaces
    return {name: run_rounds(make_study(name), evaluator) for name in ALGORITHM_NAMES}


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_multi_round_loop_with_json_history(name: str, completed_runs) -> None:
    batches, records = completed_runs[name]
    assert [len(batch) for batch in batches] == [3, 3, 3, 3]
    numbers = [tuple(dna.to_numbers()) for batch in batches for dna in batch]
    assert len(set(numbers)) == 12, "a study never proposes the same DNA twice"
    for batch in batches:
        for dna in batch:
            assert_valid(dna)
            again = pg.from_json_str(pg.to_json_str(dna))
            assert again == dna
            assert dict(again.metadata) == dict(dna.metadata)
    history = history_from_records(records)
    assert [entry.round for entry in history] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert all(entry.reward is not None for entry in history)


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_tolerates_failed_and_unfinished_trials(name: str, evaluator) -> None:
    def outcome(trial_id: int) -> str:
        return ("failed", "completed", "unfinished", "completed")[trial_id % 4]

    batches, records = run_rounds(make_study(name), evaluator, rounds=3, outcome=outcome)
    history = history_from_records(records)
    assert sum(entry.reward is None for entry in history) == 5
    proposed = [tuple(dna.to_numbers()) for batch in batches for dna in batch]
    assert len(proposed) == 9
    assert len(set(proposed)) == 9, "failed DNA are not proposed again"
    for batch in batches:
        for dna in batch:
            assert_valid(dna)


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_tolerates_a_history_of_only_failures(name: str, evaluator) -> None:
    study = make_study(name)
    _, records = run_rounds(study, evaluator, rounds=2, outcome=lambda trial_id: "failed")
    history = history_from_records(records)
    assert all(entry.reward is None for entry in history)
    proposals = propose(study, history, 3, round_index=3)
    assert len(proposals) == 3
    old = {tuple(entry.dna.to_numbers()) for entry in history}
    for dna in proposals:
        assert_valid(dna)
        assert tuple(dna.to_numbers()) not in old


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_deterministic_for_a_seed(name: str, evaluator, completed_runs) -> None:
    fresh, _ = run_rounds(make_study(name), evaluator)
    assert as_json(fresh) == as_json(completed_runs[name][0])  # Same DNA, same metadata.


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_same_history_gives_same_proposals(name: str, completed_runs) -> None:
    study = make_study(name)
    records = completed_runs[name][1]
    first = propose(study, history_from_records(records[:9]), 3, round_index=4)
    second = propose(study, history_from_records(records[:9]), 3, round_index=4)
    assert as_json([first]) == as_json([second]) == as_json([completed_runs[name][0][3]])


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_resume_returns_the_trials_of_the_round(name: str, completed_runs) -> None:
    study = make_study(name)
    history = history_from_records(completed_runs[name][1])
    again = propose(study, history[:6], 3, round_index=2)
    assert as_json([again]) == as_json([[entry.dna for entry in history[3:6]]])
    # Resumed before the round's trials finished, asking for another count: nothing new.
    unfinished = history[:3] + [HistoryEntry(e.dna, e.round) for e in history[3:5]]
    resumed = propose(study, unfinished, 3, round_index=2)
    assert [d.to_numbers() for d in resumed] == [e.dna.to_numbers() for e in history[3:5]]
    for dna in resumed:
        assert_valid(dna)


@pytest.mark.parametrize("name", ALGORITHM_NAMES)
def test_does_not_modify_the_history(name: str, completed_runs) -> None:
    history = history_from_records(completed_runs[name][1])
    before = [pg.to_json_str(entry.dna) for entry in history]
    propose(make_study(name), history, 3, round_index=5)
    assert [pg.to_json_str(entry.dna) for entry in history] == before
