"""Cluster profiles: what each kind of pipeline step gets on a cluster, chosen at compile time.

A profile is a YAML file (the built-ins are ``pipelines/profiles/*.yaml``) with one section per kind
of step:

* ``trial``: the proxy trials of the search (``run_trial`` in the rounds);
* ``training``: the full trainings (``run_trial`` of the ``validation`` and ``final`` studies);
* ``light``: everything else (init, propose, select, report): no accelerator;
* ``export`` (optional): the export steps (``export_model``, and ``publish_if_not_worse`` of the
  retraining pipeline), which load the largest model of the run; without it they get the
  ``training`` section without its accelerator;
* ``latency`` (optional): the latency target device, where the model will be deployed and what a
  reward's latency constraint refers to. The measurement steps (``measure_trials``, after the
  validation, final and retraining trainings) and the search controller's measurement Jobs run
  there, one model at a time. Its ``device`` names the device (a DNS-label-like name, e.g.
  ``cpu-n2-4`` or ``nvidia-l4``; an experiment spec's ``measurement.device``, when set, must match
  it) and ``threads`` the threads a measurement pins (TensorFlow intra-op threads; 0, the default:
  not pinned; at most ``resources.cpu_limit`` when that is set); they reach the step as
  ``KFNAS_LATENCY_DEVICE`` and ``KFNAS_LATENCY_THREADS``, and only this section may set them.
  Without it, latency is measured on a light node: the ``light`` section, with the device
  ``<profile name>-light``; name a ``latency`` section for your deployment target.

Beside the steps, an optional top-level ``serving`` section says how KServe serves the exported
model: the ``InferenceService`` every export writes (``serving/inferenceservice.yaml``,
``kfnas.export.kserve``) asks for its ``resources`` (CPU and memory requests and limits) and
``accelerator``, runs on its ``node_selector`` and ``tolerations`` with its ``service_account``,
``min_replicas`` and ``max_replicas``, and names its ``runtime`` (a KServe ``ServingRuntime``;
empty: KServe picks one for TensorFlow) and ``runtime_version`` (the TF Serving image tag; empty:
the runtime's). ``serving_settings`` turns it into the JSON the export steps (``export_model``,
``publish_if_not_worse``) take as their ``serving`` argument, with the PVCs of the ``export``
section (a store on one is served as ``pvc://``). Without it the manifest asks for 1 CPU and 2Gi
and says so.

Each section may set an accelerator (type and count), CPU and memory requests and limits, node
selectors, tolerations, volumes (PVC mounts and an in-memory ``/dev/shm``), Kubernetes secrets as
environment variables or files, plain environment variables, image pull secrets, retries (for
preempted pods), a timeout, a security context and a Kueue queue. ``load_profile`` reads a profile
strictly (an unknown key, a bad quantity or a missing section is an error naming the key);
``apply_step_profile`` applies one section to a task through KFP task methods and
``kfp.kubernetes``. Nothing cluster-specific lives in code: a new cluster is a new YAML file.

A step that mounts a secret whose name or mount path says it holds a Google Cloud key (``gcs``,
``gcp`` or ``google`` in it) must point the client at it: ``env`` sets
``GOOGLE_APPLICATION_CREDENTIALS`` to a file under that mount, or the profile is refused (a key
mounted but unused makes every ``gs://`` access fail, or silently use other credentials).

How the sections that train (``trial``, ``training``) train: ``precision`` (``float32``, the
default, ``float16`` with loss scaling, or ``bfloat16``; float16 needs an accelerator),
``all_reduce`` (``hierarchical_copy``, the default, or ``nccl``) and, for multi-node trainings,
``workers`` (nodes per trial, default 1) with an ``engine`` (``trainer-v2``: a Kubeflow Trainer v2
``TrainJob`` on the kfnas runtime, or ``runtime``; ``training-operator-v1``: a ``TFJob``). Every
GPU of a pod trains (``kfnas.training.distribution``); precision and all-reduce reach the trial as
``KFNAS_PRECISION`` and ``KFNAS_ALL_REDUCE``. With ``workers`` above 1 in ``training``, the full
trainings of the validation, final and retraining steps run as such jobs, launched by a light step
(``launch_trial``), and the search controller starts its ``training`` trials the same way.

``queue`` names a Kueue LocalQueue (a DNS label; empty: none) for the Jobs the search controller
starts (``trial``, ``training`` and ``latency``, through ``kfnas.pipelines.trial_pods``): each Job
is created suspended with the label ``kueue.x-k8s.io/queue-name`` and runs when Kueue admits it.
It does not apply to the pipeline's own steps.

To support another setting: add a field (with an "unset" default) to ``StepProfile`` or one of its
parts, check it in that dataclass's ``problems()``, and write an ``_apply_<setting>(task, step)``
function added to ``_APPLIERS``.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

from kfp import kubernetes
from kfp.dsl import PipelineTask

from kfnas.config.spec import ENV_LATENCY_DEVICE, ENV_LATENCY_THREADS
from kfnas.config.strict import SpecError, from_data, load_yaml
from kfnas.export.kserve import ServingSettings
from kfnas.launch.k8s_manifest import PvcMount, Toleration
from kfnas.launch.tf_config import (
    ALL_REDUCE_ALGORITHMS,
    ENV_ALL_REDUCE,
    ENV_PRECISION,
    PRECISIONS,
)

PROFILES_DIR = Path(__file__).parent / "profiles"

#: The kinds of steps a profile configures.
STEP_KINDS = ("trial", "training", "light", "export", "latency")
#: The kinds of steps that train (and so take precision, all-reduce and workers).
TRAINING_KINDS = ("trial", "training")
#: The kind of step that measures latency (and so takes a device and threads).
LATENCY_KIND = "latency"
#: What the device of a profile without a ``latency`` section ends in (``<profile name>-light``).
LIGHT_DEVICE_SUFFIX = "-light"
#: What an environment variable must name for Google Cloud clients to use a mounted key.
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
_GOOGLE_KEY = re.compile(r"gcs|gcp|google", re.IGNORECASE)

_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?s$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SHM_VOLUME = "dshm"


class ProfileError(SpecError):
    """A cluster profile that cannot be used; the message names the file and the key."""


@dataclasses.dataclass(frozen=True)
class AcceleratorSpec:
    """An accelerator per pod, e.g. ``{type: nvidia.com/gpu, count: 1}``."""

    type: str = ""
    count: int = 1

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = [] if self.type else [f"{where}.type is empty: e.g. nvidia.com/gpu"]
        return out + ([] if self.count >= 1 else [f"{where}.count must be >= 1"])


@dataclasses.dataclass(frozen=True)
class ResourcesSpec:
    """CPU (``"4"``, ``"500m"``) and memory (``"16Gi"``) requests and limits; empty: unset."""

    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = []
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), field.name.split("_")[0]
            pattern, example = (_CPU, "'4' or '500m'") if kind == "cpu" else (_MEMORY, "'16Gi'")
            if value and not pattern.match(value):
                out.append(f"{where}.{field.name} {value!r} is not a quantity like {example}")
        return out


@dataclasses.dataclass(frozen=True)
class TolerationSpec:
    """A Kubernetes toleration."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: int | None = None

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        if self.operator == "Exists" and self.value:
            return [f"{where}: operator Exists takes no value (got {self.value!r})"]
        return []


@dataclasses.dataclass(frozen=True)
class PvcMountSpec:
    """An existing PersistentVolumeClaim mounted into the step's container."""

    claim: str = ""
    mount_path: str = ""
    sub_path: str = ""

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = [] if self.claim else [f"{where}.claim is empty: name the PVC"]
        return out + _absolute(self.mount_path, f"{where}.mount_path")


@dataclasses.dataclass(frozen=True)
class VolumesSpec:
    """Volumes: PVC mounts and an in-memory ``/dev/shm`` of ``shm_size`` (empty: none)."""

    pvcs: list[PvcMountSpec] = dataclasses.field(default_factory=list)
    shm_size: str = ""

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = [p for i, pvc in enumerate(self.pvcs) for p in pvc.problems(f"{where}.pvcs.{i}")]
        if self.shm_size and not _MEMORY.match(self.shm_size):
            out.append(f"{where}.shm_size {self.shm_size!r} is not a quantity like '8Gi'")
        return out


@dataclasses.dataclass(frozen=True)
class SecretEnvSpec:
    """Keys of a Kubernetes secret as environment variables: ``keys`` maps key -> variable."""

    secret: str = ""
    keys: dict[str, str] = dataclasses.field(default_factory=dict)
    optional: bool = False

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = [] if self.secret else [f"{where}.secret is empty: name the secret"]
        out += [] if self.keys else [f"{where}.keys is empty: map secret keys to env variables"]
        return out + [
            f"{where}.keys.{key}: {env!r} is not an environment variable name"
            for key, env in self.keys.items()
            if not _ENV_NAME.match(env)
        ]


@dataclasses.dataclass(frozen=True)
class SecretVolumeSpec:
    """A Kubernetes secret mounted as files at ``mount_path``."""

    secret: str = ""
    mount_path: str = ""
    optional: bool = False

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = [] if self.secret else [f"{where}.secret is empty: name the secret"]
        return out + _absolute(self.mount_path, f"{where}.mount_path")


@dataclasses.dataclass(frozen=True)
class SecretsSpec:
    """Secrets (for example storage credentials) as environment variables or as files."""

    as_env: list[SecretEnvSpec] = dataclasses.field(default_factory=list)
    as_volume: list[SecretVolumeSpec] = dataclasses.field(default_factory=list)

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        return [
            p
            for name in ("as_env", "as_volume")
            for i, secret in enumerate(getattr(self, name))
            for p in secret.problems(f"{where}.{name}.{i}")
        ]


@dataclasses.dataclass(frozen=True)
class RetrySpec:
    """Retries of a failed pod (e.g. a preempted spot node), with exponential back-off."""

    num_retries: int = 0
    backoff_duration: str = "0s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = [] if self.num_retries >= 0 else [f"{where}.num_retries must be >= 0"]
        out += [] if self.backoff_factor >= 1 else [f"{where}.backoff_factor must be >= 1"]
        return out + [
            f"{where}.{name} {getattr(self, name)!r} is not a duration like '60s'"
            for name in ("backoff_duration", "backoff_max_duration")
            if not _DURATION.match(getattr(self, name))
        ]


@dataclasses.dataclass(frozen=True)
class SecurityContextSpec:
    """The container's identity: user and group ids and whether it must not run as root."""

    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        out = [
            f"{where}.{name} must be >= 0"
            for name in ("run_as_user", "run_as_group")
            if (getattr(self, name) or 0) < 0
        ]
        if self.run_as_non_root and self.run_as_user == 0:
            out.append(f"{where}: run_as_non_root contradicts run_as_user 0")
        if dataclasses.astuple(self) == (None, None, None):
            out.append(f"{where} is empty: set run_as_user, run_as_group or run_as_non_root")
        return out


@dataclasses.dataclass(frozen=True)
class StepProfile:
    """What one kind of step gets on the cluster; every part is optional."""

    accelerator: AcceleratorSpec | None = None
    resources: ResourcesSpec = dataclasses.field(default_factory=ResourcesSpec)
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[TolerationSpec] = dataclasses.field(default_factory=list)
    volumes: VolumesSpec = dataclasses.field(default_factory=VolumesSpec)
    secrets: SecretsSpec = dataclasses.field(default_factory=SecretsSpec)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    image_pull_secrets: list[str] = dataclasses.field(default_factory=list)
    retries: RetrySpec | None = None
    timeout_s: int = 0
    security_context: SecurityContextSpec | None = None
    queue: str = ""
    precision: str = ""
    all_reduce: str = ""
    workers: int = 1
    engine: str = ""
    runtime: str = ""
    device: str = ""
    threads: int = 0

    def runtime_env(self) -> dict[str, str]:
        """The environment variables of the section's own settings (unset: the defaults).

        How a trial trains (``KFNAS_PRECISION``, ``KFNAS_ALL_REDUCE``), and where a measurement
        measures and how many threads it pins (``KFNAS_LATENCY_DEVICE``,
        ``KFNAS_LATENCY_THREADS``).
        """
        names = {"precision": ENV_PRECISION, "all_reduce": ENV_ALL_REDUCE}
        env = {env: getattr(self, key) for key, env in names.items() if getattr(self, key)}
        env |= {ENV_LATENCY_DEVICE: self.device} if self.device else {}
        return env | ({ENV_LATENCY_THREADS: str(self.threads)} if self.threads > 0 else {})

    def training_problems(self, where: str, trains: bool) -> list[str]:
        """What is wrong with how the section trains; ``trains``: a trial or training section."""
        out = []
        if self.precision and self.precision not in PRECISIONS:
            out.append(
                f"{where}.precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        if self.all_reduce and self.all_reduce not in ALL_REDUCE_ALGORITHMS:
            out.append(
                f"{where}.all_reduce {self.all_reduce!r} is not one of "
                + ", ".join(ALL_REDUCE_ALGORITHMS)
            )
        if self.precision == "float16" and self.accelerator is None:
            out.append(
                f"{where}.precision float16 needs an accelerator (on CPUs it is slow and gains "
                f"nothing): set {where}.accelerator, or precision float32 (or bfloat16)"
            )
        changed = [
            k for k in ("precision", "all_reduce", "engine", "runtime") if getattr(self, k)
        ] + (["workers"] if self.workers != 1 else [])
        if not trains and changed:
            out.append(
                f"{where} does not train, so {', '.join(changed)} cannot apply: set them in "
                f"steps.{' or steps.'.join(TRAINING_KINDS)}"
            )
        return out

    def measurement_problems(self, where: str, measures: bool) -> list[str]:
        """What is wrong with where the section measures; ``measures``: a latency section."""
        changed = (["device"] if self.device else []) + (["threads"] if self.threads else [])
        if not measures:
            if not changed:
                return []
            return [
                f"{where} does not measure latency, so {', '.join(changed)} cannot apply: set "
                f"them in steps.{LATENCY_KIND}"
            ]
        out = []
        if not self.device:
            out.append(
                f"{where}.device is empty: name the device latency is measured on (the "
                "deployment target, e.g. cpu-n2-4 or nvidia-l4; experiment specs name it in "
                "measurement.device)"
            )
        elif not _DNS_LABEL.match(self.device):
            out.append(
                f"{where}.device {self.device!r} is not a device name: lowercase letters, digits "
                "and '-', at most 63 characters, e.g. nvidia-l4"
            )
        if self.threads < 0:
            out.append(f"{where}.threads must be >= 0 (0: not pinned), got {self.threads}")
        cpus = _cpus(self.resources.cpu_limit)
        if cpus is not None and self.threads > cpus:
            out.append(
                f"{where}.threads {self.threads} is more than {where}.resources.cpu_limit "
                f"{self.resources.cpu_limit!r}: lower threads to at most {int(cpus)}, or raise "
                f"{where}.resources.cpu_limit to at least {self.threads}"
            )
        return out

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where``."""
        kind = where.rsplit(".", 1)[-1]
        out = self.training_problems(where, kind in TRAINING_KINDS)
        out += self.measurement_problems(where, kind == LATENCY_KIND)
        for name in ("accelerator", "resources", "volumes", "secrets", "retries"):
            part = getattr(self, name)
            out += part.problems(f"{where}.{name}") if part is not None else []
        if self.security_context is not None:
            out += self.security_context.problems(f"{where}.security_context")
        for i, toleration in enumerate(self.tolerations):
            out += toleration.problems(f"{where}.tolerations.{i}")
        out += [
            f"{where}.env: {n!r} is not a variable name" for n in self.env if not _ENV_NAME.match(n)
        ]
        if self.queue and not _DNS_LABEL.match(self.queue):
            out.append(
                f"{where}.queue {self.queue!r} is not a Kueue LocalQueue name: lowercase letters, "
                "digits and '-', at most 63 characters"
            )
        out += self._credentials_problems(where)
        return out + ([f"{where}.timeout_s must be >= 0"] if self.timeout_s < 0 else [])

    def _credentials_problems(self, where: str) -> list[str]:
        """A mounted Google Cloud key that ``GOOGLE_APPLICATION_CREDENTIALS`` does not point at."""
        keys = [
            (i, v)
            for i, v in enumerate(self.secrets.as_volume)
            if _GOOGLE_KEY.search(v.secret) or _GOOGLE_KEY.search(v.mount_path)
        ]
        path = self.env.get(CREDENTIALS_ENV, "")
        if not keys or any(under(path, v.mount_path) for _, v in keys):
            return []
        i, v = keys[0]
        now = f"it is {path!r}" if path else "it is not set"
        return [
            f"{where}.secrets.as_volume.{i} mounts secret {v.secret!r} (a Google Cloud key, by "
            f"its name) at {v.mount_path} but {where}.env.{CREDENTIALS_ENV} does not point "
            f"under it ({now}): add env: {{{CREDENTIALS_ENV}: {v.mount_path.rstrip('/')}/key.json}}"
            f" (the key's file name in the secret), or rename the secret if it holds no such key"
        ]


#: How ``ServingSettings`` fields are named in a profile's ``serving`` section.
_SERVING_KEYS = {
    "cpu_request": "resources.cpu_request",
    "cpu_limit": "resources.cpu_limit",
    "memory_request": "resources.memory_request",
    "memory_limit": "resources.memory_limit",
    "accelerator_type": "accelerator.type",
    "accelerator_count": "accelerator.count",
}


@dataclasses.dataclass(frozen=True)
class ServingProfile:
    """How KServe serves the exported model (see the module docstring); every part is optional.

    Attributes:
        runtime: A KServe ``ServingRuntime``/``ClusterServingRuntime`` name (e.g.
            ``kserve-tensorflow-serving``); empty: KServe picks one for model format tensorflow.
        runtime_version: The runtime image's tag (the TF Serving version, ``-gpu`` on GPUs).
        min_replicas: Fewest predictor replicas (0: scale to zero, KServe's serverless mode).
        max_replicas: Most predictor replicas.
        accelerator: An accelerator per replica, e.g. ``{type: nvidia.com/gpu, count: 1}``.
        resources: CPU and memory requests and limits per replica; unset: a request is the
            limit (and the reverse), both unset: 1 CPU and 2Gi.
        node_selector: Node labels the replicas must match.
        tolerations: Taints the replicas tolerate.
        service_account: The predictor's service account (credentials to read the store).
    """

    runtime: str = ""
    runtime_version: str = ""
    min_replicas: int = 1
    max_replicas: int = 1
    accelerator: AcceleratorSpec | None = None
    resources: ResourcesSpec = dataclasses.field(default_factory=ResourcesSpec)
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[TolerationSpec] = dataclasses.field(default_factory=list)
    service_account: str = ""

    def problems(self, where: str) -> list[str]:
        """What is wrong, as messages naming ``where`` (``serving``) and the key."""
        out = self.accelerator.problems(f"{where}.accelerator") if self.accelerator else []
        out += self.resources.problems(f"{where}.resources")
        for i, toleration in enumerate(self.tolerations):
            out += toleration.problems(f"{where}.tolerations.{i}")
        if out:  # Quantities that are not quantities: KServe's own checks would repeat them.
            return out
        return self.settings().problems(where, _SERVING_KEYS)

    def settings(self, pvcs: list[PvcMount] | None = None, source: str = "") -> ServingSettings:
        """The section as the export step receives it (``kfnas.export.kserve``)."""
        accelerator = self.accelerator
        return ServingSettings(
            runtime=self.runtime,
            runtime_version=self.runtime_version,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            cpu_request=self.resources.cpu_request,
            cpu_limit=self.resources.cpu_limit,
            memory_request=self.resources.memory_request,
            memory_limit=self.resources.memory_limit,
            accelerator_type=accelerator.type if accelerator else "",
            accelerator_count=accelerator.count if accelerator else 0,
            node_selector=dict(self.node_selector),
            tolerations=[
                Toleration(t.key, t.operator, t.value, t.effect, t.toleration_seconds)
                for t in self.tolerations
            ],
            service_account=self.service_account,
            pvcs=list(pvcs or []),
            source=source,
        )


@dataclasses.dataclass(frozen=True)
class StepsSpec:
    """One ``StepProfile`` per kind of step (see ``STEP_KINDS``)."""

    trial: StepProfile
    training: StepProfile
    light: StepProfile
    export: StepProfile | None = None
    latency: StepProfile | None = None


@dataclasses.dataclass(frozen=True)
class ClusterProfile:
    """A cluster profile: its name, what it is for, and its steps."""

    name: str
    steps: StepsSpec
    description: str = ""
    serving: ServingProfile | None = None

    def multi_node(self) -> bool:
        """Whether the full trainings span several nodes (launched as jobs by a light step)."""
        return self.steps.training.workers > 1

    def step(self, kind: str) -> StepProfile:
        """The profile of one kind of step (see ``STEP_KINDS``).

        ``export``, when the profile has no such section, is the ``training`` section without
        its accelerator and how it trains: as much memory as the largest training, no GPU.
        ``latency``, when the profile has no such section, is the ``light`` section measuring on
        the device ``<profile name>-light``: latency measured on a light node (name a
        ``latency`` section for your deployment target).
        """
        if kind not in STEP_KINDS:
            raise ProfileError(f"unknown kind of step {kind!r}; kinds: {', '.join(STEP_KINDS)}")
        if kind == LATENCY_KIND and self.steps.latency is None:
            return dataclasses.replace(self.steps.light, device=self.light_device())
        if kind == "export" and self.steps.export is None:
            return dataclasses.replace(
                self.steps.training,
                accelerator=None,
                **{"precision": "", "all_reduce": "", "workers": 1, "engine": "", "runtime": ""},
            )
        return getattr(self.steps, kind)

    def light_device(self) -> str:
        """The latency device of a profile without a ``latency`` section: ``<name>-light``."""
        name = re.sub(r"[^a-z0-9-]+", "-", self.name.lower()).strip("-") or "profile"
        return name[: 63 - len(LIGHT_DEVICE_SUFFIX)].rstrip("-") + LIGHT_DEVICE_SUFFIX


def serving_settings(profile: ClusterProfile | None) -> ServingSettings | None:
    """What the export steps of a pipeline compiled with ``profile`` serve the model with.

    The profile's ``serving`` section (its defaults when it has none) with the PVCs its
    ``export`` section mounts, and a ``source`` naming the profile; ``None`` without a profile
    (the export step then uses kfnas's defaults).
    """
    if profile is None:
        return None
    export = profile.step("export")
    pvcs = [PvcMount(p.claim, p.mount_path, p.sub_path) for p in export.volumes.pvcs]
    if profile.serving is None:
        source = f"cluster profile {profile.name!r}, which has no serving section: kfnas defaults"
        return ServingProfile().settings(pvcs, source)
    return profile.serving.settings(pvcs, f"cluster profile {profile.name!r}, serving section")


def serving_argument(profile: ClusterProfile | None) -> str:
    """The export steps' ``serving`` argument: ``serving_settings`` as JSON, or empty."""
    settings = serving_settings(profile)
    return settings.to_json() if settings is not None else ""


def training_summary(profile: ClusterProfile) -> list[str]:
    """How the profile's trials and full trainings train and where it measures latency.

    One line each, for ``kfnas compile``. A multi-node line names the engine's pinned release and
    what the cluster must have installed; the last line is ``latency_summary``.
    """
    from kfnas.launch.multinode import ENGINE_TABLE  # the kubernetes client: only to compile

    lines = []
    for kind, what in (("trial", "proxy trials"), ("training", "full trainings")):
        step = profile.step(kind)
        count = step.accelerator.count if step.accelerator else 0
        device = f"{count} x {step.accelerator.type}" if step.accelerator else "CPUs only"
        nodes = f"{step.workers} nodes of {device}" if step.workers > 1 else f"1 pod, {device}"
        replicas = step.workers * max(count, 1)
        line = (
            f"{what}: {nodes} ({replicas} replica{'s' if replicas > 1 else ''}), "
            f"{step.precision or 'float32'}"
        )
        if count > 1 or step.workers > 1:
            line += f", all-reduce {step.all_reduce or ALL_REDUCE_ALGORITHMS[0]}"
        if step.engine:
            engine = ENGINE_TABLE[step.engine]
            line += (
                f"; each a {engine.kind} ({engine.release}): the cluster needs it installed "
                f"({engine.install})"
            )
        lines.append(line)
    return [*lines, latency_summary(profile)]


def latency_summary(profile: ClusterProfile) -> str:
    """Where the profile measures latency: the device, its accelerator or CPUs, the threads."""
    step = profile.step(LATENCY_KIND)
    accelerator = step.accelerator
    device = f"{accelerator.count} x {accelerator.type}" if accelerator else "CPUs only"
    threads = f"{step.threads} threads" if step.threads else "threads not pinned"
    line = f"latency: measured on {step.device} ({device}, {threads}), one model at a time"
    if profile.steps.latency is None:
        line += " on a light node: name a latency section for your deployment target"
    return line


def _cpus(quantity: str) -> float | None:
    """A CPU quantity (``"4"``, ``"500m"``) in CPUs; ``None`` when unset or not a quantity."""
    if not _CPU.match(quantity or "-"):
        return None
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def under(path: str, folder: str) -> bool:
    """Whether ``path`` is a file inside ``folder`` (both absolute)."""
    return bool(path) and path.startswith(folder.rstrip("/") + "/")


def _absolute(path: str, where: str) -> list[str]:
    return [] if path.startswith("/") else [f"{where} must be an absolute path, got {path!r}"]


def profile_names() -> list[str]:
    """The names of the built-in profiles (``pipelines/profiles/<name>.yaml``)."""
    return sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> ClusterProfile:
    """Reads a built-in profile by name, or a profile YAML file by path, strictly.

    Raises:
        ProfileError: No such profile (the message lists the built-ins), or the file is not a
            valid profile (every problem is listed with its key).
    """
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProfileError(
            f"no cluster profile {str(name_or_path)!r}: give a profile YAML file or a built-in "
            f"profile: {', '.join(profile_names())}"
        )
    return parse_profile(path.read_text(), source=str(path))


def parse_profile(text: str, *, source: str = "the profile") -> ClusterProfile:
    """Parses a profile from YAML text (see ``load_profile``)."""
    try:
        data: Any = load_yaml(text)
        profile = from_data(ClusterProfile, data if data is not None else {})
    except Exception as e:  # YAML errors and SpecError alike: name the file.
        raise ProfileError(f"{source}: {e}") from e
    sections = {kind: getattr(profile.steps, kind) for kind in STEP_KINDS}
    problems = [
        p
        for kind, section in sections.items()
        if section is not None
        for p in section.problems(f"steps.{kind}")
    ]
    problems += profile.serving.problems("serving") if profile.serving is not None else []
    if problems:
        raise ProfileError(
            f"{source} is not a valid cluster profile:\n  - " + "\n  - ".join(problems)
        )
    return profile


def _apply_accelerator(task: PipelineTask, step: StepProfile) -> None:
    if step.accelerator is not None:
        task.set_accelerator_type(step.accelerator.type)
        task.set_accelerator_limit(step.accelerator.count)


def _apply_resources(task: PipelineTask, step: StepProfile) -> None:
    setters = {
        "cpu_request": task.set_cpu_request,
        "cpu_limit": task.set_cpu_limit,
        "memory_request": task.set_memory_request,
        "memory_limit": task.set_memory_limit,
    }
    for name, setter in setters.items():
        if value := getattr(step.resources, name):
            setter(value)


def _apply_placement(task: PipelineTask, step: StepProfile) -> None:
    for label, value in step.node_selector.items():
        kubernetes.add_node_selector(task, label_key=label, label_value=value)
    for t in step.tolerations:
        kubernetes.add_toleration(
            task,
            key=t.key or None,
            operator=t.operator,
            value=t.value or None,
            effect=t.effect or None,
            toleration_seconds=t.toleration_seconds,
        )


def _apply_volumes(task: PipelineTask, step: StepProfile) -> None:
    for pvc in step.volumes.pvcs:
        kubernetes.mount_pvc(
            task, pvc_name=pvc.claim, mount_path=pvc.mount_path, sub_path=pvc.sub_path
        )
    if step.volumes.shm_size:
        kubernetes.empty_dir_mount(
            task, _SHM_VOLUME, "/dev/shm", medium="Memory", size_limit=step.volumes.shm_size
        )


def _apply_secrets(task: PipelineTask, step: StepProfile) -> None:
    for s in step.secrets.as_env:
        kubernetes.use_secret_as_env(task, s.secret, dict(s.keys), optional=s.optional)
    for v in step.secrets.as_volume:
        kubernetes.use_secret_as_volume(task, v.secret, v.mount_path, optional=v.optional)
    for name, value in {**step.env, **step.runtime_env()}.items():
        task.set_env_variable(name, value)
    if step.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(step.image_pull_secrets))


def _apply_lifecycle(task: PipelineTask, step: StepProfile) -> None:
    if (r := step.retries) is not None:
        task.set_retry(r.num_retries, r.backoff_duration, r.backoff_factor, r.backoff_max_duration)
    if step.timeout_s:
        kubernetes.set_timeout(task, step.timeout_s)
    if (c := step.security_context) is not None:
        kubernetes.set_security_context(task, c.run_as_user, c.run_as_group, c.run_as_non_root)


_APPLIERS = (
    _apply_accelerator,
    _apply_resources,
    _apply_placement,
    _apply_volumes,
    _apply_secrets,
    _apply_lifecycle,
)


def apply_step_profile(task: PipelineTask, step: StepProfile) -> PipelineTask:
    """Gives ``task`` everything ``step`` sets; returns the task so calls chain."""
    for apply in _APPLIERS:
        apply(task, step)
    return task
