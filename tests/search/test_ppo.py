"""The ``ppo`` controller (``kfnas.search.ppo``): options, sampling, learning and its state.

The contract every algorithm shares (valid new DNA, failed trials, determinism, resume) is tested
for ``ppo`` too in ``tests/conformance/test_algorithms.py``; this module tests what is PPO's own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyglove as pg
import pytest

from kfnas.config.spec import AlgorithmSpec, StudySpec
from kfnas.search import ALGORITHMS, HistoryEntry, propose
from kfnas.search.ppo import PPO, PPOGenerator
from kfnas.spaces import SPACES
from kfnas.spaces.base import dna_spec

History = list[tuple[pg.DNA, float | None]]


def flat_space(decisions: int = 6, candidates: int = 4) -> pg.DNASpec:
    return pg.dna_spec(
        pg.Dict({f"x{i}": pg.oneof(list(range(candidates))) for i in range(decisions)})
    )


CONDITIONAL = pg.dna_spec(pg.one_of([pg.one_of([1, 2]), 3]))
# Conditional choices, a multi-choice under a candidate, and distinct/sorted multi-choices.
MIXED = pg.dna_spec(
    pg.Dict(
        a=pg.one_of([pg.one_of([1, 2]), pg.manyof(2, [pg.oneof([5, 6]), 7, 8]), 3]),
        b=pg.manyof(3, list(range(5)), choices_distinct=True, choices_sorted=True),
        c=pg.manyof(2, [0, 1], choices_distinct=True, choices_sorted=True),
        d=pg.manyof(3, list(range(4)), choices_distinct=False, choices_sorted=True),
        e=pg.manyof(3, list(range(4)), choices_distinct=False, choices_sorted=False),
    )
)


def fraction_of_zeros(dna: pg.DNA) -> float:
    """The toy reward: the fraction of decisions that took candidate 0."""
    numbers = dna.to_numbers()
    return sum(number == 0 for number in numbers) / len(numbers)


def generator(spec: pg.DNASpec, seed: int = 0, **options: Any) -> PPOGenerator:
    g = PPO.create(options, seed)
    g.setup(spec)
    assert isinstance(g, PPOGenerator)
    return g


def run(g: pg.DNAGenerator, trials: int, fails: Sequence[int] = ()) -> tuple[History, list[float]]:
    """Proposes and feeds back ``trials`` DNA in turn; trials in ``fails`` get no reward."""
    history: History = []
    rewards = []
    for i in range(trials):
        dna = g.propose()
        reward = None if i in fails else fraction_of_zeros(dna)
        if reward is not None:
            g.feedback(dna, reward)
            rewards.append(reward)
        history.append((dna, reward))
    return history, rewards


def numbers(dnas: Sequence[pg.DNA]) -> list[list[int]]:
    return [dna.to_numbers() for dna in dnas]


def policy_state(g: PPOGenerator) -> dict[str, Any]:
    """The snapshot without the proposal and feedback counters (what the policy is)."""
    state = g.snapshot_state()
    del state["num_proposals"], state["num_feedbacks"]
    return state


# Options.


def test_registered_with_defaults() -> None:
    assert ALGORITHMS.get("ppo") is PPO
    assert dict(PPO.options) == {
        "learning_rate": 0.05,
        "clip": 0.2,
        "epochs": 4,
        "batch_size": 8,
        "baseline_decay": 0.95,
        "entropy_weight": 0.0,
        "normalize_advantages": True,
    }
    assert not PPO.seed_per_round  # recover restores the count that keys each proposal's RNG.
    assert PPO.replays_history and not PPO.multi_objective
    assert PPO.problems({}, 1) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"learning_rate": -1}, "option learning_rate must be greater than 0, got -1"),
        ({"learning_rate": 0.0}, "option learning_rate must be greater than 0, got 0.0"),
        ({"learning_rate": math.nan}, "option learning_rate must be greater than 0, got nan"),
        ({"clip": 0}, "option clip must be between 0 and 1 (exclusive), got 0"),
        ({"clip": 1.5}, "option clip must be between 0 and 1 (exclusive), got 1.5"),
        ({"baseline_decay": 1.0}, "option baseline_decay must be at least 0 and below 1, got 1.0"),
        (
            {"baseline_decay": -0.1},
            "option baseline_decay must be at least 0 and below 1, got -0.1",
        ),
        ({"entropy_weight": -0.5}, "option entropy_weight must be at least 0, got -0.5"),
        ({"entropy_weight": math.inf}, "option entropy_weight must be at least 0, got inf"),
        ({"epochs": 0}, "option epochs must be a positive integer, got 0"),
        ({"batch_size": -2}, "option batch_size must be a positive integer, got -2"),
        ({"batch_size": 2.5}, "option batch_size must be int, got 2.5"),
        ({"normalize_advantages": 1}, "option normalize_advantages must be bool, got 1"),
        ({"lr": 0.1}, "unknown option(s) lr for ppo; valid options: baseline_decay, batch_size, "),
    ],
)
def test_bad_options_are_refused_with_their_message(options: dict[str, Any], message: str) -> None:
    problems = PPO.problems(options, 1)
    assert len(problems) == 1 and problems[0].startswith(message), problems
    with pytest.raises(ValueError, match=r"invalid options for algorithm 'ppo'"):
        PPO.create(options, 0)


def test_good_option_values_are_accepted() -> None:
    options = {"learning_rate": 1, "clip": 0.5, "baseline_decay": 0, "entropy_weight": 0.01}
    assert PPO.problems(options, 1) == []
    assert PPO.problems({"epochs": 1, "batch_size": 1, "normalize_advantages": False}, 1) == []


def test_refuses_float_decisions() -> None:
    g = PPO.create({}, 0)
    with pytest.raises(ValueError, match="ppo supports categorical decisions only"):
        g.setup(pg.dna_spec(pg.Dict(x=pg.oneof([1, 2]), y=pg.floatv(0.0, 1.0))))


def test_refuses_feedback_on_a_dna_of_another_space() -> None:
    flat, conditional = generator(flat_space(3, 2)), generator(CONDITIONAL)
    for g, dna in [
        (flat, pg.DNA([0, 1])),  # Too short.
        (flat, pg.DNA([0, 1, 2])),  # Candidate 2 of 2.
        (conditional, pg.DNA((0, 1, 0))),  # Too long.
        (conditional, pg.DNA(0)),  # The inner choice is missing.
        (conditional, pg.DNA((0, -1))),
    ]:
        with pytest.raises(ValueError, match="is not a DNA of this space"):
            g.feedback(dna, 1.0)


# Proposals.


@pytest.mark.parametrize("spec", [flat_space(), CONDITIONAL, MIXED], ids=["flat", "cond", "mixed"])
def test_proposals_are_valid_and_deterministic_for_a_seed(spec: pg.DNASpec) -> None:
    first, _ = run(generator(spec, seed=3, batch_size=4), 40)
    again, _ = run(generator(spec, seed=3, batch_size=4), 40)
    other, _ = run(generator(spec, seed=4, batch_size=4), 40)
    for dna, _ in first:
        spec.validate(dna)
        assert dna.spec is not None
    assert numbers([d for d, _ in first]) == numbers([d for d, _ in again])
    assert numbers([d for d, _ in first]) != numbers([d for d, _ in other])


def test_sampling_covers_every_valid_value_of_a_constrained_space() -> None:
    # Uniform policy: every value of each decision that some valid DNA has turns up.
    g = generator(MIXED, seed=0)
    seen: dict[str, set[Any]] = {}
    for _ in range(120):
        for key, value in g.propose().to_dict(key_type="id", value_type="choice").items():
            seen.setdefault(str(key), set()).add(value)
    assert seen["b[0]"] == {"0/5", "1/5", "2/5"}  # Room is left for b[1] and b[2].
    assert seen["b[2]"] == {"2/5", "3/5", "4/5"}
    assert seen["c[0]"] == {"0/2"} and seen["c[1]"] == {"1/2"}
    assert seen["e[2]"] == {"0/4", "1/4", "2/4", "3/4"}
    assert "a[=1/3][1][=0/3]" in seen  # A choice under a multi-choice under a candidate.


def test_proposal_randomness_is_keyed_by_the_proposal_count() -> None:
    # A fresh generator recovered from a history proposes what the live one proposes next.
    live = generator(flat_space(8), seed=1, batch_size=4)
    history, _ = run(live, 10, fails={2, 7})
    fresh = generator(flat_space(8), seed=1, batch_size=4)
    fresh.recover(history)
    assert numbers([live.propose() for _ in range(5)]) == numbers(
        [fresh.propose() for _ in range(5)]
    )


# Learning.


def test_conditional_decisions_learn_only_where_active() -> None:
    g = generator(CONDITIONAL, batch_size=4)
    outer, inner = (str(point.id) for point in CONDITIONAL.decision_points)
    # Only DNA choosing 3 (the inner choice inactive): the inner policy stays uniform.
    for reward in (0.0, 1.0, 0.0, 1.0):
        g.feedback(pg.DNA(1, spec=CONDITIONAL), reward)
    assert g.num_updates == 1
    assert g.probabilities()[inner] == [0.5, 0.5]
    assert g.probabilities()[outer] != [0.5, 0.5]
    # The inner choice learns from the DNA where it is active: (0, 1) does better than (0, 0).
    for reward, dna in [(1.0, (0, 1)), (0.0, (0, 0)), (1.0, (0, 1)), (0.0, (0, 0))]:
        g.feedback(pg.DNA(dna, spec=CONDITIONAL), reward)
    assert g.num_updates == 2
    assert g.probabilities()[inner][1] > 0.5


def test_failed_trials_do_not_move_the_policy() -> None:
    spec = flat_space()
    g = generator(spec, batch_size=4)
    history, _ = run(g, 30)
    with_failures = []
    for i, (dna, reward) in enumerate(history):
        with_failures.append((dna, reward))
        if i % 3 == 0:
            with_failures.append((pg.random_dna(spec, random.Random(i)), None))
    plain, failed = generator(spec, batch_size=4), generator(spec, batch_size=4)
    plain.recover(history)
    failed.recover(with_failures)
    assert policy_state(failed) == policy_state(plain)
    assert plain.num_updates == 7
    # Only failures (and a non-finite reward): the uniform policy, no baseline.
    nothing = generator(spec, batch_size=1)
    nothing.recover([(dna, None) for dna, _ in history])
    nothing.feedback(history[0][0], math.nan)
    assert nothing.baseline is None and nothing.num_updates == 0
    assert all(p == [0.25] * 4 for p in nothing.probabilities().values())


def test_baseline_is_a_moving_average_of_the_rewards() -> None:
    g = generator(flat_space(), batch_size=100, baseline_decay=0.5)
    dna = g.propose()
    for reward in (1.0, 3.0, 5.0):
        g.feedback(dna, reward)
    assert g.baseline == pytest.approx(0.5 * (0.5 * 1.0 + 0.5 * 3.0) + 0.5 * 5.0)
    assert g.snapshot_state()["pending_advantages"] == pytest.approx([0.0, 2.0, 3.0])


def test_learns_a_toy_problem_better_than_random() -> None:
    # 6 decisions x 4 candidates; the reward is the fraction of decisions that take candidate 0.
    spec = flat_space()
    _, ppo_rewards = run(generator(spec, seed=0), 300)
    random_search = pg.geno.Random(seed=0)
    random_search.setup(spec)
    _, random_rewards = run(random_search, 300)
    ppo_last, random_last = (
        statistics.mean(ppo_rewards[-50:]),
        statistics.mean(random_rewards[-50:]),
    )
    assert random_last < 0.35
    assert ppo_last > random_last + 0.2, (ppo_last, random_last)


# Statelessness: snapshots, replay cost, the controller.


def test_snapshot_and_restore_equal_a_full_replay() -> None:
    spec = MIXED
    history, _ = run(generator(spec, seed=5, batch_size=4), 45, fails={3, 10, 11, 30})
    replayed = generator(spec, seed=5, batch_size=4)
    replayed.recover(history)
    for cut in (0, 6, 21, 45):  # Mid-batch cuts leave pending trials in the snapshot.
        first = generator(spec, seed=5, batch_size=4)
        first.recover(history[:cut])
        state = json.loads(json.dumps(first.snapshot_state()))
        restored = generator(spec, seed=5, batch_size=4)
        restored.restore_state(state)
        restored.recover(history[cut:])
        assert restored.snapshot_state() == replayed.snapshot_state()
        again = generator_after(spec, history)
        assert numbers([restored.propose() for _ in range(4)]) == numbers(
            [again.propose() for _ in range(4)]
        )
    assert replayed.snapshot_state()["pending_choices"], "the history ends mid-batch"


def generator_after(spec: pg.DNASpec, history: History) -> PPOGenerator:
    g = generator(spec, seed=5, batch_size=4)
    g.recover(history)
    return g


def test_restore_refuses_another_version_options_or_space() -> None:
    g = generator(flat_space(), batch_size=4)
    run(g, 10)
    state = g.snapshot_state()
    assert PPOGenerator.STATE_VERSION == 1 and state["version"] == 1
    with pytest.raises(ValueError, match="state version 2 is not 1"):
        generator(flat_space(), batch_size=4).restore_state({**state, "version": 2})
    with pytest.raises(ValueError, match="other options or on another space"):
        generator(flat_space(), batch_size=5).restore_state(state)
    with pytest.raises(ValueError, match="other options or on another space"):
        generator(flat_space(6, 5), batch_size=4).restore_state(state)


def test_replaying_two_thousand_trials_is_cheap() -> None:
    # 75 decision points: 25 plain choices and 25 distinct, sorted pairs (like SpineNet's inputs).
    spec = pg.dna_spec(
        pg.Dict(
            {
                **{f"op{i}": pg.oneof(list(range(4))) for i in range(25)},
                **{
                    f"in{i}": pg.manyof(
                        2, list(range(12)), choices_distinct=True, choices_sorted=True
                    )
                    for i in range(25)
                },
            }
        )
    )
    assert len(spec.decision_points) == 75
    pool = [pg.random_dna(spec, random.Random(i)) for i in range(10)]
    rng = random.Random(0)
    history = [(pool[i % 10], None if i % 9 == 0 else rng.random()) for i in range(2000)]
    g = generator(spec)
    start = time.perf_counter()
    g.recover(history)
    elapsed = time.perf_counter() - start
    assert g.num_updates == sum(r is not None for _, r in history) // 8
    assert elapsed < 3.0, f"replaying 2,000 trials took {elapsed:.2f} s"  # About 0.3 s.


@dataclasses.dataclass(frozen=True)
class ToySpace:
    name: str
    tasks: tuple[str, ...] = ("classification",)

    def hyper(self) -> Any:
        return pg.Dict({f"x{i}": pg.oneof([0, 1, 2, 3]) for i in range(8)})


TOY = ToySpace("unit_ppo_toy")


@pytest.fixture(scope="module", autouse=True)
def toy_space() -> Iterator[None]:
    SPACES.register(TOY.name, TOY)
    yield
    SPACES.unregister(TOY.name)


def test_a_stateless_run_equals_an_uninterrupted_one() -> None:
    # Same policy (rebuilt from the history) and same draws (keyed by the proposal count); this
    # seed's run has no duplicate for the controller to drop, which would shift the draws.
    study = StudySpec(space=TOY.name, algorithm=AlgorithmSpec("ppo", {"batch_size": 4}), seed=7)
    history: list[HistoryEntry] = []
    for round_index in range(1, 7):
        for dna in propose(study, history, 3, round_index=round_index):
            stored = pg.from_json_str(pg.to_json_str(dna))
            history.append(HistoryEntry(stored, round_index, fraction_of_zeros(dna)))
    live = PPO.create({"batch_size": 4}, 7)
    live.setup(dna_spec(TOY))
    uninterrupted = []
    for _ in range(6):
        batch = [live.propose() for _ in range(3)]
        for dna in batch:
            live.feedback(dna, fraction_of_zeros(dna))
        uninterrupted.extend(batch)
    assert numbers([entry.dna for entry in history]) == numbers(uninterrupted)
