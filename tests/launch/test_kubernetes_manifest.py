"""The trial Job's manifest, field by field, and as the client's models see it."""

import pytest
from kubernetes import client

from kfnas.launch import LaunchError, TrialJob
from kfnas.launch.base import experiment_label
from kfnas.launch.k8s_manifest import (
    PodSettings,
    PvcMount,
    SecretEnv,
    SecretVolume,
    Toleration,
    job_manifest,
    label_value,
)
from kfnas.pipelines import trial_pods
from kfnas.pipelines.profiles import load_profile, profile_names

JOB = TrialJob("gs://bucket/store/my-exp", "proxy_0", 7)
SETTINGS = PodSettings(
    accelerator_type="nvidia.com/gpu",
    accelerator_count=2,
    cpu_request="4",
    cpu_limit="8",
    memory_request="16Gi",
    memory_limit="32Gi",
    node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
    tolerations=[
        Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule"),
        Toleration("spot", "Equal", "true", "NoExecute", 30),
    ],
    pvcs=[PvcMount("kfnas-data", "/mnt/kfnas"), PvcMount("kfnas-data", "/mnt/cache", "cache")],
    shm_size="8Gi",
    secret_env=[SecretEnv("kfnas-gcs", {"project": "GOOGLE_CLOUD_PROJECT"}, optional=True)],
    secret_volumes=[SecretVolume("kfnas-gcs-key", "/var/secrets/google")],
    env={"TF_NUM_INTEROP_THREADS": "2"},
    image_pull_secrets=["regcred"],
    backoff_limit=3,
    active_deadline_s=21600,
    run_as_user=1000,
    run_as_group=1000,
    run_as_non_root=True,
)
OWNER = client.V1OwnerReference(
    api_version="argoproj.io/v1alpha1", kind="Workflow", name="run-abc", uid="u-1"
)


def manifest(settings=SETTINGS, **kwargs):
    kwargs = {"image": "repo/kfnas:1", "run_id": "run 42/x", **kwargs}
    return job_manifest(JOB, settings, **kwargs)


def test_metadata_labels_and_owners():
    job = manifest(owner_references=[OWNER])
    labels = job.metadata.labels
    assert job.metadata.name == JOB.name
    assert labels == {
        "app.kubernetes.io/name": "kfnas",
        "app.kubernetes.io/component": "trial",
        "kfnas.io/experiment": experiment_label(JOB.experiment_uri),
        "kfnas.io/study": "proxy_0",
        "kfnas.io/trial-id": "7",
        "kfnas.io/kind": "trial",
        "kfnas.io/run-id": "run-42-x",
    }
    assert job.metadata.owner_references == [OWNER]
    assert job.metadata.annotations["kfnas.io/experiment-uri"] == JOB.experiment_uri
    pod_labels = job.spec.template.metadata.labels
    assert pod_labels == labels
    assert manifest(run_id="").metadata.labels.get("kfnas.io/run-id") is None


def test_lifecycle_and_pod_failure_policy():
    spec = manifest().spec
    assert (spec.backoff_limit, spec.active_deadline_seconds) == (3, 21600)
    assert spec.ttl_seconds_after_finished == 7 * 24 * 3600
    assert spec.suspend is None
    ignore, fail = spec.pod_failure_policy.rules
    assert ignore.action == "Ignore"
    assert [(c.type, c.status) for c in ignore.on_pod_conditions] == [("DisruptionTarget", "True")]
    assert fail.action == "FailJob"
    codes = fail.on_exit_codes
    assert (codes.container_name, codes.operator, codes.values) == ("trial", "In", [137])
    assert spec.template.spec.restart_policy == "Never"
    assert manifest(PodSettings()).spec.active_deadline_seconds is None


def test_container_command_env_and_resources():
    (container,) = manifest().spec.template.spec.containers
    assert container.name == "trial"
    assert container.image == "repo/kfnas:1"
    assert container.command == [
        "python",
        "-m",
        "kfnas.stages.worker",
        JOB.experiment_uri,
        "proxy_0",
        "7",
        "--train-only",
    ]
    assert container.resources.requests == {"cpu": "4", "memory": "16Gi"}
    assert container.resources.limits == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2"}
    plain, secret = container.env
    assert (plain.name, plain.value) == ("TF_NUM_INTEROP_THREADS", "2")
    ref = secret.value_from.secret_key_ref
    assert (secret.name, ref.name, ref.key, ref.optional) == (
        "GOOGLE_CLOUD_PROJECT",
        "kfnas-gcs",
        "project",
        True,
    )
    security = container.security_context
    assert (security.run_as_user, security.run_as_group, security.run_as_non_root) == (
        1000,
        1000,
        True,
    )
    bare = manifest(PodSettings()).spec.template.spec.containers[0]
    assert (bare.resources.requests, bare.resources.limits, bare.env) == (None, None, None)
    assert bare.security_context is None


def test_placement_volumes_and_pull_secrets():
    pod = manifest().spec.template.spec
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    gpu, spot = pod.tolerations
    assert (gpu.key, gpu.operator, gpu.value, gpu.effect) == (
        "nvidia.com/gpu",
        "Exists",
        None,
        "NoSchedule",
    )
    assert (spot.value, spot.effect, spot.toleration_seconds) == ("true", "NoExecute", 30)
    volumes = {v.name: v for v in pod.volumes}
    assert set(volumes) == {"pvc-0", "dshm", "secret-0"}  # one volume for the claim's two mounts
    assert volumes["pvc-0"].persistent_volume_claim.claim_name == "kfnas-data"
    assert (volumes["dshm"].empty_dir.medium, volumes["dshm"].empty_dir.size_limit) == (
        "Memory",
        "8Gi",
    )
    assert volumes["secret-0"].secret.secret_name == "kfnas-gcs-key"
    mounts = [
        (m.name, m.mount_path, m.sub_path, m.read_only) for m in pod.containers[0].volume_mounts
    ]
    assert mounts == [
        ("pvc-0", "/mnt/kfnas", None, None),
        ("pvc-0", "/mnt/cache", "cache", None),
        ("dshm", "/dev/shm", None, None),
        ("secret-0", "/var/secrets/google", None, True),
    ]
    assert [s.name for s in pod.image_pull_secrets] == ["regcred"]


def test_queue_labels_the_job_and_suspends_it():
    job = manifest(PodSettings(queue="team-a"))
    assert job.metadata.labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job.spec.suspend is True
    assert "kueue.x-k8s.io/queue-name" not in job.spec.template.metadata.labels


def test_round_trips_through_the_client_models():
    api = client.ApiClient()
    data = api.sanitize_for_serialization(manifest(owner_references=[OWNER]))
    assert data["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["containerName"] == "trial"

    class Response:
        def __init__(self, body):
            import json

            self.data = json.dumps(body)

    again = api.deserialize(Response(data), "V1Job")
    assert isinstance(again, client.V1Job)
    assert api.sanitize_for_serialization(again) == data


@pytest.mark.parametrize("name", ["cpu-only", "gke-gpu", "nvidia-gpu"])
def test_built_in_profiles_make_valid_jobs(name):
    assert name in profile_names()
    config = trial_pods.launch_config(load_profile(name), "repo/kfnas:1")
    assert config["kind"] == "kubernetes"
    for kind in ("trial", "training", "latency"):
        settings = PodSettings.from_dict(config["settings"][kind])
        assert settings.problems(kind) == []
        job = job_manifest(
            TrialJob(JOB.experiment_uri, "s", 1, kind), settings, image="i", run_id=""
        )
        pod = job.spec.template.spec
        assert pod.restart_policy == "Never"
        assert job.spec.backoff_limit == load_profile(name).step(kind).retries.num_retries
        limits = pod.containers[0].resources.limits
        assert ("nvidia.com/gpu" in limits) == (name != "cpu-only")


@pytest.mark.parametrize("name", ["cpu-only", "gke-gpu", "nvidia-gpu"])
def test_a_measurement_job_gets_the_latency_section_and_runs_the_measure_worker(name):
    profile = load_profile(name)
    step = profile.step("latency")
    config = trial_pods.launch_config(profile, "repo/kfnas:1")
    measure = TrialJob(JOB.experiment_uri, JOB.study, JOB.trial_id, "latency")
    job = job_manifest(
        measure, PodSettings.from_dict(config["settings"]["latency"]), image="i", run_id=""
    )
    assert job.metadata.name == measure.name != JOB.name
    assert job.metadata.name.endswith("-m") and len(job.metadata.name) <= 63
    assert job.metadata.labels["kfnas.io/kind"] == "latency"
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.command == [
        "python",
        "-m",
        "kfnas.stages.measure_worker",
        JOB.experiment_uri,
        "proxy_0",
        "7",
    ]
    env = {e.name: e.value for e in container.env}
    assert env["KFNAS_LATENCY_DEVICE"] == step.device
    assert env["KFNAS_LATENCY_THREADS"] == str(step.threads) == "4"
    assert pod.node_selector == (step.node_selector or None)
    requests, limits = container.resources.requests, container.resources.limits
    assert requests["cpu"] == limits["cpu"] == "4"  # whole cores, as many as threads
    assert requests["memory"] == limits["memory"]  # with the CPUs: Guaranteed QoS
    assert ("nvidia.com/gpu" in limits) == (name != "cpu-only")
    assert job.spec.backoff_limit == step.retries.num_retries


def test_settings_round_trip_and_strict_reading():
    assert PodSettings.from_dict(SETTINGS.to_dict()) == SETTINGS
    with pytest.raises(LaunchError, match=r"unknown key 'settings\.gpu'"):
        PodSettings.from_dict({"gpu": 1})
    with pytest.raises(LaunchError, match=r"settings\.backoff_limit must be an integer"):
        PodSettings.from_dict({"backoff_limit": "3"})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"accelerator_type": "cpu", "accelerator_count": 1}, "accelerator_type 'cpu' is not an"),
        ({"accelerator_type": "gpu", "accelerator_count": 1}, "not an extended resource name"),
        ({"accelerator_count": 1}, "accelerator_type is empty"),
        ({"accelerator_count": -1}, "accelerator_count must be >= 0"),
        ({"memory_limit": "-1Gi"}, "memory_limit '-1Gi' is negative"),
        ({"cpu_request": "four"}, "cpu_request 'four' is not a quantity"),
        ({"cpu_request": "2", "cpu_limit": "500m"}, "cpu_limit '500m' is below w.cpu_request"),
        ({"backoff_limit": -1}, "backoff_limit must be >= 0"),
        ({"active_deadline_s": -5}, "active_deadline_s must be >= 0"),
        ({"queue": "Team_A"}, "queue 'Team_A' is not a LocalQueue name"),
        ({"pvcs": [PvcMount("c", "relative")]}, "pvcs.0.mount_path must be an absolute path"),
        ({"tolerations": [Toleration("k", "Exists", "v")]}, "Exists takes no value"),
    ],
)
def test_problems_name_the_key(changes, message):
    import dataclasses

    problems = dataclasses.replace(PodSettings(), **changes).problems("w")
    assert any(message in p for p in problems), problems


def test_label_value_is_a_valid_label():
    assert label_value("_run:" + "x" * 80) == "run-" + "x" * 59
    assert label_value("") == ""
