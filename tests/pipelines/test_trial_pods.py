"""A cluster profile's trial, training and latency sections, as the controller's launch config."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from kfnas.launch import LaunchError, launcher_from_config
from kfnas.launch.k8s_manifest import PodSettings, PvcMount, SecretEnv, SecretVolume, Toleration
from kfnas.launch.kubernetes import PERMISSIONS
from kfnas.pipelines import trial_pods
from kfnas.pipelines.profiles import ProfileError, load_profile, parse_profile, profile_names

ROOT = Path(__file__).parents[2]


def with_step(profile, kind, **changes):
    """``profile`` with fields of one section replaced (nested: ``resources={...}``)."""
    step = profile.step(kind)
    for name, value in changes.items():
        part = getattr(step, name)
        value = dataclasses.replace(part, **value) if isinstance(value, dict) else value
        step = dataclasses.replace(step, **{name: value})
    steps = dataclasses.replace(profile.steps, **{kind: step})
    return dataclasses.replace(profile, steps=steps)


def test_no_profile_runs_trials_locally():
    assert trial_pods.launch_config(None, "repo/kfnas:1") == {"kind": "local"}


@pytest.mark.parametrize("name", profile_names())
def test_each_built_in_profile_compiles_to_a_kubernetes_config(name):
    config = trial_pods.launch_config(load_profile(name), "repo/kfnas:1")
    assert json.loads(json.dumps(config)) == config
    assert {k: config[k] for k in ("kind", "namespace", "image", "owner_from_pod")} == {
        "kind": "kubernetes",
        "namespace": "",
        "image": "repo/kfnas:1",
        "owner_from_pod": True,
    }
    assert set(config["settings"]) == {"trial", "training", "latency"}
    for settings in config["settings"].values():
        assert PodSettings.from_dict(settings).problems("s") == []


def test_sections_map_field_by_field():
    profile = load_profile("nvidia-gpu")
    step = profile.step("trial")
    settings = trial_pods.pod_settings(step)
    assert settings == PodSettings(
        accelerator_type="nvidia.com/gpu",
        accelerator_count=1,
        cpu_request="4",
        cpu_limit="8",
        memory_request="16Gi",
        memory_limit="32Gi",
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=[Toleration("nvidia.com/gpu", "Exists", "", "NoSchedule")],
        pvcs=[PvcMount("kfnas-data", "/mnt/kfnas")],
        shm_size="8Gi",
        secret_env=[SecretEnv("kfnas-gcs", {"project": "GOOGLE_CLOUD_PROJECT"}, True)],
        secret_volumes=[SecretVolume("kfnas-gcs", "/var/secrets/kfnas-gcs", True)],
        env={
            "GOOGLE_APPLICATION_CREDENTIALS": "/var/secrets/kfnas-gcs/key.json",
            "KFNAS_PRECISION": "float16",
        },
        backoff_limit=2,
        active_deadline_s=21600,
        run_as_user=1000,
        run_as_group=1000,
        run_as_non_root=True,
    )
    assert trial_pods.pod_settings(load_profile("cpu-only").step("trial")).accelerator_count == 0
    training = trial_pods.pod_settings(profile.step("training"))
    assert (training.workers, training.engine, training.runtime) == (2, "trainer-v2", "")
    assert training.accelerator_count == 4 and training.env["KFNAS_PRECISION"] == "float16"


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        (
            "trial",
            {"accelerator": {"type": "cpu"}},
            "steps.trial.accelerator.type 'cpu' is not an extended resource name",
        ),
        (
            "training",
            {"resources": {"memory_limit": "-1Gi"}},
            "steps.training.resources.memory_limit '-1Gi' is negative",
        ),
        (
            "trial",
            {"resources": {"cpu_request": "8", "cpu_limit": "4"}},
            "steps.trial.resources.cpu_limit '4' is below steps.trial.resources.cpu_request '8'",
        ),
        ("training", {"timeout_s": -1}, "steps.training.timeout_s must be >= 0"),
        (
            "training",
            {"workers": 2},
            "steps.training.workers 2 needs a multi-node engine: set engine: trainer-v2",
        ),
        ("training", {"workers": 2, "engine": "mpi"}, "steps.training.engine 'mpi' is not a"),
        (
            "latency",
            {"resources": {"memory_request": "32Gi"}},
            "steps.latency.resources.memory_limit '16Gi' is below "
            "steps.latency.resources.memory_request '32Gi'",
        ),
    ],
)
def test_a_section_that_cannot_form_a_job_fails_at_compile_time(kind, changes, message):
    profile = with_step(load_profile("gke-gpu"), kind, **changes)
    with pytest.raises(ProfileError, match="cluster profile 'gke-gpu' cannot run trial Jobs") as e:
        trial_pods.launch_config(profile, "repo/kfnas:1")
    assert message in str(e.value)


@pytest.mark.parametrize("name", profile_names())
def test_measurement_jobs_get_the_latency_section_with_its_device_and_threads(name):
    profile = load_profile(name)
    step = profile.step("latency")
    config = trial_pods.launch_config(profile, "repo/kfnas:1")
    settings = PodSettings.from_dict(config["settings"]["latency"])
    assert settings == trial_pods.pod_settings(step)
    assert settings.env == {
        **step.env,
        "KFNAS_LATENCY_DEVICE": step.device,
        "KFNAS_LATENCY_THREADS": str(step.threads),
    }
    assert step.device and step.device != f"{name}-light"  # every built-in names its target
    assert settings.workers == 1 and settings.engine == ""  # one pod, never a multi-node job
    for kind in ("trial", "training"):
        env = config["settings"][kind]["env"]
        assert "KFNAS_LATENCY_DEVICE" not in env and "KFNAS_LATENCY_THREADS" not in env, kind


def test_without_a_latency_section_measurements_run_on_the_light_section():
    data = yaml.safe_load((ROOT / "pipelines/profiles/cpu-only.yaml").read_text())
    del data["steps"]["latency"]
    data["name"] = "My Cluster"
    profile = parse_profile(yaml.safe_dump(data))
    config = trial_pods.launch_config(profile, "i")
    light = trial_pods.pod_settings(profile.step("light"))
    latency = PodSettings.from_dict(config["settings"]["latency"])
    assert latency == dataclasses.replace(
        light, env={**light.env, "KFNAS_LATENCY_DEVICE": "my-cluster-light"}
    )


def test_queue_is_read_checked_and_carried():
    text = (ROOT / "pipelines/profiles/cpu-only.yaml").read_text()
    data = yaml.safe_load(text)
    data["steps"]["trial"]["queue"] = "team-a"
    profile = parse_profile(yaml.safe_dump(data))
    config = trial_pods.launch_config(profile, "i")
    assert config["settings"]["trial"]["queue"] == "team-a"
    assert config["settings"]["training"]["queue"] == ""
    assert config["settings"]["latency"]["queue"] == ""
    data["steps"]["trial"]["queue"] = "Team A"
    with pytest.raises(ProfileError, match=r"steps\.trial\.queue 'Team A' is not a Kueue"):
        parse_profile(yaml.safe_dump(data))


def test_the_launcher_reads_the_compiled_config(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    config = trial_pods.launch_config(load_profile("gke-gpu"), "repo/kfnas:1") | {"namespace": "n"}
    # Everything in the config is read; only cluster access is missing here.
    with pytest.raises(LaunchError, match="no access to a Kubernetes cluster"):
        launcher_from_config(config)


def test_rbac_yaml_grants_what_the_launcher_checks():
    role, binding = yaml.safe_load_all((ROOT / "pipelines/rbac/controller-rbac.yaml").read_text())
    granted = {
        (verb, group, resource)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for verb, group, resource, subresource in PERMISSIONS:
        name = f"{resource}/{subresource}" if subresource else resource
        assert (verb, group, name) in granted
    assert ("get", "", "secrets") in granted
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == "kfnas-search-controller"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner"}]
