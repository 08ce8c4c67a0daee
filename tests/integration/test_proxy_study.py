"""A real proxy study end to end in this process: 2 rounds x 3 spinenet_mbconv trials.

Every trial trains and evaluates a RetinaNet on generated TFRecords through the stage functions
the pipeline calls; a second run over the same store trains nothing again.
"""

import pytest

from kfnas.cli.local_study import run_study
from kfnas.data import write_detection_dataset
from kfnas.records.trial import TrialStatus
from kfnas.stages import init_experiment, propose_trials, run_trial, select_top
from kfnas.store import open_experiment

pytestmark = [pytest.mark.tf, pytest.mark.slow]

SPEC = """
name: proxy-study
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 8}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: regularized_evolution, options: {population_size: 3, tournament_size: 2}}
budget: {rounds: 2, trials_per_round: 3, train_steps: 3, batch_size: 2, latency_runs: 5}
objectives:
  metric: AP
  reward: mnas
  constraints: [{measure: latency_ms, target: 5.0}]
seed: 3
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    files = write_detection_dataset(root / "data", num_train=8, num_validation=4)
    uri = init_experiment(
        SPEC,
        [
            f"store_root={root / 'store'}",
            f"data.train={files.train_pattern}",
            f"data.validation={files.validation_pattern}",
            f"data.annotations={files.annotations}",
        ],
    )
    seen = []
    run = run_study(uri, "proxy", top_k=2, progress=lambda r, i, res: seen.append((r, i)))
    return uri, run, seen


def test_every_trial_completes_with_metrics_and_reward(study):
    uri, run, seen = study
    assert run.trial_ids == [1, 2, 3, 4, 5, 6]
    assert seen == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]
    exp = open_experiment(uri)
    for trial_id in run.trial_ids:
        result = exp.records.read_result("proxy", trial_id)
        assert result.status is TrialStatus.COMPLETED, result.error
        for key in ("AP", "AP50", "latency_ms", "flops", "params"):
            assert key in result.metrics
        assert result.metrics["params"] > 0 and result.metrics["flops"] > 0
        assert result.reward is not None
        factor = min(1.0, 5.0 / result.metrics["latency_ms"])
        assert result.reward == pytest.approx(result.metrics["AP"] * factor)
        files = exp.store.list(exp.layout.trial_dir("proxy", trial_id))
        assert any(f.startswith("logs/train/events.out.tfevents") for f in files), files
        assert any(f.startswith("model/ckpt") for f in files), files
    round_two = [exp.records.read_spec("proxy", i) for i in (4, 5, 6)]
    assert {spec.round for spec in round_two} == {2}


def test_select_top_ranks_by_reward(study):
    uri, run, _ = study
    exp = open_experiment(uri)
    rewards = {i: exp.records.read_result("proxy", i).reward for i in run.trial_ids}
    best = sorted(rewards, key=lambda i: (-rewards[i], i))
    assert select_top(uri, "proxy", 2) == best[:2] == run.top
    assert select_top(uri, "proxy", 10) == best


def test_rerunning_the_study_trains_nothing_twice(study, monkeypatch):
    uri, run, _ = study
    exp = open_experiment(uri)
    before = {i: exp.records.read_result("proxy", i) for i in run.trial_ids}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr("kfnas.training.runner.execute_trial", no_training)
    for round_index in (1, 2):
        ids = propose_trials(uri, "proxy", round_index)
        assert ids == [i for i in run.trial_ids if before[i] and (i - 1) // 3 + 1 == round_index]
        for trial_id in ids:
            assert run_trial(uri, "proxy", trial_id) == before[trial_id]
    again = run_study(uri, "proxy", top_k=2)
    assert again.results == before
    assert again.top == run.top


def test_a_diverging_trial_is_infeasible_and_the_study_goes_on(tmp_path):
    files = write_detection_dataset(tmp_path / "data", num_train=4, num_validation=2)
    uri = init_experiment(
        SPEC,
        [
            f"store_root={tmp_path / 'store'}",
            f"data.train={files.train_pattern}",
            f"data.validation={files.validation_pattern}",
            "name=diverging",
            "budget.trials_per_round=1",
            "budget.train_steps=6",
            "task.options.learning_rate=1.0e12",
            "task.options.warmup_steps=0",
        ],
    )
    (trial_id,) = propose_trials(uri, "proxy", 1)
    result = run_trial(uri, "proxy", trial_id)
    assert result.status is TrialStatus.INFEASIBLE
    assert "at step" in result.error and ("NaN" in result.error or "inf" in result.error)
    assert result.reward is None
    assert propose_trials(uri, "proxy", 2) == [trial_id + 1]  # the study goes on
