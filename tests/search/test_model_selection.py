"""Model selection: the pruning schedule, the crowding removal rule and curve reading.

Expected values are computed by hand; each test states the computation.
"""

from __future__ import annotations

import itertools

import pytest

from kfnas.search.model_selection import (
    FINAL_MODELS,
    REMOVE_PER_ITERATION,
    START_MODELS,
    SelectionSchedule,
    crowding_removals,
)

NAN = float("nan")


# --- the schedule -------------------------------------------------------------------------------


def test_constants():
    assert (START_MODELS, FINAL_MODELS, REMOVE_PER_ITERATION) == (30, 10, 5)
    assert SelectionSchedule() == SelectionSchedule(30, 10, 5)


def test_default_iterations():
    # 100/30 = 3.33; + 100/25 = 7.33; + 100/20 = 12.33; + 100/15 = 19.0; 10 <= final -> 100.
    got = SelectionSchedule().iterations()
    assert [n for n, _ in got] == [30, 25, 20, 15, 10]
    assert [pct for _, pct in got] == pytest.approx([10 / 3, 22 / 3, 37 / 3, 19.0, 100.0])
    assert got[-1] == (10, 100.0)


def test_small_schedule_iterations():
    # 4 -> 100/4 = 25; 3 -> 25 + 33.33 = 58.33; 2 <= final -> 100.
    got = SelectionSchedule(start=4, final=2, remove=1).iterations()
    assert [n for n, _ in got] == [4, 3, 2]
    assert [pct for _, pct in got] == pytest.approx([25.0, 175 / 3, 100.0])


def test_last_removal_is_capped_at_final():
    # 13 -> 12 models would go below final 10 with remove 5: only 3 go, then 10 train to 100 %.
    got = SelectionSchedule(start=13, final=10, remove=5).iterations()
    assert [n for n, _ in got] == [13, 10]
    assert got[0][1] == pytest.approx(100 / 13)


def test_default_steps_for_3000():
    # 3000 * (3.33, 7.33, 12.33, 19, 100) / 100 = 100, 220, 370, 570, 3000, exact (no ceil drift).
    assert SelectionSchedule().steps(3000) == (100, 220, 370, 570, 3000)


def test_steps_round_up():
    # 4/2/1 with 10 steps: ceil(2.5) = 3, ceil(5.83) = 6, 10.
    assert SelectionSchedule(start=4, final=2, remove=1).steps(10) == (3, 6, 10)


def test_steps_too_small_names_the_minimum():
    schedule = SelectionSchedule()
    # 10 steps: ceil(0.33) = ceil(0.73) = 1 -> two iterations on step 1.
    with pytest.raises(ValueError, match=r"full_steps 10 is too small .* at least (\d+)") as info:
        schedule.steps(10)
    minimum = int(info.value.args[0].rsplit("at least ", 1)[1].split(",")[0])
    steps = schedule.steps(minimum)
    assert steps[-1] == minimum
    assert all(a < b for a, b in itertools.pairwise(steps))
    with pytest.raises(ValueError, match="too small"):
        schedule.steps(minimum - 1)
    # Every value from the minimum up works.
    for full_steps in range(minimum, minimum + 200):
        assert schedule.steps(full_steps)[-1] == full_steps


@pytest.mark.parametrize("bad", [0, -5, True, 2.5])
def test_steps_refuses_a_non_positive_integer(bad):
    with pytest.raises(ValueError, match="positive integer"):
        SelectionSchedule().steps(bad)


def test_valid_schedules_have_no_problems():
    assert SelectionSchedule().problems() == []
    assert SelectionSchedule(start=3, final=2, remove=1).problems() == []


def test_problem_final_not_below_start():
    (msg,) = SelectionSchedule(start=10, final=12).problems()
    assert msg.startswith("model selection: final models 12 must be fewer than the start models 10")
    assert "raise start" in msg
    (msg,) = SelectionSchedule(start=10, final=10).problems(where="spec.model_selection")
    assert msg.startswith("spec.model_selection: final models 10 must be fewer")


def test_problem_final_too_small():
    (msg,) = SelectionSchedule(start=5, final=1).problems()
    assert "final models 1 must be at least 2" in msg
    assert "raise final" in msg


def test_problem_remove_too_small():
    (msg,) = SelectionSchedule(remove=0).problems()
    assert "models removed per iteration 0 must be at least 1" in msg


def test_problem_several_at_once():
    problems = SelectionSchedule(start=1, final=1, remove=0).problems()
    assert len(problems) == 3


@pytest.mark.parametrize("field", ["start", "final", "remove"])
@pytest.mark.parametrize("bad", [True, 3.0, "5"])
def test_problem_not_an_integer(field, bad):
    (msg,) = SelectionSchedule(**{field: bad}).problems()
    assert "must be an integer" in msg
    assert repr(bad) in msg


def test_problem_reaches_100_before_the_last_iteration():
    # 100 models removing 1 at a time: 100/100 + 100/99 + ... passes 100 % long before 10 remain.
    (msg,) = SelectionSchedule(start=100, final=10, remove=1).problems()
    assert "models removed per iteration 1 is too few" in msg
    enough = int(msg.rsplit("at least ", 1)[1].split(" ")[0])
    assert SelectionSchedule(start=100, final=10, remove=enough).problems() == []
    assert SelectionSchedule(start=100, final=10, remove=enough - 1).problems() != []


def test_invalid_schedule_raises():
    with pytest.raises(ValueError, match="final models 12 must be fewer"):
        SelectionSchedule(start=10, final=12).iterations()
    with pytest.raises(ValueError, match="final models 12 must be fewer"):
        SelectionSchedule(start=10, final=12).steps(1000)


# --- crowding removal ---------------------------------------------------------------------------


def test_close_pair_loses_the_one_with_the_closer_second_neighbour():
    # Accuracy only, normalized 0, 0.9, 1: closest pair (2, 3) at 0.1. Second-nearest: 2 -> 0.9
    # (to 1), 3 -> 1.0 (to 1). 2 sits closer to the rest: it goes.
    points = {1: (0.0, None), 2: (0.9, None), 3: (1.0, None)}
    assert crowding_removals(points, 1) == [2]


def test_latency_changes_the_choice():
    # Accuracy only (0, 0.5, 0.52, 1): closest pair (2, 3) at 0.02; second-nearest 2 -> 0.5,
    # 3 -> 0.48: 3 goes.
    acc = {1: 0.0, 2: 0.5, 3: 0.52, 4: 1.0}
    assert crowding_removals({i: (a, None) for i, a in acc.items()}, 1) == [3]
    # With latency (0, 0, 1, 0) 3 is far from everyone; pairs (1, 2) and (2, 4) tie at 0.5, the
    # smaller ids (1, 2) win. Second-nearest: 1 -> 1.0 (to 4), 2 -> 0.5 (to 4): 2 goes.
    lat = {1: 0.0, 2: 0.0, 3: 1.0, 4: 0.0}
    assert crowding_removals({i: (a, lat[i]) for i, a in acc.items()}, 1) == [2]


def test_latency_is_normalized_like_accuracy():
    # Latency in ms (0, 0, 250, 0) normalizes to the same (0, 0, 1, 0) as above.
    points = {1: (0.0, 10.0), 2: (0.5, 10.0), 3: (0.52, 260.0), 4: (1.0, 10.0)}
    assert crowding_removals(points, 1) == [2]


def test_constant_latency_equals_no_latency():
    acc = {1: 0.1, 2: 0.35, 3: 0.4, 4: 0.7, 5: 0.72, 6: 0.9}
    without = crowding_removals({i: (a, None) for i, a in acc.items()}, 3)
    constant = crowding_removals({i: (a, 7.0) for i, a in acc.items()}, 3)
    assert without == constant
    assert len(without) == 3


def test_renormalizes_after_each_removal():
    # Normalized 0, 0.1, 0.2, 1: pairs (1, 2) and (2, 3) tie at 0.1, (1, 2) wins; second-nearest
    # 1 -> 0.2, 2 -> 0.1: 2 goes. Then 0, 0.2, 1: pair (1, 3); second-nearest 1 -> 1.0,
    # 3 -> 0.8: 3 goes.
    points = {1: (0.0, None), 2: (0.1, None), 3: (0.2, None), 4: (1.0, None)}
    assert crowding_removals(points, 2) == [2, 3]


def test_removal_tie_goes_to_the_higher_id():
    # Normalized 0, 0.4, 0.6, 1: pair (2, 3) at 0.2; second-nearest 2 -> 0.4, 3 -> 0.4 (equal up
    # to rounding): the higher id, 3, goes.
    points = {1: (0.0, None), 2: (0.4, None), 3: (0.6, None), 4: (1.0, None)}
    assert crowding_removals(points, 1) == [3]
    # Two points: no second neighbour for either; the higher id goes.
    assert crowding_removals({5: (0.3, None), 7: (0.6, None)}, 1, keep_at_least=1) == [7]


def test_duplicates_and_order_independence():
    # 2 and 3 coincide (distance 0); second-nearest 2 -> 0.5 (to 1), 3 -> 0.5 (to 4): tie, 3 goes.
    points = {1: (0.0, 0.0), 2: (0.5, 0.5), 3: (0.5, 0.5), 4: (1.0, 1.0)}
    assert crowding_removals(points, 1) == [3]
    reversed_points = dict(reversed(list(points.items())))
    assert crowding_removals(reversed_points, 1) == [3]


def test_keep_at_least_is_respected():
    points = {i: (i / 10, None) for i in range(5)}
    assert len(crowding_removals(points, 10, keep_at_least=3)) == 2
    assert len(crowding_removals(points, 10)) == 3
    assert crowding_removals(points, 0) == []
    assert crowding_removals({1: (0.5, None), 2: (0.6, None)}, 1) == []


def test_removed_ids_are_distinct_and_from_the_input():
    points = {10 + i: ((i * 37 % 11) / 11, (i * 5 % 7) * 1.5) for i in range(30)}
    removed = crowding_removals(points, 20)
    assert len(removed) == len(set(removed)) == 20
    assert set(removed) <= set(points)
    assert crowding_removals(points, 20) == removed


def test_mixed_latency_is_refused():
    points = {1: (0.1, 5.0), 2: (0.2, None), 3: (0.3, 6.0), 4: (0.4, None)}
    with pytest.raises(ValueError, match=r"trials \[2, 4\] have no latency"):
        crowding_removals(points, 1)


def test_bad_arguments_are_refused():
    points = {1: (0.1, None), 2: (0.2, None), 3: (0.3, None)}
    with pytest.raises(ValueError, match="count"):
        crowding_removals(points, -1)
    with pytest.raises(ValueError, match="keep_at_least"):
        crowding_removals(points, 1, keep_at_least=0)
    with pytest.raises(ValueError, match=r"trials \[2\] have a non-finite"):
        crowding_removals({1: (0.1, None), 2: (NAN, None), 3: (0.3, None)}, 1)
