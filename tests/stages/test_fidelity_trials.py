"""Early stopping and ASHA promotions on real trials: the trial step stops and continues models.

The smallest real classification trial (MnasNet at 32 px, batch 2) trains in process through
``run_trial``, as its pod would: a trial the ``value`` rule stops at its first evaluation, and an
ASHA promotion that continues its parent's checkpoint from rung 0's last step to rung 1's. The
controller's scheduling of promotions runs on simulated trials in ``test_multi_fidelity.py``.
"""

from __future__ import annotations

import pytest
from shared_fixtures import data_overrides

from kfnas import stages
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.stages._common import best_trials
from kfnas.stages.search import read_attempts
from kfnas.store import open_experiment

SPEC = """
name: fidelity
task:
  kind: classification
  num_classes: 3
  image_size: 32
  options: {endpoints_num_filters: 16}
studies:
  proxy: {space: mnasnet, budget: {rounds: 1, trials_per_round: 1}}
algorithm: {name: random}
budget: {train_steps: 6, batch_size: 2, latency_runs: 3, evaluations: 3}
measurement: {min_seconds: 0}
"""

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _experiment(tmp_path, data, *overrides: str) -> str:
    return stages.init_experiment(
        SPEC, [f"store_root={tmp_path}", *data_overrides(data), *overrides]
    )


def test_a_trial_the_rule_stops_is_completed_with_its_last_evaluation(
    tmp_path, classification_data
):
    uri = _experiment(
        tmp_path,
        classification_data,
        "studies.proxy.early_stopping.rule=value",
        "studies.proxy.early_stopping.options.threshold=2.0",  # no accuracy reaches 2
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    result = stages.run_trial(uri, "proxy", trial_id)
    assert result.completed and result.stopped_early, result.error
    assert result.stop_reason.startswith("value rule")
    assert result.metrics["eval_step"] == 2.0  # the first of 3 evaluations over 6 steps
    assert result.reward is not None and "latency_ms" in result.metrics
    exp = open_experiment(uri)
    curve = exp.records.read_curve("proxy", trial_id)
    assert curve is not None and curve.steps == (2,) and curve.metric == exp.spec.objectives.metric
    assert curve.values[0] == pytest.approx(result.metrics[curve.metric])
    stored = exp.records.read_result("proxy", trial_id)
    assert stored.stopped_early and stored.stop_reason == result.stop_reason


def test_a_promotion_continues_its_parents_checkpoint_to_the_next_rung(
    tmp_path, classification_data
):
    uri = _experiment(
        tmp_path,
        classification_data,
        "studies.proxy.multi_fidelity.scheduler=asha",
        "studies.proxy.multi_fidelity.min_steps=2",
        "studies.proxy.multi_fidelity.reduction_factor=3",
        "studies.proxy.budget.trials_per_round=3",
    )
    exp = open_experiment(uri)
    parent, *others = stages.propose_trials(uri, "proxy", 1)
    assert {exp.records.read_spec("proxy", i).budget["train_steps"] for i in others} == {2}
    first = stages.run_trial(uri, "proxy", parent)
    assert first.completed, first.error
    # One finished trial of three cannot be in rung 0's top third yet.
    assert stages.promote_trials(uri, "proxy", 1) == []
    for other in others:  # two worse trials finish (not trained: only their results matter)
        exp.records.write_result(
            "proxy", TrialResult(other, TrialStatus.COMPLETED, {"top1": 0.0}, reward=-1.0)
        )
    (child,) = stages.promote_trials(uri, "proxy", 3)
    spec, source = exp.records.read_spec("proxy", child), exp.records.read_spec("proxy", parent)
    assert (spec.rung, spec.promoted_from, spec.budget["train_steps"]) == (1, parent, 6)
    assert (spec.dna_json, spec.arch_json, spec.seed) == (
        source.dna_json,
        source.arch_json,
        source.seed,
    )
    assert stages.promote_trials(uri, "proxy", 3) == []  # once only
    result = stages.run_trial(uri, "proxy", child)
    assert result.completed, result.error
    assert result.start_steps == (2,)  # continued from the parent's step-2 checkpoint
    assert [a.from_step for a in read_attempts(exp, "proxy", child).values()] == [2]
    history = exp.records.history("proxy")
    assert best_trials(history, "proxy", 2) == [child, others[0]]  # top rung first, parent out
    curve = exp.records.read_curve("proxy", child)
    assert curve is not None and curve.steps == (1, 2, 4, 6)  # the parent's points, then its own
