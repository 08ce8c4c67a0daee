"""Search algorithms: the registry ``ALGORITHMS`` of PyGlove ``DNAGenerator`` factories.

Each algorithm is one ``Algorithm`` record: its name, the options it accepts (with their defaults),
whether it is multi-objective, and a factory ``(options, seed) -> pg.DNAGenerator``. Nothing here
keeps state between calls: the controller (``kfnas.search.controller``) builds a fresh generator for
every proposal and replays the study's history into it with ``DNAGenerator.recover``.

Snapshots (proposal cost that stays flat as the history grows): a generator whose state can be
saved is replayed, snapshotted and restored through a ``StateAdapter``, so the controller replays
only the trials since the last snapshot. ``Algorithm.state_adapter(generator)`` finds it:

* the record's own ``state`` adapter, when it has one and it supports the generator (PyGlove's
  evolution generators: ``EVOLUTION_STATE``; the grid: ``GRID_STATE``);
* otherwise the generator's own methods, when its class has ``snapshot_state() -> dict``,
  ``restore_state(state)`` and a class attribute ``STATE_VERSION`` (e.g. ``kfnas.search.ppo``);
* otherwise none: the generator is replayed in full with ``recover`` on every proposal.

Built-ins: ``random``, ``grid`` (sweeps every point of a small space), ``regularized_evolution``,
``hill_climb`` and ``nsga2`` (multi-objective, e.g. accuracy vs latency).

To add an algorithm (one module, one line): in its own module ``kfnas/search/<name>.py``, write a
factory returning a ``pg.DNAGenerator`` that ``recover`` can rebuild from its history (PyGlove's
``_propose/_feedback/_replay`` contract) and wrap it in an ``Algorithm`` record; then add one
line to ``_BUILTINS`` (``"name": "kfnas.search.<name>:RECORD"``). The conformance tests in
``tests/conformance`` (valid DNA, failed trials tolerated, determinism, resume) then cover it. A
user's own algorithm can be registered at run time: ``ALGORITHMS.register(name, Algorithm(...))``.
To make its proposals cost the same after ten thousand trials as after ten, give its generator
``snapshot_state``/``restore_state``/``STATE_VERSION`` (its ``recover`` must then be incremental:
``recover(a)`` then ``recover(b)`` leaves it as ``recover(a + b)`` does), or give the record a
``StateAdapter``; ``tests/search/test_snapshots.py`` then checks that snapshots change nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pyglove as pg

from kfnas.records.base import RecordError
from kfnas.registry import Registry
from kfnas.search import deferred
from kfnas.search.sampling import GridSearch, RandomSearch, UniformMutator, dna_decisions
from kfnas.spaces.base import load_dna

__all__ = [
    "ALGORITHMS",
    "EVOLUTION_STATE",
    "GRID",
    "GRID_STATE",
    "HILL_CLIMB",
    "NSGA2",
    "RANDOM",
    "REGULARIZED_EVOLUTION",
    "Algorithm",
    "Replayed",
    "StateAdapter",
    "check_own_state",
    "derive_seed",
    "own_state_adapter",
]

Factory = Callable[[Mapping[str, Any], int], pg.DNAGenerator]
Fitness = float | tuple[float, ...] | None


def derive_seed(seed: int, *salt: object) -> int:
    """A seed derived from ``seed`` and ``salt``, stable across processes and Python versions.

    Args:
        seed: The base seed (e.g. the study's).
        *salt: What the derived seed is for (e.g. ``"round", 3`` or ``"mutator"``).

    Returns:
        A non-negative 31-bit integer.
    """
    text = ":".join(str(part) for part in (seed, *salt))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclasses.dataclass(frozen=True)
class Replayed:
    """One history entry as a ``StateAdapter`` replays it.

    Attributes:
        load: Returns the entry's DNA as a new object, with the space's ``DNASpec`` attached and
            the metadata it was proposed with: the algorithm's to keep and annotate. Each call
            decodes the stored DNA again (tens of milliseconds on a large space), so an adapter
            calls it once per entry it needs, and not at all for the entries it can skip.
        fitness: What the algorithm is fed: None (failed or unfinished), the reward, or the
            objective tuple (multi-objective algorithms).
        decisions: Returns the entry's decisions as ``DNA.to_numbers()`` gives them, read from
            the stored DNA's compact value without building the DNA (microseconds): for an
            algorithm that learns from the decisions alone (``recover_decisions`` below).
        stand_in: Returns a deferred DNA for the entry (``kfnas.search.deferred``: the stored
            metadata, the decisions checked, no tree built), when the entry is stored and the
            space allows it; else None. Only for an adapter whose algorithm reads nothing but
            metadata from the DNA it keeps, and mutates them with ``UniformMutator``.
    """

    load: Callable[[], pg.DNA]
    fitness: Fitness
    decisions: Callable[[], list[Any]] | None = None
    stand_in: Callable[[], pg.DNA] | None = None

    def numbers(self) -> list[Any]:
        """The entry's decisions (``DNA.to_numbers()``), without building its DNA if it can."""
        return self.decisions() if self.decisions is not None else dna_decisions(self.load())


def _nothing(generator: pg.DNAGenerator) -> None:
    del generator


def _supported(generator: pg.DNAGenerator) -> str:
    del generator
    return ""


@dataclasses.dataclass(frozen=True)
class StateAdapter:
    """How the controller replays, snapshots and restores a generator's state.

    The controller rebuilds a generator for each proposal as ``restore(snapshot)`` (if it has a
    usable one), ``replay(entries since the snapshot)``, ``snapshot()`` of the settled prefix,
    ``replay(the rest)``, ``finish()``; without a snapshot it starts from a fresh generator and
    replays the whole history. An adapter must make both give the same generator: ``replay`` is
    incremental (``replay(a)`` then ``replay(b)`` equals ``replay(a + b)``), and ``restore`` of
    ``snapshot()`` gives back exactly what ``replay`` built, for any seed the generator was built
    with (``seed_per_round`` algorithms get a new seed every round: a snapshot holds the replayed
    state, never a position of a random generator that depends on the seed).

    Attributes:
        version: Names the layout of ``snapshot``'s data and what it depends on (the adapter's
            own version and, for an adapter that reads a library's internals, the library's
            version). A snapshot of another version is never restored.
        replay: ``(generator, entries)``: replays entries, in history order, into a generator
            set up on the space (fresh, restored or partly replayed).
        snapshot: ``(generator) -> state``: JSON-serializable data (plain ``json``, no objects)
            holding everything ``replay`` built. May raise ``ValueError`` when the state holds
            something it cannot save (the controller then keeps no snapshot).
        restore: ``(fresh set-up generator, state)``: puts the generator in the snapshot's
            state; raises ``ValueError``, ``KeyError``, ``TypeError`` or ``IndexError`` for
            damaged data (the controller then replays the whole history).
        finish: ``(generator)``: what must run once after the last replay and before the first
            ``propose`` (e.g. the end of PyGlove's ``Evolution.recover``).
        supports: ``(generator) -> why not`` (empty: supported). An unsupported generator is
            replayed with its own ``recover`` and never snapshotted.
        materialize: ``(generator)``: replaces the stand-in DNA (``kfnas.search.deferred``)
            that ``replay`` and ``restore`` may have given it by built ones, for a caller that
            inspects the generator (``recover_generator``).
    """

    version: str
    replay: Callable[[pg.DNAGenerator, Sequence[Replayed]], None]
    snapshot: Callable[[pg.DNAGenerator], dict[str, Any]]
    restore: Callable[[pg.DNAGenerator, Mapping[str, Any]], None]
    finish: Callable[[pg.DNAGenerator], None] = _nothing
    supports: Callable[[pg.DNAGenerator], str] = _supported
    materialize: Callable[[pg.DNAGenerator], None] = _nothing


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A registered search algorithm.

    Attributes:
        name: The registry name, as users write it in ``algorithm.name``.
        summary: One line for ``kfnas algorithms`` listings.
        factory: Builds the generator from the complete options (defaults filled in) and a seed.
        options: The options it accepts, with their defaults. A value must have the type of its
            option's default; integer options are sizes or counts and must be at least 1.
        multi_objective: True if it is fed the objective tuple of each trial (at least two
            objectives) instead of the scalar reward.
        seed_per_round: True if ``recover`` does not restore its random state (PyGlove's evolution
            operators restart their RNG on every fresh generator). The controller then seeds each
            round with ``derive_seed(study_seed, "round", r)`` so rounds do not repeat the same
            random choices. False if replaying the history re-advances the RNG (``pg.geno.Random``)
            or it has none (grid): the study seed is used as is, so a replay can follow an
            uninterrupted run.
        checks: Extra option checks beyond types and sizes: ``(options) -> problem messages``.
        replays_history: False if the algorithm learns nothing from the history (random search):
            the controller then skips ``recover`` and only keeps proposals new, so proposing
            costs the same after ten trials as after ten thousand (PyGlove's ``Random._replay``
            redraws one DNA per stored trial, tens of milliseconds each on a SpineNet space).
        state: How to replay, snapshot and restore its generators, for a generator that cannot
            say so itself (see ``state_adapter``); None: the generator's own methods, if any.
    """

    name: str
    summary: str
    factory: Factory
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    multi_objective: bool = False
    seed_per_round: bool = False
    checks: Callable[[Mapping[str, Any]], list[str]] | None = None
    replays_history: bool = True
    state: StateAdapter | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))

    def complete(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """``options`` with the defaults of the options not given."""
        return {**self.options, **options}

    def problems(self, options: Mapping[str, Any], num_objectives: int) -> list[str]:
        """What is wrong with using this algorithm with ``options`` and ``num_objectives``.

        Args:
            options: The user's options (``algorithm.options`` of the spec); may be partial.
            num_objectives: How many objectives the study has (the quality metric plus one per
                constraint).

        Returns:
            One message per problem, each saying what to change; empty if all is well.
        """
        out = self._option_problems(options)
        if self.multi_objective and num_objectives < 2:
            out.append(
                f"{self.name} needs two or more objectives: add a constraint to "
                f"objectives.constraints (e.g. latency_ms)"
            )
        return out

    def create(self, options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
        """Builds a fresh, not yet set up, generator.

        Args:
            options: The user's options; defaults fill the rest.
            seed: Seed for every random choice the generator makes.

        Returns:
            The generator; call ``setup(dna_spec)`` and ``recover(history)`` before ``propose()``.

        Raises:
            ValueError: The options are invalid (the message lists every problem).
        """
        if problems := self._option_problems(options):
            raise ValueError(f"invalid options for algorithm {self.name!r}: " + "; ".join(problems))
        return self.factory(self.complete(options), seed)

    def state_adapter(self, generator: pg.DNAGenerator) -> tuple[StateAdapter | None, str]:
        """How to replay, snapshot and restore ``generator``, one of this algorithm's.

        Args:
            generator: A generator made by ``create``.

        Returns:
            ``(adapter, "")``: the record's ``state`` adapter if it supports the generator, else
            one made of the generator's own ``snapshot_state``/``restore_state``/
            ``STATE_VERSION`` (its ``recover`` must be incremental). ``(None, why)`` when neither
            applies: the generator is then replayed in full with ``recover``.
        """
        reasons = []
        if self.state is not None:
            if not (why := self.state.supports(generator)):
                return self.state, ""
            reasons.append(why)
        own = own_state_adapter(generator)
        if own is not None:
            return own, ""
        reasons.append(
            f"{type(generator).__name__} has no snapshot_state/restore_state/STATE_VERSION"
        )
        return None, "; ".join(reasons)

    def _option_problems(self, options: Mapping[str, Any]) -> list[str]:
        # Messages name the option, not where the spec holds it: the caller adds that prefix.
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none (it takes no options)"
            return [
                f"unknown option(s) {', '.join(unknown)} for {self.name}; valid options: {valid}"
            ]
        out = []
        for key, value in options.items():
            default = self.options[key]
            kind = type(default)
            accepted = (int, float) if kind is float else kind  # An int is a fine float.
            if isinstance(value, bool) is not isinstance(default, bool) or not isinstance(
                value, accepted
            ):
                out.append(f"option {key} must be {kind.__name__}, got {value!r}")
            elif kind is int and value < 1:
                out.append(f"option {key} must be a positive integer, got {value}")
        if not out and self.checks is not None:
            out.extend(self.checks(self.complete(options)))
        return out


def _mutator(seed: int) -> pg.evolution.Mutator:
    # PyGlove's default mutator argument is one shared, unseeded Uniform(): build a seeded one.
    # UniformMutator mutates as Uniform does, building each child once (kfnas.search.sampling).
    return UniformMutator(seed=derive_seed(seed, "mutator"))


def _random(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    del options
    return RandomSearch(seed=seed)


def _fast_init(generator: pg.evolution.Evolution) -> pg.evolution.Evolution:
    """The evolution with its initial population drawn by ``RandomSearch`` (same DNA, faster)."""
    init, size = generator.population_init
    if type(init) is pg.geno.Random:
        generator.rebind(population_init=(RandomSearch(seed=init.seed), size))
    return generator


def _grid(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    del options, seed
    return GridSearch()


def _regularized_evolution(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    return _fast_init(
        pg.evolution.regularized_evolution(
            mutator=_mutator(seed),
            population_size=options["population_size"],
            tournament_size=options["tournament_size"],
            seed=seed,
        )
    )


def _evolution_checks(options: Mapping[str, Any]) -> list[str]:
    out = []
    tournament, population = options["tournament_size"], options["population_size"]
    if tournament < 2:
        out.append(f"option tournament_size must be at least 2, got {tournament}")
    if tournament > population:
        out.append(
            f"option tournament_size ({tournament}) must not exceed population_size "
            f"({population}): lower tournament_size or raise population_size"
        )
    return out


def _hill_climb(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    return _fast_init(
        pg.evolution.hill_climb(
            mutator=_mutator(seed),
            batch_size=options["batch_size"],
            init_population_size=options["init_population_size"],
            seed=seed,
        )
    )


def _nsga2(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    return _fast_init(
        pg.evolution.nsga2(
            mutator=_mutator(seed), population_size=options["population_size"], seed=seed
        )
    )


# State adapters: what the controller snapshots between proposals (see ``StateAdapter``).


def check_own_state(
    name: str, state: Mapping[str, Any], version: int, config: Any, differs: str
) -> None:
    """Refuses a generator's own snapshot (``restore_state``) that is not of this generator.

    Args:
        name: The algorithm, for the messages.
        state: The snapshot, with its ``version`` and ``config``.
        version: The generator class's ``STATE_VERSION``.
        config: What the generator's snapshot must have been taken with (options, space, ...).
        differs: How a different ``config`` reads in the message ("with other options ...").

    Raises:
        ValueError: Another version or configuration: the controller then replays the history.
    """
    if state.get("version") != version:
        raise ValueError(
            f"{name} state version {state.get('version')!r} is not {version}: replay the history "
            f"instead"
        )
    if state.get("config") != config:
        raise ValueError(f"the {name} state was taken {differs}: replay the history instead")


def own_state_adapter(generator: pg.DNAGenerator) -> StateAdapter | None:
    """The adapter of a generator that snapshots itself, or None if it does not.

    A generator snapshots itself when its class has ``snapshot_state() -> dict``,
    ``restore_state(state)`` and ``STATE_VERSION``; its ``recover`` must be incremental (the
    default ``DNAGenerator.recover``, feeding one entry at a time, is). A generator that learns
    from the decisions alone may also have ``recover_decisions(history)``, ``recover`` with each
    DNA given as its ``to_numbers()`` list: the history is then replayed without building a DNA.
    """
    cls = type(generator)
    if not all(hasattr(cls, name) for name in ("snapshot_state", "restore_state", "STATE_VERSION")):
        return None

    def replay(generator: pg.DNAGenerator, entries: Sequence[Replayed]) -> None:
        if hasattr(cls, "recover_decisions"):
            generator.recover_decisions(  # type: ignore[attr-defined]
                [(entry.numbers(), entry.fitness) for entry in entries]
            )
        else:
            generator.recover([(entry.load(), entry.fitness) for entry in entries])

    def snapshot(generator: pg.DNAGenerator) -> dict[str, Any]:
        return generator.snapshot_state()  # type: ignore[attr-defined]

    def restore(generator: pg.DNAGenerator, state: Mapping[str, Any]) -> None:
        generator.restore_state(dict(state))  # type: ignore[attr-defined]

    return StateAdapter(
        version=f"{cls.__module__}.{cls.__qualname__}/{cls.STATE_VERSION}",  # type: ignore[attr-defined]
        replay=replay,
        snapshot=snapshot,
        restore=restore,
    )


#: The PyGlove versions whose ``Evolution`` and ``Sweeping`` internals the adapters below were
#: checked against (``tests/search/test_snapshots.py`` compares them with PyGlove's ``recover``).
#: With any other version the generators are replayed by PyGlove's own ``recover``: check the
#: adapters against the new ``pyglove/ext/evolution/base.py`` and add the version here.
PYGLOVE_VERSIONS = ("0.4.5",)
_EVOLUTION_STATE_VERSION = 1
_GRID_STATE_VERSION = 1
# The rewarded initial-population entries replayed so far while the population is not yet
# initialized: what the end of ``Evolution.recover`` hands to the population initializer.
_INIT_POPULATION = "_kfnas_init_population"
# Whether the evolution generator takes deferred stand-ins (``_takes_stand_ins``, decided once).
_STAND_INS = "_kfnas_stand_ins"
_EVOLUTION_ATTRIBUTES = (
    "_population",
    "_global_state",
    "_population_update",
    "_population_initialized",
    "_init_population_generator",
    "_init_population_size",
    "_num_proposals",
    "_num_feedbacks",
)


def _pyglove_problem() -> str:
    if pg.__version__ in PYGLOVE_VERSIONS:
        return ""
    return (
        f"PyGlove {pg.__version__} is not a version the snapshot adapter was checked against "
        f"({', '.join(PYGLOVE_VERSIONS)})"
    )


def _evolution_supports(generator: pg.DNAGenerator) -> str:
    if not isinstance(generator, pg.evolution.Evolution):
        return f"{type(generator).__name__} is not a pg.evolution.Evolution"
    if why := _pyglove_problem():
        return why
    missing = [name for name in _EVOLUTION_ATTRIBUTES if not hasattr(generator, name)]
    if missing:
        return f"the evolution generator lacks {', '.join(missing)} (not set up?)"
    return ""


def _init_population(generator: Any) -> list[tuple[pg.DNA, Fitness]]:
    if not hasattr(generator, _INIT_POPULATION):
        setattr(generator, _INIT_POPULATION, [])
    return getattr(generator, _INIT_POPULATION)


def _takes_stand_ins(generator: Any) -> bool:
    """Whether the evolution reads only metadata from the DNA it keeps (then stand-ins do).

    True when it is made of PyGlove's evolution operators (selectors, pipelines, NSGA-II's
    sorting: they read fitness) and ``UniformMutator`` (which mutates a stand-in on its
    decisions) only: no other mutator, no recombinator, no lambda over a plain function. A
    user's evolution gets built DNA. Decided once per generator.
    """
    if (known := getattr(generator, _STAND_INS, None)) is not None:
        return known
    found = pg.query(generator, where=lambda v: isinstance(v, pg.Object), enter_selected=True)
    ours = (UniformMutator, RandomSearch)
    others = [v for v in found.values() if v is not generator and type(v) not in ours]
    allowed = pg.__version__ in PYGLOVE_VERSIONS and all(map(_reads_metadata_only, others))
    setattr(generator, _STAND_INS, allowed)
    return allowed


def _reads_metadata_only(operation: pg.Object) -> bool:
    """A PyGlove evolution operator that is not a mutator, recombinator or opaque lambda."""
    if isinstance(operation, pg.evolution.Mutator | pg.evolution.Recombinator):
        return False
    if isinstance(operation, pg.evolution.Lambda) and not isinstance(operation.fn, pg.Object):
        return False
    return type(operation).__module__.startswith("pyglove.ext.evolution.")


def _evolution_replay(generator: Any, entries: Sequence[Replayed]) -> None:
    """``pg.evolution.Evolution.recover`` (PyGlove 0.4.5) without its end, one entry at a time.

    The end (initialized if enough initial-population trials were rewarded; the population
    initializer replays them) is ``_evolution_finish``, run once before proposing. The rewarded
    initial-population entries are kept only while the population is not initialized: after
    that the initializer is never asked again, so what it would replay changes nothing.
    """
    init = _init_population(generator)
    stand_ins = _takes_stand_ins(generator)
    for entry in entries:
        dna = entry.stand_in() if stand_ins and entry.stand_in is not None else entry.load()
        fitness = entry.fitness
        generator._num_proposals += 1
        if fitness is not None:
            if pg.evolution.get_feedback_sequence_number(dna) is None:
                generator.feedback(dna, fitness)
            else:  # Fed back before it was stored: PyGlove's recover takes it as it is.
                if pg.evolution.get_fitness(dna) != fitness:
                    raise ValueError(f"the DNA's recorded fitness is not its fitness {fitness!r}")
                generator._population.append(dna)
                if generator._population_update:
                    generator._population = generator._population_update(
                        generator._population,
                        global_state=generator._global_state,
                        step=generator._num_feedbacks,
                    )
                generator._num_feedbacks += 1
            if pg.evolution.is_initial_population(dna) and not generator._population_initialized:
                init.append((dna, fitness))
        generation = pg.evolution.get_generation_id(dna)
        if generation > generator.num_generations:
            generator._global_state.num_generations = generation
    if generator._population_initialized:
        init.clear()


def _evolution_finish(generator: Any) -> None:
    init = _init_population(generator)
    size = generator._init_population_size
    if size is not None and len(init) >= size:
        generator._population_initialized = True
    if not generator._population_initialized:
        generator._init_population_generator.recover(init)
    init.clear()


class _DNATable:
    """DNA saved once each (population members may also be elites), referred to by index."""

    def __init__(self) -> None:
        self.trees: list[Any] = []
        self._index: dict[int, int] = {}

    def ref(self, dna: Any) -> int:
        if not isinstance(dna, pg.DNA):
            raise ValueError(f"expected a DNA, got a {type(dna).__name__}")
        if id(dna) not in self._index:
            self._index[id(dna)] = len(self.trees)
            self.trees.append(deferred.json_tree(dna))
        return self._index[id(dna)]

    def value(self, key: str, value: Any) -> dict[str, Any]:
        """A global-state value: a JSON scalar, a DNA or a list of DNA."""
        if value is None or isinstance(value, bool | int | float | str):
            return {"value": value}
        if isinstance(value, pg.DNA):
            return {"dna": self.ref(value)}
        if isinstance(value, list | tuple) and all(isinstance(v, pg.DNA) for v in value):
            return {"dnas": [self.ref(v) for v in value]}
        raise ValueError(
            f"the evolution's global state {key!r} holds a {type(value).__name__}, which a "
            f"snapshot cannot save"
        )


def _fitness_json(fitness: Fitness) -> Any:
    return list(fitness) if isinstance(fitness, tuple) else fitness


def _fitness_from_json(value: Any) -> Fitness:
    if value is None:
        return None
    if isinstance(value, list):
        return tuple(float(v) for v in value)
    return float(value)


def _load_tree(tree: Any, spec: pg.DNASpec, what: str, stand_in: bool = False) -> pg.DNA:
    """A DNA saved by ``_DNATable``, decoded like a stored one (``load_dna``: DNA only).

    With ``stand_in``, a deferred DNA (``kfnas.search.deferred``) when the tree and the space
    allow it: the evolution adapter reads only metadata from all but the few it mutates.
    """
    if stand_in and deferred.supports(spec) and deferred.plain_tree(tree):
        return deferred.deferred_dna(tree, spec)
    try:
        return load_dna(json.dumps(tree), what).use_spec(spec)
    except RecordError as e:
        raise ValueError(str(e)) from e


def _evolution_snapshot(generator: Any) -> dict[str, Any]:
    table = _DNATable()
    state = {
        "num_proposals": generator.num_proposals,
        "num_feedbacks": generator.num_feedbacks,
        "population": [table.ref(dna) for dna in generator.population],
        "global_state": {
            str(key): table.value(str(key), value) for key, value in generator.global_state.items()
        },
        "population_initialized": bool(generator._population_initialized),
        "init_population": [
            [table.ref(dna), _fitness_json(fitness)] for dna, fitness in _init_population(generator)
        ],
    }
    state["dnas"] = table.trees
    return state


def _evolution_restore(generator: Any, state: Mapping[str, Any]) -> None:
    spec = generator.dna_spec
    stand_ins = _takes_stand_ins(generator)
    dnas = [_load_tree(tree, spec, "snapshot DNA", stand_ins) for tree in state["dnas"]]

    def decode(value: Mapping[str, Any]) -> Any:
        if "dna" in value:
            return dnas[value["dna"]]
        if "dnas" in value:
            return [dnas[i] for i in value["dnas"]]
        return value["value"]

    global_state = {key: decode(value) for key, value in state["global_state"].items()}
    init = [(dnas[i], _fitness_from_json(f)) for i, f in state["init_population"]]
    population = [dnas[i] for i in state["population"]]
    generator._num_proposals = int(state["num_proposals"])
    generator._num_feedbacks = int(state["num_feedbacks"])
    generator._population = population
    generator._global_state.clear()
    generator._global_state.update(global_state)
    generator._population_initialized = bool(state["population_initialized"])
    setattr(generator, _INIT_POPULATION, init)


def _evolution_materialize(generator: Any) -> None:
    built: dict[int, pg.DNA] = {}

    def real(dna: Any) -> Any:
        if not isinstance(dna, pg.DNA) or not deferred.is_deferred(dna):
            return dna
        if id(dna) not in built:
            built[id(dna)] = deferred.materialize(dna)
        return built[id(dna)]

    generator._population = [real(dna) for dna in generator._population]
    for key, value in list(generator._global_state.items()):
        if isinstance(value, pg.DNA):
            generator._global_state[key] = real(value)
        elif isinstance(value, list | tuple) and any(isinstance(v, pg.DNA) for v in value):
            generator._global_state[key] = [real(v) for v in value]
    init = _init_population(generator)
    init[:] = [(real(dna), fitness) for dna, fitness in init]


#: Snapshots of PyGlove's evolution generators (``regularized_evolution``, ``hill_climb``,
#: ``nsga2``): the population with its fitness and metadata, the proposal and feedback counts,
#: the global state (generation count; NSGA-II's elites and cursor), whether the initial
#: population is complete and, until it is, its rewarded members. The selection and mutation
#: RNGs are not saved: a fresh generator restarts them from its own seed, as a full replay does.
EVOLUTION_STATE = StateAdapter(
    version=f"evolution-{_EVOLUTION_STATE_VERSION}/pyglove-{pg.__version__}",
    replay=_evolution_replay,
    snapshot=_evolution_snapshot,
    restore=_evolution_restore,
    finish=_evolution_finish,
    supports=_evolution_supports,
    materialize=_evolution_materialize,
)


def _grid_supports(generator: pg.DNAGenerator) -> str:
    if not isinstance(generator, pg.geno.Sweeping):
        return f"{type(generator).__name__} is not a pg.geno.Sweeping"
    if why := _pyglove_problem():
        return why
    return "" if hasattr(generator, "_last_proposed_dna") else "the grid is not set up"


def _grid_replay(generator: Any, entries: Sequence[Replayed]) -> None:
    # Sweeping._replay keeps only the last DNA: the grid resumes after it, so only it is decoded.
    if entries:
        generator._last_proposed_dna = entries[-1].load()
    generator._num_proposals += len(entries)
    generator._num_feedbacks += sum(entry.fitness is not None for entry in entries)


def _grid_snapshot(generator: Any) -> dict[str, Any]:
    last = generator._last_proposed_dna
    return {
        "last": None if last is None else last.to_json(),
        "num_proposals": generator.num_proposals,
        "num_feedbacks": generator.num_feedbacks,
    }


def _grid_restore(generator: Any, state: Mapping[str, Any]) -> None:
    last = state["last"]
    dna = None if last is None else _load_tree(last, generator.dna_spec, "snapshot DNA")
    generator._last_proposed_dna = dna
    generator._num_proposals = int(state["num_proposals"])
    generator._num_feedbacks = int(state["num_feedbacks"])


#: The grid's position: the last DNA it proposed (``pg.geno.Sweeping`` resumes after it). Its
#: replay decodes only the last entry, so even a full replay costs one DNA.
GRID_STATE = StateAdapter(
    version=f"grid-{_GRID_STATE_VERSION}/pyglove-{pg.__version__}",
    replay=_grid_replay,
    snapshot=_grid_snapshot,
    restore=_grid_restore,
    supports=_grid_supports,
)


RANDOM = Algorithm(
    name="random",
    summary="Uniform random sampling of the space; each round draws from its own derived seed.",
    factory=_random,
    seed_per_round=True,
    replays_history=False,
)

GRID = Algorithm(
    name="grid",
    summary=(
        "Visits every point of a small, finite space once, in order; full=true refuses a "
        "budget (rounds x trials_per_round) smaller than the grid."
    ),
    factory=_grid,
    options={"full": False},
    state=GRID_STATE,
)

REGULARIZED_EVOLUTION = Algorithm(
    name="regularized_evolution",
    summary="Aging evolution (Real et al. 2019): tournament selection, uniform mutation.",
    factory=_regularized_evolution,
    options={"population_size": 20, "tournament_size": 5},
    seed_per_round=True,
    checks=_evolution_checks,
    state=EVOLUTION_STATE,
)

HILL_CLIMB = Algorithm(
    name="hill_climb",
    # Each evolution step yields batch_size mutations of the best; a round takes what it needs and
    # the rest of a batch is dropped (a stateless controller keeps no pending proposals).
    summary="Mutates the best architecture so far, batch_size children at a time.",
    factory=_hill_climb,
    options={"batch_size": 1, "init_population_size": 1},
    seed_per_round=True,
    state=EVOLUTION_STATE,
)

NSGA2 = Algorithm(
    name="nsga2",
    summary="NSGA-II multi-objective evolution (e.g. accuracy vs latency).",
    factory=_nsga2,
    options={"population_size": 10},
    multi_objective=True,
    seed_per_round=True,
    state=EVOLUTION_STATE,
)

_BUILTINS = {
    "random": "kfnas.search.algorithms:RANDOM",
    "grid": "kfnas.search.algorithms:GRID",
    "regularized_evolution": "kfnas.search.algorithms:REGULARIZED_EVOLUTION",
    "hill_climb": "kfnas.search.algorithms:HILL_CLIMB",
    "nsga2": "kfnas.search.algorithms:NSGA2",
    "ppo": "kfnas.search.ppo:PPO",
    "local_search": "kfnas.search.local_search:LOCAL_SEARCH",
}

ALGORITHMS: Registry[Algorithm] = Registry("algorithm", _BUILTINS)
