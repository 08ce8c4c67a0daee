"""The stateless search controller: the next trials of a study, from its spec and history alone.

``propose(study, history, n, round_index=r)`` keeps no state between calls. Every call builds the
study's algorithm afresh (``ALGORITHMS.get(name).create(options, seed)``), sets it up on the space's
``DNASpec``, replays the history into it with PyGlove's ``DNAGenerator.recover`` and asks it for
``n`` new DNA. The history is what the store holds: each trial's ``dna_json`` (written with
``pg.to_json_str``, so it keeps the DNA metadata that evolution needs to recover) and its result.
Stored DNA are decoded by ``kfnas.spaces.base.load_dna``, which allows ``pg.DNA`` only and imports
nothing a record names; a trial whose DNA it refuses is left out of the history with a warning.

Guarantees:

* Resume: if the history already has trials of ``round_index``, those DNA are returned in history
  order and nothing new is proposed, so a resubmitted pipeline gets the same trials.
* Determinism: the same (study, history, n, round) gives the same proposals in any process.
* Novelty: a proposal never repeats a DNA of the history (failed trials included) or of the same
  batch; the controller drops such duplicates and asks the algorithm again. If the algorithm keeps
  repeating itself (hill climbing whose neighbourhood was all tried, a converged population in a
  small space), a seeded random new DNA takes the repeated proposal's place and metadata, so the
  study explores instead of stalling and the algorithm still recovers it as its own.
* Replay: how closely a stateless run follows an uninterrupted in-process one depends on the
  algorithm (see ``propose``).

To extend: new algorithms go into ``kfnas.search.algorithms`` (one factory and one lazy-table
line); this module needs no change.
"""

from __future__ import annotations

import dataclasses
import json
import random
import warnings
from collections.abc import Sequence

import pyglove as pg

from kfnas.config.spec import AlgorithmSpec, StudySpec
from kfnas.records.trial import RecordError, TrialResult, TrialSpec
from kfnas.search.algorithms import ALGORITHMS, Algorithm, derive_seed
from kfnas.spaces import get_space
from kfnas.spaces.base import dna_spec, load_dna
from kfnas.store.trials import CorruptRecordWarning

__all__ = [
    "MAX_RANDOM_DRAWS",
    "MAX_REPEATS",
    "HistoryEntry",
    "SpaceExhausted",
    "history_from_records",
    "propose",
    "recover_generator",
]

# How many repeated proposals in a row make the controller stop asking the algorithm for a new DNA
# and draw random ones instead, and how many random draws it makes before it gives up.
MAX_REPEATS = 20
MAX_RANDOM_DRAWS = 100

Fitness = float | tuple[float, ...] | None


class SpaceExhausted(RuntimeError):  # noqa: N818 (the name the stages and users know)
    """No new architecture can be proposed: every point of the space was proposed already."""


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    """One proposed trial as the controller sees it.

    Attributes:
        dna: The proposed DNA, with the metadata it was proposed with.
        round: The round that proposed it (1-based).
        reward: The reward of a COMPLETED trial; None for a failed, infeasible or unfinished one.
        objectives: The objective vector of a COMPLETED trial (multi-objective algorithms); None
            otherwise.
    """

    dna: pg.DNA
    round: int
    reward: float | None = None
    objectives: tuple[float, ...] | None = None


def history_from_records(
    records: Sequence[tuple[TrialSpec, TrialResult | None]],
) -> list[HistoryEntry]:
    """Turns stored trial records into the controller's history.

    Args:
        records: Each trial's spec and its result (None while it has none).

    Returns:
        One entry per trial, in trial-id (proposal) order. Reward and objectives are set only for
        COMPLETED results; FAILED, INFEASIBLE and unfinished trials get None. A trial whose
        ``dna_json`` is not a plain serialized DNA (damaged, or naming a foreign ``_type``) is
        left out with a ``CorruptRecordWarning``: it is decoded by ``load_dna``, which imports
        nothing, and the study goes on without it.

    Raises:
        ValueError: A result belongs to another trial.
    """
    history = []
    for spec, result in sorted(records, key=lambda record: record[0].trial_id):
        if result is not None and result.trial_id != spec.trial_id:
            raise ValueError(
                f"trial {spec.trial_id} is paired with the result of trial {result.trial_id}"
            )
        try:
            dna = load_dna(spec.dna_json, f"{spec.study} trial {spec.trial_id}")
        except RecordError as e:
            warnings.warn(
                f"{e}; the trial is left out of the search history (it stays proposed: its id "
                f"is not reused)",
                CorruptRecordWarning,
                stacklevel=2,
            )
            continue
        done = result is not None and result.completed
        history.append(
            HistoryEntry(
                dna=dna,
                round=spec.round,
                reward=result.reward if done else None,
                objectives=result.objectives if done else None,
            )
        )
    return history


def propose(
    study: StudySpec, history: Sequence[HistoryEntry], n: int, *, round_index: int
) -> list[pg.DNA]:
    """Proposes the trials of round ``round_index`` of a study.

    If the history has trials of ``round_index`` already, returns their DNA in history order
    (resume) and proposes nothing. Otherwise rebuilds the algorithm, replays the history into it
    and proposes up to ``n`` DNA that are new to the study.

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
    if n < 1:
        raise ValueError(f"n (trials to propose) must be at least 1, got {n}")
    _check_round(history, round_index)
    _check_resolved(study)
    spec = dna_spec(get_space(study.space))
    resumed = [entry.dna for entry in history if entry.round == round_index]
    if resumed:
        return [_copy(dna).use_spec(spec) for dna in resumed]

    generator = recover_generator(study, history, round_index=round_index, spec=spec)
    seen = {_key(entry.dna) for entry in history}
    explore = random.Random(derive_seed(_seed(study), "explore", round_index))
    proposals: list[pg.DNA] = []
    while len(proposals) < n and (dna := _propose_new(generator, spec, seen, explore)) is not None:
        seen.add(_key(dna))
        proposals.append(dna.use_spec(spec))
    if not proposals:
        raise SpaceExhausted(_exhausted_message(study, spec, len(seen)))
    return proposals


def recover_generator(
    study: StudySpec,
    history: Sequence[HistoryEntry],
    *,
    round_index: int,
    spec: pg.DNASpec | None = None,
) -> pg.DNAGenerator:
    """The study's algorithm rebuilt for ``round_index``: what ``propose`` draws from.

    A fresh generator (seeded as ``propose`` describes), set up on the space's ``DNASpec`` and with
    ``history`` replayed through ``recover``; inspect it to see, for example, an evolution's
    population. The history's DNA are copied first, so the caller's objects are left as they are.

    Args:
        study: The resolved study.
        history: The trials proposed before round ``round_index``, in proposal order.
        round_index: The round the generator will propose for.
        spec: The space's ``DNASpec``, if the caller has it already.

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
    name = _algorithm_spec(study).name
    algorithm = ALGORITHMS.get(name)
    seed = _seed(study)
    if algorithm.seed_per_round:
        seed = derive_seed(seed, "round", round_index)
    generator = algorithm.create(_algorithm_spec(study).options, seed)
    generator.setup(spec if spec is not None else dna_spec(get_space(study.space)))
    _recover(generator, algorithm, history, generator.dna_spec)
    return generator


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


def _recover(
    generator: pg.DNAGenerator,
    algorithm: Algorithm,
    history: Sequence[HistoryEntry],
    spec: pg.DNASpec,
) -> None:
    """Replays the history into a fresh generator, on copies so the caller's DNA stay untouched."""
    if not algorithm.replays_history:
        return  # Checking each DNA against the spec alone costs as much as drawing it.
    replay = []
    for i, entry in enumerate(history):
        dna = _copy(entry.dna)
        try:
            dna.use_spec(spec)
        except ValueError as e:
            raise ValueError(
                f"history entry {i} (round {entry.round}) is not a DNA of this space: {e}"
            ) from e
        replay.append((dna, _fitness(algorithm, entry, i)))
    sizes = {len(f) for _, f in replay if isinstance(f, tuple)}
    if len(sizes) > 1:
        raise ValueError(
            f"{algorithm.name} needs the same number of objectives for every trial; the history "
            f"has objective vectors of sizes {sorted(sizes)}"
        )
    try:
        generator.recover(replay)
    except KeyError as e:
        raise ValueError(
            f"the history cannot be replayed into {algorithm.name}: a DNA lacks the metadata {e} "
            f"that {algorithm.name} records when it proposes; every trial of a study must be "
            f"proposed by the study's algorithm (was it changed?)"
        ) from e


def _fitness(algorithm: Algorithm, entry: HistoryEntry, index: int) -> Fitness:
    """What ``recover`` is fed for one entry: None, the reward, or the objective tuple."""
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
        dna = pg.random_dna(spec, explore)
        if _key(dna) not in seen:
            # It stands in for the repeated proposal: with its metadata (generation, initial
            # population marker), the algorithm recovers it as one of its own.
            for key, value in metadata.items():
                dna.set_metadata(key, value)
            return dna
    return None


def _key(dna: pg.DNA) -> str:
    """The DNA's decisions, without metadata (``pg.hash`` would include the metadata)."""
    return json.dumps(dna.sym_jsonify(compact=True, type_info=False))


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
