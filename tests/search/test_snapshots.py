"""Search snapshots: proposals from a snapshot equal a full replay's, and their cost stays flat.

``propose_with_state`` restores a ``SearchSnapshot`` and replays only the trials since it. Checked
here for every algorithm that keeps snapshots (``ppo`` and ``local_search`` once their modules
exist): the same proposals (metadata included) and the same new snapshot as a full replay, over
rounds with failed trials and trials that finish late; the evolution and grid adapters against
PyGlove's own ``recover``; the cost (history entries replayed, DNA decoded) without timing; every
reason a snapshot is not used; and the stage that stores it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Callable, Iterator
from typing import Any

import pyglove as pg
import pytest

from kfnas.config.spec import AlgorithmSpec, StudySpec
from kfnas.records.base import RecordError
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.registry import RegistryError
from kfnas.search import (
    ALGORITHMS,
    HistoryEntry,
    Proposal,
    SearchSnapshot,
    history_from_records,
    propose,
    propose_with_state,
)
from kfnas.search import algorithms as algorithms_module
from kfnas.search import controller as controller_module
from kfnas.spaces import SPACES
from kfnas.spaces.base import dna_spec
from kfnas.stages import _common
from kfnas.store import open_experiment, open_store
from kfnas.store.layout import ExperimentLayout
from kfnas.validation import experiment_spec

SNAPSHOTTED = ["grid", "regularized_evolution", "hill_climb", "nsga2", "ppo", "local_search"]
PYGLOVE_ADAPTED = ["grid", "regularized_evolution", "hill_climb", "nsga2"]


@dataclasses.dataclass(frozen=True)
class Toy:
    """Conditional choices, unsorted and sorted multi-choices: DNA with tuples and lists."""

    name: str = "snapshot_toy"
    tasks: tuple[str, ...] = ("classification",)

    def hyper(self) -> Any:
        return pg.Dict(
            block=pg.oneof([1, 2, pg.Dict(kernel=pg.oneof([3, 5, 7]))]),
            ops=pg.manyof(2, list(range(5))),
            width=pg.oneof([8, 16, 32, 64, 128, 256]),
            depth=pg.oneof([1, 2, 3, 4, 5]),
            skips=pg.manyof(2, list(range(5)), sorted=True),
        )


@dataclasses.dataclass(frozen=True)
class Other(Toy):
    """The same decisions with other widths: another space for a snapshot."""

    name: str = "snapshot_other"

    def hyper(self) -> Any:
        hyper = super().hyper()
        hyper.rebind(width=pg.oneof([1, 2, 3, 4, 5, 6]))
        return hyper


@dataclasses.dataclass(frozen=True)
class Floats(Toy):
    name: str = "snapshot_floats"

    def hyper(self) -> Any:
        return pg.Dict(rate=pg.floatv(0.1, 0.9), block=Toy().hyper())


@pytest.fixture(scope="module", autouse=True)
def spaces() -> Iterator[None]:
    for space in (Toy(), Other(), Floats()):
        SPACES.register(space.name, space)
    yield
    for space in (Toy(), Other(), Floats()):
        SPACES.unregister(space.name)


def small_options(name: str) -> dict[str, Any]:
    """Integer options shrunk to at most 3 (if still valid), so evolution starts within a test."""
    algorithm = ALGORITHMS.get(name)
    shrunk = {key: min(value, 3) for key, value in algorithm.options.items() if type(value) is int}
    return shrunk if not algorithm.problems(shrunk, 2) else {}


def snapshotted(name: str) -> str:
    """``name`` if the algorithm exists and keeps snapshots; else the test is skipped."""
    try:
        algorithm = ALGORITHMS.get(name)
    except (RegistryError, ImportError) as e:
        pytest.skip(f"{name} is not available yet: {e}")
    generator = algorithm.create(small_options(name), 0)
    generator.setup(dna_spec(Toy()))
    adapter, why = algorithm.state_adapter(generator)
    if adapter is None:
        pytest.skip(f"{name} keeps no snapshots yet: {why}")
    return name


def make_study(name: str, space: str = "snapshot_toy", seed: int = 7, **options: Any) -> StudySpec:
    return StudySpec(space, AlgorithmSpec(name, options or small_options(name)), seed=seed)


def evaluate(dna: pg.DNA) -> tuple[float, tuple[float, float]]:
    values = dna.to_numbers()
    return float(sum(values)), (float(sum(values)), -float(sum(v * v for v in values) % 11))


@dataclasses.dataclass
class Trial:
    dna_json: str
    round: int
    outcome: str  # completed, failed, late (finishes a round after it is proposed), running
    finished_in: int  # the round before which its result is known

    def entry(self, now: int) -> HistoryEntry:
        """The trial as a proposal of round ``now`` reads it back from the store."""
        if now < self.finished_in or self.outcome == "running":
            return HistoryEntry.from_json(self.dna_json, self.round)
        if self.outcome == "failed":
            return HistoryEntry.from_json(self.dna_json, self.round, finished=True)
        reward, objectives = evaluate(pg.from_json_str(self.dna_json))
        return HistoryEntry.from_json(self.dna_json, self.round, reward, objectives, finished=True)


def outcomes(i: int) -> str:
    return ("completed", "failed", "completed", "late", "completed", "completed", "failed")[i % 7]


def run(
    study: StudySpec,
    rounds: int,
    per_round: int = 3,
    outcome: Callable[[int], str] = outcomes,
    check: bool = True,
) -> tuple[list[Trial], SearchSnapshot | None, list[Proposal]]:
    """A study run with snapshots; with ``check``, each round also replays in full and compares."""
    trials: list[Trial] = []
    snapshot = None
    made = []
    for round_index in range(1, rounds + 1):
        history = [trial.entry(round_index) for trial in trials]
        proposal = propose_with_state(
            study, history, per_round, round_index=round_index, snapshot=snapshot
        )
        if check:
            full = propose_with_state(study, history, per_round, round_index=round_index)
            assert full.restored == 0 and full.replayed == len(history)
            assert as_json(proposal.dnas) == as_json(full.dnas), f"round {round_index}"
            # What the caller keeps (a new snapshot, or the one it had) is a full replay's.
            kept = proposal.snapshot or snapshot
            assert as_snapshot(kept) == as_snapshot(full.snapshot)
        made.append(proposal)
        snapshot = proposal.snapshot or snapshot
        for dna in proposal.dnas:
            kind = outcome(len(trials))
            late = round_index + (2 if kind == "late" else 1)
            trials.append(Trial(pg.to_json_str(dna), round_index, kind, late))
    return trials, snapshot, made


def as_json(dnas: list[pg.DNA]) -> list[str]:
    return [pg.to_json_str(dna) for dna in dnas]


def as_snapshot(snapshot: SearchSnapshot | None) -> str | None:
    return None if snapshot is None else snapshot.to_json()


def history_of(trials: list[Trial], now: int) -> list[HistoryEntry]:
    return [trial.entry(now) for trial in trials]


# Equivalence.


@pytest.mark.parametrize("name", SNAPSHOTTED)
def test_a_snapshot_gives_the_proposals_of_a_full_replay(name: str) -> None:
    study = make_study(snapshotted(name))
    trials, snapshot, made = run(study, rounds=7)
    assert snapshot is not None
    assert any(p.restored > 0 for p in made), "later rounds start from a snapshot"
    # The snapshot round-trips through its stored JSON and still gives the same proposals.
    stored = SearchSnapshot.from_json(snapshot.to_json())
    history = history_of(trials, 8)
    from_stored = propose_with_state(study, history, 4, round_index=8, snapshot=stored)
    assert from_stored.restored == snapshot.covers and not from_stored.fallback
    assert as_json(from_stored.dnas) == as_json(propose(study, history, 4, round_index=8))


@pytest.mark.parametrize("name", SNAPSHOTTED)
def test_equal_for_any_round_seed_and_after_only_failures(name: str) -> None:
    # seed_per_round algorithms get a new generator seed each round: the snapshot of round r is
    # restored into round r + 1's generator. A history of failures only keeps the initial
    # population of evolution unfinished across snapshots.
    study = make_study(snapshotted(name), seed=11)
    run(study, rounds=4, outcome=lambda i: "failed")
    run(study, rounds=5, outcome=lambda i: "late" if i % 2 else "completed")


@pytest.mark.parametrize("name", PYGLOVE_ADAPTED)
def test_adapters_replay_as_pyglove_recover_does(name: str) -> None:
    # The same algorithm without its adapter is replayed by PyGlove's own recover.
    adapted = ALGORITHMS.get(name)
    plain = dataclasses.replace(adapted, name=f"{name}_plain", state=None)
    ALGORITHMS.register(plain.name, plain)
    try:
        study = make_study(name)
        trials, _, _ = run(study, rounds=6, check=False)
        options = study.algorithm.options if study.algorithm else {}
        plain_study = make_study(plain.name, **options)
        for now in range(2, 8):
            history = [t.entry(now) for t in trials if t.round < now]
            ours = propose_with_state(study, history, 3, round_index=now)
            theirs = propose_with_state(plain_study, history, 3, round_index=now)
            assert theirs.snapshot is None
            assert as_json(ours.dnas) == as_json(theirs.dnas), f"round {now}"
    finally:
        ALGORITHMS.unregister(plain.name)


def test_stored_and_decoded_dna_have_the_same_key() -> None:
    # The novelty check compares keys read from stored text with keys of new DNA objects.
    for space in (Toy(), Floats()):
        spec = dna_spec(space)
        for seed in range(20):
            dna = pg.random_dna(spec, random.Random(seed))
            dna.set_metadata("reward", (1.0, -2.5))
            stored = HistoryEntry.from_json(pg.to_json_str(dna), 1)
            assert stored.key == HistoryEntry(dna, 1).key
            assert stored.key == HistoryEntry(pg.from_json_str(pg.to_json_str(dna)), 1).key
    a, b = (pg.random_dna(dna_spec(Toy()), random.Random(s)) for s in (1, 2))
    assert HistoryEntry(a, 1).key != HistoryEntry(b, 1).key


# Cost, counted rather than timed.


class Decodes:
    """Counts the DNA objects built from stored text by the controller and the adapters."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        original = controller_module.load_dna

        def counting(*args: Any, **kwargs: Any) -> pg.DNA:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(controller_module, "load_dna", counting)
        monkeypatch.setattr(algorithms_module, "load_dna", counting)


@pytest.mark.parametrize("name", ["regularized_evolution", "hill_climb", "nsga2", "grid"])
def test_cost_depends_on_the_trials_since_the_snapshot_not_on_the_history(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = make_study(name)
    always = lambda i: "completed"  # noqa: E731
    trials, _, _ = run(study, rounds=14, outcome=always, check=False)
    decodes = Decodes(monkeypatch)
    counts, saved = {}, {}
    for rounds in (4, 13):
        history = [t.entry(rounds + 1) for t in trials if t.round <= rounds]
        previous = [e for e in history if e.round < rounds]
        snapshot = propose_with_state(study, previous, 3, round_index=rounds).snapshot
        assert snapshot is not None and snapshot.covers == len(previous)
        decodes.count = 0
        proposal = propose_with_state(study, history, 3, round_index=rounds + 1, snapshot=snapshot)
        counts[rounds] = decodes.count
        saved[rounds] = len(snapshot.state.get("dnas", [])) or 1
        assert (proposal.replayed, proposal.restored) == (3, len(history) - 3)
        full = propose_with_state(study, history, 3, round_index=rounds + 1)
        assert full.replayed == len(history)
    # The grid decodes its saved last DNA and the last new trial: as many after 39 trials as
    # after 12. Evolution decodes none: restored and replayed DNA are deferred stand-ins (only
    # what it mutates is read, from their decisions).
    if name == "grid":
        assert counts[13] == counts[4] == 2
    else:
        assert counts[13] == counts[4] == 0


@pytest.mark.parametrize("name", ["ppo", "local_search"])
def test_algorithms_that_learn_from_decisions_replay_without_building_a_dna(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = make_study(snapshotted(name))
    trials, _, _ = run(study, rounds=5, check=False)
    history = history_of(trials, 6)
    algorithm, spec = ALGORITHMS.get(name), dna_spec(Toy())
    # PyGlove's recover, fed the decoded DNA, is what the decisions' replay must equal.
    expected = controller_module._fresh(study, algorithm, 6, spec)
    expected.recover(
        [
            (entry.fresh_dna().use_spec(spec), controller_module._fitness(algorithm, entry, i))
            for i, entry in enumerate(history)
        ]
    )
    decodes = Decodes(monkeypatch)
    ours = controller_module.recover_generator(study, history, round_index=6, spec=spec)
    assert decodes.count == 0
    assert ours.snapshot_state() == expected.snapshot_state()
    assert [ours.num_proposals, ours.num_feedbacks] == [
        expected.num_proposals,
        expected.num_feedbacks,
    ]
    assert as_json([ours.propose() for _ in range(3)]) == as_json(
        [expected.propose() for _ in range(3)]
    )


def test_an_entry_reads_its_decisions_without_building_its_dna() -> None:
    for space in (Toy(), Floats()):
        spec = dna_spec(space)
        for seed in range(10):
            dna = pg.random_dna(spec, random.Random(seed))
            stored = HistoryEntry.from_json(pg.to_json_str(dna), 1)
            assert stored.decisions() == dna.to_numbers()
            assert HistoryEntry(dna, 1).decisions() == dna.to_numbers()


def test_a_stored_history_is_decoded_only_where_it_is_replayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dnas = [pg.random_dna(dna_spec(Toy()), random.Random(s)) for s in range(4)]

    def record(i: int) -> tuple[TrialSpec, TrialResult]:
        spec = TrialSpec("e", "proxy", i, 1, "snapshot_toy", pg.to_json_str(dnas[i]), "{}")
        return spec, TrialResult(i, TrialStatus.COMPLETED, reward=float(i))

    decodes = Decodes(monkeypatch)
    history = history_from_records([record(i) for i in range(4)])
    assert decodes.count == 0
    assert [entry.dna.to_numbers() for entry in history] == [d.to_numbers() for d in dnas]
    assert decodes.count == 4
    history[0].dna  # noqa: B018 (decoded once)
    assert decodes.count == 4
    # A DNA in another layout PyGlove reads (not the compact one it writes) is decoded at once.
    verbose = json.dumps(dnas[0].to_json(compact=False))
    decodes.count = 0
    entry = HistoryEntry.from_json(verbose, 1)
    assert decodes.count == 1 and entry.dna.to_numbers() == dnas[0].to_numbers()
    with pytest.raises(AttributeError, match="immutable"):
        entry.reward = 1.0  # type: ignore[misc]


def test_a_snapshot_stops_before_the_first_trial_still_running() -> None:
    study = make_study("regularized_evolution")
    trials, _, _ = run(study, rounds=3, outcome=lambda i: "running" if i == 4 else "completed")
    history = history_of(trials, 4)
    proposal = propose_with_state(study, history, 3, round_index=4)
    assert proposal.snapshot is not None and proposal.snapshot.covers == 4
    # The running trial completes: the snapshot still fits (it did not replay it).
    trials[4].outcome = "completed"
    later = history_of(trials, 4)
    again = propose_with_state(study, later, 3, round_index=4, snapshot=proposal.snapshot)
    assert (again.restored, again.replayed, again.fallback) == (4, len(later) - 4, "")
    assert as_json(again.dnas) == as_json(propose(study, later, 3, round_index=4))
    assert again.snapshot is not None and again.snapshot.covers == len(later)


# Snapshots that are not used: each says why, and the proposals are a full replay's.


def _with(snapshot: SearchSnapshot, **changes: Any) -> SearchSnapshot:
    return dataclasses.replace(snapshot, **changes)


BAD_SNAPSHOTS: dict[str, tuple[Callable[[SearchSnapshot], SearchSnapshot], str]] = {
    "other algorithm": (
        lambda s: _with(s, algorithm="hill_climb"),
        "made for algorithm 'hill_climb', not 'regularized_evolution'",
    ),
    "other version": (
        lambda s: _with(s, state_version="evolution-0/pyglove-0.0.1"),
        "made for state version 'evolution-0/pyglove-0.0.1'",
    ),
    "other options": (
        lambda s: _with(s, options={**s.options, "population_size": 9}),
        "made for options",
    ),
    "other seed": (lambda s: _with(s, seed=s.seed + 1), "made for seed 8, not 7"),
    "other space": (lambda s: _with(s, space="snapshot_other"), "made for space 'snapshot_other'"),
    "other decisions": (
        lambda s: _with(s, space_digest="0" * 64),
        "made for space's decision points",
    ),
    "more trials": (
        lambda s: _with(s, covers=s.covers + 50),
        "but the history has only",
    ),
    "other trials": (
        lambda s: _with(s, history_digest="0" * 64),
        "are not the ones it replayed",
    ),
    "damaged state": (
        lambda s: _with(s, state={**s.state, "population": [999]}),
        "its state cannot be restored (IndexError",
    ),
    "a DNA outside the space": (
        lambda s: _with(s, state={**s.state, "dnas": [_outside(t) for t in s.state["dnas"]]}),
        "its state cannot be restored (ValueError: decision",
    ),
}


def _outside(tree: dict[str, Any]) -> dict[str, Any]:
    """A saved DNA whose first decision is out of its range (a damaged snapshot)."""
    return {**tree, "value": [["__tuple__", 9, 0], *tree["value"][1:]]}


@pytest.mark.parametrize("case", sorted(BAD_SNAPSHOTS))
def test_a_snapshot_that_does_not_fit_is_ignored_with_the_reason(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    study = make_study("regularized_evolution")
    trials, snapshot, _ = run(study, rounds=4, check=False)
    assert snapshot is not None
    change, reason = BAD_SNAPSHOTS[case]
    history = history_of(trials, 5)
    with caplog.at_level(logging.WARNING, logger="kfnas.search.controller"):
        proposal = propose_with_state(study, history, 3, round_index=5, snapshot=change(snapshot))
    assert reason in proposal.fallback
    assert reason in caplog.text and "replaying all" in caplog.text
    assert (proposal.restored, proposal.replayed) == (0, len(history))
    assert as_json(proposal.dnas) == as_json(propose(study, history, 3, round_index=5))


def test_a_snapshot_of_another_space_is_caught_even_under_the_same_name() -> None:
    study = make_study("regularized_evolution")
    trials, snapshot, _ = run(study, rounds=3, check=False)
    assert snapshot is not None
    SPACES.unregister("snapshot_toy")
    SPACES.register("snapshot_toy", Other(name="snapshot_toy"))
    try:
        proposal = propose_with_state(
            study, history_of(trials, 4), 3, round_index=4, snapshot=snapshot
        )
    finally:
        SPACES.unregister("snapshot_toy")
        SPACES.register("snapshot_toy", Toy())
    assert "made for space's decision points" in proposal.fallback


def test_an_algorithm_without_snapshots_ignores_one(caplog: pytest.LogCaptureFixture) -> None:
    plain = dataclasses.replace(ALGORITHMS.get("hill_climb"), name="hill_climb_plain", state=None)
    ALGORITHMS.register(plain.name, plain)
    try:
        _, snapshot, _ = run(make_study("hill_climb"), rounds=2, check=False)
        study = make_study(plain.name)
        trials, none, _ = run(study, rounds=2, check=False)
        assert none is None and snapshot is not None
        with caplog.at_level(logging.WARNING, logger="kfnas.search.controller"):
            proposal = propose_with_state(
                study, history_of(trials, 3), 3, round_index=3, snapshot=snapshot
            )
        assert "hill_climb_plain keeps no snapshots" in proposal.fallback
        assert "Evolution has no snapshot_state" in caplog.text
    finally:
        ALGORITHMS.unregister(plain.name)


def test_a_stored_snapshot_of_a_newer_format_is_refused() -> None:
    _, snapshot, _ = run(make_study("hill_climb"), rounds=2, check=False)
    assert snapshot is not None
    data = json.loads(snapshot.to_json())
    with pytest.raises(RecordError, match="newer than 1"):
        SearchSnapshot.from_json(json.dumps({**data, "schema_version": 2}))
    with pytest.raises(RecordError, match="covers must be an integer"):
        SearchSnapshot.from_json(json.dumps({**data, "covers": "all"}))
    with pytest.raises(RecordError, match="is not valid JSON"):
        SearchSnapshot.from_json("{")


# The stage keeps the snapshot in the store.

SPEC = """
name: snapshot-test
task: {kind: classification}
studies:
  proxy: {space: mnasnet}
algorithm: {name: regularized_evolution, options: {population_size: 3, tournament_size: 2}}
budget: {trials_per_round: 3}
seed: 3
"""


def _experiment(root: Any) -> Any:
    spec = experiment_spec(SPEC, [f"store_root={root}"])
    open_store(str(root)).write_text(ExperimentLayout(spec.name).experiment_json(), spec.to_json())
    return open_experiment(f"{root}/{spec.name}")


def _finish(exp: Any, ids: list[int]) -> None:
    for trial_id in ids:
        status = TrialStatus.FAILED if trial_id % 4 == 0 else TrialStatus.COMPLETED
        reward = None if status is TrialStatus.FAILED else trial_id / 10
        error = "out of memory" if status is TrialStatus.FAILED else ""
        exp.records.write_result("proxy", TrialResult(trial_id, status, reward=reward, error=error))


def test_propose_round_keeps_the_snapshot_and_a_bad_one_changes_nothing(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proposals: list[Proposal] = []
    original = _common.propose_with_state

    def recording(*args: Any, **kwargs: Any) -> Proposal:
        proposals.append(original(*args, **kwargs))
        return proposals[-1]

    monkeypatch.setattr(_common, "propose_with_state", recording)
    clean, damaged = _experiment(tmp_path / "a"), _experiment(tmp_path / "b")
    path = clean.layout.study_snapshot("proxy")
    for round_index in (1, 2, 3):
        if round_index == 3:
            damaged.store.write_text(path, "{not json")
        for exp in (clean, damaged):
            with caplog.at_level(logging.INFO, logger="kfnas.stages._common"):
                _finish(exp, _common.propose_round(exp, "proxy", round_index))
    assert "no search snapshot yet" in caplog.text
    assert "the search snapshot is ignored" in caplog.text and "is not valid JSON" in caplog.text
    # Round 3: the clean study restored round 1 and replayed round 2; the damaged one replayed both.
    assert (proposals[-2].restored, proposals[-1].restored) == (3, 0)
    assert proposals[-1].replayed == 6
    for exp in (clean, damaged):
        assert SearchSnapshot.from_json(exp.store.read_text(path)).covers == 6
    specs = [[s.dna_json for s, _ in exp.records.history("proxy")] for exp in (clean, damaged)]
    assert specs[0] == specs[1] and len(specs[0]) == 9
    # A resumed round proposes nothing and leaves the snapshot as it is.
    before = clean.store.read_text(path)
    assert _common.propose_round(clean, "proxy", 3) == [7, 8, 9]
    assert clean.store.read_text(path) == before


@pytest.mark.parametrize("name", ["regularized_evolution", "nsga2"])
def test_a_stored_trial_outside_the_space_is_named_when_it_is_replayed(name: str) -> None:
    study = make_study(name)
    trials, _, _ = run(study, rounds=2, check=False)
    history = history_of(trials, 3)
    damaged = json.dumps(_outside(json.loads(trials[1].dna_json)))
    history[1] = HistoryEntry.from_json(damaged, 1, 1.0, (1.0, 1.0), finished=True)
    with pytest.raises(ValueError, match=r"history entry 1 \(round 1\) is not a DNA of this space"):
        propose(study, history, 2, round_index=3)


def test_an_evolution_with_another_mutator_is_replayed_with_built_dna() -> None:
    # Stand-ins go only to evolutions made of PyGlove's operators and UniformMutator: PyGlove's
    # own Uniform mutator reads the DNA tree, so it gets built DNA, and snapshots still hold.
    def factory(options: Any, seed: int) -> pg.DNAGenerator:
        mutator = pg.evolution.mutators.Uniform(seed=seed)
        return pg.evolution.regularized_evolution(
            mutator, population_size=3, tournament_size=2, seed=seed
        )

    custom = dataclasses.replace(
        ALGORITHMS.get("regularized_evolution"), name="re_pyglove_uniform", factory=factory
    )
    ALGORITHMS.register(custom.name, custom)
    try:
        study = make_study(custom.name, population_size=3, tournament_size=2)
        _, snapshot, made = run(study, rounds=5)
        assert snapshot is not None and any(p.restored for p in made)
        generator = ALGORITHMS.get(custom.name).create({}, 0)
        assert not algorithms_module._takes_stand_ins(generator)
    finally:
        ALGORITHMS.unregister(custom.name)
