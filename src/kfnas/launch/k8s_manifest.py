"""What a trial's Kubernetes Job looks like: the pod settings and the Job manifest built from them.

``PodSettings`` is the JSON-ready, image-independent form of one section (``trial`` or
``training``) of a cluster profile; the pipeline compiles it into the search step's launch config
(``kfnas.pipelines.trial_pods``) and the launcher reads it back with ``PodSettings.from_dict``.
``PodSettings.problems`` lists what could not form a valid Job, so a bad profile fails at compile
time rather than on the cluster. ``job_manifest`` builds the ``V1Job`` of one trial (settings with
a multi-node ``engine`` make a Kubeflow custom object instead: ``kfnas.launch.multinode_manifest``,
which reuses ``pod_spec``, ``container``, ``container_env``, ``resources`` and ``volumes``):

* labels naming the experiment, study, trial and run (``poll`` lists an experiment's Jobs with one
  request by ``kfnas.io/experiment``), and Kueue's queue label with ``suspend`` when a queue is set;
* owner references (the run's Argo Workflow), so deleting the run deletes its Jobs;
* ``backoffLimit``, ``activeDeadlineSeconds`` and a ``podFailurePolicy``: a disrupted pod
  (preemption, eviction) is retried without counting against the backoff limit, and an
  out-of-memory kill (exit 137) fails the Job at once, since a retry would be killed again.

To support another setting: add a field with an "unset" default to ``PodSettings`` (or one of its
parts), check it in ``problems``, set it in ``job_manifest`` or one of the shared builders
(``pod_spec``, ``container``, ``container_env``, ``resources``, ``volumes``), and fill it from the
profile in ``kfnas.pipelines.trial_pods.pod_settings``. The multi-node manifests
(``kfnas.launch.multinode_manifest``) use the shared builders, so a setting made there reaches them
too; one set in ``job_manifest`` itself needs setting there as well.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kubernetes import client
from kubernetes.utils import parse_quantity

from kfnas.config.strict import SpecError, from_data, to_data
from kfnas.launch.base import LaunchError, TrialJob, experiment_label

#: The trial container's name (the ``podFailurePolicy`` rules name it).
CONTAINER = "trial"
#: How long a finished Job (and its pods, with their logs) stays: 7 days.
TTL_AFTER_FINISHED_S = 7 * 24 * 3600
#: The exit code of a container killed by SIGKILL, which is what the kernel's OOM killer sends.
OOM_EXIT_CODE = 137

LABEL_EXPERIMENT = "kfnas.io/experiment"
LABEL_STUDY = "kfnas.io/study"
LABEL_TRIAL = "kfnas.io/trial-id"
LABEL_RUN = "kfnas.io/run-id"
LABEL_KIND = "kfnas.io/kind"
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
ANNOTATION_EXPERIMENT_URI = "kfnas.io/experiment-uri"

#: The multi-node engines a kind of job may name (``PodSettings.engine``); empty: a batch Job.
#: ``kfnas.launch.multinode`` has one entry per name (group, version, manifest builder, states).
ENGINE_TRAINER_V2 = "trainer-v2"
ENGINE_TRAINING_OPERATOR_V1 = "training-operator-v1"
ENGINES = (ENGINE_TRAINER_V2, ENGINE_TRAINING_OPERATOR_V1)
#: The ClusterTrainingRuntime a ``trainer-v2`` job runs on when ``PodSettings.runtime`` is empty.
DEFAULT_RUNTIME = "kfnas-tensorflow"
#: Where that runtime's manifest is (``kubectl apply -f`` it once per cluster).
RUNTIME_FILE = "pipelines/runtimes/kfnas-tensorflow.yaml"
#: The most nodes one trial may get (node indices stay within 3 digits: see ``object_name``).
MAX_WORKERS = 1000

_SHM_VOLUME = "dshm"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_EXTENDED_RESOURCE = re.compile(
    r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_NATIVE_RESOURCES = ("cpu", "memory", "ephemeral-storage", "storage", "pods")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclasses.dataclass(frozen=True)
class Toleration:
    """A Kubernetes toleration (empty strings and ``None`` are unset)."""

    key: str = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: int | None = None


@dataclasses.dataclass(frozen=True)
class PvcMount:
    """An existing PersistentVolumeClaim mounted at ``mount_path`` (optionally a ``sub_path``)."""

    claim: str = ""
    mount_path: str = ""
    sub_path: str = ""


@dataclasses.dataclass(frozen=True)
class SecretEnv:
    """Keys of a secret as environment variables: ``keys`` maps secret key -> variable name."""

    secret: str = ""
    keys: dict[str, str] = dataclasses.field(default_factory=dict)
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class SecretVolume:
    """A secret mounted read-only as files at ``mount_path``."""

    secret: str = ""
    mount_path: str = ""
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class PodSettings:
    """What a trial's pod gets on the cluster, except its image; every field is optional.

    Attributes:
        accelerator_type: An extended resource name (``nvidia.com/gpu``); empty: none.
        accelerator_count: How many, set as a limit (extended resources take no request).
        cpu_request: CPU request (``"4"``, ``"500m"``); empty: unset. Likewise the limit and
            the memory request and limit (``"16Gi"``).
        node_selector: Node labels the pod must match.
        tolerations: Taints the pod tolerates.
        pvcs: PersistentVolumeClaims to mount.
        shm_size: Size of an in-memory ``/dev/shm``; empty: the runtime's default (64 MiB).
        secret_env: Secret keys as environment variables.
        secret_volumes: Secrets as files.
        env: Plain environment variables.
        image_pull_secrets: Secrets for pulling the image from a private registry.
        backoff_limit: How many failed pods the Job retries (disruptions do not count).
        active_deadline_s: How long the Job may run, retries included; 0: no limit.
        run_as_user: The container's user id; ``None``: the image's.
        run_as_group: The container's group id; ``None``: the image's.
        run_as_non_root: Whether the kubelet refuses to start the container as root.
        queue: A Kueue LocalQueue: the Job is created suspended and Kueue admits it.
        workers: How many nodes (pods) one trial runs on; above 1 needs an ``engine``.
        engine: ``""``: a batch Job, one pod; ``"trainer-v2"``: a Kubeflow Trainer v2
            ``TrainJob`` on ``runtime``; ``"training-operator-v1"``: a Training Operator v1
            ``TFJob`` (see ``kfnas.launch.multinode``). With an engine, ``backoff_limit`` is the
            TFJob's ``runPolicy.backoffLimit``; a TrainJob has no such field: its runtime's JobSet
            ``failurePolicy.maxRestarts`` decides (2 in ``kfnas-tensorflow``).
        runtime: The Trainer v2 ``ClusterTrainingRuntime`` (engine ``trainer-v2`` only); empty:
            ``kfnas-tensorflow`` (``pipelines/runtimes/kfnas-tensorflow.yaml``).
    """

    accelerator_type: str = ""
    accelerator_count: int = 0
    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[Toleration] = dataclasses.field(default_factory=list)
    pvcs: list[PvcMount] = dataclasses.field(default_factory=list)
    shm_size: str = ""
    secret_env: list[SecretEnv] = dataclasses.field(default_factory=list)
    secret_volumes: list[SecretVolume] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    image_pull_secrets: list[str] = dataclasses.field(default_factory=list)
    backoff_limit: int = 0
    active_deadline_s: int = 0
    run_as_user: int | None = None
    run_as_group: int | None = None
    run_as_non_root: bool | None = None
    queue: str = ""
    workers: int = 1
    engine: str = ""
    runtime: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "settings") -> PodSettings:
        """Reads settings written by ``to_dict``, strictly.

        Raises:
            LaunchError: An unknown key or a value of the wrong type (the message names it).
        """
        try:
            return from_data(cls, data, where)
        except SpecError as e:
            raise LaunchError(f"launch config: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (``from_dict`` reads it back)."""
        return to_data(self)

    def secrets(self) -> list[str]:
        """The secrets a pod cannot start without: image pull secrets and non-optional ones."""
        names = list(self.image_pull_secrets)
        names += [s.secret for s in (*self.secret_env, *self.secret_volumes) if not s.optional]
        return list(dict.fromkeys(names))

    def problems(self, where: str, names: Mapping[str, str] | None = None) -> list[str]:
        """What could not form a valid Job, as messages naming ``where`` and the key.

        Args:
            where: Where the settings come from (``steps.trial``).
            names: How the caller's config names a field (``{"cpu_limit":
                "resources.cpu_limit"}``); a field not in it is named as it is.
        """

        def at(field: str) -> str:
            return f"{where}.{(names or {}).get(field, field)}"

        out = self._accelerator_problems(at)
        quantities = {}
        for field in ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "shm_size"):
            text = getattr(self, field)
            if not text:
                continue
            try:
                quantities[field] = parse_quantity(text)
            except (ValueError, TypeError):
                example = "'4' or '500m'" if field.startswith("cpu") else "'16Gi'"
                out.append(f"{at(field)} {text!r} is not a quantity like {example}")
                continue
            if quantities[field] < 0:
                out.append(f"{at(field)} {text!r} is negative")
        for kind in ("cpu", "memory"):
            request, limit = quantities.get(f"{kind}_request"), quantities.get(f"{kind}_limit")
            if request is not None and limit is not None and 0 <= limit < request:
                out.append(
                    f"{at(kind + '_limit')} {getattr(self, kind + '_limit')!r} is below "
                    f"{at(kind + '_request')} {getattr(self, kind + '_request')!r}: raise the "
                    "limit or lower the request"
                )
        for field in ("backoff_limit", "active_deadline_s", "run_as_user", "run_as_group"):
            if (getattr(self, field) or 0) < 0:
                out.append(f"{at(field)} must be >= 0, got {getattr(self, field)}")
        if self.queue and not _DNS_LABEL.match(self.queue):
            out.append(f"{at('queue')} {self.queue!r} is not a LocalQueue name (a DNS label)")
        out += self._engine_problems(at, lambda field: (names or {}).get(field, field))
        out += [
            f"{at('env')}: {n!r} is not a variable name" for n in self.env if not _ENV_NAME.match(n)
        ]
        out += [
            f"{at('tolerations')}.{i}: operator Exists takes no value (got {t.value!r})"
            for i, t in enumerate(self.tolerations)
            if t.operator == "Exists" and t.value
        ]
        for i, s in enumerate(self.secret_env):
            out += [] if s.secret else [f"{at('secret_env')}.{i}.secret is empty: name the secret"]
            out += [
                f"{at('secret_env')}.{i}.keys.{key}: {env!r} is not a variable name"
                for key, env in s.keys.items()
                if not _ENV_NAME.match(env)
            ]
        mounts = [("pvcs", i, p.mount_path) for i, p in enumerate(self.pvcs)]
        mounts += [("secret_volumes", i, v.mount_path) for i, v in enumerate(self.secret_volumes)]
        out += [
            f"{at(field)}.{i}.mount_path must be an absolute path, got {path!r}"
            for field, i, path in mounts
            if not path.startswith("/")
        ]
        return out

    def _engine_problems(self, at: Any, key: Any) -> list[str]:
        out = []
        if self.workers < 1:
            out.append(f"{at('workers')} must be >= 1, got {self.workers}")
        elif self.workers > MAX_WORKERS:
            out.append(f"{at('workers')} must be <= {MAX_WORKERS}, got {self.workers}")
        elif self.workers > 1 and not self.engine:
            out.append(
                f"{at('workers')} {self.workers} needs a multi-node engine: set {key('engine')}: "
                f"{ENGINE_TRAINER_V2} (Kubeflow Trainer v2 with the kfnas runtime, {RUNTIME_FILE}) "
                f"or {ENGINE_TRAINING_OPERATOR_V1} (TFJob)"
            )
        if self.engine and self.engine not in ENGINES:
            out.append(
                f"{at('engine')} {self.engine!r} is not a multi-node engine; known: "
                f"{', '.join(ENGINES)} (or empty: a batch Job, one pod)"
            )
        if self.runtime and self.engine != ENGINE_TRAINER_V2:
            out.append(
                f"{at('runtime')} {self.runtime!r} names a Kubeflow Trainer v2 runtime, which only "
                f"{key('engine')}: {ENGINE_TRAINER_V2} uses (engine is {self.engine!r}): remove it "
                f"or set {key('engine')}: {ENGINE_TRAINER_V2}"
            )
        elif self.runtime and not _DNS_SUBDOMAIN.match(self.runtime):
            out.append(
                f"{at('runtime')} {self.runtime!r} is not a ClusterTrainingRuntime name (a DNS "
                "subdomain)"
            )
        return out

    def _accelerator_problems(self, at: Any) -> list[str]:
        kind, count = self.accelerator_type, self.accelerator_count
        if count < 0:
            return [f"{at('accelerator_count')} must be >= 0, got {count}"]
        if not kind:
            return [f"{at('accelerator_type')} is empty: e.g. nvidia.com/gpu"] if count else []
        if kind in _NATIVE_RESOURCES or not _EXTENDED_RESOURCE.match(kind):
            return [
                f"{at('accelerator_type')} {kind!r} is not an extended resource name "
                "'<domain>/<name>' like nvidia.com/gpu or google.com/tpu (CPU and memory are "
                "set by the resources' requests and limits)"
            ]
        return [] if count else [f"{at('accelerator_count')} must be >= 1 with a type"]


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: at most 63 of ``[A-Za-z0-9_.-]``, alphanumeric ends."""
    return _LABEL_VALUE_BAD.sub("-", text).strip("-_.")[:63].rstrip("-_.")


def job_labels(job: TrialJob, run_id: str = "") -> dict[str, str]:
    """The labels of a trial's Job and pods (the queue label aside)."""
    labels = {
        "app.kubernetes.io/name": "kfnas",
        "app.kubernetes.io/component": "trial",
        LABEL_EXPERIMENT: experiment_label(job.experiment_uri),
        LABEL_STUDY: label_value(job.study),
        LABEL_TRIAL: str(job.trial_id),
        LABEL_KIND: job.kind,
    }
    return labels | ({LABEL_RUN: label_value(run_id)} if label_value(run_id) else {})


def job_manifest(
    job: TrialJob,
    settings: PodSettings,
    *,
    image: str,
    run_id: str,
    owner_references: Sequence[client.V1OwnerReference] = (),
) -> client.V1Job:
    """The Kubernetes Job that runs ``job`` (see the module docstring).

    Args:
        job: The trial.
        settings: Its pod settings (the profile's section for ``job.kind``).
        image: The container image (it has kfnas installed).
        run_id: The pipeline run's id, as a label; empty: no label.
        owner_references: Owners of the Job (the run's Argo Workflow).
    """
    labels = job_labels(job, run_id)
    job_labels_ = labels | ({LABEL_QUEUE: settings.queue} if settings.queue else {})
    failure_policy = client.V1PodFailurePolicy(
        rules=[
            client.V1PodFailurePolicyRule(
                action="Ignore",
                on_pod_conditions=[
                    client.V1PodFailurePolicyOnPodConditionsPattern(
                        type="DisruptionTarget", status="True"
                    )
                ],
            ),
            client.V1PodFailurePolicyRule(
                action="FailJob",
                on_exit_codes=client.V1PodFailurePolicyOnExitCodesRequirement(
                    container_name=CONTAINER, operator="In", values=[OOM_EXIT_CODE]
                ),
            ),
        ]
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(
            name=job.name,
            labels=job_labels_,
            annotations={ANNOTATION_EXPERIMENT_URI: job.experiment_uri},
            owner_references=list(owner_references) or None,
        ),
        spec=client.V1JobSpec(
            backoff_limit=settings.backoff_limit,
            active_deadline_seconds=settings.active_deadline_s or None,
            ttl_seconds_after_finished=TTL_AFTER_FINISHED_S,
            pod_failure_policy=failure_policy,
            suspend=True if settings.queue else None,
            # The queue label stays off the pods: Kueue admits the Job, not its pods.
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=pod_spec(job, settings, image),
            ),
        ),
    )


def pod_spec(
    job: TrialJob,
    settings: PodSettings,
    image: str,
    *,
    container_name: str = CONTAINER,
    restart_policy: str | None = "Never",
    extra_env: Mapping[str, str] | None = None,
    ports: Sequence[client.V1ContainerPort] = (),
) -> client.V1PodSpec:
    """The pod of a trial: its one container, volumes, placement and image pull secrets.

    Args:
        job: The trial.
        settings: Its pod settings.
        image: The container image.
        container_name: The container's name (``trial``; a TFJob's must be ``tensorflow``).
        restart_policy: The pod's restart policy; ``None``: unset (an operator sets it).
        extra_env: Variables set after the settings' own, replacing those of the same name.
        ports: The container's ports.
    """
    volumes_, mounts = volumes(settings)
    trial = container(job, settings, image, mounts, name=container_name, extra_env=extra_env)
    trial.ports = list(ports) or None
    return client.V1PodSpec(
        restart_policy=restart_policy,
        containers=[trial],
        volumes=volumes_ or None,
        node_selector=dict(settings.node_selector) or None,
        tolerations=tolerations(settings) or None,
        image_pull_secrets=[
            client.V1LocalObjectReference(name=name) for name in settings.image_pull_secrets
        ]
        or None,
    )


def container(
    job: TrialJob,
    settings: PodSettings,
    image: str,
    mounts: Sequence[client.V1VolumeMount],
    *,
    name: str = CONTAINER,
    extra_env: Mapping[str, str] | None = None,
) -> client.V1Container:
    """The trial container: ``python`` with ``job.worker_args()`` and its settings.

    A training job runs ``-m kfnas.stages.worker <uri> <study> <id> --train-only``; a ``latency``
    job ``-m kfnas.stages.measure_worker <uri> <study> <id>``.

    Args:
        job: The trial.
        settings: Its pod settings.
        image: The container image.
        mounts: Its volume mounts (``volumes(settings)[1]``).
        name: The container's name.
        extra_env: Variables set after the settings' own, replacing those of the same name.
    """
    env = container_env(settings, extra_env)
    security = (settings.run_as_user, settings.run_as_group, settings.run_as_non_root)
    return client.V1Container(
        name=name,
        image=image,
        command=["python", *job.worker_args()],
        env=env or None,
        resources=resources(settings),
        volume_mounts=list(mounts) or None,
        security_context=client.V1SecurityContext(
            run_as_user=security[0], run_as_group=security[1], run_as_non_root=security[2]
        )
        if security != (None, None, None)
        else None,
    )


def container_env(
    settings: PodSettings, extra_env: Mapping[str, str] | None = None
) -> list[client.V1EnvVar]:
    """The trial container's environment: plain variables, secret keys, then ``extra_env``.

    A variable of ``extra_env`` replaces a setting's variable of the same name (names stay
    unique, as a TrainJob's ``trainer.env`` requires).
    """
    extra = dict(extra_env or {})
    env = [
        client.V1EnvVar(name=name, value=value)
        for name, value in settings.env.items()
        if name not in extra
    ]
    env += [
        client.V1EnvVar(
            name=variable,
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(
                    name=s.secret, key=key, optional=s.optional or None
                )
            ),
        )
        for s in settings.secret_env
        for key, variable in s.keys.items()
        if variable not in extra
    ]
    return env + [client.V1EnvVar(name=name, value=value) for name, value in extra.items()]


def resources(settings: PodSettings) -> client.V1ResourceRequirements:
    """Requests and limits of one trial pod (one node): CPU, memory and the accelerator."""
    requests = {"cpu": settings.cpu_request, "memory": settings.memory_request}
    limits = {"cpu": settings.cpu_limit, "memory": settings.memory_limit}
    if settings.accelerator_type and settings.accelerator_count:
        limits[settings.accelerator_type] = str(settings.accelerator_count)
    return client.V1ResourceRequirements(
        requests={k: v for k, v in requests.items() if v} or None,
        limits={k: v for k, v in limits.items() if v} or None,
    )


def tolerations(settings: PodSettings) -> list[client.V1Toleration]:
    """The settings' tolerations as the client's models (unset fields left out)."""
    return [
        client.V1Toleration(
            key=t.key or None,
            operator=t.operator,
            value=t.value or None,
            effect=t.effect or None,
            toleration_seconds=t.toleration_seconds,
        )
        for t in settings.tolerations
    ]


def volumes(settings: PodSettings) -> tuple[list[client.V1Volume], list[client.V1VolumeMount]]:
    """The pod's volumes and the trial container's mounts: PVCs, ``/dev/shm``, secret files."""
    volumes_, mounts, claims = [], [], {}
    for pvc in settings.pvcs:
        if pvc.claim not in claims:
            claims[pvc.claim] = f"pvc-{len(claims)}"
            volumes_.append(
                client.V1Volume(
                    name=claims[pvc.claim],
                    persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(
                        claim_name=pvc.claim
                    ),
                )
            )
        mounts.append(
            client.V1VolumeMount(
                name=claims[pvc.claim], mount_path=pvc.mount_path, sub_path=pvc.sub_path or None
            )
        )
    if settings.shm_size:
        volumes_.append(
            client.V1Volume(
                name=_SHM_VOLUME,
                empty_dir=client.V1EmptyDirVolumeSource(
                    medium="Memory", size_limit=settings.shm_size
                ),
            )
        )
        mounts.append(client.V1VolumeMount(name=_SHM_VOLUME, mount_path="/dev/shm"))
    for i, secret in enumerate(settings.secret_volumes):
        volumes_.append(
            client.V1Volume(
                name=f"secret-{i}",
                secret=client.V1SecretVolumeSource(
                    secret_name=secret.secret, optional=secret.optional or None
                ),
            )
        )
        mounts.append(
            client.V1VolumeMount(name=f"secret-{i}", mount_path=secret.mount_path, read_only=True)
        )
    return volumes_, mounts
