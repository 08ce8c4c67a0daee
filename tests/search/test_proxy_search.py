"""The proxy-task search's arithmetic: the grid, the correlation over steps, the stopping states."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from kfnas.search.proxy_search import (
    MIN_PAIRS,
    PROXY_TARGET,
    ProxyCandidate,
    ProxyTargets,
    best_candidate,
    parse_grid,
    step_stats,
    track,
)
from kfnas.search.stopping import StopContext, should_stop, stopping_problems

# grid


def test_a_mapping_grid_gives_every_combination_in_order():
    grid = parse_grid("{task.image_size: [32, 64], studies.proxy.budget.train_steps: [100, 200]}")
    assert [c.name for c in grid] == ["c1", "c2", "c3", "c4"]
    assert grid[0].settings == {"task.image_size": 32, "studies.proxy.budget.train_steps": 100}
    assert grid[3].settings == {"task.image_size": 64, "studies.proxy.budget.train_steps": 200}


def test_a_listed_grid_keeps_its_names_and_settings():
    grid = parse_grid("[{name: small, task.image_size: 32}, {data.train: 'gs://b/t-0000?'}]")
    assert grid == [
        ProxyCandidate("small", {"task.image_size": 32}),
        ProxyCandidate("c2", {"data.train": "gs://b/t-0000?"}),
    ]
    assert grid[1].overrides() == ['data.train="gs://b/t-0000?"']


@pytest.mark.parametrize("text", ["", "{}", "[]", "null"])
def test_a_grid_without_candidates_is_refused(text):
    with pytest.raises(ValueError, match="the proxy grid has no candidates: a grid maps"):
        parse_grid(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{task.image_size: 32}", "'task.image_size' must list at least one value"),
        ("{task.image_size: []}", "must list at least one value"),
        ("[{name: only}]", "candidate 1 must map spec keys to values"),
        ("[{name: a, x: 1}, {name: a, x: 2}]", "names a more than once"),
        ("7", "must be a mapping or a list"),
        ("{a: [1", "not valid YAML"),
    ],
)
def test_a_malformed_grid_says_what_a_grid_looks_like(text, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(text)


# statistics at a step


def _curves(values_by_model, step=10):
    return {m: [(step, v)] for m, v in values_by_model.items()}


def test_a_step_pairs_the_models_that_trained_that_far_with_their_scores():
    reference = {i: float(i) for i in range(6)}
    values = {i: [(10, v), (20, v + 0.1)] for i, v in enumerate([0.1, 0.3, 0.2, 0.5, 0.4, 0.6])}
    values[5] = [(10, 0.6)]  # stopped at step 10: no value at step 20
    seconds = {i: [(10, 5.0 + i), (20, 10.0 + i)] for i in range(6)}
    at_10 = step_stats(10, values, seconds, reference)
    expected = stats.kendalltau([0.1, 0.3, 0.2, 0.5, 0.4, 0.6], list(range(6)))
    assert at_10.pairs == 6
    assert at_10.correlation == pytest.approx(expected.statistic)
    assert at_10.p_value == pytest.approx(expected.pvalue)
    # Sorted values 0.1 0.2 0.3 0.4 0.5 0.6: index 3 is 0.4, model 4's; its seconds at step 10.
    assert at_10.median_value == 0.4 and at_10.median_seconds == 9.0
    at_20 = step_stats(20, values, seconds, reference)
    assert at_20.pairs == 5 and at_20.correlation is not None  # 5 of 6 >= 70 %


def test_too_few_models_give_no_correlation():
    reference = {i: float(i) for i in range(8)}
    values = _curves({i: i / 10 for i in range(5)})  # 5 of 8 is below 70 %
    stat = step_stats(10, values, {}, reference)
    assert stat.pairs == 5 and stat.correlation is None and stat.median_value is None
    four = step_stats(
        10, _curves({i: i / 10 for i in range(4)}), {}, {i: 1.0 * i for i in range(4)}
    )
    assert four.pairs == 4 < MIN_PAIRS and four.correlation is None


def test_tied_values_have_no_correlation_but_a_median():
    reference = {i: float(i) for i in range(5)}
    stat = step_stats(10, _curves({i: 0.5 for i in range(5)}), {}, reference)
    assert stat.correlation is None and stat.median_value == 0.5


# tracking and stopping states


def _ranked(taus, *, models=6):
    """Curves whose Kendall tau with the scores 0..models-1 at step 10*(k+1) is taus[k]."""
    values: dict[int, list[tuple[int, float]]] = {m: [] for m in range(models)}
    seconds: dict[int, list[tuple[int, float]]] = {m: [] for m in range(models)}
    for k, tau in enumerate(taus):
        order = _order_with_tau(tau, models)
        for m in range(models):
            values[m].append((10 * (k + 1), order[m] / 10))
            seconds[m].append((10 * (k + 1), 10.0 * (k + 1)))
    return values, seconds, {m: float(m) for m in range(models)}


def _order_with_tau(tau, models):
    """A ranking of ``models`` items whose tau with the identity is ``tau`` (swaps from it)."""
    order = list(range(models))
    pairs = models * (models - 1) / 2
    discordant = round((1 - tau) * pairs / 2)
    i = 0
    while discordant:  # bubble the largest down: each adjacent swap adds one discordant pair
        for j in range(models - 1 - i):
            if not discordant:
                break
            order[j], order[j + 1] = order[j + 1], order[j]
            discordant -= 1
        i += 1
    return order


def test_the_crossing_of_the_target_correlation_is_interpolated():
    values, seconds, reference = _ranked([0.2, 0.6, 0.733])
    result = track(values, seconds, reference, ProxyTargets(correlation=0.65))
    taus = [s.correlation for s in result.stats]
    assert taus == pytest.approx([0.2, 0.6, 0.7333], abs=1e-3)
    assert result.state == "met_correlation" and result.stop_step == 30 and result.succeeded
    fraction = (0.65 - taus[1]) / (taus[2] - taus[1])
    assert result.final_steps == pytest.approx(20 + 10 * fraction)
    assert result.final_seconds == pytest.approx(20 + 10 * fraction)


def test_the_scores_are_read_where_the_candidate_was_judged():
    values, seconds, reference = _ranked([0.2, 0.6, 0.733])
    met = track(values, seconds, reference, ProxyTargets(correlation=0.65))
    assert met.scores_step == 30
    assert [(m, f) for m, _, f in met.scores] == [(m, float(m)) for m in range(6)]
    assert [p for _, p, _ in met.scores] == [values[m][2][1] for m in range(6)]
    never = track(values, seconds, reference, ProxyTargets(correlation=0.9))
    assert never.state == "not_met" and never.scores_step == 30  # its last judged step
    values[5] = values[5][:1]  # trained to step 10 only: left out at step 30
    assert [m for m, _, _ in track(values, seconds, reference, ProxyTargets()).scores] == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_the_first_evaluation_meeting_the_target_is_read_as_is():
    values, seconds, reference = _ranked([1.0, 1.0])
    result = track(values, seconds, reference, ProxyTargets())
    assert (result.state, result.final_steps, result.final_seconds) == ("met_correlation", 10, 10)


def test_an_accuracy_target_counts_after_the_correlation():
    values, seconds, reference = _ranked([0.2, 0.2, 0.2])
    result = track(values, seconds, reference, ProxyTargets(accuracy=0.3))
    assert result.state == "met_accuracy" and result.stop_step == 10  # median 0.3 from the start


@pytest.mark.parametrize(
    ("targets", "state", "step"),
    [
        (ProxyTargets(time_limit_s=20.0), "exceeded_time_limit", 20),
        (ProxyTargets(time_limit_s=100.0, best_s=25.0), "slower_than_best", 30),
        (ProxyTargets(), "not_met", None),
    ],
)
def test_candidates_that_never_rank_well_stop_by_time_or_end_not_met(targets, state, step):
    values, seconds, reference = _ranked([0.0, 0.2, 0.2])
    result = track(values, seconds, reference, targets)
    assert (result.state, result.stop_step, result.succeeded) == (state, step, False)
    assert result.final_steps is None and result.final_seconds is None


def test_a_success_that_ranks_latency_poorly_fails():
    values, seconds, reference = _ranked([1.0])
    full = {m: float(m) for m in range(6)}
    reversed_ = {m: float(-m) for m in range(6)}
    poor = track(values, seconds, reference, ProxyTargets(), (reversed_, full))
    assert poor.state == "failed_latency_correlation"
    assert poor.latency_correlation == pytest.approx(-1)
    good = track(values, seconds, reference, ProxyTargets(), (full, full))
    assert good.state == "met_correlation" and good.latency_correlation == pytest.approx(1)
    unchecked = track(
        values, seconds, reference, ProxyTargets(latency_correlation=None), (reversed_, full)
    )
    assert unchecked.state == "met_correlation"


def test_the_best_candidate_is_the_successful_one_needing_least_time():
    values, seconds, reference = _ranked([1.0])
    fast = track(values, seconds, reference, ProxyTargets())
    slow_values, slow_seconds, _ = _ranked([0.2, 1.0])
    slow = track(slow_values, slow_seconds, reference, ProxyTargets())
    failed = track(*_ranked([0.0]), ProxyTargets())
    assert best_candidate({"slow": slow, "fast": fast, "failed": failed}) == "fast"
    assert best_candidate({"failed": failed}) is None


# the stopping rule


def _context(trial_id, curves, *, seconds=None, step=10):
    return StopContext(
        step=step,
        train_steps=100,
        curve=curves[trial_id],
        finished=[],
        trial_id=trial_id,
        by_trial={t: c for t, c in curves.items() if t != trial_id},
        seconds=seconds,
    )


def test_the_rule_stops_a_trial_once_the_candidate_ranks_the_models_well():
    values, _, reference = _ranked([1.0])
    options = {"reference": [reference[m] for m in range(6)]}
    reason = should_stop("proxy_target", options, _context(5, values))
    assert "met its target correlation: Kendall tau 1.000 >= 0.65 over 6 models" in reason
    few = {m: c for m, c in values.items() if m < 4}  # 4 of 6 trials evaluated so far
    assert should_stop("proxy_target", options, _context(3, few)) == ""


def test_the_rule_stops_a_trial_at_the_candidates_time_limit():
    values, _, reference = _ranked([0.0])
    options = {"reference": [reference[m] for m in range(6)], "seconds": 30.0}
    assert should_stop("proxy_target", options, _context(0, values, seconds=29.0)) == ""
    reason = should_stop("proxy_target", options, _context(0, values, seconds=31.0))
    assert "trained 31.0 s by step 10, at or past the proxy candidate's time limit of 30.0 s" in (
        reason
    )


def test_the_rules_options_are_checked():
    assert stopping_problems("proxy_target", {"reference": [1.0, 2.0]}) == [
        "early_stopping.options.reference: needs at least 5 scores for a rank correlation"
    ]
    problems = stopping_problems(
        "proxy_target", {"reference": [1.0] * 5, "correlation": 2, "seconds": 0}
    )
    assert any("correlation: must be between -1 and 1" in p for p in problems)
    assert any("seconds: must be positive" in p for p in problems)
    assert "must list each trial's" in stopping_problems("proxy_target", {"reference": "x"})[0]
    assert PROXY_TARGET.name == "proxy_target" and not math.isnan(
        PROXY_TARGET.options["correlation"]
    )
