"""Reward values checked against numbers worked out by hand."""

import math

import pytest

from kfnas.config.spec import ConstraintSpec, ObjectiveSpec
from kfnas.registry import RegistryError
from kfnas.search.rewards import (
    REWARDS,
    RewardError,
    compute_reward,
    constraint_factor,
    objective_vector,
)


def flops(target, form="hard", exponent=None):
    return ConstraintSpec(measure="flops", target=target, form=form, exponent=exponent)


def test_metric_reward_is_the_metric_alone():
    objectives = ObjectiveSpec(metric="AP", reward="metric")
    assert compute_reward({"AP": 0.42, "latency_ms": 99.0}, objectives) == 0.42


# Vertex NAS tutorial 4 table: accuracy 0.95, FLOPs 0.4M / 1.6M / 0.8M against a 0.8M target.
@pytest.mark.parametrize(
    ("measured", "hard", "soft_w1", "soft_mnas"),
    [
        (0.4e6, 0.95, 1.9, 0.997230849441914),  # 0.95 * 2 ** 0.07
        (1.6e6, 0.475, 0.475, 0.9050060981417404),  # 0.95 * 0.5 ** 0.07
        (0.8e6, 0.95, 0.95, 0.95),
    ],
)
def test_mnas_reward_matches_hand_computed_values(measured, hard, soft_w1, soft_mnas):
    metrics = {"top_1_accuracy": 0.95, "flops": measured}

    def reward(constraint):
        return compute_reward(metrics, ObjectiveSpec("top_1_accuracy", "mnas", [constraint]))

    assert reward(flops(0.8e6)) == pytest.approx(hard)
    assert reward(flops(0.8e6, "soft", exponent=1.0)) == pytest.approx(soft_w1)
    assert reward(flops(0.8e6, "soft")) == pytest.approx(soft_mnas)


def test_constraints_multiply():
    metrics = {"AP": 0.75, "latency_ms": 25.0, "flops": 200e6}
    both_hard = [ConstraintSpec("latency_ms", 20.0), flops(300e6)]
    # 0.75 * min(1, 20/25) * min(1, 300/200) = 0.75 * 0.8 * 1
    assert compute_reward(metrics, ObjectiveSpec("AP", "mnas", both_hard)) == pytest.approx(0.6)
    both_soft = [ConstraintSpec("latency_ms", 20.0, "soft"), flops(300e6, "soft")]
    # 0.75 * 0.8 ** 0.07 * 1.5 ** 0.07
    expected = 0.7596332230234276
    assert compute_reward(metrics, ObjectiveSpec("AP", "mnas", both_soft)) == pytest.approx(
        expected
    )


def test_hard_constraint_with_exponent():
    factor = constraint_factor({"memory_mb": 60.0}, ConstraintSpec("memory_mb", 30.0, exponent=2))
    assert factor == pytest.approx(0.25)  # (30 / 60) ** 2


def test_objective_vector_negates_constrained_measurements():
    objectives = ObjectiveSpec("AP", "mnas", [ConstraintSpec("latency_ms", 20.0), flops(1e6)])
    assert objective_vector({"AP": 0.3, "latency_ms": 12.5, "flops": 4e5}, objectives) == (
        0.3,
        -12.5,
        -4e5,
    )


def test_missing_metric_names_what_was_reported():
    with pytest.raises(RewardError, match=r"no 'AP' metric; it reported: top_1_accuracy"):
        compute_reward({"top_1_accuracy": 0.5}, ObjectiveSpec("AP", "metric"))


@pytest.mark.parametrize("bad", [0.0, -3.0, math.nan, math.inf])
def test_non_positive_or_non_finite_measurement_is_refused(bad):
    with pytest.raises(RewardError, match=r"latency_ms.*positive finite"):
        constraint_factor({"latency_ms": bad}, ConstraintSpec("latency_ms", 20.0))


def test_unknown_reward_lists_known_ones():
    with pytest.raises(RegistryError, match=r"unknown reward 'mnass' \(did you mean 'mnas'\?\)"):
        compute_reward({"AP": 1.0}, ObjectiveSpec("AP", "mnass"))
    assert REWARDS.names() == ["metric", "mnas"]
