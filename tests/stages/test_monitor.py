"""The trial's per-evaluation callback on a real store: curves written, the study's rule asked.

No training: the trainer calls ``TrialMonitor(exp, trial)(step, metrics)`` at each evaluation
(``test_fidelity_trials.py`` runs it inside a real trial); here the other trials' curves and
results are written as their trials would write them.
"""

from __future__ import annotations

import dataclasses

import pytest

from kfnas.records.trial import TrialCurve, TrialResult, TrialStatus
from kfnas.stages._common import propose_round
from kfnas.stages._monitor import TrialMonitor
from kfnas.store import open_experiment, open_store
from kfnas.store.layout import ExperimentLayout
from kfnas.validation import experiment_spec

SPEC = """
name: monitor-test
task: {kind: classification}
studies:
  proxy:
    space: mnasnet
    early_stopping: {rule: median, options: {min_trials: 2}}
algorithm: {name: random}
budget: {rounds: 1, trials_per_round: 5, train_steps: 40, evaluations: 4}
"""


@pytest.fixture
def exp(tmp_path):
    spec = experiment_spec(SPEC, [f"store_root={tmp_path}"])
    open_store(str(tmp_path)).write_text(
        ExperimentLayout(spec.name).experiment_json(), spec.to_json()
    )
    exp = open_experiment(f"{tmp_path}/{spec.name}")
    propose_round(exp, "proxy", 1)
    return exp


def _finish(exp, trial_id, values, *, result=True, status=TrialStatus.COMPLETED):
    metric = exp.spec.objectives.metric
    curve = TrialCurve(trial_id, metric)
    for step, value in values:
        curve = curve.with_point(step, {metric: value})
    exp.records.write_curve("proxy", curve)
    if result:
        reward = values[-1][1] if status is TrialStatus.COMPLETED else None
        error = "" if status is TrialStatus.COMPLETED else "out of memory"
        exp.records.write_result(
            "proxy", TrialResult(trial_id, status, {metric: values[-1][1]}, reward, error=error)
        )


def test_the_median_rule_stops_a_trial_below_the_finished_trials(exp):
    first, second, third, fourth, me = exp.records.trial_ids("proxy")
    metric = exp.spec.objectives.metric
    _finish(exp, first, [(10, 0.2), (20, 0.4), (30, 0.5), (40, 0.6)])
    _finish(exp, second, [(10, 0.4), (20, 0.6), (30, 0.7), (40, 0.8)])
    _finish(exp, third, [(10, 0.9)], status=TrialStatus.FAILED)  # never a reference
    _finish(exp, fourth, [(10, 0.9), (20, 0.95)], result=False)  # running: median ignores it
    monitor = TrialMonitor(exp, exp.records.read_spec("proxy", me))
    # At step 10 the finished trials' running averages are 0.2 and 0.4: the median is 0.3.
    assert monitor(10, {metric: 0.35, "loss": 1.0}) == ""
    reason = monitor(20, {metric: 0.36})  # medians of 0.3 and 0.5 at step 20: 0.4
    assert reason.startswith("median rule") and "0.4" in reason
    stored = exp.records.read_curve("proxy", me)
    assert stored.steps == (10, 20) and stored.values == (0.35, 0.36)
    assert stored.metrics[0] == {metric: 0.35, "loss": 1.0}
    # A finished trial's curve is read once by this process; running ones at each evaluation.
    assert set(monitor.finished) == {first, second, third}


def test_without_a_rule_the_curve_is_kept_and_nothing_stops(exp):
    spec = dataclasses.replace(
        exp.spec,
        studies={
            "proxy": dataclasses.replace(
                exp.spec.studies["proxy"],
                early_stopping=dataclasses.replace(
                    exp.spec.studies["proxy"].early_stopping, rule="", options={}
                ),
            )
        },
    )
    plain = dataclasses.replace(exp, spec=spec)
    trial = exp.records.read_spec("proxy", exp.records.trial_ids("proxy")[0])
    monitor = TrialMonitor(plain, trial)
    assert monitor(10, {spec.objectives.metric: 0.0}) == ""
    assert exp.records.read_curve("proxy", trial.trial_id).steps == (10,)


def test_a_promotion_starts_from_its_parents_curve_and_a_rerun_from_its_own(exp):
    parent, child, *_ = exp.records.trial_ids("proxy")
    metric = exp.spec.objectives.metric
    _finish(exp, parent, [(5, 0.1), (10, 0.2)])
    spec = dataclasses.replace(exp.records.read_spec("proxy", child), promoted_from=parent, rung=1)
    monitor = TrialMonitor(exp, spec)
    monitor(20, {metric: 0.3})
    assert exp.records.read_curve("proxy", child).steps == (5, 10, 20)
    again = TrialMonitor(exp, spec)  # a rerun of the pod resumes from the step-10 checkpoint
    again(20, {metric: 0.31})
    assert exp.records.read_curve("proxy", child).values == (0.1, 0.2, 0.31)


def test_training_seconds_add_up_over_attempts_and_from_the_parent(exp):
    parent, child, *_ = exp.records.trial_ids("proxy")
    metric = exp.spec.objectives.metric
    first = TrialMonitor(exp, exp.records.read_spec("proxy", parent))
    first(10, {metric: 0.1, "train_seconds": 4.0})
    first(20, {metric: 0.2, "train_seconds": 9.0})
    resumed = TrialMonitor(exp, exp.records.read_spec("proxy", parent))  # from step 20's checkpoint
    resumed(30, {metric: 0.3, "train_seconds": 2.5})
    resumed(40, {metric: 0.4, "train_seconds": 6.0})
    curve = exp.records.read_curve("proxy", parent)
    assert curve.seconds() == [(10, 4.0), (20, 9.0), (30, 11.5), (40, 15.0)]
    spec = dataclasses.replace(exp.records.read_spec("proxy", child), promoted_from=parent, rung=1)
    TrialMonitor(exp, spec)(80, {metric: 0.5, "train_seconds": 10.0})
    assert exp.records.read_curve("proxy", child).seconds()[-1] == (80, 25.0)
