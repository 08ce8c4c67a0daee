"""The Kubernetes launcher against the stand-in API server, through the real client."""

import json
from urllib.parse import parse_qs

import pytest
from k8s_standin import K8sStandIn, k8s_fixture  # noqa: F401 (the fixture k8s)
from kubernetes import client, watch

from kfnas.launch import JobState, LaunchError, TrialJob, launcher_from_config
from kfnas.launch import kubernetes as k8s_launcher
from kfnas.launch.base import experiment_label
from kfnas.launch.k8s_manifest import PodSettings, job_manifest
from kfnas.launch.kubernetes import KubernetesLauncher

NS = "kfnas"
URI = "gs://bucket/store/exp-1"
JOB = TrialJob(URI, "proxy_0", 3)
LATENCY = PodSettings(
    cpu_request="4",
    cpu_limit="4",
    node_selector={"kfnas.io/device": "cpu-4"},
    env={"KFNAS_LATENCY_DEVICE": "cpu-4", "KFNAS_LATENCY_THREADS": "4"},
)
WORKFLOW = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Workflow",
    "name": "search-run-x7",
    "uid": "0f0e0d0c-1111-2222-3333-444455556666",
    "controller": True,
    "blockOwnerDeletion": True,
}


def launcher(standin, trial=None, **kwargs):
    settings = {
        "trial": trial or PodSettings(backoff_limit=0),
        "training": PodSettings(),
        "latency": LATENCY,
    }
    return KubernetesLauncher(
        namespace=NS,
        image="repo/kfnas:1",
        settings=settings,
        run_id="run-1",
        api_client=standin.api_client(),
        **kwargs,
    )


def state(launch, name=JOB.name):
    return launch.poll([name])[name]


def job_lists(standin):
    return [r for r in standin.requests if r[0] == "GET" and r[1].endswith("/jobs")]


def test_create_run_succeed(k8s):
    launch = launcher(k8s)
    location = launch.start(JOB)
    assert location == {
        "launcher": "kubernetes",
        "namespace": NS,
        "job": JOB.name,
        "log": f"kubectl logs -n {NS} job/{JOB.name}",
    }
    stored = k8s.job(JOB.name)
    assert stored["metadata"]["labels"]["kfnas.io/run-id"] == "run-1"
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "repo/kfnas:1"
    assert state(launch).state is JobState.RUNNING
    k8s.succeed(JOB.name)
    assert state(launch).state is JobState.SUCCEEDED
    launch.close()


def test_a_measurement_runs_as_its_own_job_with_the_latency_settings(k8s):
    launch = launcher(k8s)
    launch.start(JOB)
    measure = TrialJob(URI, "proxy_0", 3, "latency")
    location = launch.start(measure)
    assert location["job"] == measure.name and measure.name.endswith("-m")
    assert measure.name != JOB.name and len(measure.name) <= 63
    stored = k8s.job(measure.name)
    assert stored["metadata"]["labels"]["kfnas.io/kind"] == "latency"
    pod = stored["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kfnas.io/device": "cpu-4"}
    (container,) = pod["containers"]
    assert container["command"] == [
        "python",
        "-m",
        "kfnas.stages.measure_worker",
        URI,
        "proxy_0",
        "3",
    ]
    assert {e["name"]: e["value"] for e in container["env"]} == LATENCY.env
    assert container["resources"] == {"limits": {"cpu": "4"}, "requests": {"cpu": "4"}}
    k8s.succeed(measure.name)
    statuses = launch.poll([JOB.name, measure.name])
    assert (statuses[JOB.name].state, statuses[measure.name].state) == (
        JobState.RUNNING,
        JobState.SUCCEEDED,
    )
    assert launch.start(measure)["job"] == measure.name  # started again: adopted
    launch.close()


def test_poll_lists_an_experiments_jobs_once(k8s):
    launch = launcher(k8s)
    jobs = [TrialJob(URI, "proxy_0", i) for i in range(3)]
    for job in jobs:
        launch.start(job)
    k8s.succeed(jobs[1].name)
    before = len(k8s.requests)
    statuses = launch.poll([j.name for j in jobs] + ["never-started"])
    assert len(k8s.requests) - before == 1  # one Job list, no pod list (nothing failed)
    selector = parse_qs(k8s.requests[-1][2])
    assert selector == {"labelSelector": [f"kfnas.io/experiment={experiment_label(URI)}"]}
    assert [statuses[j.name].state for j in jobs] == [
        JobState.RUNNING,
        JobState.SUCCEEDED,
        JobState.RUNNING,
    ]
    assert statuses["never-started"].state is JobState.MISSING


def test_start_twice_adopts_the_job(k8s):
    launch = launcher(k8s)
    launch.start(JOB)
    again = launcher(k8s).start(JOB)  # a restarted controller
    assert len(k8s.jobs) == 1
    assert again["pod"] == k8s.job_pods(JOB.name)[0]["metadata"]["name"]
    assert again["pod"].startswith(JOB.name + "-")


def test_name_collision_with_another_trial_is_refused(k8s):
    launcher(k8s).start(JOB)
    k8s.job(JOB.name)["metadata"]["labels"]["kfnas.io/trial-id"] = "99"
    with pytest.raises(LaunchError, match="belongs to another trial"):
        launcher(k8s).start(JOB)


def test_preempted_pod_is_retried_without_counting(k8s):
    launch = launcher(k8s)  # backoffLimit 0: one counted failure would fail the Job
    launch.start(JOB)
    k8s.preempt(JOB.name)
    assert state(launch).state is JobState.RUNNING
    first, second = k8s.job_pods(JOB.name)
    assert first["status"]["phase"] == "Failed"
    assert second["status"]["phase"] == "Running"
    assert k8s.job(JOB.name)["status"].get("failed", 0) == 0
    k8s.succeed(JOB.name)
    assert state(launch).state is JobState.SUCCEEDED


def test_oom_kill_fails_at_once(k8s):
    launch = launcher(k8s, trial=PodSettings(backoff_limit=3))
    launch.start(JOB)
    k8s.oom_kill(JOB.name)
    assert len(k8s.job_pods(JOB.name)) == 1  # not retried, despite backoffLimit 3
    status = state(launch)
    assert status.state is JobState.FAILED
    assert status.out_of_memory
    assert "out of memory (OOMKilled, exit 137)" in status.reason
    assert "memory limit of the profile's trial section" in status.reason


def test_exit_code_past_backoff_limit(k8s):
    launch = launcher(k8s)
    launch.start(JOB)
    k8s.fail_exit(JOB.name, 1)
    status = state(launch)
    assert status.state is JobState.FAILED
    assert not status.out_of_memory
    assert "BackoffLimitExceeded" in status.reason
    assert "exit code 1" in status.reason


def test_failure_after_a_preemption_is_no_out_of_memory(k8s):
    launch = launcher(k8s)
    launch.start(JOB)
    k8s.preempt(JOB.name)  # killed with exit 137, but disrupted: not the OOM killer
    k8s.fail_exit(JOB.name, 1)
    status = state(launch)
    assert (status.state, status.out_of_memory) == (JobState.FAILED, False)
    assert "after 1 failed pod(s)" in status.reason
    assert "exit code 1 (Error)" in status.reason


def test_failed_pod_within_backoff_limit_is_retried(k8s):
    launch = launcher(k8s, trial=PodSettings(backoff_limit=1))
    launch.start(JOB)
    k8s.fail_exit(JOB.name, 2)
    assert state(launch).state is JobState.RUNNING
    k8s.fail_exit(JOB.name, 2)
    assert "exit code 2" in state(launch).reason


def test_deadline_exceeded(k8s):
    launch = launcher(k8s, trial=PodSettings(active_deadline_s=600))
    launch.start(JOB)
    k8s.exceed_deadline(JOB.name)
    status = state(launch)
    assert (status.state, status.reason) == (
        JobState.FAILED,
        "deadline exceeded (activeDeadlineSeconds 600)",
    )


def test_queued_job_is_pending_until_admitted(k8s):
    launch = launcher(k8s, trial=PodSettings(queue="team-a"))
    launch.start(JOB)
    assert k8s.job(JOB.name)["spec"]["suspend"] is True
    assert k8s.job_pods(JOB.name) == []
    assert state(launch).state is JobState.PENDING
    k8s.admit(JOB.name)
    assert state(launch).state is JobState.RUNNING


def test_deleted_job_is_missing(k8s):
    launch = launcher(k8s)
    launch.start(JOB)
    k8s.delete_job(JOB.name)
    assert k8s.job_pods(JOB.name) == []
    assert state(launch).state is JobState.MISSING


def test_forbidden_create_names_the_rbac_file(k8s):
    k8s.deny("create", "jobs")
    with pytest.raises(LaunchError, match="forbidden") as e:
        launcher(k8s).start(JOB)
    assert f"kubectl apply -n {NS} -f pipelines/rbac/controller-rbac.yaml" in str(e.value)


def test_check_names_missing_permissions(k8s):
    k8s.deny("watch", "jobs")
    k8s.deny("get", "pods/log")
    k8s.add_pod("controller-pod", service_account="pipeline-runner")
    launch = launcher(k8s)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOSTNAME", "controller-pod")
        with pytest.raises(LaunchError) as e:
            launch.check()
    message = str(e.value)
    assert "may not watch jobs (batch), get pods/log in namespace 'kfnas'" in message
    assert "kubectl apply -n kfnas -f pipelines/rbac/controller-rbac.yaml" in message
    assert "service account 'pipeline-runner'" in message


def test_check_names_a_missing_image_pull_secret(k8s):
    launch = launcher(k8s, trial=PodSettings(image_pull_secrets=["regcred"]))
    with pytest.raises(LaunchError, match=r"secret 'regcred'.*does not exist") as e:
        launch.check()
    assert "kubectl create secret docker-registry regcred -n kfnas" in str(e.value)
    k8s.add_secret("regcred")
    launch.check()


def test_check_refuses_bad_settings(k8s):
    launch = launcher(k8s, trial=PodSettings(accelerator_type="cpu", accelerator_count=1))
    with pytest.raises(LaunchError, match=r"settings\.trial\.accelerator_type 'cpu'"):
        launch.check()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda j: setattr(j.spec.template.spec, "restart_policy", "OnFailure"), 'only "Never"'),
        (lambda j: setattr(j.spec.template.spec.containers[0], "image", None), "image: Required"),
        (lambda j: setattr(j.metadata, "name", "x" * 64), "at most 63 characters"),
        (lambda j: setattr(j.metadata, "name", "Trial_1"), "DNS-1123"),
    ],
)
def test_standin_refuses_invalid_jobs_as_the_api_does(k8s, spoil, message):
    manifest = job_manifest(JOB, PodSettings(), image="i", run_id="")
    spoil(manifest)
    with pytest.raises(client.ApiException) as e:
        client.BatchV1Api(k8s.api_client()).create_namespaced_job(NS, manifest)
    body = json.loads(e.value.body)
    assert (e.value.status, body["reason"]) == (422, "Invalid")
    assert message in body["message"]
    assert k8s.jobs == {}


def test_from_config_with_kubeconfig_and_owner_from_pod(k8s, tmp_path, monkeypatch):
    k8s.add_pod("search-controller-1", owner_references=[WORKFLOW])
    monkeypatch.setenv("KUBECONFIG", str(k8s.write_kubeconfig(tmp_path / "config")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOSTNAME", "search-controller-1")
    config = {
        "kind": "kubernetes",
        "namespace": NS,
        "image": "repo/kfnas:1",
        "run_id": "run-1",
        "owner_from_pod": True,
        "settings": {kind: PodSettings().to_dict() for kind in ("trial", "training", "latency")},
    }
    launch = launcher_from_config(json.loads(json.dumps(config)))
    launch.check()
    launch.start(JOB)
    launch.start(TrialJob(URI, "final", 1, "training"))
    (owner,) = k8s.job(JOB.name)["metadata"]["ownerReferences"]
    assert {k: owner[k] for k in ("apiVersion", "kind", "name", "uid")} == {
        k: WORKFLOW[k] for k in ("apiVersion", "kind", "name", "uid")
    }
    assert "blockOwnerDeletion" not in owner  # setting it needs rights on the Workflow
    pod_reads = [r for r in k8s.requests if r[1].endswith("/pods/search-controller-1")]
    assert len(pod_reads) == 1  # the owners are read once


def test_owner_from_pod_refuses_another_namespace(k8s, tmp_path, monkeypatch):
    (tmp_path / "ns").write_text("kubeflow\n")
    monkeypatch.setattr(k8s_launcher, "NAMESPACE_FILE", tmp_path / "ns")
    monkeypatch.setenv("HOSTNAME", "search-controller-1")
    with pytest.raises(LaunchError, match="an owner in another namespace"):
        launcher(k8s, owner_from_pod=True).start(JOB)
    assert k8s.jobs == {}


def test_from_config_errors(monkeypatch, tmp_path):
    settings = {"trial": {}, "light": {}}
    missing = r"settings\.training is missing, settings\.latency is missing, settings\.light is not"
    with pytest.raises(LaunchError, match=missing):
        launcher_from_config({"kind": "kubernetes", "namespace": "n", "settings": settings})
    with pytest.raises(LaunchError, match=r"unknown key.*nmespace"):
        launcher_from_config({"kind": "kubernetes", "nmespace": "x"})
    monkeypatch.setattr(k8s_launcher, "NAMESPACE_FILE", tmp_path / "absent")
    with pytest.raises(LaunchError, match="set the launch config's namespace"):
        launcher_from_config({"kind": "kubernetes", "image": "i"})
    (tmp_path / "ns").write_text("team-ns\n")
    monkeypatch.setattr(k8s_launcher, "NAMESPACE_FILE", tmp_path / "ns")
    assert k8s_launcher.own_namespace() == "team-ns"


def test_standin_serves_watch_events(k8s):
    launch = launcher(k8s)
    launch.start(JOB)
    api = client.BatchV1Api(k8s.api_client())
    listed = api.list_namespaced_job(NS, label_selector="kfnas.io/trial-id=3")
    k8s.succeed(JOB.name)
    events = watch.Watch().stream(
        api.list_namespaced_job,
        NS,
        label_selector="kfnas.io/trial-id=3",
        resource_version=listed.metadata.resource_version,
        timeout_seconds=1,
    )
    event = next(events)
    assert (event["type"], event["object"].metadata.name) == ("MODIFIED", JOB.name)
    assert event["object"].status.succeeded == 1
    events.close()


def test_standin_flags_requests_without_a_token():
    standin = K8sStandIn().start()
    try:
        configuration = client.Configuration(host=standin.url)
        with pytest.raises(client.ApiException):
            client.BatchV1Api(client.ApiClient(configuration)).list_namespaced_job(NS)
    finally:
        standin.stop()
    assert standin.unexpected == [
        f"GET /apis/batch/v1/namespaces/{NS}/jobs? without the bearer token"
    ]
