"""Asynchronous successive halving: schedules, promotions worked out by hand, and a simulation."""

import dataclasses
import heapq
import itertools
import math
import random

import numpy as np
import pytest

from kfnas.search.asha import HalvingSchedule, RungTrial, promotions, rung_table

NINE = HalvingSchedule(1, 9, 3)  # rungs 1, 3, 9


def done(trial_id, value, rung=0, parent=None):
    return RungTrial(trial_id, rung, value, finished=True, promoted_from=parent)


def running(trial_id, rung=0, parent=None):
    return RungTrial(trial_id, rung, None, finished=False, promoted_from=parent)


# --- schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "rungs"),
    [
        ((1, 9, 3), (1, 3, 9)),
        ((20, 180, 3), (20, 60, 180)),
        ((10, 40, 2), (10, 20, 40)),
        ((5, 20, 4), (5, 20)),
    ],
)
def test_rungs(args, rungs):
    schedule = HalvingSchedule.checked(*args)
    assert schedule.rungs == rungs
    assert schedule.problems() == []
    assert [schedule.rung_of(steps) for steps in rungs] == list(range(len(rungs)))


def test_default_reduction_factor_is_three():
    assert HalvingSchedule(20, 180).rungs == (20, 60, 180)


def test_numpy_integers_are_integers():
    assert HalvingSchedule.checked(np.int64(20), np.int64(180)).rungs == (20, 60, 180)


@pytest.mark.parametrize("steps", [2, 0, 27, 3.0, True])
def test_rung_of_other_steps_names_the_rungs(steps):
    with pytest.raises(
        ValueError, match=r"no rung of this halving schedule \(rungs 1, 3, 9 steps\)"
    ):
        NINE.rung_of(steps)


def test_train_steps_that_do_not_fit_get_the_nearest_that_do():
    (message,) = HalvingSchedule(20, 100, 3).problems()
    assert message == (
        "budget.train_steps 100 does not fit a halving schedule from multi_fidelity.min_steps 20 "
        "with multi_fidelity.reduction_factor 3 (rungs 20, 60, 180): set train_steps to 60 or "
        "180, or reduction_factor to 5"
    )


def test_min_steps_that_do_not_fit_get_the_nearest_divisors():
    (message,) = HalvingSchedule(25, 180, 3).problems("study.multi_fidelity")
    assert message.startswith(
        "budget.train_steps 180 does not fit a halving schedule from "
        "study.multi_fidelity.min_steps 25 with study.multi_fidelity.reduction_factor 3 "
        "(rungs 25, 75, 225): "
    )
    assert "set train_steps to 75 or 225" in message
    assert "or min_steps to 20 or 60 (train_steps / 3**K)" in message


def test_long_rung_lists_are_shortened():
    (message,) = HalvingSchedule(1, 1000, 2).problems()
    assert "(rungs 1, 2, 4, ..., 512, 1024)" in message
    assert "set train_steps to 512 or 1024" in message


@pytest.mark.parametrize(("low", "high"), [(20, 20), (20, 10)])
def test_a_single_rung_is_refused(low, high):
    (message,) = HalvingSchedule(low, high, 3).problems()
    assert message.startswith(
        f"budget.train_steps {high} is not longer than multi_fidelity.min_steps {low}: "
        "a halving schedule needs at least two rungs"
    )
    assert message.endswith("set train_steps to 60")


def test_a_single_rung_with_a_divisible_budget_suggests_min_steps():
    (message,) = HalvingSchedule(18, 18, 3).problems()
    assert "set train_steps to 54, or min_steps to 6 (train_steps / 3**K)" in message


def test_reduction_factor_below_two_is_refused():
    assert HalvingSchedule(1, 9, 1).problems() == [
        "multi_fidelity.reduction_factor must be an integer of at least 2 (each rung promotes "
        "its best 1/reduction_factor; 3 or 4 is usual), got 1"
    ]


def test_min_steps_below_one_is_refused():
    assert HalvingSchedule(0, 9, 3).problems() == [
        "multi_fidelity.min_steps must be an integer of at least 1, got 0"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (True, 9, 3),
            "multi_fidelity.min_steps must be an integer of at least 1, got True (bool); "
            "write a whole number, e.g. 20",
        ),
        (
            (1, 9, True),
            "multi_fidelity.reduction_factor must be an integer of at least 2, got True (bool); "
            "write a whole number, e.g. 3",
        ),
        (
            (1, False, 3),
            "budget.train_steps must be an integer of at least 1, got False (bool); "
            "write a whole number, e.g. 180",
        ),
        (
            (1, 9.0, 3),
            "budget.train_steps must be an integer of at least 1, got 9.0 (float); "
            "write a whole number, e.g. 180",
        ),
    ],
)
def test_bools_and_floats_are_refused(args, message):
    assert HalvingSchedule(*args).problems() == [message]


def test_checked_joins_every_problem():
    with pytest.raises(ValueError) as raised:
        HalvingSchedule.checked(0, 9, 1, where="mf")
    assert str(raised.value) == (
        "mf.min_steps must be an integer of at least 1, got 0; mf.reduction_factor must be an "
        "integer of at least 2 (each rung promotes its best 1/reduction_factor; 3 or 4 is "
        "usual), got 1"
    )


def test_rungs_of_an_invalid_schedule_raise():
    with pytest.raises(ValueError, match=r"invalid halving schedule: budget\.train_steps 100"):
        _ = HalvingSchedule(20, 100, 3).rungs


# --- promotions by hand ----------------------------------------------------------------------


def test_three_finished_promote_the_best():
    trials = [done(1, 0.1), done(2, 0.5), done(3, 0.3)]
    assert promotions(NINE, trials, 5) == [(2, 1)]


def test_two_finished_promote_none():
    assert promotions(NINE, [done(1, 0.1), done(2, 0.5)], 5) == []


def test_running_trials_do_not_count():
    trials = [done(1, 0.1), done(2, 0.5), running(3), running(4)]
    assert promotions(NINE, trials, 5) == []


def test_six_finished_promote_two_best_first():
    trials = [done(i, v) for i, v in enumerate([0.1, 0.6, 0.3, 0.9, 0.2, 0.4], start=1)]
    assert promotions(NINE, trials, 5) == [(4, 1), (2, 1)]


def test_an_already_promoted_parent_is_skipped():
    three = [done(1, 0.1), done(2, 0.5), done(3, 0.3)]
    assert promotions(NINE, [*three, running(4, rung=1, parent=2)], 5) == []
    # Even when its continuation failed, the parent is not promoted again.
    assert promotions(NINE, [*three, done(4, None, rung=1, parent=2)], 5) == []
    six = [*three, done(5, 0.7), done(6, 0.0), done(7, 0.2)]
    assert promotions(NINE, [*six, done(8, 0.4, rung=1, parent=5)], 5) == [(2, 1)]


def test_higher_rung_first():
    rung0 = [done(1, 0.1), done(2, 0.5), done(3, 0.3)]
    rung1 = [
        done(4, 0.2, rung=1, parent=10),
        done(5, 0.8, rung=1, parent=11),
        done(6, 0.6, rung=1, parent=12),
    ]
    assert promotions(NINE, rung0 + rung1, 5) == [(5, 2), (2, 1)]
    assert promotions(NINE, rung0 + rung1, 1) == [(5, 2)]


def test_failed_infeasible_and_nan_are_never_promoted():
    bad = [done(1, None), done(2, math.nan), done(3, None)]
    assert promotions(NINE, bad, 5) == []
    # A running trial with a reported value is not promoted either.
    assert promotions(NINE, [done(1, 0.1), done(2, 0.2), RungTrial(3, 0, 0.9, False)], 5) == []


def test_failed_trials_count_as_finished_and_rank_last():
    trials = [done(1, None), done(2, math.nan), done(3, 0.01)]
    assert promotions(NINE, trials, 5) == [(3, 1)]
    # The top third of six is trial 4 and the first NaN: only trial 4 moves on.
    trials = [done(1, math.nan), done(2, math.nan), done(3, None), done(4, 0.1), done(5, None)]
    assert promotions(NINE, [*trials, done(6, None)], 5) == [(4, 1)]


def test_n_limits():
    trials = [done(i, i / 10) for i in range(1, 10)]
    assert promotions(NINE, trials, 5) == [(9, 1), (8, 1), (7, 1)]
    assert promotions(NINE, trials, 2) == [(9, 1), (8, 1)]
    assert promotions(NINE, trials, 0) == []
    assert promotions(NINE, trials, -1) == []


def test_the_top_rung_is_never_promoted():
    top = [done(i, 0.5 + i / 100, rung=2, parent=20 + i) for i in range(1, 10)]
    assert promotions(NINE, top, 5) == []
    two_rungs = HalvingSchedule(1, 3, 3)
    assert promotions(two_rungs, [done(i, 0.5, rung=1, parent=20 + i) for i in range(9)], 5) == []


def test_ties_go_to_the_lower_id():
    assert promotions(NINE, [done(7, 0.5), done(3, 0.5), done(5, 0.5)], 5) == [(3, 1)]
    trials = [done(i, 0.5) for i in (9, 4, 8, 2, 6, 11)]
    assert promotions(NINE, trials, 5) == [(2, 1), (4, 1)]


def test_the_input_order_does_not_matter():
    trials = [done(i, round(random.Random(i).random(), 1)) for i in range(1, 19)]
    expected = promotions(NINE, trials, 10)
    for seed in range(5):
        shuffled = list(trials)
        random.Random(seed).shuffle(shuffled)
        assert promotions(NINE, shuffled, 10) == expected


def test_a_promoted_trials_value_counts_in_its_own_rung_only():
    rung0 = [done(1, 0.9), done(2, 0.2), done(3, 0.3)]
    rung1 = [
        done(4, 0.1, rung=1, parent=1),
        done(5, 0.5, rung=1, parent=20),
        done(6, 0.6, rung=1, parent=21),
    ]
    assert promotions(NINE, rung0 + rung1, 5) == [(6, 2)]


def test_asynchronous_promotion_can_exceed_a_third_but_never_the_worst():
    # Results arriving in increasing order: each is the best so far, so each after the first
    # eta - 1 is promoted (the module's bound n_k - eta + 1), more than floor(n_k / eta).
    trials, next_id = [], 100
    for trial_id in range(1, 7):
        trials.append(done(trial_id, trial_id / 10))
        for parent, rung in promotions(NINE, trials, 10):
            trials.append(running(next_id, rung=rung, parent=parent))
            next_id += 1
    promoted = sorted(t.promoted_from for t in trials if t.promoted_from is not None)
    assert promoted == [3, 4, 5, 6]
    assert len(promoted) == 6 - 3 + 1 > 6 // 3


def test_bad_trials_are_refused():
    with pytest.raises(ValueError, match="trial 1 appears twice"):
        promotions(NINE, [done(1, 0.1), done(1, 0.2)], 1)
    with pytest.raises(ValueError, match=r"trial 4 is at rung 3, but .* rungs 0 to 2 \(1, 3, 9"):
        promotions(NINE, [done(4, 0.1, rung=3)], 1)
    with pytest.raises(ValueError, match="invalid halving schedule"):
        promotions(HalvingSchedule(1, 10, 3), [], 1)


# --- rung table ------------------------------------------------------------------------------


def test_rung_table_counts():
    trials = [
        done(1, 0.1),
        done(2, 0.5),
        done(3, None),
        running(4),
        done(5, math.nan),
        done(6, 0.7, rung=1, parent=2),
        running(7, rung=1, parent=1),
    ]
    assert rung_table(NINE, trials) == [
        {"rung": 0, "steps": 1, "started": 5, "finished": 4, "promoted": 2, "best": 0.5},
        {"rung": 1, "steps": 3, "started": 2, "finished": 1, "promoted": 0, "best": 0.7},
        {"rung": 2, "steps": 9, "started": 0, "finished": 0, "promoted": 0, "best": None},
    ]


def test_rung_table_of_no_trials():
    assert [row["started"] for row in rung_table(NINE, [])] == [0, 0, 0]


# --- simulation ------------------------------------------------------------------------------


def simulate(schedule, num_archs, workers, c=5.0, seed=0, fails=lambda arch: False):
    """ASHA as an event loop; value = quality(arch) * steps / (steps + c). Returns the trials."""
    rng = random.Random(seed)
    quality = [rng.uniform(0.2, 0.9) for _ in range(num_archs)]
    rungs = schedule.rungs
    trials: dict[int, RungTrial] = {}
    arch_of: dict[int, int] = {}
    spent = dict.fromkeys(range(num_archs), 0)
    events: list[tuple[float, int]] = []
    state = {"next_arch": 0, "busy": 0, "now": 0.0}

    def start() -> bool:
        proposed = promotions(schedule, list(trials.values()), 1)
        if proposed:
            ((parent, rung),) = proposed
            arch, cost = arch_of[parent], rungs[rung] - rungs[rung - 1]
        elif state["next_arch"] < num_archs:
            parent, rung, arch, cost = None, 0, state["next_arch"], rungs[0]
            state["next_arch"] += 1
        else:
            return False
        trial_id = len(trials) + 1
        trials[trial_id] = running(trial_id, rung=rung, parent=parent)
        arch_of[trial_id] = arch
        spent[arch] += cost
        heapq.heappush(events, (state["now"] + cost, trial_id))
        return True

    def fill() -> None:
        while state["busy"] < workers and start():
            state["busy"] += 1
        if state["busy"] < workers:  # a worker idles only when there is no work at all
            assert state["next_arch"] == num_archs
            assert promotions(schedule, list(trials.values()), workers) == []

    fill()
    while events:
        state["now"], trial_id = heapq.heappop(events)
        trial, arch = trials[trial_id], arch_of[trial_id]
        steps = rungs[trial.rung]
        value = None if fails(arch) else quality[arch] * steps / (steps + c)
        trials[trial_id] = dataclasses.replace(trial, value=value, finished=True)
        state["busy"] -= 1
        fill()
    return quality, trials, arch_of, spent


def test_simulated_asha_keeps_workers_busy_and_finds_the_best():
    schedule = HalvingSchedule.checked(1, 27, 3)
    fails = lambda arch: arch % 11 == 5  # noqa: E731
    quality, trials, arch_of, spent = simulate(schedule, num_archs=81, workers=4, fails=fails)
    listed = list(trials.values())
    assert all(t.finished for t in listed)
    assert promotions(schedule, listed, 100) == []  # nothing left behind
    best = max((a for a in range(len(quality)) if not fails(a)), key=quality.__getitem__)
    at_top = {arch_of[t.trial_id] for t in listed if t.rung == 3}
    assert best in at_top
    assert not any(fails(a) for a in at_top)
    # A promotion continues from its checkpoint: an architecture at the top trained 27 steps.
    assert all(spent[a] == 27 for a in at_top)
    table = rung_table(schedule, listed)
    assert table[0]["started"] == 81
    for lower, upper in itertools.pairwise(table):
        assert upper["started"] == lower["promoted"] <= max(0, lower["finished"] - 3 + 1)
        assert upper["started"] >= lower["finished"] // 3
    assert table[-1]["best"] == pytest.approx(quality[best] * 27 / 32)


def test_simulation_is_deterministic():
    schedule = HalvingSchedule.checked(2, 18, 3)
    first = simulate(schedule, num_archs=30, workers=4, seed=3)[1]
    second = simulate(schedule, num_archs=30, workers=4, seed=3)[1]
    assert first == second
