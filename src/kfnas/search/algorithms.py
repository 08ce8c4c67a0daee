"""Search algorithms: the registry ``ALGORITHMS`` of PyGlove ``DNAGenerator`` factories.

Each algorithm is one ``Algorithm`` record: its name, the options it accepts (with their defaults),
whether it is multi-objective, and a factory ``(options, seed) -> pg.DNAGenerator``. Nothing here
keeps state between calls: the controller (``kfnas.search.controller``) builds a fresh generator for
every proposal and replays the study's history into it with ``DNAGenerator.recover``.

Built-ins: ``random``, ``grid`` (sweeps every point of a small space), ``regularized_evolution``,
``hill_climb`` and ``nsga2`` (multi-objective, e.g. accuracy vs latency).

To add an algorithm (one module, one line): in its own module ``kfnas/search/<name>.py``, write a
factory returning a ``pg.DNAGenerator`` that ``recover`` can rebuild from its history (PyGlove's
``_propose/_feedback/_replay`` contract) and wrap it in an ``Algorithm`` record; then add one
line to ``_BUILTINS`` (``"name": "kfnas.search.<name>:RECORD"``). The conformance tests in
``tests/conformance`` (valid DNA, failed trials tolerated, determinism, resume) then cover it. A
user's own algorithm can be registered at run time: ``ALGORITHMS.register(name, Algorithm(...))``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
from collections.abc import Callable, Mapping
from typing import Any

import pyglove as pg

from kfnas.registry import Registry

__all__ = [
    "ALGORITHMS",
    "GRID",
    "HILL_CLIMB",
    "NSGA2",
    "RANDOM",
    "REGULARIZED_EVOLUTION",
    "Algorithm",
    "derive_seed",
]

Factory = Callable[[Mapping[str, Any], int], pg.DNAGenerator]


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
    """

    name: str
    summary: str
    factory: Factory
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    multi_objective: bool = False
    seed_per_round: bool = False
    checks: Callable[[Mapping[str, Any]], list[str]] | None = None
    replays_history: bool = True

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
    return pg.evolution.mutators.Uniform(seed=derive_seed(seed, "mutator"))


def _random(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    del options
    return pg.geno.Random(seed=seed)


def _grid(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    del options, seed
    return pg.geno.Sweeping()


def _regularized_evolution(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    return pg.evolution.regularized_evolution(
        mutator=_mutator(seed),
        population_size=options["population_size"],
        tournament_size=options["tournament_size"],
        seed=seed,
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
    return pg.evolution.hill_climb(
        mutator=_mutator(seed),
        batch_size=options["batch_size"],
        init_population_size=options["init_population_size"],
        seed=seed,
    )


def _nsga2(options: Mapping[str, Any], seed: int) -> pg.DNAGenerator:
    return pg.evolution.nsga2(
        mutator=_mutator(seed), population_size=options["population_size"], seed=seed
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
)

REGULARIZED_EVOLUTION = Algorithm(
    name="regularized_evolution",
    summary="Aging evolution (Real et al. 2019): tournament selection, uniform mutation.",
    factory=_regularized_evolution,
    options={"population_size": 20, "tournament_size": 5},
    seed_per_round=True,
    checks=_evolution_checks,
)

HILL_CLIMB = Algorithm(
    name="hill_climb",
    # Each evolution step yields batch_size mutations of the best; a round takes what it needs and
    # the rest of a batch is dropped (a stateless controller keeps no pending proposals).
    summary="Mutates the best architecture so far, batch_size children at a time.",
    factory=_hill_climb,
    options={"batch_size": 1, "init_population_size": 1},
    seed_per_round=True,
)

NSGA2 = Algorithm(
    name="nsga2",
    summary="NSGA-II multi-objective evolution (e.g. accuracy vs latency).",
    factory=_nsga2,
    options={"population_size": 10},
    multi_objective=True,
    seed_per_round=True,
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
