"""Early-stopping rules checked against decisions worked out by hand."""

import math

import pytest

from kfnas.registry import RegistryError
from kfnas.search.stopping import (
    MEDIAN,
    RANK,
    STOPPING_RULES,
    VALUE,
    StopContext,
    StoppingRule,
    should_stop,
    stopping_problems,
    value_at,
)

NAN = float("nan")

# Running means at step 20: 0.3, 0.4, 0.6 (median 0.4); at step 10: 0.2, 0.3, 0.5 (median 0.3).
# Best values at step 20: 0.4, 0.5, 0.7.
F1 = [(10, 0.2), (20, 0.4)]
F2 = [(10, 0.3), (20, 0.5)]
F3 = [(10, 0.5), (20, 0.7)]
FINISHED = [F1, F2, F3]


def context(curve, finished=FINISHED, running=(), train_steps=100):
    return StopContext(
        step=curve[-1][0],
        train_steps=train_steps,
        curve=curve,
        finished=finished,
        running=running,
    )


def trial(best_at_20):
    return [(10, 0.1), (20, best_at_20)]


# value_at


@pytest.mark.parametrize(
    ("step", "how", "expected"),
    [
        (30, "best", 0.6),
        (30, "mean", 0.4),
        (30, "last", 0.4),
        (25, "best", 0.6),
        (25, "mean", 0.4),
        (25, "last", 0.6),
        (10, "best", 0.2),
        (10, "mean", 0.2),
        (10, "last", 0.2),
    ],
)
def test_value_at_reads_the_points_up_to_the_step(step, how, expected):
    curve = [(10, 0.2), (20, 0.6), (30, 0.4)]
    assert value_at(curve, step, how) == pytest.approx(expected)


def test_value_at_defaults_to_best():
    assert value_at([(10, 0.5), (20, 0.3)], 20) == 0.5


@pytest.mark.parametrize("how", ["best", "mean", "last"])
def test_value_at_is_none_before_the_first_point_after_the_last_and_for_no_points(how):
    curve = [(10, 0.2), (20, 0.6)]
    assert value_at(curve, 5, how) is None
    assert value_at(curve, 21, how) is None
    assert value_at([], 0, how) is None


def test_value_at_counts_nan_as_the_worst_value():
    curve = [(10, NAN), (20, 0.6), (30, NAN)]
    assert value_at(curve, 30, "best") == 0.6
    assert value_at(curve, 30, "mean") == -math.inf
    assert value_at(curve, 30, "last") == -math.inf
    assert value_at(curve, 20, "last") == 0.6
    assert value_at([(10, NAN), (20, NAN)], 20, "best") == -math.inf


def test_value_at_refuses_an_unknown_how():
    with pytest.raises(ValueError, match="how must be one of best, mean, last, got 'median'"):
        value_at([(10, 0.2)], 10, "median")


# StopContext


def test_stop_context_checks_the_trial_curve():
    with pytest.raises(ValueError, match="curve is empty"):
        StopContext(step=10, train_steps=100, curve=[], finished=[])
    with pytest.raises(ValueError, match="ends at step 10, not at the evaluation's step 20"):
        StopContext(step=20, train_steps=100, curve=[(10, 0.1)], finished=[])
    with pytest.raises(ValueError, match="must strictly increase"):
        StopContext(step=20, train_steps=100, curve=[(20, 0.1), (20, 0.2)], finished=[])


# median


def test_median_stops_a_trial_below_the_median_of_running_means():
    reason = should_stop("median", {}, context(trial(0.2)))
    assert reason == (
        "median rule: best value 0.2 by step 20 is below the median 0.4 of the running averages "
        "of 3 finished trials at step 20"
    )


@pytest.mark.parametrize("best", [0.45, 0.4])  # At the median is not below it.
def test_median_lets_a_trial_at_or_above_the_median_go_on(best):
    assert should_stop("median", {}, context(trial(best))) == ""


def test_median_compares_the_trial_best_not_its_last_value():
    # Best 0.45 at step 10 then 0.2: the best (0.45) is above the median 0.4.
    assert should_stop("median", {}, context([(10, 0.45), (20, 0.2)])) == ""


def test_median_at_an_earlier_step():
    # Means at step 10: 0.2, 0.3, 0.5 -> median 0.3.
    assert "median 0.3 " in should_stop("median", {}, context([(10, 0.25)]))
    assert should_stop("median", {}, context([(10, 0.3)])) == ""


def test_median_of_an_even_number_of_references_is_the_middle_mean():
    f4 = [(10, 0.6), (20, 0.8)]  # Mean 0.7: means 0.3, 0.4, 0.6, 0.7 -> median 0.5.
    reason = should_stop("median", {}, context(trial(0.45), finished=[*FINISHED, f4]))
    assert "median 0.5 of the running averages of 4 finished trials" in reason
    assert should_stop("median", {}, context(trial(0.5), finished=[*FINISHED, f4])) == ""


def test_median_uses_running_means_between_evaluations():
    # References evaluated at 10 and 30; the trial at 20 compares with their means up to step 10.
    finished = [[(10, 0.2), (30, 0.9)], [(10, 0.3), (30, 0.9)], [(10, 0.5), (30, 0.9)]]
    assert "median 0.3 " in should_stop("median", {}, context(trial(0.25), finished=finished))


def test_median_goes_on_with_too_few_reference_trials():
    assert should_stop("median", {}, context(trial(0.1), finished=[F1, F2])) == ""
    assert should_stop("median", {}, context(trial(0.1), finished=[])) == ""
    reason = should_stop("median", {"min_trials": 2}, context(trial(0.1), finished=[F1, F2]))
    assert "of 2 finished trials" in reason


def test_median_ignores_references_that_did_not_reach_the_step():
    stopped_at_10 = [(10, 0.9)]  # Counted, it would raise the median to 0.5 and stop 0.45.
    starts_at_30 = [(30, 0.9), (40, 0.9)]  # Has no point at or before step 20.
    finished = [*FINISHED, stopped_at_10, starts_at_30]
    assert should_stop("median", {}, context(trial(0.45), finished=finished)) == ""
    assert "of 3 finished trials" in should_stop("median", {}, context(trial(0.2), finished))
    only_short = [F1, F2, stopped_at_10]
    assert should_stop("median", {}, context(trial(0.1), finished=only_short)) == ""


def test_median_does_not_count_running_trials():
    running = [[(10, 0.9), (20, 0.9)], [(10, 0.9), (20, 0.9)]]
    ctx = context(trial(0.1), finished=[F1, F2], running=running)
    assert should_stop("median", {}, ctx) == ""
    # With three finished references, running ones do not move the median (0.4).
    ctx = context(trial(0.45), finished=FINISHED, running=running)
    assert should_stop("median", {}, ctx) == ""


def test_median_waits_for_min_steps():
    assert should_stop("median", {"min_steps": 20}, context([(10, 0.1)])) == ""
    assert should_stop("median", {"min_steps": 20}, context(trial(0.1))) != ""


def test_no_rule_stops_at_the_end_of_training():
    for train_steps in (20, 15):
        ctx = context(trial(0.0), train_steps=train_steps)
        assert should_stop("median", {}, ctx) == ""
        assert should_stop("rank", {}, ctx) == ""
        assert should_stop("value", {"threshold": 0.5}, ctx) == ""
        # Also when a built-in's decide is called directly.
        assert MEDIAN.decide(MEDIAN.complete({}), ctx) == ""
    assert should_stop("median", {}, context(trial(0.0), train_steps=21)) != ""


def test_median_counts_nan_as_worst():
    all_nan = [(10, NAN), (20, NAN)]
    assert "best value -inf" in should_stop("median", {}, context(all_nan))
    assert should_stop("median", {}, context([(10, NAN), (20, 0.45)])) == ""
    # A reference with a NaN has a running mean of -inf: means -inf, 0.3, 0.4 -> median 0.3.
    nan_reference = [(10, NAN), (20, 0.9)]
    ctx = context(trial(0.35), finished=[F1, F2, nan_reference])
    assert should_stop("median", {}, ctx) == ""
    assert "median 0.3 " in should_stop("median", {}, context(trial(0.25), [F1, F2, nan_reference]))


# rank


def test_rank_stops_a_trial_outside_the_top_fraction():
    # Bests at 20: 0.4, 0.5, 0.7 and the trial's 0.45: N = 4, keep 2, the trial ranks 3.
    reason = should_stop("rank", {}, context(trial(0.45)))
    assert reason == (
        "rank rule: best value 0.45 by step 20 ranks 3 of 4 (with 3 finished trials and 0 running "
        "trials at that step), outside the top 2 (keep_fraction 0.5)"
    )


def test_rank_lets_a_trial_in_the_top_fraction_go_on():
    assert should_stop("rank", {}, context(trial(0.6))) == ""
    assert should_stop("rank", {}, context(trial(0.9))) == ""


def test_rank_ties_count_in_the_trial_favour():
    assert should_stop("rank", {}, context(trial(0.5))) == ""  # Ties 0.5: ranks 2 of 4.
    assert should_stop("rank", {}, context(trial(0.49))) != ""
    same = [[(10, 0.3), (20, 0.3)]] * 5
    assert should_stop("rank", {"keep_fraction": 0.1}, context(trial(0.3), finished=same)) == ""


def test_rank_keeps_the_ceiling_of_the_fraction():
    # 4 references + the trial: N = 5, keep ceil(2.5) = 3.
    finished = [*FINISHED, [(10, 0.1), (20, 0.2)]]
    assert should_stop("rank", {}, context(trial(0.45), finished=finished)) == ""
    assert "outside the top 3" in should_stop("rank", {}, context(trial(0.3), finished=finished))


def test_rank_fraction_times_count_is_not_rounded_up_by_float_error():
    # 0.3 * 10 is 3.0000000000000004 in floating point: the top 3 are kept, not 4.
    finished = [[(20, v / 10)] for v in range(1, 10)]
    options = {"keep_fraction": 0.3}
    assert should_stop("rank", options, context([(20, 0.75)], finished=finished)) == ""
    reason = should_stop("rank", options, context([(20, 0.65)], finished=finished))
    assert "ranks 4 of 10" in reason
    assert "outside the top 3 " in reason


def test_rank_counts_running_trials():
    running = [[(10, 0.1), (20, 0.3)]]
    # Two finished references alone are too few.
    assert should_stop("rank", {}, context(trial(0.35), finished=[F1, F2])) == ""
    # With the running one: 0.4, 0.5, 0.3 and the trial's 0.35: N = 4, keep 2, rank 3.
    reason = should_stop("rank", {}, context(trial(0.35), finished=[F1, F2], running=running))
    assert "ranks 3 of 4 (with 2 finished trials and 1 running trial at that step)" in reason


def test_rank_ignores_references_that_did_not_reach_the_step():
    behind = [[(10, 0.9)], [(10, 0.9)]]
    ctx = context(trial(0.35), finished=[F1, F2, [(10, 0.9)]], running=behind)
    assert should_stop("rank", {}, ctx) == ""
    ctx = context(trial(0.1), finished=[*FINISHED, [(10, 0.9)]], running=behind)
    assert "ranks 4 of 4" in should_stop("rank", {}, ctx)


def test_rank_goes_on_with_too_few_references_and_before_min_steps():
    assert should_stop("rank", {}, context(trial(0.0), finished=[F1, F2])) == ""
    assert should_stop("rank", {"min_trials": 2}, context(trial(0.0), finished=[F1, F2])) != ""
    assert should_stop("rank", {"min_steps": 30}, context(trial(0.0))) == ""


def test_rank_counts_nan_as_worst():
    assert "ranks 4 of 4" in should_stop("rank", {}, context([(10, NAN), (20, NAN)]))
    nan_references = [[(20, NAN)], [(20, NAN)], [(20, NAN)]]
    assert should_stop("rank", {}, context(trial(0.0), finished=nan_references)) == ""
    # All NaN: every value is -inf, all tie, and ties go the trial's way.
    assert should_stop("rank", {}, context([(20, NAN)], finished=nan_references)) == ""


# value


def test_value_stops_a_trial_below_the_threshold():
    reason = should_stop("value", {"threshold": 0.3}, context(trial(0.2)))
    assert reason == "value rule: best value 0.2 by step 20 is below the threshold 0.3"


def test_value_lets_a_trial_at_or_above_the_threshold_go_on():
    assert should_stop("value", {"threshold": 0.3}, context(trial(0.3))) == ""
    assert should_stop("value", {"threshold": 0}, context(trial(0.3), finished=[])) == ""


def test_value_ignores_other_trials_waits_for_min_steps_and_counts_nan_as_worst():
    assert should_stop("value", {"threshold": 0.3}, context(trial(0.2), finished=[])) != ""
    assert should_stop("value", {"threshold": 0.3, "min_steps": 25}, context(trial(0.2))) == ""
    assert should_stop("value", {"threshold": -1e9}, context([(20, NAN)])) != ""


# options


@pytest.mark.parametrize(
    ("rule", "options", "message"),
    [
        (
            "median",
            {"x": 1},
            "early_stopping.options.x: unknown option 'x' for early-stopping rule 'median' "
            "(known: min_steps, min_trials)",
        ),
        (
            "rank",
            {"patience": 2},
            "early_stopping.options.patience: unknown option 'patience' for early-stopping rule "
            "'rank' (known: keep_fraction, min_steps, min_trials)",
        ),
        (
            "median",
            {"min_trials": 0},
            "early_stopping.options.min_trials: must be at least 1, got 0: set it to 1 or more",
        ),
        ("median", {"min_trials": 2.5}, "early_stopping.options.min_trials: must be an integer"),
        (
            "median",
            {"min_trials": True},
            "early_stopping.options.min_trials: must be an integer, got True",
        ),
        (
            "rank",
            {"min_steps": -1},
            "early_stopping.options.min_steps: must be at least 0, got -1: set it to 0 or more",
        ),
        ("value", {"threshold": 1, "min_steps": "10"}, "min_steps: must be an integer, got '10'"),
        (
            "rank",
            {"keep_fraction": 0},
            "early_stopping.options.keep_fraction: must be between 0 and 1 (both excluded), got 0",
        ),
        ("rank", {"keep_fraction": 1}, "keep_fraction: must be between 0 and 1"),
        ("rank", {"keep_fraction": 1.5}, "keep_fraction: must be between 0 and 1"),
        ("rank", {"keep_fraction": True}, "keep_fraction: must be a number, got True"),
        ("rank", {"keep_fraction": "half"}, "keep_fraction: must be a number, got 'half'"),
        (
            "value",
            {},
            "early_stopping.options.threshold: is required: set it to the metric value below "
            "which a trial stops",
        ),
        ("value", {"threshold": None}, "early_stopping.options.threshold: is required"),
        ("value", {"threshold": NAN}, "threshold: must be a finite number, got nan"),
        ("value", {"threshold": math.inf}, "threshold: must be a finite number, got inf"),
        ("value", {"threshold": "0.3"}, "threshold: must be a number, got '0.3'"),
        ("value", {"threshold": False}, "threshold: must be a number, got False"),
    ],
)
def test_bad_options_are_named_with_the_fix(rule, options, message):
    problems = stopping_problems(rule, options)
    assert len(problems) == 1, problems
    assert message in problems[0]
    with pytest.raises(ValueError, match=f"invalid options for early-stopping rule '{rule}'"):
        should_stop(rule, options, context(trial(0.2)))


def test_good_options_have_no_problems():
    assert stopping_problems("median", {}) == []
    assert stopping_problems("median", {"min_trials": 1, "min_steps": 0}) == []
    assert stopping_problems("rank", {"keep_fraction": 0.25, "min_trials": 5}) == []
    assert stopping_problems("value", {"threshold": 0}) == []
    assert stopping_problems("value", {"threshold": -0.5, "min_steps": 100}) == []


def test_every_unknown_option_is_reported_and_the_where_prefix_is_used():
    problems = stopping_problems("median", {"b": 1, "a": 2}, where="studies.s1.early_stopping")
    assert problems == [
        "studies.s1.early_stopping.options.a: unknown option 'a' for early-stopping rule "
        "'median' (known: min_steps, min_trials)",
        "studies.s1.early_stopping.options.b: unknown option 'b' for early-stopping rule "
        "'median' (known: min_steps, min_trials)",
    ]


def test_options_must_be_a_mapping():
    problems = stopping_problems("median", [("min_trials", 3)])  # type: ignore[arg-type]
    assert problems == [
        "early_stopping.options: must be a mapping of option names to values, got "
        "[('min_trials', 3)]"
    ]
    assert MEDIAN.problems(None)[0].startswith("options: must be a mapping")  # type: ignore[arg-type]


def test_unknown_rule_lists_the_known_rules():
    (problem,) = stopping_problems("medain", {})
    assert problem == (
        "early_stopping: unknown early-stopping rule 'medain' (did you mean 'median'?). Known "
        "early-stopping rules: median, proxy_target, rank, value"
    )
    (problem,) = stopping_problems("asha", {}, where="studies.s1.early_stopping")
    assert problem.startswith("studies.s1.early_stopping: unknown early-stopping rule 'asha'")
    known = "Known early-stopping rules: median, proxy_target, rank, value"
    with pytest.raises(RegistryError, match=known):
        should_stop("asha", {}, context(trial(0.2)))


def test_complete_fills_defaults_and_refuses_unknown_options():
    assert MEDIAN.complete({}) == {"min_trials": 3, "min_steps": 0}
    assert RANK.complete({"min_trials": 5}) == {
        "keep_fraction": 0.5,
        "min_trials": 5,
        "min_steps": 0,
    }
    assert VALUE.complete({"threshold": 0.1}) == {"threshold": 0.1, "min_steps": 0}
    with pytest.raises(ValueError, match=r"unknown option 'x' .* \(known: min_steps, min_trials\)"):
        MEDIAN.complete({"x": 1})


def test_option_defaults_are_read_only():
    with pytest.raises(TypeError):
        MEDIAN.options["min_trials"] = 1  # type: ignore[index]


# registry


def test_registry_lists_the_built_in_rules():
    assert STOPPING_RULES.names() == ["median", "proxy_target", "rank", "value"]
    for name, record in [("median", MEDIAN), ("rank", RANK), ("value", VALUE)]:
        assert STOPPING_RULES.get(name) is record
        assert record.name == name
        assert "stopped_early" in record.description
        assert "never fed as failed" in record.description


@pytest.fixture
def registered():
    names = []

    def register(name, rule):
        STOPPING_RULES.register(name, rule)
        names.append(name)

    yield register
    for name in names:
        STOPPING_RULES.unregister(name)


def _last_below(options, context):
    last = context.curve[-1][1]
    return f"last value {last} below {options['floor']}" if last < options["floor"] else ""


def test_a_user_registered_rule_works_through_should_stop(registered):
    registered(
        "last_below",
        StoppingRule(
            name="last_below",
            description="Stops a trial whose last value is below floor.",
            options={"floor": 0.5},
            decide=_last_below,
        ),
    )
    assert "last_below" in STOPPING_RULES.names()
    # Best 0.45 at step 10, last 0.2: this rule looks at the last value, with its default floor.
    ctx = context([(10, 0.45), (20, 0.2)])
    assert should_stop("last_below", {}, ctx) == "last value 0.2 below 0.5"
    assert should_stop("last_below", {"floor": 0.1}, ctx) == ""
    # The end of training is never an early stop, whatever the rule says.
    assert should_stop("last_below", {}, context([(20, 0.2)], train_steps=20)) == ""
    assert stopping_problems("last_below", {"floor": "low"}) == [
        "early_stopping.options.floor: must be a number, got 'low'"
    ]
    assert stopping_problems("last_below", {"ceiling": 1.0}) == [
        "early_stopping.options.ceiling: unknown option 'ceiling' for early-stopping rule "
        "'last_below' (known: floor)"
    ]


def test_a_rule_must_return_a_string(registered):
    registered(
        "broken",
        StoppingRule(name="broken", description="Broken.", options={}, decide=lambda o, c: True),
    )
    with pytest.raises(TypeError, match="decide must return the reason to stop or '' to go on"):
        should_stop("broken", {}, context(trial(0.2)))
    assert stopping_problems("broken", {"x": 1}) == [
        "early_stopping.options.x: unknown option 'x' for early-stopping rule 'broken' "
        "(known: none: it takes no options)"
    ]
