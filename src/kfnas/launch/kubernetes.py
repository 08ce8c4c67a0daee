"""The Kubernetes launcher: each trial runs as a Kubernetes Job (or a multi-node custom object).

The search controller's pod builds it from the launch config the pipeline compiled
(``kfnas.pipelines.trial_pods.launch_config``)::

    {"kind": "kubernetes", "namespace": "", "image": "...", "run_id": "...",
     "owner_from_pod": true, "settings": {"trial": {...}, "training": {...}, "latency": {...}}}

* ``namespace``: where the Jobs run; empty: the controller pod's own namespace.
* ``image``: the trials' image; ``run_id``: the pipeline run (a label on every Job).
* ``settings``: ``PodSettings`` (``kfnas.launch.k8s_manifest``) per kind of job: ``trial`` and
  ``training`` train a trial, ``latency`` measures a trained one on the latency target device
  (``python -m kfnas.stages.measure_worker``, a Job whose name ends in ``-m``). A kind whose
  settings name an ``engine`` (``trainer-v2``: a Kubeflow Trainer v2.3.0 TrainJob;
  ``training-operator-v1``: a TFJob) runs each trial on ``workers`` nodes: its jobs are routed to
  ``kfnas.launch.multinode.MultiNodeLauncher``, which shares this launcher's API client,
  namespace, image, run id and owners; the other kinds stay batch Jobs.
* ``owner_from_pod``: give every Job the owners of the controller's own pod (found by
  ``HOSTNAME``): the run's Argo Workflow, so deleting the run deletes its Jobs.
* ``poll_pods`` (default true): ``poll`` lists the pods of failed Jobs to tell why they failed
  (exit code, out-of-memory kill); off, it reports the Job's condition only.

The controller's service account needs ``pipelines/rbac/controller-rbac.yaml``; ``check`` says
so, naming the missing permissions, before any trial starts (the rights on ``trainjobs`` or
``tfjobs`` only when a kind uses that engine, whose CRD it also checks is served).

To support another Job field: see ``kfnas.launch.k8s_manifest``. To map another failure to a
reason: extend ``_failure``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.rest import ApiException

from kfnas.launch.base import JOB_KINDS, JobState, JobStatus, Launcher, LaunchError, TrialJob
from kfnas.launch.k8s_manifest import (
    CONTAINER,
    LABEL_EXPERIMENT,
    LABEL_STUDY,
    LABEL_TRIAL,
    PodSettings,
    job_labels,
    job_manifest,
)
from kfnas.launch.multinode import (
    ENGINE_TABLE,
    RBAC_FILE,
    MultiNodeLauncher,
    Permission,
    api_error,
    denied_permissions,
)

#: Where a pod finds its namespace.
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

#: The permissions the launcher uses: (verb, API group, resource, subresource). The rights on
#: Jobs are checked when a kind of job runs as a batch Job; those on pods always (the controller
#: reads its own pod's owners, and the pods of failed Jobs).
JOB_PERMISSIONS: tuple[Permission, ...] = (
    *(("create", "batch", "jobs", ""), ("get", "batch", "jobs", "")),
    *(("list", "batch", "jobs", ""), ("watch", "batch", "jobs", "")),
    ("delete", "batch", "jobs", ""),
)
POD_PERMISSIONS: tuple[Permission, ...] = (
    ("get", "", "pods", ""),
    ("list", "", "pods", ""),
    ("get", "", "pods", "log"),
)
PERMISSIONS = (*JOB_PERMISSIONS, *POD_PERMISSIONS)
#: The rights on each multi-node engine's custom objects (``trainjobs`` of trainer.kubeflow.org,
#: ``tfjobs`` of kubeflow.org), checked only when a kind of job uses that engine.
ENGINE_PERMISSIONS: dict[str, tuple[Permission, ...]] = {
    name: engine.permissions for name, engine in ENGINE_TABLE.items()
}
_SECRETS = ("get", "", "secrets", "")
_CONFIG_KEYS = ("namespace", "image", "run_id", "settings", "owner_from_pod", "poll_pods")
_OOM_HINT = "lower the batch size or raise the memory limit of the profile's {kind} section"


class KubernetesLauncher(Launcher):
    """Runs trials as Kubernetes Jobs (see the module docstring)."""

    NAME: ClassVar[str] = "kubernetes"
    RETRIES_ITSELF: ClassVar[bool] = True

    def __init__(
        self,
        *,
        namespace: str,
        image: str,
        settings: Mapping[str, PodSettings],
        run_id: str = "",
        owner_from_pod: bool = False,
        poll_pods: bool = True,
        api_client: client.ApiClient | None = None,
    ) -> None:
        """Builds the launcher.

        Args:
            namespace: Where the Jobs run.
            image: The trials' image.
            settings: Pod settings per kind of job (``trial``, ``training``, ``latency``).
            run_id: The pipeline run's id, a label on every Job.
            owner_from_pod: Whether every Job gets the owners of the pod named by ``HOSTNAME``.
            poll_pods: Whether ``poll`` lists pods to tell why a Job failed.
            api_client: The API client; ``None``: one from the loaded configuration.
        """
        _check_config(namespace, image, settings)
        self.namespace, self.image, self.run_id = namespace, image, run_id
        self.settings = dict(settings)
        self.poll_pods = poll_pods
        self._api = api_client or client.ApiClient()
        self._batch = client.BatchV1Api(self._api)
        self._core = client.CoreV1Api(self._api)
        self._owner_from_pod = owner_from_pod
        self._owners: list[client.V1OwnerReference] | None = None
        self._experiments: dict[str, str] = {}  # job name -> experiment label
        #: The multi-node launcher of the kinds whose settings name an engine; ``None``: none do.
        self.multinode = (
            MultiNodeLauncher(
                namespace=namespace,
                image=image,
                settings=self.settings,
                run_id=run_id,
                api_client=self._api,
                owners=self._owner_references,
                rbac_hint=self._rbac_hint,
            )
            if any(s.engine for s in self.settings.values())
            else None
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> KubernetesLauncher:
        """Builds the launcher from its launch config, with in-cluster (else kubeconfig) access.

        Raises:
            LaunchError: An unknown key, bad settings, no namespace, or no cluster access.
        """
        unknown = sorted(set(config) - set(_CONFIG_KEYS))
        if unknown:
            raise LaunchError(
                f"kubernetes launch config: unknown key(s) {', '.join(unknown)}; valid keys: "
                + ", ".join(_CONFIG_KEYS)
            )
        settings = config.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise LaunchError("kubernetes launch config: settings must map job kinds to settings")
        options = {
            "namespace": config.get("namespace") or own_namespace(),
            "image": str(config.get("image", "")),
            "settings": {
                kind: PodSettings.from_dict(value, f"settings.{kind}")
                for kind, value in settings.items()
            },
        }
        _check_config(**options)  # Before reaching for the cluster.
        return cls(
            **options,
            run_id=str(config.get("run_id", "")),
            owner_from_pod=bool(config.get("owner_from_pod", False)),
            poll_pods=bool(config.get("poll_pods", True)),
            api_client=_load_api_client(),
        )

    def check(self) -> None:
        """Refuses bad settings, missing RBAC permissions, missing secrets and missing CRDs.

        Raises:
            LaunchError: Naming each problem and how to fix it.
        """
        problems = [p for k, s in self.settings.items() for p in s.problems(f"settings.{k}")]
        if problems:
            raise LaunchError(
                "the trials' pod settings cannot form a Job:\n  - " + "\n  - ".join(problems)
            )
        secrets = list(dict.fromkeys(n for s in self.settings.values() for n in s.secrets()))
        needed = [
            *(JOB_PERMISSIONS if any(not s.engine for s in self.settings.values()) else ()),
            *POD_PERMISSIONS,
            *(self.multinode.permissions() if self.multinode else ()),
            *([_SECRETS] if secrets else []),
        ]
        denied = denied_permissions(self._api, self.namespace, needed)
        if denied:
            raise LaunchError(
                f"the search controller may not {', '.join(denied)} in namespace "
                f"{self.namespace!r}: {self._rbac_hint()}"
            )
        for name in secrets:
            try:
                self._core.read_namespaced_secret(name, self.namespace)
            except ApiException as e:
                if e.status != 404:
                    raise self._api_error(e, f"reading secret {name!r}") from e
                raise LaunchError(
                    f"secret {name!r}, which the cluster profile names, does not exist in "
                    f"namespace {self.namespace!r}: create it (for an image pull secret: kubectl "
                    f"create secret docker-registry {name} -n {self.namespace} "
                    "--docker-server=<registry> --docker-username=<user> "
                    f"--docker-password=<token>; else kubectl create secret generic {name} -n "
                    f"{self.namespace} --from-file=<key>=<file>) or remove it from the profile"
                ) from e
        if self.multinode:
            self.multinode.check_served()

    def start(self, job: TrialJob) -> dict[str, str]:
        """Creates the trial's Job, or adopts the Job of its name if it is the same trial.

        A job whose kind's settings name an engine goes to the multi-node launcher instead.
        """
        if self.multinode and self.multinode.handles(job):
            return self.multinode.start(job)
        manifest = job_manifest(
            job,
            self.settings[job.kind],
            image=self.image,
            run_id=self.run_id,
            owner_references=self._owner_references(),
        )
        location = {"launcher": self.NAME, "namespace": self.namespace, "job": job.name}
        try:
            self._batch.create_namespaced_job(self.namespace, manifest)
        except ApiException as e:
            if e.status != 409:
                raise self._api_error(e, f"creating Job {job.name}") from e
            existing = self._call(self._batch.read_namespaced_job, job.name, self.namespace)
            labels = existing.metadata.labels or {}
            wanted = job_labels(job)
            if any(
                labels.get(k) != wanted[k] for k in (LABEL_EXPERIMENT, LABEL_STUDY, LABEL_TRIAL)
            ):
                raise LaunchError(
                    f"a Job named {job.name} exists in namespace {self.namespace!r} but belongs "
                    f"to another trial (labels {labels}): delete it (kubectl delete job -n "
                    f"{self.namespace} {job.name}) or use another experiment name"
                ) from e
            pods = self._call(
                self._core.list_namespaced_pod,
                self.namespace,
                label_selector=f"batch.kubernetes.io/job-name={job.name}",
            )
            if pods.items:
                location["pod"] = pods.items[-1].metadata.name
        self._experiments[job.name] = job_labels(job)[LABEL_EXPERIMENT]
        return location | {"log": f"kubectl logs -n {self.namespace} job/{job.name}"}

    def poll(self, names: Iterable[str]) -> dict[str, JobStatus]:
        """How each named job stands: one Job list per experiment, one pod list if any failed.

        The jobs started by the multi-node launcher are polled by it (one list per experiment and
        engine), and the answers merged.
        """
        names = list(names)
        statuses: dict[str, JobStatus] = {}
        if self.multinode:
            statuses |= self.multinode.poll(n for n in names if self.multinode.handles(n))
            names = [n for n in names if n not in statuses]
        statuses |= {name: JobStatus(JobState.MISSING) for name in names}
        jobs: dict[str, client.V1Job] = {}
        for label in sorted({self._experiments[n] for n in names if n in self._experiments}):
            listed = self._call(
                self._batch.list_namespaced_job,
                self.namespace,
                label_selector=f"{LABEL_EXPERIMENT}={label}",
            )
            jobs |= {j.metadata.name: j for j in listed.items if j.metadata.name in statuses}
        failed = [j for j in jobs.values() if _condition(j, "Failed")]
        pods = self._pods_by_job({self._experiments[j.metadata.name] for j in failed})
        for name, job in jobs.items():
            if _condition(job, "Complete"):
                statuses[name] = JobStatus(JobState.SUCCEEDED)
            elif _condition(job, "Failed"):
                statuses[name] = _failure(job, pods.get(name, []))
            elif _waiting(job):
                statuses[name] = JobStatus(JobState.PENDING)
            else:
                statuses[name] = JobStatus(JobState.RUNNING)
        return statuses

    def close(self) -> None:
        """Closes the API client (shared with the multi-node launcher); the jobs keep running."""
        self._api.close()

    def _pods_by_job(self, labels: set[str]) -> dict[str, list[client.V1Pod]]:
        if not labels or not self.poll_pods:
            return {}
        selector = (
            f"{LABEL_EXPERIMENT}={labels.pop()}"
            if len(labels) == 1
            else f"{LABEL_EXPERIMENT} in ({','.join(sorted(labels))})"
        )
        listed = self._call(self._core.list_namespaced_pod, self.namespace, label_selector=selector)
        out: dict[str, list[client.V1Pod]] = {}
        for pod in listed.items:
            for owner in pod.metadata.owner_references or []:
                if owner.kind == "Job":
                    out.setdefault(owner.name, []).append(pod)
        return out

    def _owner_references(self) -> list[client.V1OwnerReference]:
        if not self._owner_from_pod:
            return []
        if self._owners is None:
            pod_name = os.environ.get("HOSTNAME", "")
            if not pod_name:
                raise LaunchError(
                    "owner_from_pod: HOSTNAME is not set, so the controller cannot find its own "
                    "pod; run the controller in a pod or set owner_from_pod to false"
                )
            home = NAMESPACE_FILE.read_text().strip() if NAMESPACE_FILE.is_file() else ""
            if home and home != self.namespace:
                raise LaunchError(
                    f"owner_from_pod: the controller's pod runs in namespace {home!r}, the Jobs "
                    f"in {self.namespace!r}; an owner in another namespace makes Kubernetes "
                    "delete the Jobs at once: leave the launch config's namespace empty or set "
                    "owner_from_pod to false"
                )
            pod = self._call(self._core.read_namespaced_pod, pod_name, self.namespace)
            # Not a controller, and not blocking the owner's deletion: that would need the
            # right to set the owner's finalizers (OwnerReferencesPermissionEnforcement).
            self._owners = [
                client.V1OwnerReference(
                    api_version=o.api_version, kind=o.kind, name=o.name, uid=o.uid
                )
                for o in pod.metadata.owner_references or []
            ]
        return self._owners

    def _rbac_hint(self) -> str:
        account = (
            "the pipeline's service account (KFP: pipeline-runner; multi-user: default-editor)"
        )
        if pod_name := os.environ.get("HOSTNAME", ""):
            try:
                pod = self._core.read_namespaced_pod(pod_name, self.namespace)
                account = f"service account {pod.spec.service_account_name!r}"
            except ApiException:
                pass  # Not in a pod, or may not read pods: the generic hint.
        return (
            f"grant {account} the Role in {RBAC_FILE}: kubectl apply -n {self.namespace} -f "
            f"{RBAC_FILE} (edit its RoleBinding's subject to that service account)"
        )

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as e:
            raise self._api_error(e, method.__name__) from e

    def _api_error(self, e: ApiException, doing: str) -> LaunchError:
        return api_error(e, doing, self.namespace, self._rbac_hint)


def _check_config(namespace: str, image: str, settings: Mapping[str, PodSettings]) -> None:
    problems = [f"settings.{kind} is missing" for kind in JOB_KINDS if kind not in settings]
    problems += [
        f"settings.{kind} is not a kind of job ({', '.join(JOB_KINDS)})"
        for kind in settings
        if kind not in JOB_KINDS
    ]
    problems += [] if image else ["image is empty: name the trials' image"]
    problems += [] if namespace else ["namespace is empty"]
    if problems:
        raise LaunchError("kubernetes launch config: " + ", ".join(problems))


def own_namespace() -> str:
    """The namespace of the pod this runs in.

    Raises:
        LaunchError: Not in a pod: the message says to set ``namespace``.
    """
    try:
        return NAMESPACE_FILE.read_text().strip()
    except OSError as e:
        raise LaunchError(
            f"kubernetes launch config: namespace is empty and {NAMESPACE_FILE} is not readable "
            "(not running in a pod): set the launch config's namespace"
        ) from e


def _load_api_client() -> client.ApiClient:
    try:
        kube_config.load_incluster_config()
    except kube_config.ConfigException:
        try:
            # KUBECONFIG as it is now (the client's default is read when it is imported).
            kube_config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
        except (kube_config.ConfigException, OSError) as e:
            raise LaunchError(
                f"no access to a Kubernetes cluster: not in a pod, and no kubeconfig ({e}); run "
                "in the cluster or set KUBECONFIG"
            ) from e
    return client.ApiClient()


def _waiting(job: client.V1Job) -> bool:
    """Suspended (a queue has not admitted it), no pod yet, or its pod not running yet.

    ``status.ready`` is ``None`` on a cluster that does not count ready pods: active is running.
    """
    status = job.status or client.V1JobStatus()
    return bool(job.spec.suspend) or not (status.active or 0) or status.ready == 0


def _condition(job: client.V1Job, kind: str) -> client.V1JobCondition | None:
    for condition in (job.status and job.status.conditions) or []:
        if condition.type == kind and condition.status == "True":
            return condition
    return None


def _terminated(pod: client.V1Pod) -> client.V1ContainerStateTerminated | None:
    for status in (pod.status and pod.status.container_statuses) or []:
        if status.name == CONTAINER and status.state and status.state.terminated:
            return status.state.terminated
    return None


def _failure(job: client.V1Job, pods: list[client.V1Pod]) -> JobStatus:
    """Why a failed Job failed, in words a user acts on.

    Disrupted pods (preempted, evicted) are left out: the Job ignored them, and a preempted
    container killed with exit 137 is no out-of-memory kill.
    """
    condition = _condition(job, "Failed")
    if condition.reason == "DeadlineExceeded":
        deadline = job.spec.active_deadline_seconds
        return JobStatus(JobState.FAILED, f"deadline exceeded (activeDeadlineSeconds {deadline})")
    kind = (job.metadata.labels or {}).get("kfnas.io/kind", "trial")
    ended = sorted(
        ((p, t) for p in pods if (t := _terminated(p)) is not None and not _disrupted(p)),
        key=lambda pt: (pt[1].finished_at is not None, pt[1].finished_at or 0),
    )
    oom = [t for _, t in ended if t.reason == "OOMKilled"]
    if condition.reason == "PodFailurePolicy" or oom:
        # The policy's one FailJob rule is exit 137 of the trial container: the OOM killer's.
        last = oom[-1] if oom else next((t for _, t in reversed(ended)), None)
        why = f"{last.reason or 'killed'}, exit {last.exit_code}" if last else "exit 137"
        return JobStatus(
            JobState.FAILED,
            f"out of memory ({why}): {_OOM_HINT.format(kind=kind)}",
            out_of_memory=True,
        )
    if ended:
        pod, last = ended[-1]
        tries = (job.status.failed or 0) if job.status else 0
        return JobStatus(
            JobState.FAILED,
            f"{condition.reason or 'failed'} after {tries} failed pod(s): pod "
            f"{pod.metadata.name} ended with exit code {last.exit_code} ({last.reason or 'Error'})"
            + (f": {last.message.strip()[-300:]}" if last.message else ""),
        )
    return JobStatus(JobState.FAILED, f"{condition.reason}: {condition.message or 'no message'}")


def _disrupted(pod: client.V1Pod) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return any(c.type == "DisruptionTarget" and c.status == "True" for c in conditions)
