"""The multi-node launcher against the stand-in custom objects API, through the real client."""

import dataclasses
import json
from urllib.parse import parse_qs

import pytest
from k8s_standin import k8s_fixture  # noqa: F401 (the fixture k8s)
from kubernetes import client

from kfnas.launch import JobState, LaunchError, TrialJob, launcher_from_config
from kfnas.launch.base import experiment_label
from kfnas.launch.k8s_manifest import PodSettings
from kfnas.launch.kubernetes import KubernetesLauncher
from kfnas.launch.multinode import ENGINE_TABLE, MultiNodeLauncher
from kfnas.launch.multinode_manifest import object_name, tfjob_manifest, trainjob_manifest

NS = "kfnas"
URI = "gs://bucket/store/exp-1"
JOB = TrialJob(URI, "final", 3, "training")
TRAINER = PodSettings(workers=4, engine="trainer-v2", backoff_limit=2)
TFJOB = PodSettings(workers=4, engine="training-operator-v1", backoff_limit=2)
PLURALS = {"trainer-v2": "trainjobs", "training-operator-v1": "tfjobs"}


def multinode(standin, training=TRAINER, **kwargs):
    return MultiNodeLauncher(
        namespace=NS,
        image="repo/kfnas:1",
        settings={"trial": PodSettings(), "training": training},
        run_id="run-1",
        api_client=standin.api_client(),
        **kwargs,
    )


def kubernetes(standin, training=TRAINER, trial=None):
    return KubernetesLauncher(
        namespace=NS,
        image="repo/kfnas:1",
        settings={"trial": trial or PodSettings(), "training": training, "latency": PodSettings()},
        run_id="run-1",
        api_client=standin.api_client(),
    )


def state(launch, name=JOB.name):
    return launch.poll([name])[name]


@pytest.fixture(params=["trainer-v2", "training-operator-v1"])
def engine(request):
    return request.param


def settings_of(engine, **changes):
    return dataclasses.replace(TRAINER if engine == "trainer-v2" else TFJOB, **changes)


# --- creation, adoption, states ------------------------------------------------------------------


def test_trainjob_created_run_and_completed(k8s):
    launch = multinode(k8s)
    location = launch.start(JOB)
    selector = f"jobset.sigs.k8s.io/jobset-name={JOB.name}"
    assert location == {
        "launcher": "kubernetes",
        "engine": "trainer-v2",
        "namespace": NS,
        "job": JOB.name,
        "trainjob": JOB.name,
        "pods": f"kubectl get pods -n {NS} -l {selector}",
        "log": f"kubectl logs -n {NS} -l {selector},batch.kubernetes.io/job-completion-index=0 "
        "-c node -f",
    }
    stored = k8s.custom("trainjobs", JOB.name)
    assert stored["spec"]["trainer"]["numNodes"] == 4
    assert stored["metadata"]["labels"]["kfnas.io/run-id"] == "run-1"
    assert state(launch).state is JobState.PENDING  # Created; its nodes not all running yet.
    k8s.run_custom("trainjobs", JOB.name)
    assert state(launch).state is JobState.RUNNING
    k8s.complete_custom("trainjobs", JOB.name)
    assert state(launch).state is JobState.SUCCEEDED
    assert k8s.jobs == {}  # No batch Job.
    launch.close()


def test_tfjob_created_run_and_succeeded(k8s):
    launch = multinode(k8s, TFJOB)
    location = launch.start(JOB)
    assert (location["engine"], location["tfjob"]) == ("training-operator-v1", JOB.name)
    assert location["log"] == (
        f"kubectl logs -n {NS} -l training.kubeflow.org/job-name={JOB.name},"
        "training.kubeflow.org/replica-type=worker,training.kubeflow.org/replica-index=0 "
        "-c tensorflow -f"
    )
    stored = k8s.custom("tfjobs", JOB.name)
    assert stored["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 4
    assert state(launch).state is JobState.PENDING  # Created only.
    k8s.run_custom("tfjobs", JOB.name)
    assert state(launch).state is JobState.RUNNING
    k8s.complete_custom("tfjobs", JOB.name)
    assert state(launch).state is JobState.SUCCEEDED


def test_poll_lists_an_experiments_objects_once(k8s, engine):
    launch = multinode(k8s, settings_of(engine))
    jobs = [TrialJob(URI, "final", i, "training") for i in range(3)]
    for job in jobs:
        launch.start(job)
    k8s.run_custom(PLURALS[engine], jobs[1].name)
    before = len(k8s.requests)
    statuses = launch.poll([j.name for j in jobs] + ["never-started"])
    assert len(k8s.requests) - before == 1
    method, path, query = k8s.requests[-1]
    assert (method, path.rsplit("/", 1)[-1]) == ("GET", PLURALS[engine])
    assert parse_qs(query) == {"labelSelector": [f"kfnas.io/experiment={experiment_label(URI)}"]}
    assert [statuses[j.name].state for j in jobs] == [
        JobState.PENDING,
        JobState.RUNNING,
        JobState.PENDING,
    ]
    assert statuses["never-started"].state is JobState.MISSING


def test_start_twice_adopts_the_object(k8s, engine):
    multinode(k8s, settings_of(engine)).start(JOB)
    k8s.run_custom(PLURALS[engine], JOB.name)
    again = multinode(k8s, settings_of(engine))  # A restarted controller.
    location = again.start(JOB)
    assert len(k8s.customs) == 1
    assert location["job"] == JOB.name
    assert state(again).state is JobState.RUNNING


def test_name_collision_with_another_trial_is_refused(k8s, engine):
    multinode(k8s, settings_of(engine)).start(JOB)
    k8s.custom(PLURALS[engine], JOB.name)["metadata"]["labels"]["kfnas.io/trial-id"] = "99"
    with pytest.raises(LaunchError, match="belongs to another trial") as e:
        multinode(k8s, settings_of(engine)).start(JOB)
    kind = "trainjob" if engine == "trainer-v2" else "tfjob"
    assert f"kubectl delete {kind} -n {NS} {JOB.name}" in str(e.value)


def test_long_names_are_shortened_and_mapped_back(k8s, engine):
    job = TrialJob(URI.replace("exp-1", "a-very-long-experiment"), "final_training_study", 123456)
    launch = MultiNodeLauncher(
        namespace=NS,
        image="i",
        settings={"trial": settings_of(engine)},
        api_client=k8s.api_client(),
    )
    location = launch.start(job)
    name = object_name(job.name, engine)
    assert name != job.name
    assert k8s.custom(PLURALS[engine], name)["metadata"]["annotations"]["kfnas.io/job-name"] == (
        job.name
    )
    assert name in location.values()
    k8s.run_custom(PLURALS[engine], name)
    assert launch.poll([job.name])[job.name].state is JobState.RUNNING


def test_queued_object_is_pending_until_admitted_and_running(k8s, engine):
    launch = multinode(k8s, settings_of(engine, queue="team-a"))
    launch.start(JOB)
    stored = k8s.custom(PLURALS[engine], JOB.name)
    assert stored["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert state(launch).state is JobState.PENDING
    k8s.admit_custom(PLURALS[engine], JOB.name)
    assert state(launch).state is JobState.PENDING
    k8s.run_custom(PLURALS[engine], JOB.name)
    assert state(launch).state is JobState.RUNNING


def test_deleted_object_is_missing(k8s, engine):
    launch = multinode(k8s, settings_of(engine))
    launch.start(JOB)
    k8s.delete_custom(PLURALS[engine], JOB.name)
    assert state(launch).state is JobState.MISSING


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        (
            "FailedJobs",
            f"jobset failed due to one or more job failures (first failed job: {JOB.name}-node-0)",
            "FailedJobs: jobset failed due to one or more job failures",
        ),
        (
            "ReachedMaxRestarts",
            "jobset failed due to reaching max number of restarts",
            "ReachedMaxRestarts: jobset failed due to reaching max number of restarts",
        ),
    ],
)
def test_failed_trainjob_reports_its_reason(k8s, reason, message, expected):
    launch = multinode(k8s)
    launch.start(JOB)
    k8s.run_custom("trainjobs", JOB.name)
    k8s.fail_custom("trainjobs", JOB.name, reason, message)
    status = state(launch)
    assert (status.state, status.out_of_memory) == (JobState.FAILED, False)
    assert status.reason.startswith(expected)


def test_trainjob_out_of_memory_and_deadline(k8s):
    launch = multinode(k8s, settings_of("trainer-v2", active_deadline_s=600))
    launch.start(JOB)
    k8s.fail_custom(
        "trainjobs",
        JOB.name,
        "FailJobSetFailurePolicyAction",
        f"applying FailJobSet failure policy action (first failed job: {JOB.name}-node-0)",
    )
    status = state(launch)
    assert (status.state, status.out_of_memory) == (JobState.FAILED, True)
    assert status.reason.startswith("out of memory (a node exited 137; FailJobSet")
    assert "memory limit of the profile's training section" in status.reason
    k8s.delete_custom("trainjobs", JOB.name)
    launch.start(JOB)
    k8s.fail_custom("trainjobs", JOB.name, "DeadlineExceeded", "TrainJob exceeded its deadline")
    assert state(launch).reason == "deadline exceeded (activeDeadlineSeconds 600)"


def test_failed_tfjob_reports_its_reason(k8s):
    launch = multinode(k8s, settings_of("training-operator-v1", active_deadline_s=600))
    launch.start(JOB)
    k8s.run_custom("tfjobs", JOB.name)
    backoff = f"Job {JOB.name} has failed because it has reached the specified backoff limit"
    k8s.fail_custom("tfjobs", JOB.name, "TFJobFailed", backoff)
    status = state(launch)
    assert (status.state, status.reason) == (JobState.FAILED, f"TFJobFailed: {backoff}")
    k8s.delete_custom("tfjobs", JOB.name)
    launch.start(JOB)
    deadline = f"Job {JOB.name} has failed because it was active longer than specified deadline"
    k8s.fail_custom("tfjobs", JOB.name, "TFJobFailed", deadline)
    assert state(launch).reason == "deadline exceeded (activeDeadlineSeconds 600)"


def test_rejected_credentials_say_so(k8s, engine):
    launch = multinode(k8s, settings_of(engine))
    launch.start(JOB)
    k8s.revoke_token()
    for act in (lambda: launch.start(JOB), lambda: state(launch), launch.check):
        with pytest.raises(LaunchError, match="rejected the credentials") as e:
            act()
        assert "HTTP 401 Unauthorized" in str(e.value)
    assert len(k8s.rejected) == 3
    with pytest.raises(LaunchError, match="rejected the credentials"):
        kubernetes(k8s, settings_of(engine)).check()


def test_missing_runtime_names_the_command(k8s):
    k8s.runtimes.clear()
    with pytest.raises(LaunchError, match="must be created before the TrainJob") as e:
        multinode(k8s).start(JOB)
    assert "kubectl apply -f pipelines/runtimes/kfnas-tensorflow.yaml" in str(e.value)
    assert "admission webhook" in str(e.value)
    assert k8s.customs == {}


# --- check ---------------------------------------------------------------------------------------


def test_check_passes_with_the_crds_and_rights(k8s, engine):
    multinode(k8s, settings_of(engine)).check()
    kubernetes(k8s, settings_of(engine)).check()


def test_check_names_the_release_to_install_when_the_crd_is_absent(k8s):
    k8s.uninstall("trainjobs")
    with pytest.raises(LaunchError) as e:
        multinode(k8s).check()
    message = str(e.value)
    assert "does not serve trainjobs.trainer.kubeflow.org/v1alpha1 (TrainJob)" in message
    assert "settings.training (engine trainer-v2)" in message
    assert "install Kubeflow Trainer v2.3.0" in message
    assert "manifests/overlays/manager?ref=v2.3.0" in message
    assert "kubectl apply -f pipelines/runtimes/kfnas-tensorflow.yaml" in message
    with pytest.raises(LaunchError, match=r"install Kubeflow Trainer v2\.3\.0"):
        kubernetes(k8s).check()
    multinode(k8s, TFJOB).check()  # The TFJob CRD is still there.
    k8s.uninstall("tfjobs")
    with pytest.raises(LaunchError, match=r"install Kubeflow Training Operator v1\.9\.4") as e:
        multinode(k8s, TFJOB).check()
    assert "training-operator.git/manifests/overlays/standalone?ref=v1.9.4" in str(e.value)


def test_poll_after_the_crd_was_removed(k8s):
    launch = multinode(k8s)
    launch.start(JOB)
    k8s.uninstall("trainjobs")
    with pytest.raises(LaunchError, match="does not serve trainjobs"):
        state(launch)


def test_check_names_missing_rights(k8s, engine):
    plural = PLURALS[engine]
    group = "trainer.kubeflow.org" if engine == "trainer-v2" else "kubeflow.org"
    k8s.deny("create", plural)
    k8s.deny("list", plural)
    for launch in (multinode(k8s, settings_of(engine)), kubernetes(k8s, settings_of(engine))):
        with pytest.raises(LaunchError) as e:
            launch.check()
        message = str(e.value)
        assert f"may not create {plural} ({group}), list {plural} ({group})" in message
        assert "kubectl apply -n kfnas -f pipelines/rbac/controller-rbac.yaml" in message


def test_check_asks_only_for_the_rights_the_settings_use(k8s):
    k8s.deny("create", "tfjobs")  # No kind uses TFJobs.
    kubernetes(k8s).check()
    for verb in ("create", "get", "list", "watch", "delete"):
        k8s.deny(verb, "jobs")
    with pytest.raises(LaunchError, match="may not create jobs"):
        kubernetes(k8s).check()  # The trial kind runs as batch Jobs.
    with pytest.raises(LaunchError, match="may not create jobs"):
        kubernetes(k8s, trial=TRAINER).check()  # Both train multi-node; measurements are Jobs.


def test_check_refuses_settings_that_no_engine_runs(k8s):
    with pytest.raises(LaunchError, match="workers 2 needs a multi-node engine"):
        kubernetes(k8s, training=PodSettings(workers=2)).check()
    with pytest.raises(LaunchError, match="'mpi' is not a multi-node engine"):
        multinode(k8s, PodSettings(engine="mpi")).check()


# --- the kubernetes launcher routes --------------------------------------------------------------


def test_kubernetes_launcher_routes_multinode_kinds(k8s, engine):
    launch = kubernetes(k8s, settings_of(engine))
    proxy = TrialJob(URI, "proxy_0", 1)
    assert launch.start(proxy)["job"] == proxy.name
    location = launch.start(JOB)
    assert location["engine"] == engine
    assert list(k8s.jobs) == [(NS, proxy.name)]  # The proxy trial is a batch Job ...
    assert list(k8s.customs) == [(PLURALS[engine], NS, JOB.name)]  # ... the training is not.
    k8s.run_custom(PLURALS[engine], JOB.name)
    k8s.succeed(proxy.name)
    statuses = launch.poll([proxy.name, JOB.name, "never-started"])
    assert {n: s.state for n, s in statuses.items()} == {
        proxy.name: JobState.SUCCEEDED,
        JOB.name: JobState.RUNNING,
        "never-started": JobState.MISSING,
    }
    restarted = kubernetes(k8s, settings_of(engine))  # Adopts both after a restart.
    restarted.start(proxy)
    restarted.start(JOB)
    assert len(k8s.jobs) == len(k8s.customs) == 1
    assert restarted.poll([JOB.name])[JOB.name].state is JobState.RUNNING


def test_launch_config_routes_with_owners(k8s, tmp_path, monkeypatch):
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "name": "search-run-x7",
        "uid": "0f0e0d0c-1111-2222-3333-444455556666",
    }
    k8s.add_pod("search-controller-1", owner_references=[workflow])
    monkeypatch.setenv("KUBECONFIG", str(k8s.write_kubeconfig(tmp_path / "config")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOSTNAME", "search-controller-1")
    config = {
        "kind": "kubernetes",
        "namespace": NS,
        "image": "repo/kfnas:1",
        "run_id": "run-1",
        "owner_from_pod": True,
        "settings": {
            "trial": PodSettings().to_dict(),
            "training": TRAINER.to_dict(),
            "latency": PodSettings().to_dict(),
        },
    }
    launch = launcher_from_config(json.loads(json.dumps(config)))
    launch.check()
    launch.start(JOB)
    (owner,) = k8s.custom("trainjobs", JOB.name)["metadata"]["ownerReferences"]
    assert owner == workflow
    del config["kind"]  # As launcher_from_config passes it on.
    assert MultiNodeLauncher.from_config(config).settings == {"training": TRAINER}
    with pytest.raises(LaunchError, match="no kind's settings name an engine"):
        MultiNodeLauncher.from_config(
            config | {"settings": {"trial": {}, "training": {}, "latency": {}}}
        )


# --- the stand-in answers as the API server does -------------------------------------------------


def custom_api(k8s):
    return client.CustomObjectsApi(k8s.api_client())


def create(k8s, manifest):
    plural = "trainjobs" if manifest["kind"] == "TrainJob" else "tfjobs"
    group, version = manifest["apiVersion"].split("/")
    return custom_api(k8s).create_namespaced_custom_object(group, version, NS, plural, manifest)


def spoiled(build, spoil):
    settings = TRAINER if build is trainjob_manifest else TFJOB
    manifest = build(JOB, settings, image="i", run_id="")
    spoil(manifest)
    return manifest


def _node_patch(manifest):
    patch = manifest["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    return patch["replicatedJobs"][0]


@pytest.mark.parametrize(
    ("build", "spoil", "code", "message"),
    [
        (
            trainjob_manifest,
            lambda m: m["metadata"].update(name="1-trial"),
            422,
            "metadata.name must match RFC 1035 DNS label format",
        ),
        (
            trainjob_manifest,
            lambda m: m["metadata"].update(name="k" * 64),
            422,
            "no more than 63 characters",
        ),
        (
            trainjob_manifest,
            lambda m: m["spec"].pop("runtimeRef"),
            422,
            "spec.runtimeRef.name: Required value",
        ),
        (
            trainjob_manifest,
            lambda m: m["spec"]["runtimeRef"].update(name="torch-distributed"),
            403,
            'clustertrainingruntimes.trainer.kubeflow.org "torch-distributed" not found',
        ),
        (
            trainjob_manifest,
            lambda m: _node_patch(m).update(name="trainer"),
            403,
            "must not have replicated job that doesn't exist in the runtime job template",
        ),
        (
            trainjob_manifest,
            lambda m: _node_patch(m)["template"]["spec"]["template"]["spec"].update(
                containers=[{"name": "node", "env": [{"name": "A", "value": "1"}]}]
            ),
            403,
            "must not have envs for the dataset-initializer, model-initializer, node containers",
        ),
        (tfjob_manifest, lambda m: m["spec"].pop("tfReplicaSpecs"), 422, "Required value"),
        (
            tfjob_manifest,
            lambda m: m["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][
                0
            ].update(name="trial"),
            403,
            "must have at least one container with name tensorflow",
        ),
        (
            tfjob_manifest,
            lambda m: m["metadata"].update(name="Trial-1"),
            403,
            "a DNS-1035 label must consist of lower case alphanumeric characters",
        ),
    ],
)
def test_standin_refuses_invalid_objects_as_the_api_does(k8s, build, spoil, code, message):
    with pytest.raises(client.ApiException) as e:
        create(k8s, spoiled(build, spoil))
    body = json.loads(e.value.body)
    assert (e.value.status, body["reason"]) == (code, {422: "Invalid", 403: "Forbidden"}[code])
    assert message in body["message"]
    if code == 403:
        assert body["message"].startswith('admission webhook "validator.')
    assert k8s.customs == {}


def test_standin_serves_get_delete_and_conflicts(k8s):
    api = custom_api(k8s)
    manifest = trainjob_manifest(JOB, TRAINER, image="i", run_id="")
    created = create(k8s, manifest)
    assert created["metadata"]["uid"]
    with pytest.raises(client.ApiException) as e:
        create(k8s, manifest)
    assert (e.value.status, json.loads(e.value.body)["reason"]) == (409, "AlreadyExists")
    got = api.get_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", JOB.name
    )
    assert got["metadata"]["name"] == JOB.name
    api.delete_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", JOB.name
    )
    with pytest.raises(client.ApiException) as e:
        api.get_namespaced_custom_object(
            "trainer.kubeflow.org", "v1alpha1", NS, "trainjobs", JOB.name
        )
    assert e.value.status == 404
    k8s.uninstall("tfjobs")
    with pytest.raises(client.ApiException) as e:
        api.list_namespaced_custom_object("kubeflow.org", "v1", NS, "tfjobs")
    assert (e.value.status, e.value.body) == (404, "404 page not found\n")


@pytest.mark.parametrize(
    ("engine", "obj", "expected"),
    [
        ("trainer-v2", {"status": {}}, JobState.PENDING),  # Not reconciled yet.
        ("trainer-v2", {"spec": {"suspend": True}, "status": {}}, JobState.PENDING),
        (
            "trainer-v2",
            {"status": {"jobsStatus": [{"name": "node", "ready": 0, "active": 1}]}},
            JobState.PENDING,  # Some nodes not running yet.
        ),
        (
            "trainer-v2",
            {
                "status": {
                    "conditions": [{"type": "Suspended", "status": "False"}],
                    "jobsStatus": [{"name": "node", "ready": 1, "active": 1}],
                }
            },
            JobState.RUNNING,  # Resumed and running.
        ),
        ("training-operator-v1", {"status": {}}, JobState.PENDING),
        (
            "training-operator-v1",
            {"status": {"conditions": [{"type": "Restarting", "status": "True"}]}},
            JobState.RUNNING,  # A node restarting in place still holds the slot.
        ),
        (
            "training-operator-v1",
            {"status": {"conditions": [{"type": "Failed", "status": "False"}]}},
            JobState.PENDING,
        ),
    ],
)
def test_conditions_map_to_states(engine, obj, expected):
    assert ENGINE_TABLE[engine].status(obj).state is expected
