"""The ``launch_trial`` stage: a full training run as a multi-node job, through the real client.

The stand-in API server plays the cluster (no cluster runs here); the job's chief is played by
the test writing the trial's result, as ``run_trial`` on node 0 does, before the job completes.
"""

import json

import pytest
from k8s_standin import k8s_fixture  # noqa: F401 (the fixture k8s)
from shared_fixtures import DETECTION_SPEC, data_overrides

from kfnas import stages
from kfnas.pipelines.profiles import load_profile
from kfnas.pipelines.trial_pods import launch_config
from kfnas.records.trial import TrialResult, TrialStatus
from kfnas.store import open_experiment


@pytest.fixture
def experiment(tmp_path, detection_data, k8s, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(k8s.write_kubeconfig(tmp_path / "kubeconfig")))
    spec = DETECTION_SPEC.replace("batch_size: 2", "batch_size: 8").replace(
        "trials_per_round: 1", "trials_per_round: 2"
    )
    uri = stages.init_experiment(
        spec, [f"store_root={tmp_path / 'store'}", *data_overrides(detection_data)]
    )
    ids = stages.propose_trials(uri, "proxy", 2)
    config = launch_config(load_profile("nvidia-gpu"), "repo/kfnas:1")
    return uri, ids, {**config, "namespace": "kfnas", "owner_from_pod": False}


def test_the_job_runs_on_two_nodes_and_its_chiefs_result_is_returned(experiment, k8s):
    uri, (trial_id, _), config = experiment
    exp = open_experiment(uri)
    logs: list[str] = []
    chief = TrialResult(trial_id, TrialStatus.COMPLETED, {"AP": 0.4}, reward=0.4)

    def the_job_trains(_: float) -> None:
        (job,) = [key for key in k8s.customs if key[0] == "trainjobs"]
        k8s.run_custom("trainjobs", job[2])
        exp.records.write_result("proxy", chief)  # what node 0 writes last
        k8s.complete_custom("trainjobs", job[2])

    result = stages.launch_trial(
        uri, "proxy", trial_id, config, "run-9", poll_s=0.01, log=logs.append, sleep=the_job_trains
    )
    assert result == chief
    (key,) = [key for key in k8s.customs if key[0] == "trainjobs"]
    trainjob = k8s.custom("trainjobs", key[2])
    assert trainjob["spec"]["trainer"]["numNodes"] == 2
    assert trainjob["metadata"]["labels"]["kfnas.io/run-id"] == "run-9"
    env = {e["name"]: e.get("value") for e in trainjob["spec"]["trainer"]["env"]}
    assert env["KFNAS_PRECISION"] == "float16" and env["KFNAS_WORKERS"] == "2"
    launch = json.loads(exp.store.read_text(exp.layout.trial_launch("proxy", trial_id)))
    assert launch["engine"] == "trainer-v2" and "job-completion-index=0" in launch["log"]
    assert logs[0].startswith(f"proxy trial {trial_id}: job ") and "kubectl logs" in logs[0]
    assert logs[-1] == f"proxy trial {trial_id}: COMPLETED"
    # Run again (a retried step): the finished trial returns at once, nothing is created.
    before = dict(k8s.customs)
    assert stages.launch_trial(uri, "proxy", trial_id, config, "run-9") == chief
    assert k8s.customs == before


def test_a_job_that_fails_without_a_result_is_recorded_failed_with_its_reason(experiment, k8s):
    uri, (_, trial_id), config = experiment

    def the_job_fails(_: float) -> None:
        (job,) = [key for key in k8s.customs if key[0] == "trainjobs"]
        k8s.fail_custom("trainjobs", job[2], "FailedJobs", "jobset failed: node-0 exit 1")

    result = stages.launch_trial(
        uri, "proxy", trial_id, config, poll_s=0.01, log=lambda _: None, sleep=the_job_fails
    )
    assert result.status is TrialStatus.FAILED
    assert result.error.startswith("its job failed: ")
    assert "jobset failed: node-0 exit 1" in result.error
    assert open_experiment(uri).records.read_result("proxy", trial_id) == result


def test_an_engine_that_is_not_installed_is_refused_before_any_job(experiment, k8s):
    from kfnas.launch import LaunchError

    uri, (trial_id, _), config = experiment
    k8s.uninstall("trainjobs")
    with pytest.raises(LaunchError, match=r"Kubeflow Trainer v2\.3\.0"):
        stages.launch_trial(uri, "proxy", trial_id, config, log=lambda _: None)
    assert open_experiment(uri).records.read_result("proxy", trial_id) is None
