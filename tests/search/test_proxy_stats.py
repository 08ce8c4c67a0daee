"""Proxy-task variance statistics: the coefficient of variation, curve smoothness, the summary.

Expected values are computed by hand; each test states the computation.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from kfnas.search.proxy_stats import (
    SMOOTHNESS_THRESHOLD,
    VARIANCE_THRESHOLD,
    VarianceSummary,
    coefficient_of_variation,
    curve_smoothness,
    summarize,
    training_step_pct,
)

NAN = float("nan")


def test_thresholds():
    assert VARIANCE_THRESHOLD == 0.4
    assert SMOOTHNESS_THRESHOLD == 10.0


# ---- coefficient of variation ---------------------------------------------------------------


def test_equal_values_have_no_variation():
    assert coefficient_of_variation([1, 1, 1]) == 0.0


def test_cv_uses_the_population_std():
    # mean 0.6; population std sqrt(((0.5-0.6)^2 + (0.7-0.6)^2) / 2) = 0.1 (ddof=1 would give
    # 0.1414).
    assert coefficient_of_variation([0.5, 0.7]) == pytest.approx(0.1 / 0.6)


def test_cv_of_a_negative_metric_uses_the_absolute_mean():
    assert coefficient_of_variation([-0.5, -0.7]) == pytest.approx(0.1 / 0.6)


def test_cv_needs_two_values():
    with pytest.raises(ValueError, match="needs at least 2 finished repeats, got 1: "):
        coefficient_of_variation([0.5])
    with pytest.raises(ValueError, match="got 0: "):
        coefficient_of_variation([])


@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf])
def test_cv_refuses_non_finite_values(bad):
    with pytest.raises(ValueError, match="must be finite numbers"):
        coefficient_of_variation([0.5, bad, 0.7])


def test_cv_refuses_a_zero_mean():
    with pytest.raises(ValueError, match="undefined for values with mean 0"):
        coefficient_of_variation([-1.0, 1.0])


# ---- smoothness -----------------------------------------------------------------------------


def test_a_monotone_increasing_curve_is_perfectly_smooth():
    steps = [0, 10, 20, 40, 70, 100]
    assert curve_smoothness(steps, [0.1, 0.5, 0.6, 0.62, 0.62, 0.7]) == 0.0


def test_a_rise_and_fall_by_hand():
    # Normalized: x = 0, 0.5, 1; y = 0, 1, 0. Slopes: +2 on [0, 0.5), -2 on [0.5, 1].
    # Samples: [0, 0.7) at 0, 0.07, ..., 0.63: 0.56 and 0.63 fall on the -2 piece (2 samples);
    # every sample of [0.7, 0.9) and [0.9, 1.0) does (20). Sum of negatives: 22 * -2 = -44.
    assert curve_smoothness([0, 50, 100], [0, 1, 0]) == pytest.approx(44.0)


def test_a_late_drop_weighs_more_than_an_early_one():
    # Late: x = 0, 0.9, 1; y = 0, 1, 0.5. Slope -0.5 / 0.1 = -5 on [0.9, 1]: the 10 samples of
    # [0.9, 1.0) (0.9 itself starts that piece): 10 * -5 = -50.
    assert curve_smoothness([0, 90, 100], [0, 1, 0.5]) == pytest.approx(50.0)
    # Early: x = 0, 0.1, 1; y = 0.5, 0, 1. Slope -5 on [0, 0.1): samples 0 and 0.07: 2 * -5.
    assert curve_smoothness([0, 10, 100], [0.5, 0, 1]) == pytest.approx(10.0)


def test_a_flat_curve_is_smooth():
    assert curve_smoothness([0, 50, 100], [0.3, 0.3, 0.3]) == 0.0


def test_smoothness_depends_only_on_the_curve_shape():
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(np.arange(1, 1000), size=12, replace=False))
    values = rng.uniform(0.2, 0.8, size=12)
    base = curve_smoothness(steps, values)
    assert base > 0
    assert curve_smoothness(steps, 10 * values) == pytest.approx(base)
    assert curve_smoothness(steps, values + 3) == pytest.approx(base)
    assert curve_smoothness(100 * steps / 1000, values) == pytest.approx(base)  # pct
    assert curve_smoothness(steps / 1000, values) == pytest.approx(base)  # fraction


def test_points_are_sorted_and_the_last_value_of_a_repeated_step_counts():
    # Sorted and deduplicated: (0, 0), (50, 1), (100, 0): the rise and fall above.
    assert curve_smoothness([100, 50, 0], [0, 1, 0]) == pytest.approx(44.0)
    # (0, 0), (50, 1), (100, 2) is monotone; with the first value at step 50 it would not be.
    assert curve_smoothness([0, 50, 50, 100], [0, 5, 1, 2]) == 0.0


@pytest.mark.parametrize(("steps", "values"), [([100], [0.5]), ([100, 100], [0.5, 0.6]), ([], [])])
def test_a_curve_needs_two_distinct_steps(steps, values):
    with pytest.raises(ValueError, match=r"at least 2 distinct steps.*budget\.evaluations"):
        curve_smoothness(steps, values)


def test_a_curve_must_be_well_formed():
    with pytest.raises(ValueError, match="as many steps as values"):
        curve_smoothness([0, 1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        curve_smoothness([0, 1, 2], [0.1, NAN, 0.2])


# ---- summary --------------------------------------------------------------------------------


def test_training_step_pct():
    assert training_step_pct([0, 50, 200], 200) == (0.0, 25.0, 100.0)
    with pytest.raises(ValueError, match="train_steps must be positive"):
        training_step_pct([1], 0)


def test_summarize_reads_the_last_values_and_each_curves_smoothness():
    curves = {
        7: ([100, 50, 200], [0.6, 0.4, 0.5]),  # unsorted: the last step, 200, has 0.5
        2: ([50, 100, 200], [0.3, 0.5, 0.7]),
    }
    summary = summarize("accuracy", curves, train_steps=200)
    assert summary.trial_ids == (2, 7)
    assert summary.final_values == (0.7, 0.5)
    assert summary.coefficient_of_variation == pytest.approx(0.1 / 0.6)
    # pct = step / train_steps * 100: 25, 50, 100.
    expected = (
        curve_smoothness([25, 50, 100], [0.3, 0.5, 0.7]),
        curve_smoothness([25, 50, 100], [0.4, 0.6, 0.5]),
    )
    assert expected[0] == 0.0 and expected[1] > 0
    assert summary.smoothness_per_curve == pytest.approx(expected)
    assert summary.smoothness == pytest.approx(sum(expected) / 2)
    assert summary.variance_ok
    assert summary.smoothness_ok == (summary.smoothness <= SMOOTHNESS_THRESHOLD)


def test_summarize_drops_nan_points_before_fitting():
    # Without the NaN point, trial 1 is (10, 0.2), (30, 0.4), (40, 0.6): monotone, smoothness 0.
    curves = {1: ([10, 20, 30, 40], [0.2, NAN, 0.4, 0.6]), 2: ([10, 40], [0.3, 0.5])}
    summary = summarize("accuracy", curves, train_steps=40)
    assert summary.smoothness_per_curve == (0.0, 0.0)
    assert summary.final_values == (0.6, 0.5)


def test_summarize_refuses_a_repeat_that_ends_in_nan():
    curves = {1: ([10, 20], [0.2, NAN]), 2: ([10, 20], [0.3, 0.5])}
    with pytest.raises(ValueError, match="trial 1: its last evaluation of accuracy is nan"):
        summarize("accuracy", curves, train_steps=20)


def test_summarize_refuses_a_repeat_evaluated_once():
    curves = {1: ([20], [0.4]), 2: ([10, 20], [0.3, 0.5])}
    with pytest.raises(
        ValueError, match=r"trial 1: .*2 distinct steps, got 1.*budget\.evaluations"
    ):
        summarize("accuracy", curves, train_steps=20)


def test_summarize_needs_two_usable_repeats():
    with pytest.raises(ValueError, match=r"needs at least 2 finished repeats, got 1: trials \[2\]"):
        summarize("accuracy", {2: ([10, 20], [0.3, 0.5])}, train_steps=20)
    # A repeat without any finite evaluation is left out, and named.
    curves = {1: ([10, 20], [NAN, NAN]), 2: ([10, 20], [0.3, 0.5]), 3: ([], [])}
    with pytest.raises(ValueError, match=r"got 1: .*trials \[1, 3\] have no finite evaluation"):
        summarize("accuracy", curves, train_steps=20)


def test_summarize_refuses_mismatched_curves():
    with pytest.raises(ValueError, match="trial 4: its curve has 2 steps but 1 values"):
        summarize("accuracy", {4: ([1, 2], [0.5]), 5: ([1, 2], [0.5, 0.6])}, train_steps=2)


def test_the_verdicts_and_their_advice():
    # Finals 1 and 3: mean 2, std 1, CV 0.5 > 0.4. The second curve zig-zags: 44 (above).
    curves = {1: ([0, 50, 100], [0.5, 0.8, 1.0]), 2: ([0, 50, 100], [2.0, 4.0, 3.0])}
    summary = summarize("accuracy", curves, train_steps=100)
    assert summary.coefficient_of_variation == pytest.approx(0.5)
    assert not summary.variance_ok
    data = summary.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data["variance_threshold"] == 0.4 and data["smoothness_threshold"] == 10.0
    assert data["repeats"] == 2 and data["trial_ids"] == [1, 2]
    assert "vary too much between runs" in data["variance_advice"]
    assert "lower the learning rate" in data["variance_advice"]
    # Trial 2: x = 0, 0.5, 1; y = 0, 1, 0.5: slope -1 at 22 samples: 22. Mean (0 + 22) / 2 = 11.
    assert data["smoothness_per_curve"] == pytest.approx([0.0, 22.0])
    assert data["smoothness"] == pytest.approx(11.0)
    assert not data["smoothness_ok"]
    assert "zig-zags" in data["smoothness_advice"]

    good = VarianceSummary("accuracy", (0.5, 0.5), 0.0, 0.0, (0.0, 0.0), True, True).to_dict()
    assert "consistent" in good["variance_advice"] and "smoothly" in good["smoothness_advice"]
    assert good["trial_ids"] == []


def test_repeats_that_all_score_zero_have_an_undefined_variance_not_an_error():
    summary = summarize("top1", {1: ([1, 2], [0.0, 0.0]), 2: ([1, 2], [0.0, 0.0])}, 2)
    assert summary.coefficient_of_variation is None and not summary.variance_ok
    data = summary.to_dict()
    assert data["coefficient_of_variation"] is None
    assert "learns nothing measurable" in data["variance_advice"]
