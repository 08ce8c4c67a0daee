"""The stages init_experiment, propose_trials and run_trial, on a local folder and on GCS.

run_trial is checked on trials that end without a model: one that cannot be built (FAILED) and one
whose loss diverges (INFEASIBLE); trained trials are checked by the shared fixtures' users.
"""

import dataclasses
import json

import pyglove as pg
import pytest

from kfnas.config.spec import SpecError
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.spaces import get_space
from kfnas.spaces.base import decision_values
from kfnas.spaces.spinenet import block_specs
from kfnas.stages import (
    StudyStoppedError,
    export_model,
    init_experiment,
    propose_retraining,
    propose_trials,
    report,
    run_trial,
)
from kfnas.store import ObjectNotFound, open_experiment
from kfnas.views.watch import StoreWatcher

SPEC = """
name: stages-test
task: {kind: detection, options: {max_level: 5}}
studies:
  proxy: {space: spinenet_mbconv}
algorithm: {name: regularized_evolution, options: {population_size: 4, tournament_size: 2}}
budget: {trials_per_round: 3, max_consecutive_failures: 4}
seed: 5
"""


@pytest.fixture(scope="module")
def data(detection_data):
    """The session's generated detection dataset, as spec overrides."""
    files = detection_data
    return [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"]


@pytest.fixture
def experiment(tmp_path, data):
    return init_experiment(SPEC, [f"store_root={tmp_path}", *data])


def test_init_writes_the_resolved_spec_once(tmp_path, data, experiment):
    assert experiment == f"{tmp_path}/stages-test"
    written = json.loads((tmp_path / "stages-test" / "experiment.json").read_text())
    assert written["studies"]["proxy"]["budget"]["trials_per_round"] == 3
    assert written["studies"]["proxy"]["seed"] == 5
    assert init_experiment(SPEC, [f"store_root={tmp_path}", *data]) == experiment  # resume: no-op


def test_init_refuses_a_different_spec_under_the_same_name(tmp_path, data, experiment):
    with pytest.raises(
        SpecError, match="already holds an experiment 'stages-test' with a different"
    ):
        init_experiment(SPEC, [f"store_root={tmp_path}", *data, "budget.train_steps=7"])


def test_init_refuses_an_invalid_spec_before_writing(tmp_path, data):
    with pytest.raises(SpecError, match=r"budget\.train_steps must be a positive integer"):
        init_experiment(SPEC, [f"store_root={tmp_path}", *data, "budget.train_steps=0"])
    assert not (tmp_path / "stages-test").exists()


def test_init_refuses_data_that_does_not_exist(tmp_path):
    with pytest.raises(SpecError, match=r"data cannot be used:\n  - data\.train pattern"):
        init_experiment(SPEC, [f"store_root={tmp_path}", f"data.train={tmp_path}/none-*.tfrecord"])


def test_open_experiment_without_init(tmp_path):
    with pytest.raises(SpecError, match=r"no experiment at .*create it first with init_experiment"):
        open_experiment(f"{tmp_path}/missing")


def test_propose_writes_trials_that_rebuild_their_architecture(experiment):
    ids = propose_trials(experiment, "proxy", 1)
    assert ids == [1, 2, 3]
    exp = open_experiment(experiment)
    space = get_space("spinenet_mbconv")
    for trial_id in ids:
        spec = exp.records.read_spec("proxy", trial_id)
        assert (spec.round, spec.space, spec.budget["trials_per_round"]) == (1, space.name, 3)
        dna = pg.from_json_str(spec.dna_json)
        arch = pg.from_json_str(spec.arch_json)
        assert block_specs(arch) == block_specs(pg.materialize(space.hyper(), dna))
        # Its decisions by id, for the trial's HParams without rebuilding the DNA spec there.
        assert spec.decisions == decision_values(space, spec.dna_json) and spec.decisions
    assert len({exp.records.read_spec("proxy", i).dna_json for i in ids}) == 3


def test_propose_again_resumes_and_next_round_learns_from_results(experiment):
    first = propose_trials(experiment, "proxy", 1)
    assert propose_trials(experiment, "proxy", 1) == first
    exp = open_experiment(experiment)
    for trial_id in first:
        metrics = {"AP": 0.1 * trial_id, "latency_ms": 10.0}
        exp.records.write_result(
            "proxy", TrialResult(trial_id, TrialStatus.COMPLETED, metrics, reward=0.1 * trial_id)
        )
    second = propose_trials(experiment, "proxy", 2)
    assert second == [4, 5, 6]
    assert [exp.records.read_spec("proxy", i).round for i in second] == [2, 2, 2]


def test_too_many_failures_in_a_row_stop_the_study(experiment):
    exp = open_experiment(experiment)
    ids = propose_trials(experiment, "proxy", 1) + propose_trials(experiment, "proxy", 2)
    for trial_id in ids[:4]:
        result = TrialResult(trial_id, TrialStatus.FAILED, error=f"OOM in trial {trial_id}")
        exp.records.write_result("proxy", result)
    with pytest.raises(StudyStoppedError, match=r"last 4 trials all failed:\n  trial 1: FAILED"):
        propose_trials(experiment, "proxy", 3)


def test_stages_on_a_gcs_store(monkeypatch, gcs_emulator, gcs_bucket, data):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    uri = init_experiment(SPEC, [f"store_root=gs://{gcs_bucket}/nas", *data])
    assert uri == f"gs://{gcs_bucket}/nas/stages-test"
    assert propose_trials(uri, "proxy", 1) == [1, 2, 3]
    assert propose_trials(uri, "proxy", 1) == [1, 2, 3]
    assert open_experiment(uri).records.trial_ids("proxy") == [1, 2, 3]


@pytest.mark.tf
def test_a_trial_that_cannot_be_built_is_recorded_as_failed(experiment):
    exp = open_experiment(experiment)
    propose_trials(experiment, "proxy", 1)
    spec = exp.records.read_spec("proxy", 1)
    broken = dataclasses.replace(spec, trial_id=4, round=2, arch_json='{"_type": "no.such.Arch"}')
    exp.records.write_spec(broken)
    result = run_trial(experiment, "proxy", 4)
    assert result.status is TrialStatus.FAILED
    assert "no.such.Arch" in result.error
    assert exp.records.read_result("proxy", 4) == result
    assert run_trial(experiment, "proxy", 4) == result  # recorded once, returned as is
    files = exp.store.list(exp.layout.trial_dir("proxy", 4))
    assert "logs/error.txt" in files and "result.json" in files


DIVERGING_SPEC = """
name: diverging
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            head_num_convs: 1, head_num_filters: 16, validation_batch_size: 8,
            learning_rate: 1.0e12, warmup_steps: 0}
studies:
  proxy: {space: spinenet_mbconv}
budget: {rounds: 2, trials_per_round: 1, train_steps: 6, batch_size: 2, latency_runs: 5}
measurement: {min_seconds: 0}
"""


@pytest.mark.tf
@pytest.mark.slow
def test_a_diverging_trial_is_infeasible_and_the_study_goes_on(tmp_path, data):
    uri = init_experiment(DIVERGING_SPEC, [f"store_root={tmp_path}", *data])
    (trial_id,) = propose_trials(uri, "proxy", 1)
    result = run_trial(uri, "proxy", trial_id)
    assert result.status is TrialStatus.INFEASIBLE
    assert "at step" in result.error and ("NaN" in result.error or "inf" in result.error)
    assert result.reward is None
    assert propose_trials(uri, "proxy", 2) == [trial_id + 1]  # the study goes on


def test_init_applies_named_settings_and_adds_the_retraining_studies(tmp_path, data):
    uri = init_experiment(SPEC, data, store_root=str(tmp_path), trials_per_round=2, rounds=4)
    spec = open_experiment(uri).spec
    assert (spec.study("proxy").budget.trials_per_round, spec.study("proxy").budget.rounds) == (
        2,
        4,
    )
    assert list(spec.studies) == ["proxy", "validation", "final"]
    assert init_experiment(SPEC, data, store_root=str(tmp_path), trials_per_round=2, rounds=4)
    with pytest.raises(SpecError, match=r"unknown key 'settings\.round'"):
        init_experiment(SPEC, data, store_root=str(tmp_path), round=4)


def _complete(exp, study, trial_ids, metric=0.1):
    for trial_id in trial_ids:
        exp.records.write_result(
            study,
            TrialResult(
                trial_id,
                TrialStatus.COMPLETED,
                {"AP": metric * trial_id, "latency_ms": 10.0},
                reward=metric * trial_id,
            ),
        )


def test_propose_retraining_copies_architectures_with_the_full_budget(experiment):
    exp = open_experiment(experiment)
    _complete(exp, "proxy", propose_trials(experiment, "proxy", 1))
    assert propose_retraining(experiment, "proxy", "validation", [3, 1]) == [1, 2]
    full = exp.spec.study("validation").budget
    for trial_id, source_id in ((1, 3), (2, 1)):
        copy, source = (
            exp.records.read_spec("validation", trial_id),
            exp.records.read_spec("proxy", source_id),
        )
        assert (copy.source_study, copy.source_trial, copy.round) == ("proxy", source_id, 1)
        assert (copy.arch_json, copy.dna_json, copy.space) == (
            source.arch_json,
            source.dna_json,
            source.space,
        )
        assert copy.budget == dataclasses.asdict(full) and full.train_steps == 1000
    # Resumed: the same sources keep their trials, a new one gets the next id.
    assert propose_retraining(experiment, "proxy", "validation", [1, 2, 3]) == [2, 3, 1]
    with pytest.raises(ValueError, match="cannot retrain its own trials"):
        propose_retraining(experiment, "proxy", "proxy", [1])
    with pytest.raises(ObjectNotFound):
        propose_retraining(experiment, "proxy", "final", [9])


def test_report_compares_proxy_and_full_training(experiment, tmp_path):
    exp = open_experiment(experiment)
    _complete(exp, "proxy", propose_trials(experiment, "proxy", 1))
    _complete(exp, "validation", propose_retraining(experiment, "proxy", "validation", [3, 2]))
    written = report(experiment, html_path=str(tmp_path / "a" / "r.html"))
    assert written["html"] == exp.store.uri(exp.layout.report_html())
    assert written["kendall_tau"] == pytest.approx(-1.0)  # validation ids reverse the proxy order
    assert (tmp_path / "a" / "r.html").read_text() == exp.store.read_text(exp.layout.report_html())


def test_export_model_refuses_a_trial_that_did_not_complete(experiment):
    propose_trials(experiment, "proxy", 1)
    with pytest.raises(ValueError, match="proxy trial 1 is not finished: only a COMPLETED"):
        export_model(experiment, "proxy", 1, "v1")


def test_store_watcher_reports_what_appears(tmp_path, data):
    watcher = StoreWatcher(f"{tmp_path}/stages-test")
    assert watcher.poll() == []
    uri = init_experiment(SPEC, [f"store_root={tmp_path}", *data])
    assert watcher.poll() == [f"experiment {uri}: spec and data checked"]
    propose_trials(uri, "proxy", 1)
    assert watcher.poll() == [f"proxy trial {i}: proposed (round 1)" for i in (1, 2, 3)]
    _complete(open_experiment(uri), "proxy", [2])
    assert watcher.poll() == [
        "proxy trial 2: COMPLETED AP 0.2000 reward 0.2000 latency 10.0 ms (0 s)"
    ]
    assert watcher.poll() == []


def _lose(exp, trial_id):
    """A trial whose spec was never written (a crash in the middle of a round): no folder."""
    import shutil
    from pathlib import Path

    shutil.rmtree(Path(exp.store.uri(exp.layout.trial_dir("proxy", trial_id))))


def test_a_round_cut_short_by_a_crash_is_completed_on_rerun(experiment):
    exp = open_experiment(experiment)
    ids = propose_trials(experiment, "proxy", 1)
    specs = {i: exp.records.read_spec("proxy", i) for i in ids}
    _lose(exp, 3)  # crashed after writing 2 of 3
    _lose(exp, 2)  # and one lost in the middle
    assert exp.records.trial_ids("proxy") == [1]
    assert propose_trials(experiment, "proxy", 1) == [1, 2, 3]
    assert {i: exp.records.read_spec("proxy", i) for i in ids} == specs  # the same proposals
    assert propose_trials(experiment, "proxy", 1) == [1, 2, 3]


def test_a_short_round_is_completed_to_the_size_asked(experiment):
    from kfnas.stages._common import propose_round

    exp = open_experiment(experiment)
    assert propose_round(exp, "proxy", 1, n=2) == [1, 2]
    assert propose_round(exp, "proxy", 1, n=4) == [1, 2, 3, 4]
    assert propose_round(exp, "proxy", 1, n=4) == [1, 2, 3, 4]
    dnas = {exp.records.read_spec("proxy", i).dna_json for i in (1, 2, 3, 4)}
    assert len(dnas) == 4


def test_a_short_round_followed_by_later_rounds_stays_short(experiment):
    from kfnas.stages._common import propose_round

    exp = open_experiment(experiment)
    assert propose_round(exp, "proxy", 1, n=2) == [1, 2]
    assert propose_round(exp, "proxy", 2, n=2) == [3, 4]
    assert propose_round(exp, "proxy", 1, n=3) == [1, 2]
    assert exp.records.trial_ids("proxy") == [1, 2, 3, 4]
