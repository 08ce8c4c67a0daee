"""The multi-node launcher: a trial on several nodes, as a Kubeflow TrainJob or TFJob.

A kind of job (``trial``, ``training``) whose ``PodSettings`` name an ``engine`` runs each trial
as a custom object through ``kubernetes.client.CustomObjectsApi``; the manifests are built by
``kfnas.launch.multinode_manifest``:

* ``trainer-v2``: a Kubeflow Trainer **v2.3.0** ``TrainJob`` (``trainer.kubeflow.org/v1alpha1``)
  on the ``kfnas-tensorflow`` ``ClusterTrainingRuntime``
  (``pipelines/runtimes/kfnas-tensorflow.yaml``);
* ``training-operator-v1``: a Training Operator **v1.9** ``TFJob`` (``kubeflow.org/v1``), for
  clusters that still run it.

It is one more implementation of the ``Launcher`` interface, not a second mechanism:
``KubernetesLauncher`` (kind ``kubernetes``) routes the jobs of such kinds here, sharing its API
client, namespace, image, run id and owners, and keeps the others as batch Jobs; the controller and
the KFP step get the routing from the ``kubernetes`` launch config they already use.

* ``start`` creates the object under a name derived from the trial's job name
  (``multinode_manifest.object_name``); a 409 adopts the object when its labels name the same
  trial, else refuses. The returned location has a ``log`` line following node 0 (the chief):
  ``kubectl logs -n <ns> -l <selector> -c <container> -f``, where the selector is
  ``jobset.sigs.k8s.io/jobset-name=<name>,batch.kubernetes.io/job-completion-index=0`` for a
  TrainJob and ``training.kubeflow.org/job-name=<name>,training.kubeflow.org/replica-type=worker,
  training.kubeflow.org/replica-index=0`` for a TFJob.
* ``poll`` lists each experiment's objects of each engine once, by ``kfnas.io/experiment``, and
  maps their conditions: ``Complete`` (TrainJob) or ``Succeeded`` (TFJob) is SUCCEEDED; ``Failed``
  is FAILED with the condition's reason and message; ``Suspended``, or no node running yet, is
  PENDING; else RUNNING; an object that is not listed is MISSING.
* ``check`` refuses, before any trial, settings that cannot form the object, missing RBAC rights
  (a ``SelfSubjectAccessReview`` each), and an engine whose CRD the cluster does not serve (a 404
  on the list), naming what to install.

A 401 anywhere becomes a ``LaunchError`` saying the credentials were rejected.

The trial's records are written by the trial itself, exactly as in a one-pod Job: node 0 (the
chief) writes the checkpoint and ``result.json``; the other nodes never write the trial's records.

To add an engine: see ``kfnas.launch.multinode_manifest`` for its manifest, then add an ``Engine``
to ``ENGINE_TABLE`` (its API, release, install hint, manifest builder, condition mapping, node-0
selector and the RBAC rights it needs) and its rights to ``pipelines/rbac/controller-rbac.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from kubernetes import client
from kubernetes.client.rest import ApiException

from kfnas.launch.base import JobState, JobStatus, Launcher, LaunchError, TrialJob
from kfnas.launch.k8s_manifest import (
    DEFAULT_RUNTIME,
    ENGINE_TRAINER_V2,
    ENGINE_TRAINING_OPERATOR_V1,
    ENGINES,
    LABEL_EXPERIMENT,
    LABEL_KIND,
    LABEL_STUDY,
    LABEL_TRIAL,
    RUNTIME_FILE,
    PodSettings,
    job_labels,
)
from kfnas.launch.multinode_manifest import (
    NODE_CONTAINER,
    NODE_JOB,
    TFJOB_CONTAINER,
    TFJOB_GROUP,
    TFJOB_KIND,
    TFJOB_PLURAL,
    TFJOB_VERSION,
    TRAINER_GROUP,
    TRAINER_RELEASE,
    TRAINER_VERSION,
    TRAINING_OPERATOR_RELEASE,
    TRAINJOB_KIND,
    TRAINJOB_PLURAL,
    tfjob_manifest,
    tfjob_node0_selector,
    tfjob_pods_selector,
    trainjob_manifest,
    trainjob_node0_selector,
    trainjob_pods_selector,
)

#: A permission: (verb, API group, resource, subresource), as ``SelfSubjectAccessReview`` asks.
Permission = tuple[str, str, str, str]

RBAC_FILE = "pipelines/rbac/controller-rbac.yaml"
_VERBS = ("create", "get", "list", "watch", "delete")
_OOM_HINT = "lower the batch size or raise the memory limit of the profile's {kind} section"
_NOT_SERVED = "the server could not find the requested resource"


@dataclasses.dataclass(frozen=True)
class Engine:
    """One multi-node engine: its custom resource, how to build it, and how to read it.

    Attributes:
        name: The engine's name in ``PodSettings.engine``.
        group: The resource's API group.
        version: The API version kfnas targets.
        plural: The resource's plural name.
        kind: The resource's kind.
        release: What serves it, pinned (``Kubeflow Trainer v2.3.0``).
        install: How to install it, as a command line.
        build: The manifest builder (``job, settings, *, image, run_id, owner_references``).
        status: How a listed object stands.
        pods: The label selector of all its pods, from the object's name.
        node0: The label selector of node 0's pod (the chief), from the object's name.
        container: The trainer container's name in those pods.
    """

    name: str
    group: str
    version: str
    plural: str
    kind: str
    release: str
    install: str
    build: Callable[..., dict[str, Any]]
    status: Callable[[Mapping[str, Any]], JobStatus]
    pods: Callable[[str], str]
    node0: Callable[[str], str]
    container: str

    @property
    def permissions(self) -> tuple[Permission, ...]:
        """The rights the launcher uses on the resource."""
        return tuple((verb, self.group, self.plural, "") for verb in _VERBS)

    def log(self, namespace: str, name: str) -> str:
        """The command that follows node 0's log (the chief's)."""
        return f"kubectl logs -n {namespace} -l {self.node0(name)} -c {self.container} -f"


def _true(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The object's conditions whose status is ``True``, by type."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    return {c.get("type", ""): c for c in conditions if c.get("status") == "True"}


def _failure(condition: Mapping[str, Any]) -> str:
    reason, message = condition.get("reason") or "Failed", condition.get("message") or ""
    return f"{reason}: {message}" if message else reason


def _trainjob_status(obj: Mapping[str, Any]) -> JobStatus:
    """A TrainJob's state from its conditions (``Complete``, ``Failed``, ``Suspended``) and jobs.

    A TrainJob has no ``Running`` condition: it runs once its ``node`` Job is ready (all its pods
    ready or done: ``status.jobsStatus[].ready``); until then it is pending.
    """
    conditions, spec = _true(obj), obj.get("spec") or {}
    if "Complete" in conditions:
        return JobStatus(JobState.SUCCEEDED)
    if failed := conditions.get("Failed"):
        if failed.get("reason") == "DeadlineExceeded":
            deadline = spec.get("activeDeadlineSeconds")
            return JobStatus(
                JobState.FAILED, f"deadline exceeded (activeDeadlineSeconds {deadline})"
            )
        runtime = (spec.get("runtimeRef") or {}).get("name")
        if failed.get("reason") == "FailJobSetFailurePolicyAction" and runtime == DEFAULT_RUNTIME:
            # The kfnas runtime fails the JobSet at once only for a node's exit 137 (its Job's
            # podFailurePolicy): the OOM killer's SIGKILL, which a restart would meet again.
            kind = ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_KIND, "training")
            return JobStatus(
                JobState.FAILED,
                f"out of memory (a node exited 137; {_failure(failed)}): "
                + _OOM_HINT.format(kind=kind),
                out_of_memory=True,
            )
        return JobStatus(JobState.FAILED, _failure(failed))
    if "Suspended" in conditions or spec.get("suspend"):
        return JobStatus(JobState.PENDING)
    jobs = (obj.get("status") or {}).get("jobsStatus") or []
    nodes = [j for j in jobs if j.get("name") == NODE_JOB] or jobs
    if nodes and all((j.get("ready") or 0) + (j.get("succeeded") or 0) > 0 for j in nodes):
        return JobStatus(JobState.RUNNING)
    return JobStatus(JobState.PENDING)


def _tfjob_status(obj: Mapping[str, Any]) -> JobStatus:
    """A TFJob's state from its conditions.

    ``Succeeded``, ``Failed`` and ``Suspended`` as named; ``Running`` and ``Restarting`` (a node
    restarting in place) hold the slot as running; ``Created`` alone is pending.
    """
    conditions = _true(obj)
    run_policy = (obj.get("spec") or {}).get("runPolicy") or {}
    if "Succeeded" in conditions:
        return JobStatus(JobState.SUCCEEDED)
    if failed := conditions.get("Failed"):
        if "deadline" in (failed.get("message") or ""):
            deadline = run_policy.get("activeDeadlineSeconds")
            return JobStatus(
                JobState.FAILED, f"deadline exceeded (activeDeadlineSeconds {deadline})"
            )
        return JobStatus(JobState.FAILED, _failure(failed))
    if "Suspended" in conditions or run_policy.get("suspend"):
        return JobStatus(JobState.PENDING)
    if "Running" in conditions or "Restarting" in conditions:
        return JobStatus(JobState.RUNNING)
    return JobStatus(JobState.PENDING)


#: The engines by name (``PodSettings.engine``).
ENGINE_TABLE: dict[str, Engine] = {
    ENGINE_TRAINER_V2: Engine(
        name=ENGINE_TRAINER_V2,
        group=TRAINER_GROUP,
        version=TRAINER_VERSION,
        plural=TRAINJOB_PLURAL,
        kind=TRAINJOB_KIND,
        release=f"Kubeflow Trainer {TRAINER_RELEASE}",
        install=(
            'kubectl apply --server-side -k "https://github.com/kubeflow/trainer.git/manifests/'
            f'overlays/manager?ref={TRAINER_RELEASE}" && kubectl apply -f {RUNTIME_FILE}'
        ),
        build=trainjob_manifest,
        status=_trainjob_status,
        pods=trainjob_pods_selector,
        node0=trainjob_node0_selector,
        container=NODE_CONTAINER,
    ),
    ENGINE_TRAINING_OPERATOR_V1: Engine(
        name=ENGINE_TRAINING_OPERATOR_V1,
        group=TFJOB_GROUP,
        version=TFJOB_VERSION,
        plural=TFJOB_PLURAL,
        kind=TFJOB_KIND,
        release=f"Kubeflow Training Operator {TRAINING_OPERATOR_RELEASE}",
        install=(
            'kubectl apply --server-side -k "github.com/kubeflow/training-operator.git/manifests/'
            f'overlays/standalone?ref={TRAINING_OPERATOR_RELEASE}"'
        ),
        build=tfjob_manifest,
        status=_tfjob_status,
        pods=tfjob_pods_selector,
        node0=tfjob_node0_selector,
        container=TFJOB_CONTAINER,
    ),
}


class _Started(NamedTuple):
    engine: str
    name: str  # The object's name.
    experiment: str  # Its experiment label.


class MultiNodeLauncher(Launcher):
    """Runs trials on several nodes as TrainJobs or TFJobs (see the module docstring)."""

    NAME: ClassVar[str] = "kubernetes"
    RETRIES_ITSELF: ClassVar[bool] = True

    def __init__(
        self,
        *,
        namespace: str,
        image: str,
        settings: Mapping[str, PodSettings],
        run_id: str = "",
        api_client: client.ApiClient | None = None,
        owners: Callable[[], Sequence[client.V1OwnerReference]] | None = None,
        rbac_hint: Callable[[], str] | None = None,
    ) -> None:
        """Builds the launcher.

        Args:
            namespace: Where the objects run.
            image: The trials' image.
            settings: Pod settings per kind of job; the kinds without an engine are left out.
            run_id: The pipeline run's id, a label on every object.
            api_client: The API client (shared with the Job launcher); ``None``: a new one.
            owners: Gives the objects' owner references (the run's Argo Workflow).
            rbac_hint: Says how to grant missing rights (naming the service account).
        """
        self.namespace, self.image, self.run_id = namespace, image, run_id
        self.settings = {kind: s for kind, s in settings.items() if s.engine}
        self._api = api_client or client.ApiClient()
        self._custom = client.CustomObjectsApi(self._api)
        self._owners = owners or (lambda: [])
        self._rbac_hint = rbac_hint or (
            lambda: (
                f"grant the pipeline's service account the Role in {RBAC_FILE}: kubectl "
                f"apply -n {namespace} -f {RBAC_FILE}"
            )
        )
        self._started: dict[str, _Started] = {}  # trial job name -> its object

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MultiNodeLauncher:
        """The multi-node part of the ``kubernetes`` launcher built from the same config.

        Raises:
            LaunchError: A bad config, or no kind's settings name an engine.
        """
        from kfnas.launch.kubernetes import KubernetesLauncher  # It builds this one.

        launcher = KubernetesLauncher.from_config(config).multinode
        if launcher is None:
            raise LaunchError(
                "multi-node launch config: no kind's settings name an engine ("
                + ", ".join(ENGINES)
                + ")"
            )
        return launcher

    def handles(self, job_or_name: TrialJob | str) -> bool:
        """Whether the job's kind runs here, or the named job was started (or adopted) here."""
        if isinstance(job_or_name, TrialJob):
            return job_or_name.kind in self.settings
        return job_or_name in self._started

    def engines(self) -> list[Engine]:
        """The engines the settings use, each once.

        Raises:
            LaunchError: A kind names an unknown engine.
        """
        engines = {}
        for kind in self.settings:
            engine = self._engine(kind)
            engines.setdefault(engine.name, engine)
        return list(engines.values())

    def permissions(self) -> list[Permission]:
        """The rights ``start`` and ``poll`` use, for the engines the settings use."""
        return [p for engine in self.engines() for p in engine.permissions]

    def check(self) -> None:
        """Refuses bad settings, missing rights, and an engine whose CRD is not served.

        Raises:
            LaunchError: Naming each problem and how to fix it.
        """
        problems = [p for k, s in self.settings.items() for p in s.problems(f"settings.{k}")]
        if problems:
            raise LaunchError(
                "the trials' pod settings cannot form their multi-node jobs:\n  - "
                + "\n  - ".join(problems)
            )
        denied = denied_permissions(self._api, self.namespace, self.permissions())
        if denied:
            raise LaunchError(
                f"the search controller may not {', '.join(denied)} in namespace "
                f"{self.namespace!r}: {self._rbac_hint()}"
            )
        self.check_served()

    def check_served(self) -> None:
        """Refuses an engine whose custom resource the cluster does not serve (CRD absent).

        Raises:
            LaunchError: Naming the release to install and the command.
        """
        for engine in self.engines():
            self._list(engine, limit=1)

    def start(self, job: TrialJob) -> dict[str, str]:
        """Creates the trial's object, or adopts the object of its name if it is the same trial."""
        engine = self._engine(job.kind)
        manifest = engine.build(
            job,
            self.settings[job.kind],
            image=self.image,
            run_id=self.run_id,
            owner_references=self._owners(),
        )
        name = manifest["metadata"]["name"]
        what = f"{engine.kind} {name}"
        try:
            self._custom.create_namespaced_custom_object(
                engine.group, engine.version, self.namespace, engine.plural, manifest
            )
        except ApiException as e:
            if e.status != 409:
                raise self._api_error(e, f"creating {what}", engine) from e
            existing = self._call(
                engine,
                f"reading {what}",
                self._custom.get_namespaced_custom_object,
                engine.group,
                engine.version,
                self.namespace,
                engine.plural,
                name,
            )
            labels = (existing.get("metadata") or {}).get("labels") or {}
            wanted = job_labels(job)
            if any(
                labels.get(k) != wanted[k] for k in (LABEL_EXPERIMENT, LABEL_STUDY, LABEL_TRIAL)
            ):
                raise LaunchError(
                    f"a {what} exists in namespace {self.namespace!r} but belongs to another "
                    f"trial (labels {labels}): delete it (kubectl delete {engine.kind.lower()} -n "
                    f"{self.namespace} {name}) or use another experiment name"
                ) from e
        self._started[job.name] = _Started(engine.name, name, job_labels(job)[LABEL_EXPERIMENT])
        return {
            "launcher": self.NAME,
            "engine": engine.name,
            "namespace": self.namespace,
            "job": job.name,
            engine.kind.lower(): name,
            "pods": f"kubectl get pods -n {self.namespace} -l {engine.pods(name)}",
            "log": engine.log(self.namespace, name),
        }

    def poll(self, names: Iterable[str]) -> dict[str, JobStatus]:
        """How each named job stands: one list per experiment and engine."""
        names = list(names)
        statuses = {name: JobStatus(JobState.MISSING) for name in names}
        started = {n: self._started[n] for n in names if n in self._started}
        by_object = {(s.engine, s.name): n for n, s in started.items()}
        for engine_name, label in sorted({(s.engine, s.experiment) for s in started.values()}):
            engine = ENGINE_TABLE[engine_name]
            listed = self._list(engine, label_selector=f"{LABEL_EXPERIMENT}={label}")
            for obj in listed.get("items") or []:
                name = by_object.get((engine_name, (obj.get("metadata") or {}).get("name")))
                if name is not None:
                    statuses[name] = engine.status(obj)
        return statuses

    def close(self) -> None:
        """Closes the API client's connections; the objects keep running."""
        self._api.close()

    def _engine(self, kind: str) -> Engine:
        name = self.settings[kind].engine
        if name not in ENGINE_TABLE:
            raise LaunchError(
                f"settings.{kind}.engine {name!r} is not a multi-node engine; known: "
                + ", ".join(ENGINE_TABLE)
            )
        return ENGINE_TABLE[name]

    def _list(self, engine: Engine, **kwargs: Any) -> dict[str, Any]:
        return self._call(
            engine,
            f"listing {engine.plural}.{engine.group}",
            self._custom.list_namespaced_custom_object,
            engine.group,
            engine.version,
            self.namespace,
            engine.plural,
            **kwargs,
        )

    def _call(self, engine: Engine, doing: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as e:
            raise self._api_error(e, doing, engine) from e

    def _api_error(self, e: ApiException, doing: str, engine: Engine) -> LaunchError:
        message = api_message(e)
        if _not_served(e):
            kinds = [k for k, s in self.settings.items() if s.engine == engine.name]
            return LaunchError(
                f"{doing}: the cluster does not serve {engine.plural}.{engine.group}/"
                f"{engine.version} ({engine.kind}), which settings.{', settings.'.join(kinds)} "
                f"(engine {engine.name}) need: install {engine.release} ({engine.install}), or "
                "set those settings' engine to another one (empty: a batch Job, one pod)"
            )
        if e.status == 403 and "admission webhook" in message:
            hint = ""
            if "must be created before" in message:
                hint = (
                    f": install the kfnas runtime (kubectl apply -f {RUNTIME_FILE}) or create "
                    "the ClusterTrainingRuntime the settings' runtime names"
                )
            return LaunchError(f"{doing} was refused by {engine.release}: {message}{hint}")
        return api_error(e, doing, self.namespace, self._rbac_hint)


def _not_served(e: ApiException) -> bool:
    """Whether a 404 says the resource is not served (its CRD is not installed).

    The API server answers a path no handler serves with a plain ``404 page not found``, and an
    API group that lacks the resource with a ``Status`` saying it "could not find the requested
    resource"; a missing object or namespace is a ``Status`` naming it.
    """
    if e.status != 404:
        return False
    try:
        body = json.loads(e.body)
    except (TypeError, ValueError):
        return True
    return not isinstance(body, dict) or body.get("message") == _NOT_SERVED


def denied_permissions(
    api: client.ApiClient, namespace: str, needed: Iterable[Permission]
) -> list[str]:
    """The permissions of ``needed`` the caller does not have, as ``verb resource (group)``.

    Asks one ``SelfSubjectAccessReview`` per permission.

    Raises:
        LaunchError: A review could not be asked (the credentials were rejected, say).
    """
    authz = client.AuthorizationV1Api(api)
    denied = []
    for verb, group, resource, subresource in dict.fromkeys(needed):
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace,
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource or None,
                )
            )
        )
        try:
            answer = authz.create_self_subject_access_review(review)
        except ApiException as e:
            raise api_error(e, "create_self_subject_access_review", namespace) from e
        if not answer.status.allowed:
            name = resource + (f"/{subresource}" if subresource else "")
            denied.append(f"{verb} {name}" + (f" ({group})" if group else ""))
    return denied


def api_error(
    e: ApiException, doing: str, namespace: str, rbac_hint: Callable[[], str] | None = None
) -> LaunchError:
    """A failed API request as a ``LaunchError`` saying what to fix.

    401: the credentials were rejected; 403: the rights are missing (``rbac_hint``); else the
    status and the API server's message.
    """
    if e.status == 401:
        return LaunchError(
            f"{doing}: the Kubernetes API server rejected the credentials (HTTP 401 "
            f"Unauthorized: {api_message(e)}): the service account token (or the kubeconfig's "
            "user) is missing, expired or revoked; in a pod, check that its service account "
            "exists and its token is mounted (automountServiceAccountToken), else refresh the "
            "kubeconfig's credentials"
        )
    if e.status == 403:
        hint = rbac_hint() if rbac_hint else f"see {RBAC_FILE}"
        return LaunchError(f"{doing} was forbidden ({api_message(e)}): {hint}")
    return LaunchError(
        f"{doing} in namespace {namespace!r} failed: HTTP {e.status} {api_message(e)}"
    )


def api_message(e: ApiException) -> str:
    """The API server's message in a failed request's ``Status`` body (else the HTTP reason)."""
    try:
        return json.loads(e.body).get("message") or e.reason
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)
