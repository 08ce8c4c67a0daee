"""The multi-node manifests (TrainJob, TFJob) field by field, the settings' checks, the runtime."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kfnas.launch import TrialJob
from kfnas.launch.base import experiment_label
from kfnas.launch.k8s_manifest import (
    ENGINES,
    MAX_WORKERS,
    PodSettings,
    PvcMount,
    SecretEnv,
    SecretVolume,
    Toleration,
)
from kfnas.launch.kubernetes import ENGINE_PERMISSIONS
from kfnas.launch.multinode import ENGINE_TABLE
from kfnas.launch.multinode_manifest import (
    NAME_LIMITS,
    TF_PORT,
    TRAINER_RELEASE,
    object_name,
    tfjob_manifest,
    tfjob_node0_selector,
    trainjob_manifest,
    trainjob_node0_selector,
)

ROOT = Path(__file__).parents[2]
RUNTIME_FILE = ROOT / "pipelines/runtimes/kfnas-tensorflow.yaml"
JOB = TrialJob("gs://bucket/store/my-exp", "final", 2, "training")
SETTINGS = PodSettings(
    accelerator_type="nvidia.com/gpu",
    accelerator_count=2,
    cpu_request="8",
    cpu_limit="16",
    memory_request="64Gi",
    memory_limit="128Gi",
    node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
    tolerations=[Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule")],
    pvcs=[PvcMount("kfnas-data", "/mnt/kfnas")],
    shm_size="16Gi",
    secret_env=[SecretEnv("kfnas-gcs", {"project": "GOOGLE_CLOUD_PROJECT"}, optional=True)],
    secret_volumes=[SecretVolume("kfnas-gcs-key", "/var/secrets/google")],
    env={"TF_NUM_INTEROP_THREADS": "2", "KFNAS_WORKERS": "99"},  # The launcher's value wins.
    image_pull_secrets=["regcred"],
    backoff_limit=2,
    active_deadline_s=259200,
    run_as_user=1000,
    run_as_group=1000,
    run_as_non_root=True,
    workers=4,
    engine="trainer-v2",
)
TFJOB_SETTINGS = dataclasses.replace(SETTINGS, engine="training-operator-v1")
OWNER = client.V1OwnerReference(
    api_version="argoproj.io/v1alpha1", kind="Workflow", name="run-abc", uid="u-1"
)
LABELS = {
    "app.kubernetes.io/name": "kfnas",
    "app.kubernetes.io/component": "trial",
    "kfnas.io/experiment": experiment_label(JOB.experiment_uri),
    "kfnas.io/study": "final",
    "kfnas.io/trial-id": "2",
    "kfnas.io/kind": "training",
    "kfnas.io/run-id": "run-1",
}
COMMAND = ["python", "-m", "kfnas.stages.worker", JOB.experiment_uri, "final", "2", "--train-only"]


def env(engine, name=JOB.name):
    return [
        {"name": "TF_NUM_INTEROP_THREADS", "value": "2"},
        {
            "name": "GOOGLE_CLOUD_PROJECT",
            "valueFrom": {
                "secretKeyRef": {"name": "kfnas-gcs", "key": "project", "optional": True}
            },
        },
        {"name": "KFNAS_CLUSTER", "value": engine},
        {"name": "KFNAS_WORKERS", "value": "4"},
        {"name": "KFNAS_JOB_NAME", "value": name},
        {"name": "KFNAS_TF_PORT", "value": "2222"},
    ]


VOLUMES = [
    {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "kfnas-data"}},
    {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
    {"name": "secret-0", "secret": {"secretName": "kfnas-gcs-key"}},
]
MOUNTS = [
    {"name": "pvc-0", "mountPath": "/mnt/kfnas"},
    {"name": "dshm", "mountPath": "/dev/shm"},
    {"name": "secret-0", "mountPath": "/var/secrets/google", "readOnly": True},
]
RESOURCES = {
    "requests": {"cpu": "8", "memory": "64Gi"},
    "limits": {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": "2"},
}
SECURITY = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}
PLACEMENT = {
    "nodeSelector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "imagePullSecrets": [{"name": "regcred"}],
}


def trainjob(settings=SETTINGS, job=JOB, **kwargs):
    return trainjob_manifest(job, settings, image="repo/kfnas:1", run_id="run-1", **kwargs)


def tfjob(settings=TFJOB_SETTINGS, job=JOB, **kwargs):
    return tfjob_manifest(job, settings, image="repo/kfnas:1", run_id="run-1", **kwargs)


# --- TrainJob -------------------------------------------------------------------------------------


def test_trainjob_metadata():
    manifest = trainjob(owner_references=[OWNER])
    assert (manifest["apiVersion"], manifest["kind"]) == (
        "trainer.kubeflow.org/v1alpha1",
        "TrainJob",
    )
    assert manifest["metadata"] == {
        "name": JOB.name,
        "labels": LABELS,
        "annotations": {"kfnas.io/experiment-uri": JOB.experiment_uri},
        "ownerReferences": [
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Workflow",
                "name": "run-abc",
                "uid": "u-1",
            }
        ],
    }
    assert "ownerReferences" not in trainjob()["metadata"]


def test_trainjob_runtime_and_trainer():
    spec = trainjob()["spec"]
    assert spec["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "kfnas-tensorflow",
    }
    assert spec["trainer"] == {
        "image": "repo/kfnas:1",
        "command": COMMAND,
        "env": env("trainer-v2"),
        "numNodes": 4,
        "resourcesPerNode": RESOURCES,
    }
    assert spec["activeDeadlineSeconds"] == 259200
    assert "suspend" not in spec  # No queue.
    custom = trainjob(dataclasses.replace(SETTINGS, runtime="team-tf"))["spec"]["runtimeRef"]
    assert custom["name"] == "team-tf"


def test_trainjob_runtime_patch_carries_pods_and_labels():
    (patch,) = trainjob()["spec"]["runtimePatches"]
    assert patch["manager"] == "kfnas.io/launcher"
    template = patch["trainingRuntimeSpec"]["template"]
    annotations = {"kfnas.io/experiment-uri": JOB.experiment_uri}
    assert template["metadata"] == {"labels": LABELS, "annotations": annotations}  # The JobSet.
    (node,) = template["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"] == {"labels": LABELS}  # Its Job.
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"] == {"labels": LABELS, "annotations": annotations}
    assert pod["spec"] == {
        "volumes": VOLUMES,
        **PLACEMENT,
        # Env goes in spec.trainer: the Trainer refuses env patches on the node container.
        "containers": [{"name": "node", "volumeMounts": MOUNTS, "securityContext": SECURITY}],
    }


def test_trainjob_bare_settings_and_queue():
    bare = trainjob(PodSettings(engine="trainer-v2"))["spec"]
    assert bare["trainer"]["numNodes"] == 1
    assert "resourcesPerNode" not in bare["trainer"]
    assert "activeDeadlineSeconds" not in bare
    pod = bare["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    assert pod["replicatedJobs"][0]["template"]["spec"]["template"]["spec"] == {}
    queued = trainjob(dataclasses.replace(SETTINGS, queue="team-a"))
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert queued["spec"]["suspend"] is True
    template = queued["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]
    assert "kueue.x-k8s.io/queue-name" not in template["metadata"]["labels"]


# --- TFJob ----------------------------------------------------------------------------------------


def test_tfjob_metadata_and_run_policy():
    manifest = tfjob(owner_references=[OWNER])
    assert (manifest["apiVersion"], manifest["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert manifest["metadata"]["name"] == JOB.name
    assert manifest["metadata"]["labels"] == LABELS
    assert manifest["metadata"]["annotations"] == {"kfnas.io/experiment-uri": JOB.experiment_uri}
    assert manifest["metadata"]["ownerReferences"][0]["name"] == "run-abc"
    assert manifest["spec"]["runPolicy"] == {
        "cleanPodPolicy": "Running",
        "backoffLimit": 2,
        "ttlSecondsAfterFinished": 7 * 24 * 3600,
        "activeDeadlineSeconds": 259200,
    }
    queued = tfjob(dataclasses.replace(TFJOB_SETTINGS, queue="team-a", active_deadline_s=0))
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert queued["spec"]["runPolicy"]["suspend"] is True
    assert "activeDeadlineSeconds" not in queued["spec"]["runPolicy"]


def test_tfjob_workers_only_and_their_pod():
    replicas = tfjob()["spec"]["tfReplicaSpecs"]
    assert list(replicas) == ["Worker"]  # No Chief: worker 0 is the chief.
    worker = replicas["Worker"]
    assert (worker["replicas"], worker["restartPolicy"]) == (4, "OnFailure")
    annotations = {"kfnas.io/experiment-uri": JOB.experiment_uri}
    assert worker["template"]["metadata"] == {"labels": LABELS, "annotations": annotations}
    pod = worker["template"]["spec"]
    assert "restartPolicy" not in pod  # The operator sets it from the replica's.
    (container,) = pod.pop("containers")
    assert pod == {"volumes": VOLUMES, **PLACEMENT}
    assert container == {
        "name": "tensorflow",
        "image": "repo/kfnas:1",
        "command": COMMAND,
        "env": env("training-operator-v1"),
        "resources": RESOURCES,
        "volumeMounts": MOUNTS,
        "securityContext": SECURITY,
        "ports": [{"name": "tfjob-port", "containerPort": TF_PORT}],
    }


# --- names, selectors, engines --------------------------------------------------------------------


def test_long_job_names_are_shortened_for_the_pods():
    job = TrialJob("gs://b/store/a-very-long-experiment-name", "final_training_study", 123456)
    assert len(job.name) == 63
    for engine, longest_pod in (
        ("trainer-v2", "{name}-node-0-999-abcde"),
        ("training-operator-v1", "{name}-worker-999"),
    ):
        name = object_name(job.name, engine)
        assert len(name) == NAME_LIMITS[engine]
        assert len(longest_pod.format(name=name)) == 63
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name)
        assert name == object_name(job.name, engine)  # Deterministic: a restart finds it.
        assert name != object_name(job.name[:-1] + "4", engine)
        build = trainjob if engine == "trainer-v2" else tfjob
        settings = dataclasses.replace(SETTINGS, engine=engine)
        manifest = build(settings, job)
        assert manifest["metadata"]["name"] == name
        assert manifest["metadata"]["annotations"]["kfnas.io/job-name"] == job.name
        assert {"name": "KFNAS_JOB_NAME", "value": name} in (
            manifest["spec"]["trainer"]["env"]
            if engine == "trainer-v2"
            else manifest["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0][
                "env"
            ]
        )
    assert object_name(JOB.name, "trainer-v2") == JOB.name


def test_node0_selectors():
    assert trainjob_node0_selector("x") == (
        "jobset.sigs.k8s.io/jobset-name=x,batch.kubernetes.io/job-completion-index=0"
    )
    assert tfjob_node0_selector("x") == (
        "training.kubeflow.org/job-name=x,training.kubeflow.org/replica-type=worker,"
        "training.kubeflow.org/replica-index=0"
    )


def test_engine_table_names_every_engine():
    assert tuple(ENGINE_TABLE) == ENGINES == ("trainer-v2", "training-operator-v1")
    assert [(e.group, e.version, e.plural, e.kind) for e in ENGINE_TABLE.values()] == [
        ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
        ("kubeflow.org", "v1", "tfjobs", "TFJob"),
    ]


# --- the settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 0}, "w.workers must be >= 1, got 0"),
        ({"workers": MAX_WORKERS + 1}, f"w.workers must be <= {MAX_WORKERS}"),
        (
            {"workers": 4},
            "w.workers 4 needs a multi-node engine: set engine: trainer-v2 (Kubeflow Trainer v2 "
            "with the kfnas runtime, pipelines/runtimes/kfnas-tensorflow.yaml) or "
            "training-operator-v1 (TFJob)",
        ),
        (
            {"engine": "mpi"},
            "w.engine 'mpi' is not a multi-node engine; known: trainer-v2, training-operator-v1",
        ),
        (
            {"engine": "training-operator-v1", "runtime": "kfnas-tensorflow"},
            "w.runtime 'kfnas-tensorflow' names a Kubeflow Trainer v2 runtime, which only "
            "engine: trainer-v2 uses",
        ),
        ({"runtime": "tf"}, "w.runtime 'tf' names a Kubeflow Trainer v2 runtime"),
        ({"engine": "trainer-v2", "runtime": "Team_TF"}, "is not a ClusterTrainingRuntime name"),
    ],
)
def test_problems_refuse_what_no_engine_runs(changes, message):
    problems = dataclasses.replace(PodSettings(), **changes).problems("w")
    assert any(message in p for p in problems), problems


def test_problems_name_keys_as_the_caller_does():
    (problem,) = PodSettings(workers=2).problems("steps.training", {"engine": "multinode.engine"})
    assert "set multinode.engine: trainer-v2" in problem


@pytest.mark.parametrize("engine", ["trainer-v2", "training-operator-v1"])
def test_engines_accept_many_workers(engine):
    assert SETTINGS.problems("w") == []
    assert PodSettings(workers=16, engine=engine).problems("w") == []
    assert PodSettings(workers=16, engine=engine).to_dict()["engine"] == engine
    assert PodSettings.from_dict(TFJOB_SETTINGS.to_dict()) == TFJOB_SETTINGS


# --- the runtime and the RBAC rights --------------------------------------------------------------


def test_runtime_has_the_names_the_launcher_relies_on():
    text = RUNTIME_FILE.read_text()
    runtime = yaml.safe_load(text)
    assert (runtime["apiVersion"], runtime["kind"]) == (
        "trainer.kubeflow.org/v1alpha1",
        "ClusterTrainingRuntime",
    )
    assert runtime["metadata"]["name"] == "kfnas-tensorflow"
    policy = runtime["spec"]["mlPolicy"]
    assert not set(policy) & {"torch", "mpi", "jax", "xgboost", "flux"}  # PlainML.
    jobset = runtime["spec"]["template"]["spec"]
    assert jobset["network"]["enableDNSHostnames"] is True
    (node,) = jobset["replicatedJobs"]
    assert (node["name"], node["replicas"]) == ("node", 1)
    assert node["template"]["metadata"]["labels"] == {
        "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"
    }
    job = node["template"]["spec"]
    assert job["completionMode"] == "Indexed"  # JOB_COMPLETION_INDEX is the node's index.
    (container,) = job["template"]["spec"]["containers"]
    assert container["name"] == "node"
    assert container["ports"][0]["containerPort"] == TF_PORT
    oom = job["podFailurePolicy"]["rules"][1]["onExitCodes"]
    assert (oom["containerName"], oom["values"]) == ("node", [137])
    (rule,) = jobset["failurePolicy"]["rules"]
    assert (rule["action"], rule["onJobFailureReasons"]) == ("FailJobSet", ["PodFailurePolicy"])
    assert f"Kubeflow Trainer {TRAINER_RELEASE}" in text
    assert f"ref={TRAINER_RELEASE}" in text
    assert "<name>-node-0-<i>.<name>" in text


def test_rbac_yaml_grants_the_engines_rights():
    role, _ = yaml.safe_load_all((ROOT / "pipelines/rbac/controller-rbac.yaml").read_text())
    granted = {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert set(ENGINE_PERMISSIONS) == set(ENGINES)
    for permissions in ENGINE_PERMISSIONS.values():
        for verb, group, resource, _ in permissions:
            assert (verb, group, resource) in granted


def test_trainjob_env_builds_tf_config_on_the_runtime_hostnames():
    """The worker's TF_CONFIG builder (kfnas.launch.tf_config) reads what the TrainJob sets."""
    from kfnas.launch import tf_config

    runtime = yaml.safe_load(RUNTIME_FILE.read_text())
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    trainer = trainjob()["spec"]["trainer"]
    env = {e["name"]: e["value"] for e in trainer["env"] if "value" in e}
    built = tf_config.trainer_v2_tf_config(env | {"JOB_COMPLETION_INDEX": "2"})
    # JobSet: <jobset>-<replicatedJob>-<jobIndex>-<podIndex>.<subdomain>, all named for the job.
    assert built == {
        "cluster": {
            "worker": [f"{JOB.name}-{node['name']}-0-{i}.{JOB.name}:2222" for i in range(4)]
        },
        "task": {"type": "worker", "index": 2},
    }
