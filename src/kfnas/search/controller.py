"""The stateless search controller: the next trials of a study, from its spec and history alone.

``propose(study, history, n, round_index=r)`` keeps no state between calls. Every call builds the
study's algorithm afresh (``ALGORITHMS.get(name).create(options, seed)``), sets it up on the space's
``DNASpec``, replays the history into it and asks it for ``n`` new DNA. The history is what the
store holds: each trial's ``dna_json`` (written with ``pg.to_json_str``, so it keeps the DNA
metadata that evolution needs to recover) and its result. Stored DNA are checked by
``kfnas.spaces.base.load_dna``'s rules, which allow ``pg.DNA`` only and import nothing a record
names; a trial whose DNA is refused is left out of the history with a warning.

Guarantees:

* Resume: if the history already has trials of ``round_index``, those DNA are returned in history
  order and nothing new is proposed, so a resubmitted pipeline gets the same trials.
* Determinism: the same (study, history, n, round) gives the same proposals in any process, with
  or without a snapshot.
* Novelty: a proposal never repeats a DNA of the history (failed trials included) or of the same
  batch; the controller drops such duplicates and asks the algorithm again. If the algorithm keeps
  repeating itself (hill climbing whose neighbourhood was all tried, a converged population in a
  small space), a seeded random new DNA takes the repeated proposal's place and metadata, so the
  study explores instead of stalling and the algorithm still recovers it as its own.
* Replay: how closely a stateless run follows an uninterrupted in-process one depends on the
  algorithm (see ``propose``).

Cost that stays flat (snapshots): replaying a long history costs tens of milliseconds per trial
on a large space (PyGlove builds every DNA as a symbolic object), so an algorithm whose state can be
saved (``Algorithm.state_adapter``: evolution, grid, and generators with ``snapshot_state``) is
snapshotted. ``propose_with_state(..., snapshot=s)`` restores ``s``, replays only the trials since
it, and returns a ``SearchSnapshot`` of the new state for the caller to keep (the stages store it
at ``ExperimentLayout.study_snapshot``). A snapshot covers only a prefix of *settled* trials (with a
result, or rewarded): a trial still running may still bring a reward that changes the replay. A
snapshot is used only if it was made for the same algorithm, options, seed and space, by the same
state version, and for the same trials (a digest of the covered entries); otherwise the history
is replayed in full, with a log line saying why, and the proposals are the same either way.
History entries from ``history_from_records`` decode their DNA only when it is replayed, so
trials covered by a snapshot are never built as DNA objects. Replayed and restored DNA are not
built either where the algorithm reads only their metadata or decisions: evolution gets deferred
stand-ins (``kfnas.search.deferred``) and mutates them on their decisions; ``ppo`` and
``local_search`` replay the decisions alone. While proposing, the mutator returns a repeat of a
known architecture (one the controller would drop) as a stand-in instead of building it
(``deferred.known_keys``), so only new proposals are built, once each: a proposal's cost does
not grow with the study, and most of it is building the round's new DNA.

To extend: new algorithms go into ``kfnas.search.algorithms`` (one factory and one lazy-table
line, and a ``StateAdapter`` or ``snapshot_state``/``restore_state`` for flat cost); this module
needs no change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import pyglove as pg

from kfnas.config.spec import AlgorithmSpec, StudySpec
from kfnas.records.base import Record
from kfnas.records.trial import RecordError, TrialResult, TrialSpec
from kfnas.search import deferred
from kfnas.search.algorithms import ALGORITHMS, Algorithm, Replayed, StateAdapter, derive_seed
from kfnas.search.sampling import random_dna
from kfnas.spaces import get_space
from kfnas.spaces.base import dna_spec, load_dna
from kfnas.store.trials import CorruptRecordWarning

__all__ = [
    "MAX_RANDOM_DRAWS",
    "MAX_REPEATS",
    "HistoryEntry",
    "Proposal",
    "SearchSnapshot",
    "SpaceExhausted",
    "history_from_records",
    "propose",
    "propose_with_state",
    "recover_generator",
]

log = logging.getLogger(__name__)

# How many repeated proposals in a row make the controller stop asking the algorithm for a new DNA
# and draw random ones instead, and how many random draws it makes before it gives up.
MAX_REPEATS = 20
MAX_RANDOM_DRAWS = 100

Fitness = float | tuple[float, ...] | None


class SpaceExhausted(RuntimeError):  # noqa: N818 (the name the stages and users know)
    """No new architecture can be proposed: every point of the space was proposed already."""


class HistoryEntry:
    """One proposed trial as the controller sees it (immutable).

    Built from a DNA (``HistoryEntry(dna, round, reward, objectives)``) or, by
    ``history_from_records``, from the stored ``dna_json`` with ``HistoryEntry.from_json``: such an
    entry checks the text at once (JSON, only DNA types, the compact DNA layout PyGlove writes) but
    builds the DNA object only when ``dna`` is read or the entry is replayed.

    Attributes:
        dna: The proposed DNA, with the metadata it was proposed with.
        round: The round that proposed it (1-based).
        reward: The reward of a COMPLETED trial; None for a failed, infeasible or unfinished one.
        objectives: The objective vector of a COMPLETED trial (multi-objective algorithms); None
            otherwise.
        finished: Whether the trial has a result (COMPLETED, FAILED, INFEASIBLE). An entry with a
            reward counts as finished whatever this says; one without a reward that is not
            finished may still get one, so snapshots stop before it (``settled``).
    """

    __slots__ = (
        "_dna",
        "_dna_json",
        "_key",
        "_source",
        "finished",
        "objectives",
        "reward",
        "round",
    )

    def __init__(
        self,
        dna: pg.DNA,
        round: int,
        reward: float | None = None,
        objectives: tuple[float, ...] | None = None,
        *,
        finished: bool = False,
    ):
        self._set(dna, None, None, "", round, reward, objectives, finished)

    def _set(
        self,
        dna: pg.DNA | None,
        dna_json: str | None,
        key: str | None,
        source: str,
        round_index: int,
        reward: float | None,
        objectives: tuple[float, ...] | None,
        finished: bool,
    ) -> None:
        for name, value in (
            ("_dna", dna),
            ("_dna_json", dna_json),
            ("_key", key),
            ("_source", source),
            ("round", round_index),
            ("reward", reward),
            ("objectives", objectives),
            ("finished", finished),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def from_json(
        cls,
        dna_json: str,
        round_index: int,
        reward: float | None = None,
        objectives: tuple[float, ...] | None = None,
        *,
        finished: bool = False,
        source: str = "dna_json",
    ) -> HistoryEntry:
        """An entry of a stored DNA, decoded when first needed.

        Args:
            dna_json: The trial's ``dna_json`` (``pg.to_json_str(dna)``).
            round_index: The round that proposed it.
            reward: See the class attributes.
            objectives: See the class attributes.
            finished: See the class attributes.
            source: Where the text came from, for messages (``proxy trial 7``).

        Raises:
            RecordError: The text is refused by ``load_dna`` (not JSON, a foreign ``_type``, not
                a DNA). Text in PyGlove's compact DNA layout is checked without building the
                DNA; anything else is decoded at once by ``load_dna``.
        """
        entry = cls.__new__(cls)
        tree = _plain_dna_tree(dna_json)
        if tree is None:
            dna = load_dna(dna_json, source)  # Raises the reason, or it is an unusual DNA.
            entry._set(dna, None, None, source, round_index, reward, objectives, finished)
        else:
            key = json.dumps(tree["value"])
            entry._set(None, dna_json, key, source, round_index, reward, objectives, finished)
        return entry

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"HistoryEntry is immutable: cannot set {name}")

    def __repr__(self) -> str:
        return (
            f"HistoryEntry(dna={self.key}, round={self.round}, reward={self.reward!r}, "
            f"objectives={self.objectives!r}, finished={self.finished})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HistoryEntry):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def _fields(self) -> tuple[Any, ...]:
        return (self.key, self.round, self.reward, self.objectives, self.settled)

    @property
    def dna(self) -> pg.DNA:
        """The DNA (decoded once, on first use, for an entry of a stored DNA)."""
        if self._dna is None:
            object.__setattr__(self, "_dna", self._decode())
        return self._dna  # type: ignore[return-value]

    @property
    def key(self) -> str:
        """The DNA's decisions without metadata, as text: equal keys, equal architectures."""
        if self._key is None:
            object.__setattr__(self, "_key", _key(self.dna))
        return self._key  # type: ignore[return-value]

    @property
    def settled(self) -> bool:
        """Whether the entry can no longer change: it has a reward, or it finished without one."""
        return self.finished or self.reward is not None

    def decisions(self) -> list[Any]:
        """The DNA's decisions as ``DNA.to_numbers()`` lists them, read from its compact value."""
        return deferred.decisions_of_value(json.loads(self.key))

    def fresh_dna(self) -> pg.DNA:
        """A new copy of the DNA with all its metadata, for a generator to keep and annotate."""
        if self._dna_json is not None:
            return self._decode()
        return _copy(self.dna)

    def _decode(self) -> pg.DNA:
        assert self._dna_json is not None
        try:
            return load_dna(self._dna_json, self._source)
        except RecordError as e:  # Checked when the entry was made: not expected.
            raise ValueError(f"{e}; the history cannot be replayed") from e


def _plain_dna_tree(text: str) -> dict[str, Any] | None:
    """The JSON tree of ``text`` if it is a DNA in the layout ``pg.to_json_str`` writes, else None.

    ``deferred.plain_tree`` says what that layout allows: ``load_dna`` accepts it and
    ``DNA.parse`` decodes it, so building the DNA can wait. None means "decode it now with
    ``load_dna``", which refuses what must be refused.
    """
    try:
        tree = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return tree if deferred.plain_tree(tree) else None


def history_from_records(
    records: Sequence[tuple[TrialSpec, TrialResult | None]],
) -> list[HistoryEntry]:
    """Turns stored trial records into the controller's history.

    Args:
        records: Each trial's spec and its result (None while it has none).

    Returns:
        One entry per trial, in trial-id (proposal) order. Reward and objectives are set only for
        COMPLETED results; FAILED, INFEASIBLE and unfinished trials get None (``finished`` tells
        the first two from the last). A trial whose ``dna_json`` is not a plain serialized DNA
        (damaged, or naming a foreign ``_type``) is left out with a ``CorruptRecordWarning``: it
        is checked by ``load_dna``'s rules, which import nothing, and the study goes on without
        it. DNA objects are built only when an entry is replayed (``HistoryEntry.from_json``).

    Raises:
        ValueError: A result belongs to another trial.
    """
    history = []
    for spec, result in sorted(records, key=lambda record: record[0].trial_id):
        if result is not None and result.trial_id != spec.trial_id:
            raise ValueError(
                f"trial {spec.trial_id} is paired with the result of trial {result.trial_id}"
            )
        done = result is not None and result.completed
        try:
            entry = HistoryEntry.from_json(
                spec.dna_json,
                spec.round,
                result.reward if done else None,  # type: ignore[union-attr]
                result.objectives if done else None,  # type: ignore[union-attr]
                finished=result is not None,
                source=f"{spec.study} trial {spec.trial_id}",
            )
        except RecordError as e:
            warnings.warn(
                f"{e}; the trial is left out of the search history (it stays proposed: its id "
                f"is not reused)",
                CorruptRecordWarning,
                stacklevel=2,
            )
            continue
        history.append(entry)
    return history


@dataclasses.dataclass(frozen=True)
class SearchSnapshot(Record):
    """A study's algorithm after replaying the first ``covers`` entries of its history.

    Made by ``propose_with_state``; the stages store it as JSON at
    ``ExperimentLayout.study_snapshot(study)`` and pass it to the next proposal. It is used only
    for the same study settings and the same covered trials (see ``problem``).

    Attributes:
        algorithm: The algorithm's name.
        options: Its complete options (defaults filled in).
        seed: The study's seed.
        space: The space's name.
        space_digest: A digest of the space's decision points (ids, kinds, candidates).
        state_version: The ``StateAdapter.version`` that wrote ``state``.
        covers: How many history entries (in history order) the state has replayed.
        history_digest: A digest of those entries: their decisions, rounds and fitness.
        state: The adapter's data.
    """

    KIND: ClassVar[str] = "search snapshot"
    SCHEMA_VERSION: ClassVar[int] = 1

    algorithm: str
    options: dict[str, Any]
    seed: int
    space: str
    space_digest: str
    state_version: str
    covers: int
    history_digest: str
    state: dict[str, Any]

    @classmethod
    def _check(cls, data: Mapping[str, Any], source: str) -> None:
        kinds = {
            "algorithm": (str, "a string"),
            "options": (dict, "an object"),
            "seed": (int, "an integer"),
            "space": (str, "a string"),
            "space_digest": (str, "a string"),
            "state_version": (str, "a string"),
            "covers": (int, "an integer"),
            "history_digest": (str, "a string"),
            "state": (dict, "an object"),
        }
        for name, (kind, what) in kinds.items():
            value = data.get(name)
            if name in data and (not isinstance(value, kind) or isinstance(value, bool)):
                raise RecordError(f"{source}: {name} must be {what}, got {value!r:.60}")
        if isinstance(data.get("covers"), int) and data["covers"] < 0:
            raise RecordError(f"{source}: covers must be >= 0, got {data['covers']}")


@dataclasses.dataclass(frozen=True)
class Proposal:
    """What ``propose_with_state`` did.

    Attributes:
        dnas: The proposals (or, on resume, the round's stored DNA).
        snapshot: The algorithm's state after the settled prefix of the history, for the caller
            to keep and pass to the next proposal; None when there is nothing new to keep (a
            resumed round, an algorithm without snapshots, no newly settled trial).
        replayed: How many history entries were replayed (decoded and fed to the algorithm).
        restored: How many history entries the given snapshot covered (not replayed).
        fallback: Why the given snapshot was not used (empty when it was, or none was given).
    """

    dnas: list[pg.DNA]
    snapshot: SearchSnapshot | None = None
    replayed: int = 0
    restored: int = 0
    fallback: str = ""


def propose(
    study: StudySpec,
    history: Sequence[HistoryEntry],
    n: int,
    *,
    round_index: int,
    snapshot: SearchSnapshot | None = None,
) -> list[pg.DNA]:
    """Proposes the trials of round ``round_index`` of a study.

    If the history has trials of ``round_index`` already, returns their DNA in history order
    (resume) and proposes nothing. Otherwise rebuilds the algorithm, replays the history into it
    (or restores ``snapshot`` and replays the trials since it) and proposes up to ``n`` DNA that
    are new to the study. ``propose_with_state`` does the same and also returns the new snapshot.

    Failed trials: entries whose reward is None (FAILED, INFEASIBLE, unfinished) are replayed with
    reward None, which is PyGlove's "proposed, no feedback" state. ``random`` redraws one DNA per
    entry whatever the reward, so its RNG continues its sequence; ``grid`` resumes after the last
    DNA whatever the reward; the evolution algorithms count the proposal and its generation but
    leave it out of the population and out of the initial-population count, so they evolve only
    from evaluated architectures and keep sampling the initial population until enough trials
    succeed. No stand-in reward is invented: a failure (preemption, out of memory) says nothing
    about quality, a low constant would rank above real negative rewards, and an infinite one
    breaks NSGA-II's crowding distances. A failed DNA still counts as proposed: it is not proposed
    again (retrying a trial is the pipeline's job, not the search's).

    Replay (a stateless multi-round run against one generator fed round by round):

    * ``grid``: identical.
    * ``random``: identical until the first duplicate draw the controller drops (replay redraws one
      DNA per trial, not the dropped ones); from then on, a different but deterministic sequence.
    * Evolution (``regularized_evolution``, ``hill_climb``, ``nsga2``): the population, generation
      count and initial-population state are rebuilt exactly, but PyGlove restarts the selection
      and mutation RNGs on a fresh generator. So each round is seeded with
      ``derive_seed(seed, "round", r)`` (``Algorithm.seed_per_round``): proposals are reproducible
      and new, not equal to an uninterrupted run's.

    Args:
        study: The resolved study (space, algorithm and seed set).
        history: The study's trials so far, in proposal (trial id) order, rounds never decreasing.
        n: How many trials to propose (at least 1).
        round_index: The round to propose for (1-based).
        snapshot: A snapshot from an earlier ``propose_with_state`` of this study, or None. One
            that does not fit is ignored with a logged warning: the proposals are the same.

    Returns:
        On resume, the round's DNA. Otherwise between 1 and ``n`` new DNA, with the space's
        ``DNASpec`` attached and the metadata the algorithm needs to recover (serialize them with
        ``pg.to_json_str``). Fewer than ``n`` only when the space runs out of new points (grid at
        its end; for the others, no new DNA in ``MAX_REPEATS`` proposals and then
        ``MAX_RANDOM_DRAWS`` random draws): the last round of a small space is then shorter
        rather than an error.

    Raises:
        ValueError: ``n`` or ``round_index`` below 1, an unresolved study, invalid options, or a
            history that cannot be replayed (rounds going backwards, DNA outside the space, a
            completed trial without the objectives a multi-objective algorithm needs).
        RegistryError: Unknown algorithm or space (the message lists the known names).
        SpaceExhausted: Not a single new DNA can be proposed.
    """
    return propose_with_state(study, history, n, round_index=round_index, snapshot=snapshot).dnas


def propose_with_state(
    study: StudySpec,
    history: Sequence[HistoryEntry],
    n: int,
    *,
    round_index: int,
    snapshot: SearchSnapshot | None = None,
) -> Proposal:
    """``propose``, also returning the algorithm's new snapshot and what was replayed.

    The caller keeps ``Proposal.snapshot`` (when not None) and passes it to the next call: the
    proposals are exactly those of a full replay, but only the trials after the snapshot are
    replayed. See ``propose`` for the arguments and errors.
    """
    if n < 1:
        raise ValueError(f"n (trials to propose) must be at least 1, got {n}")
    _check_round(history, round_index)
    _check_resolved(study)
    spec = _space_spec(study.space)
    resumed = [entry for entry in history if entry.round == round_index]
    if resumed:
        return Proposal([entry.fresh_dna().use_spec(spec) for entry in resumed])

    rebuilt = _rebuild(study, history, round_index, spec, snapshot)
    generator = rebuilt.generator
    seen = {entry.key for entry in history}
    explore = random.Random(derive_seed(_seed(study), "explore", round_index))
    proposals: list[pg.DNA] = []
    with deferred.known_keys(seen):  # repeats the controller drops are not built
        while (
            len(proposals) < n and (dna := _propose_new(generator, spec, seen, explore)) is not None
        ):
            seen.add(_key(dna))
            proposals.append(dna.use_spec(spec))
    if not proposals:
        raise SpaceExhausted(_exhausted_message(study, spec, len(seen)))
    return Proposal(
        proposals, rebuilt.snapshot, rebuilt.replayed, rebuilt.restored, rebuilt.fallback
    )


def recover_generator(
    study: StudySpec,
    history: Sequence[HistoryEntry],
    *,
    round_index: int,
    spec: pg.DNASpec | None = None,
    snapshot: SearchSnapshot | None = None,
) -> pg.DNAGenerator:
    """The study's algorithm rebuilt for ``round_index``: what ``propose`` draws from.

    A fresh generator (seeded as ``propose`` describes), set up on the space's ``DNASpec`` and with
    ``history`` replayed (after ``snapshot``, if it fits); inspect it to see, for example, an
    evolution's population. The history's DNA are copied first, so the caller's objects are left
    as they are.

    Args:
        study: The resolved study.
        history: The trials proposed before round ``round_index``, in proposal order.
        round_index: The round the generator will propose for.
        spec: The space's ``DNASpec``, if the caller has it already.
        snapshot: A snapshot to start from (see ``propose``).

    Returns:
        The generator, ready to ``propose()``.

    Raises:
        ValueError: An unresolved study, invalid options, or a history that cannot be replayed
            (see ``propose``), including one with trials of round ``round_index`` or later.
        RegistryError: Unknown algorithm or space.
    """
    _check_round(history, round_index)
    if history and history[-1].round >= round_index:
        raise ValueError(
            f"the history to recover for round {round_index} must hold earlier rounds only, "
            f"but it has trials of round {history[-1].round}"
        )
    spec = spec if spec is not None else _space_spec(_space(study))
    generator = _rebuild(study, history, round_index, spec, snapshot).generator
    algorithm = ALGORITHMS.get(_algorithm_spec(study).name)
    adapter, _ = algorithm.state_adapter(generator)
    if adapter is not None:
        adapter.materialize(generator)  # built DNA to inspect, not the replay's stand-ins
    return generator


@dataclasses.dataclass(frozen=True)
class _Rebuilt:
    generator: pg.DNAGenerator
    snapshot: SearchSnapshot | None
    replayed: int
    restored: int
    fallback: str


def _rebuild(
    study: StudySpec,
    history: Sequence[HistoryEntry],
    round_index: int,
    spec: pg.DNASpec,
    snapshot: SearchSnapshot | None,
) -> _Rebuilt:
    """A fresh generator with the history replayed, from ``snapshot`` when it fits."""
    algorithm = ALGORITHMS.get(_algorithm_spec(study).name)
    generator = _fresh(study, algorithm, round_index, spec)
    if not algorithm.replays_history:
        return _Rebuilt(generator, None, 0, 0, "")
    fitness = [_fitness(algorithm, entry, i) for i, entry in enumerate(history)]
    sizes = {len(f) for f in fitness if isinstance(f, tuple)}
    if len(sizes) > 1:
        raise ValueError(
            f"{algorithm.name} needs the same number of objectives for every trial; the history "
            f"has objective vectors of sizes {sorted(sizes)}"
        )

    def items(begin: int, end: int | None = None) -> list[Replayed]:
        """The entries ``begin:end`` to replay (those a snapshot covers are never touched)."""
        stop = len(history) if end is None else end
        return [_replayed(history[i], i, fitness[i], spec) for i in range(begin, stop)]

    adapter, unsupported = algorithm.state_adapter(generator)
    if adapter is None:
        fallback = ""
        if snapshot is not None:
            fallback = f"{algorithm.name} keeps no snapshots ({unsupported})"
            log.warning(
                "%s: the snapshot is ignored; replaying all %d trials", fallback, len(history)
            )
        elif history:
            log.info(
                "%s keeps no snapshots (%s): replaying all %d trials",
                algorithm.name,
                unsupported,
                len(history),
            )
        _replay_all(generator, algorithm, items(0))
        return _Rebuilt(generator, None, len(history), 0, fallback)

    settled = next((i for i, entry in enumerate(history) if not entry.settled), len(history))
    marks = {settled}
    if snapshot is not None and snapshot.covers <= len(history):
        marks.add(snapshot.covers)
    digests = _digests(history, fitness, marks)
    options = algorithm.complete(_algorithm_spec(study).options)
    start, fallback = 0, ""
    if snapshot is not None:
        fallback = _snapshot_problem(
            snapshot, study, options, adapter, spec, len(history), digests.get(snapshot.covers)
        )
        if not fallback:
            try:
                adapter.restore(generator, snapshot.state)
                start = snapshot.covers
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
                fallback = f"its state cannot be restored ({type(e).__name__}: {e})"
                generator = _fresh(study, algorithm, round_index, spec)
        if fallback:
            log.warning(
                "search snapshot of %s not used: %s; replaying all %d trials instead",
                algorithm.name,
                fallback,
                len(history),
            )
    _replay(generator, algorithm, adapter, items(start, settled))
    new_snapshot = None
    if settled > start:
        new_snapshot = _take_snapshot(
            study, options, adapter, generator, spec, settled, digests[settled]
        )
    _replay(generator, algorithm, adapter, items(max(start, settled)))
    adapter.finish(generator)
    replayed = len(history) - start
    return _Rebuilt(generator, new_snapshot, replayed, start, fallback)


def _fresh(
    study: StudySpec, algorithm: Algorithm, round_index: int, spec: pg.DNASpec
) -> pg.DNAGenerator:
    seed = _seed(study)
    if algorithm.seed_per_round:
        seed = derive_seed(seed, "round", round_index)
    generator = algorithm.create(_algorithm_spec(study).options, seed)
    generator.setup(spec)
    return generator


def _replayed(entry: HistoryEntry, index: int, fitness: Fitness, spec: pg.DNASpec) -> Replayed:
    def not_in_space(e: ValueError) -> ValueError:
        return ValueError(
            f"history entry {index} (round {entry.round}) is not a DNA of this space: {e}"
        )

    def load() -> pg.DNA:
        dna = entry.fresh_dna()
        try:
            return dna.use_spec(spec)
        except ValueError as e:
            raise not_in_space(e) from e

    def stand_in() -> pg.DNA:
        try:
            return deferred.deferred_dna(json.loads(entry._dna_json), spec)  # type: ignore[arg-type]
        except ValueError as e:
            raise not_in_space(e) from e

    stored = entry._dna_json is not None and deferred.supports(spec)
    return Replayed(load, fitness, entry.decisions, stand_in if stored else None)


def _replay_all(generator: pg.DNAGenerator, algorithm: Algorithm, items: list[Replayed]) -> None:
    """Replays every entry with the generator's own ``recover`` (no adapter)."""
    pairs = [(item.load(), item.fitness) for item in items]
    _metadata_errors(algorithm, lambda: generator.recover(pairs))


def _replay(
    generator: pg.DNAGenerator,
    algorithm: Algorithm,
    adapter: StateAdapter,
    items: Sequence[Replayed],
) -> None:
    if items:
        _metadata_errors(algorithm, lambda: adapter.replay(generator, items))


def _metadata_errors(algorithm: Algorithm, replay: Callable[[], None]) -> None:
    try:
        replay()
    except KeyError as e:
        raise ValueError(
            f"the history cannot be replayed into {algorithm.name}: a DNA lacks the metadata {e} "
            f"that {algorithm.name} records when it proposes; every trial of a study must be "
            f"proposed by the study's algorithm (was it changed?)"
        ) from e


def _digests(
    history: Sequence[HistoryEntry], fitness: Sequence[Fitness], marks: set[int]
) -> dict[int, str]:
    """The digest of ``history[:k]`` for each ``k`` in ``marks``: decisions, rounds, fitness."""
    digest = hashlib.sha256()
    out = {0: digest.hexdigest()} if 0 in marks else {}
    last = max(marks)
    for i, (entry, value) in enumerate(zip(history[:last], fitness[:last], strict=True)):
        digest.update(f"{entry.key}\x1f{entry.round}\x1f{value!r}\n".encode())
        if i + 1 in marks:
            out[i + 1] = digest.hexdigest()
    return out


def _snapshot_problem(
    snapshot: SearchSnapshot,
    study: StudySpec,
    options: Mapping[str, Any],
    adapter: StateAdapter,
    spec: pg.DNASpec,
    num_entries: int,
    digest: str | None,
) -> str:
    """Why ``snapshot`` cannot stand for the start of this history (empty: it can)."""
    name = _algorithm_spec(study).name
    for what, theirs, ours in (
        ("algorithm", snapshot.algorithm, name),
        ("space", snapshot.space, study.space),
        ("state version", snapshot.state_version, adapter.version),
        ("seed", snapshot.seed, _seed(study)),
        ("options", snapshot.options, dict(options)),
        ("space's decision points", snapshot.space_digest, _space_digest(spec)),
    ):
        if theirs != ours:
            return f"it was made for {what} {theirs!r}, not {ours!r}"
    if snapshot.covers > num_entries:
        return (
            f"it covers {snapshot.covers} trials but the history has only {num_entries} (trials "
            f"were deleted, or it belongs to another study)"
        )
    if digest != snapshot.history_digest:
        return (
            f"the first {snapshot.covers} trials of the history are not the ones it replayed "
            f"(a trial record was changed, deleted or restored since)"
        )
    return ""


def _take_snapshot(
    study: StudySpec,
    options: Mapping[str, Any],
    adapter: StateAdapter,
    generator: pg.DNAGenerator,
    spec: pg.DNASpec,
    covers: int,
    digest: str,
) -> SearchSnapshot | None:
    try:
        # Through JSON: what is stored, and no list the generator goes on changing.
        state = json.loads(json.dumps(adapter.snapshot(generator), allow_nan=False))
        snapshot = SearchSnapshot(
            algorithm=_algorithm_spec(study).name,
            options=dict(options),
            seed=_seed(study),
            space=_space(study),
            space_digest=_space_digest(spec),
            state_version=adapter.version,
            covers=covers,
            history_digest=digest,
            state=state,
        )
    except (TypeError, ValueError) as e:
        log.info("no search snapshot of %s: %s", _algorithm_spec(study).name, e)
        return None
    return snapshot


def _check_resolved(study: StudySpec) -> None:
    if not study.space or study.algorithm is None or study.seed is None:
        raise ValueError(
            "the controller needs a resolved study with space, algorithm and seed set: pass "
            "ExperimentSpec.study(name) (or a study of ExperimentSpec.resolved())"
        )


def _algorithm_spec(study: StudySpec) -> AlgorithmSpec:
    _check_resolved(study)
    assert study.algorithm is not None  # For type checkers.
    return study.algorithm


def _seed(study: StudySpec) -> int:
    _check_resolved(study)
    assert study.seed is not None  # For type checkers.
    return study.seed


def _space(study: StudySpec) -> str:
    _check_resolved(study)
    return study.space


_SPECS: dict[int, tuple[Any, pg.DNASpec, str]] = {}


def _space_spec(name: str) -> pg.DNASpec:
    """The ``DNASpec`` of space ``name``, built once per space object.

    Building it takes most of a second on a large space; generators and DNA only read it.
    """
    space = get_space(name)
    cached = _SPECS.get(id(space))
    if cached is None or cached[0] is not space:
        spec = dna_spec(space)
        cached = _SPECS[id(space)] = (space, spec, _digest_of_spec(spec))
    return cached[1]


def _space_digest(spec: pg.DNASpec) -> str:
    for _, cached_spec, digest in _SPECS.values():
        if cached_spec is spec:
            return digest
    return _digest_of_spec(spec)


def _digest_of_spec(spec: pg.DNASpec) -> str:
    """A digest of the decision points: ids, kinds, candidates or ranges."""
    digest = hashlib.sha256()
    for point in spec.decision_points:
        detail: Any = None
        if isinstance(point, pg.geno.Choices):
            detail = [str(v) for v in point.literal_values]
        elif isinstance(point, pg.geno.Float):
            detail = [point.min_value, point.max_value]
        digest.update(f"{point.id}|{type(point).__name__}|{detail}\n".encode())
    return digest.hexdigest()


def _check_round(history: Sequence[HistoryEntry], round_index: int) -> None:
    """Checks that ``round_index`` can be proposed after ``history``."""
    if round_index < 1:
        raise ValueError(f"round_index must be at least 1 (rounds are 1-based), got {round_index}")
    previous = 1
    for i, entry in enumerate(history):
        if entry.round < 1:
            raise ValueError(f"history entry {i} has round {entry.round}; rounds start at 1")
        if entry.round < previous:
            raise ValueError(
                f"history rounds go backwards: entry {i} is of round {entry.round} after round "
                f"{previous}; pass the history in proposal (trial id) order"
            )
        previous = entry.round
    if previous > round_index and not any(e.round == round_index for e in history):
        raise ValueError(
            f"round {round_index} has no trials but round {previous} has: rounds are proposed in "
            f"order, so round {round_index} cannot be proposed now"
        )


def _fitness(algorithm: Algorithm, entry: HistoryEntry, index: int) -> Fitness:
    """What the algorithm is fed for one entry: None, the reward, or the objective tuple."""
    if entry.reward is None:
        return None
    if not algorithm.multi_objective:
        return float(entry.reward)
    if entry.objectives is None or len(entry.objectives) < 2:
        raise ValueError(
            f"{algorithm.name} is multi-objective, but the completed trial at history entry "
            f"{index} (round {entry.round}) has objectives {entry.objectives!r}: a trial must "
            f"record two or more objectives in result.objectives"
        )
    return tuple(float(value) for value in entry.objectives)


def _propose_new(
    generator: pg.DNAGenerator, spec: pg.DNASpec, seen: set[str], explore: random.Random
) -> pg.DNA | None:
    """The generator's next DNA not in ``seen``, or a random one if it keeps repeating itself.

    Why the controller dedups here instead of wrapping generators in ``pg.geno.Deduping``
    (PyGlove 0.4.5): its default hash (``pg.hash``) includes DNA metadata, and evolution stamps
    every proposal with a unique ``proposal_id``, so evolution's duplicates never collide; its
    ``recover`` replays through the inner generator's ``_replay`` and so bypasses
    ``Evolution.recover`` (the population comes back, but not the counters, the generation number
    nor the end of the initial population); and for generators that take feedback it only dedups
    against fed-back DNA, so one round's batch could repeat itself. For ``random`` it would work,
    but it adds nothing to this check.

    Returns None when the generator stops (grid at the end) or no new DNA turns up at all.
    """
    metadata: dict[str, object] = {}
    for _ in range(MAX_REPEATS):
        try:
            dna = generator.propose()
        except StopIteration:
            return None
        if _key(dna) not in seen:
            return dna
        metadata = dict(dna.metadata)
    for _ in range(MAX_RANDOM_DRAWS):
        dna = random_dna(spec, explore)
        if _key(dna) not in seen:
            # It stands in for the repeated proposal: with its metadata (generation, initial
            # population marker), the algorithm recovers it as one of its own.
            for key, value in metadata.items():
                dna.set_metadata(key, value)
            return dna
    return None


def _key(dna: pg.DNA) -> str:
    """The DNA's decisions without metadata, as text (``deferred.dna_key``)."""
    return deferred.dna_key(dna)


def _copy(dna: pg.DNA) -> pg.DNA:
    """A deep copy that keeps all metadata (``DNA.clone`` keeps only the cloneable keys)."""
    return pg.from_json(dna.to_json())


def _exhausted_message(study: StudySpec, spec: pg.DNASpec, num_seen: int) -> str:
    size = spec.space_size
    if 0 < size <= num_seen:
        return (
            f"search space exhausted: all {size} points of {study.space} have been proposed; "
            f"lower the budget or pick another algorithm"
        )
    total = f"{size}" if size > 0 else "an unbounded number of"
    return (
        f"search space exhausted: {_algorithm_spec(study).name} found no point of {study.space} "
        f"that was not proposed before ({num_seen} of {total} points have been proposed); lower "
        f"the budget or pick another algorithm"
    )
