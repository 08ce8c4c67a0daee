"""A stand-in Kubernetes API server for the Kubernetes launcher's tests.

A real HTTP server (werkzeug, in a thread, on a free 127.0.0.1 port) that the real
``kubernetes.client`` talks to. It answers the way the API server does for the requests the
launcher makes, and keeps state:

* Jobs (``/apis/batch/v1/namespaces/{ns}/jobs``): create (201; 409 ``AlreadyExists``; 422
  ``Invalid`` for a name that is not a DNS-1123 label of at most 63 characters, a container
  without name or image, or a ``podFailurePolicy`` with a ``restartPolicy`` other than
  ``Never``), get, list with a label selector (``k=v``, ``k!=v``, ``k in (a,b)``), watch
  (newline-delimited watch events), delete (cascading to the Job's pods);
* pods (``/api/v1/namespaces/{ns}/pods``): list with a selector and get;
* secrets: get (404 when absent);
* ``selfsubjectaccessreviews``: answered from ``allowed``, which also guards every request above
  (403 ``Forbidden`` as RBAC answers);
* Kubeflow custom objects (``CUSTOM_RESOURCES``): Trainer v2.3.0 TrainJobs
  (``/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs[/{name}]``) and Training
  Operator v1.9 TFJobs (``/apis/kubeflow.org/v1/namespaces/{ns}/tfjobs[/{name}]``): create (201;
  409 ``AlreadyExists``; 422 ``Invalid`` where the CRD's schema refuses: a TrainJob name that is
  not an RFC 1035 label, a missing ``spec.runtimeRef.name`` or ``spec.tfReplicaSpecs``; 403 where
  the operator's admission webhook refuses, as controller-runtime answers a validator's error: a
  TrainJob on a ``ClusterTrainingRuntime`` not in ``runtimes`` or patching a replicated job or
  container the runtime lacks or setting env on its ``node`` container, a TFJob whose name is not
  an RFC 1035 label or that has no container ``tensorflow`` or one without an image), get, list
  with a label selector, delete. A resource whose CRD is ``uninstall``-ed answers every request
  with 404 ``404 page not found`` (plain text, as the API server's fallback handler does). Their
  operators are acted out by ``run_custom``, ``complete_custom``, ``fail_custom``,
  ``admit_custom`` and ``delete_custom``, which set the conditions the real controllers set.

A request whose bearer token is not the stand-in's (``revoke_token`` changes it) gets 401
``Unauthorized`` and is recorded in ``rejected``.

Jobs run like the Job controller runs them: a created Job that is not suspended gets a pod
(``<job>-<5 chars>``, ``status.active=1``). ``succeed``, ``fail_exit``, ``oom_kill`` and
``preempt`` end its current pod, and the Job's own ``podFailurePolicy`` (first matching rule:
``Ignore``, ``FailJob`` or ``Count``) and ``backoffLimit`` decide what follows: a new pod, or the
Job's ``Failed`` condition with the reason the API server gives.

Any other request, and any request without an ``Authorization: Bearer`` header, is recorded in
``unexpected``; the ``k8s`` fixture (import ``k8s_fixture`` into a test module) fails the test
when there is one. To serve another endpoint, add a rule to ``_routes`` and a
``_<endpoint>_<method>`` handler; to act out another event, add a control method next to
``succeed``.
"""

from __future__ import annotations

import copy
import datetime
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

TOKEN = "standin-token"
SERVICE_ACCOUNT = "system:serviceaccount:kfnas:pipeline-runner"
#: Everything the launcher may do, as (verb, resource[/subresource]).
ALL_PERMISSIONS = {
    *((verb, "jobs") for verb in ("create", "get", "list", "watch", "delete")),
    ("get", "pods"),
    ("list", "pods"),
    ("get", "pods/log"),
    ("get", "secrets"),
    *(
        (verb, plural)
        for verb in ("create", "get", "list", "watch", "delete")
        for plural in ("trainjobs", "tfjobs")
    ),
}
#: The custom resources served: plural -> (group, version, kind).
CUSTOM_RESOURCES = {
    "trainjobs": ("trainer.kubeflow.org", "v1alpha1", "TrainJob"),
    "tfjobs": ("kubeflow.org", "v1", "TFJob"),
}
#: The kfnas ClusterTrainingRuntime as the TrainJob webhook sees it: replicated job -> containers.
KFNAS_RUNTIME = {"node": {"node"}}
_RFC1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_WEBHOOKS = {
    "trainjobs": "validator.trainjob.trainer.kubeflow.org",
    "tfjobs": "validator.tfjob.training-operator.kubeflow.org",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_POD_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, **details: Any) -> Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
    return Response(json.dumps(body), status=code, content_type="application/json")


def _json(obj: Any, code: int = 200) -> Response:
    return Response(json.dumps(obj), status=code, content_type="application/json")


def _selector_terms(selector: str) -> list[tuple[str, str, set[str]]]:
    """Parses a label selector into (key, operator, values); raises ValueError when unsupported."""
    terms, depth, start = [], 0, 0
    parts = []
    for i, ch in enumerate(selector + ","):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(selector[start:i].strip())
            start = i + 1
    for part in filter(None, parts):
        if m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", part):
            op = "!=" if m[2] == "!=" else "="
            terms.append((m[1], op, {m[3]}))
        elif m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)", part):
            terms.append((m[1], m[2], {v.strip() for v in m[3].split(",")}))
        else:
            raise ValueError(f"unsupported label selector term {part!r}")
    return terms


def _matches(labels: dict[str, str], terms: list[tuple[str, str, set[str]]]) -> bool:
    for key, op, values in terms:
        value = labels.get(key)
        if op in ("=", "in") and value not in values:
            return False
        if op in ("!=", "notin") and value in values:
            return False
    return True


class K8sStandIn:
    """The stand-in API server (see the module docstring)."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: set[tuple[str, str]] = set()
        #: Custom objects by (plural, namespace, name).
        self.customs: dict[tuple[str, str, str], dict[str, Any]] = {}
        #: The custom resources whose CRD is installed.
        self.installed = set(CUSTOM_RESOURCES)
        #: The ClusterTrainingRuntimes: name -> {replicated job: its containers}.
        self.runtimes = {"kfnas-tensorflow": KFNAS_RUNTIME}
        self.allowed = set(ALL_PERMISSIONS)
        self.unexpected: list[str] = []
        #: Requests refused with 401 for a bearer token that is not the stand-in's.
        self.rejected: list[str] = []
        self._token = TOKEN
        #: Every request, as (method, path, query string).
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Condition()
        self._rv = 0
        self._events: list[tuple[int, str, dict[str, Any]]] = []
        self._closed = False
        self._routes = Map(
            [
                Rule("/apis/batch/v1/namespaces/<ns>/jobs", endpoint="jobs"),
                Rule("/apis/batch/v1/namespaces/<ns>/jobs/<name>", endpoint="job"),
                Rule("/api/v1/namespaces/<ns>/pods", endpoint="pods"),
                Rule("/api/v1/namespaces/<ns>/pods/<name>", endpoint="pod"),
                Rule("/api/v1/namespaces/<ns>/secrets/<name>", endpoint="secret"),
                Rule(
                    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                    endpoint="access_review",
                ),
                *(
                    rule
                    for plural, (group, version, _) in CUSTOM_RESOURCES.items()
                    for rule in (
                        Rule(
                            f"/apis/{group}/{version}/namespaces/<ns>/{plural}",
                            endpoint="customs",
                            defaults={"plural": plural},
                        ),
                        Rule(
                            f"/apis/{group}/{version}/namespaces/<ns>/{plural}/<name>",
                            endpoint="custom",
                            defaults={"plural": plural},
                        ),
                    )
                ),
            ]
        )
        self._server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    # --- lifecycle and clients ---------------------------------------------------------------

    def start(self) -> K8sStandIn:
        """Starts serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving (open watches end)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._server.shutdown()
        self._thread.join(timeout=5)

    def api_client(self) -> client.ApiClient:
        """A real ``kubernetes`` API client pointed at the stand-in, with its bearer token."""
        configuration = client.Configuration(host=self.url)
        configuration.api_key = {"authorization": f"Bearer {TOKEN}"}
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path, namespace: str = "kfnas") -> Path:
        """Writes a kubeconfig whose current context is the stand-in (JSON is valid YAML)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "runner", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "standin",
                    "context": {"cluster": "standin", "user": "runner", "namespace": namespace},
                }
            ],
            "current-context": "standin",
        }
        path.write_text(json.dumps(config))
        return path

    # --- test controls -----------------------------------------------------------------------

    def deny(self, verb: str, resource: str) -> None:
        """Takes a permission away (``resource`` like ``jobs``, ``pods/log``)."""
        self.allowed.discard((verb, resource))

    def add_secret(self, name: str, namespace: str = "kfnas") -> None:
        """Makes a secret exist."""
        self.secrets.add((namespace, name))

    def add_pod(
        self,
        name: str,
        namespace: str = "kfnas",
        owner_references: list[dict[str, Any]] | None = None,
        service_account: str = "pipeline-runner",
    ) -> dict[str, Any]:
        """Adds a running pod of its own (the controller's pod, with its owners)."""
        pod = self._new_pod(name, namespace, {}, {"containers": [{"name": "main", "image": "x"}]})
        pod["metadata"]["ownerReferences"] = owner_references or []
        pod["spec"]["serviceAccountName"] = service_account
        with self._lock:
            self.pods[(namespace, name)] = pod
        return pod

    def job(self, name: str, namespace: str = "kfnas") -> dict[str, Any]:
        """The stored Job (raises KeyError when there is none)."""
        return self.jobs[(namespace, name)]

    def job_pods(self, name: str, namespace: str = "kfnas") -> list[dict[str, Any]]:
        """The Job's pods, oldest first."""
        return [p for (ns, _), p in self.pods.items() if ns == namespace and self._owner(p) == name]

    def succeed(self, name: str, namespace: str = "kfnas") -> None:
        """The Job's running pod exits 0: the Job completes."""
        with self._lock:
            job, pod = self._running(name, namespace)
            self._terminate(pod, 0, "Completed", "Succeeded")
            job["status"].update(active=0, ready=0, succeeded=1, completionTime=_now())
            self._conditions(job, ("SuccessCriteriaMet", "", ""), ("Complete", "", ""))
            self._changed(job)

    def fail_exit(self, name: str, code: int, namespace: str = "kfnas") -> None:
        """The Job's running pod exits with ``code``; the Job's policy decides what follows."""
        with self._lock:
            job, pod = self._running(name, namespace)
            self._terminate(pod, code, "Error", "Failed")
            self._pod_failed(job, pod)

    def oom_kill(self, name: str, namespace: str = "kfnas") -> None:
        """The kernel kills the Job's running pod for memory (``OOMKilled``, exit 137)."""
        with self._lock:
            job, pod = self._running(name, namespace)
            self._terminate(pod, 137, "OOMKilled", "Failed")
            self._pod_failed(job, pod)

    def preempt(self, name: str, namespace: str = "kfnas") -> None:
        """The scheduler preempts the Job's running pod: condition DisruptionTarget, killed."""
        with self._lock:
            job, pod = self._running(name, namespace)
            pod["status"].setdefault("conditions", []).append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": "preempted to make room for a higher priority pod",
                    "lastTransitionTime": _now(),
                }
            )
            self._terminate(pod, 137, "Error", "Failed")
            self._pod_failed(job, pod)

    def exceed_deadline(self, name: str, namespace: str = "kfnas") -> None:
        """The Job runs past its ``activeDeadlineSeconds``: its pods end, the Job fails."""
        with self._lock:
            job, pod = self._running(name, namespace)
            self._terminate(pod, 143, "Error", "Failed")
            self._fail(job, "DeadlineExceeded", "Job was active longer than specified deadline")

    def admit(self, name: str, namespace: str = "kfnas") -> None:
        """Kueue admits a suspended Job: it is resumed and gets its pod."""
        with self._lock:
            job = self.jobs[(namespace, name)]
            job["spec"]["suspend"] = False
            job["status"]["conditions"] = [
                c for c in job["status"].get("conditions", []) if c["type"] != "Suspended"
            ]
            self._start_pod(job)
            self._changed(job)

    def delete_job(self, name: str, namespace: str = "kfnas") -> None:
        """Deletes the Job and its pods (as ``kubectl delete job`` does)."""
        with self._lock:
            self._delete(namespace, name)

    def revoke_token(self) -> None:
        """The API server stops accepting the clients' token: every request gets 401."""
        self._token = "revoked-" + TOKEN

    def uninstall(self, plural: str) -> None:
        """Removes a custom resource's CRD (``trainjobs``, ``tfjobs``) and its objects."""
        with self._lock:
            self.installed.discard(plural)
            for key in [k for k in self.customs if k[0] == plural]:
                del self.customs[key]

    def custom(self, plural: str, name: str, namespace: str = "kfnas") -> dict[str, Any]:
        """The stored custom object (raises KeyError when there is none)."""
        return self.customs[(plural, namespace, name)]

    def run_custom(self, plural: str, name: str, namespace: str = "kfnas") -> None:
        """Every node runs: the ``node`` Job is ready (TrainJob); ``Running`` (TFJob)."""
        with self._lock:
            obj = self.custom(plural, name, namespace)
            if plural == "trainjobs":
                for job in obj["status"].get("jobsStatus", []):
                    job.update(ready=1, active=1)
            else:
                message = f"TFJob {namespace}/{name} is running."
                self._condition(obj, "Running", "True", "TFJobRunning", message)

    def complete_custom(self, plural: str, name: str, namespace: str = "kfnas") -> None:
        """The object completes: ``Complete`` (TrainJob, the JobSet's), ``Succeeded`` (TFJob)."""
        with self._lock:
            obj = self.custom(plural, name, namespace)
            if plural == "trainjobs":
                for job in obj["status"].get("jobsStatus", []):
                    job.update(ready=0, active=0, succeeded=1)
                self._condition(
                    obj, "Complete", "True", "AllJobsCompleted", "jobset completed successfully"
                )
            else:
                self._condition(obj, "Running", "False", "TFJobRunning", "")
                message = f"TFJob {namespace}/{name} successfully completed."
                self._condition(obj, "Succeeded", "True", "TFJobSucceeded", message)

    def fail_custom(
        self, plural: str, name: str, reason: str, message: str, namespace: str = "kfnas"
    ) -> None:
        """The object fails with the ``Failed`` condition's ``reason`` and ``message``.

        The controllers' reasons: TrainJob ``FailedJobs``, ``ReachedMaxRestarts``,
        ``FailJobSetFailurePolicyAction`` (the JobSet's), ``DeadlineExceeded``; TFJob
        ``TFJobFailed`` (backoff limit, deadline, a failed replica).
        """
        with self._lock:
            obj = self.custom(plural, name, namespace)
            if plural == "trainjobs":
                for job in obj["status"].get("jobsStatus", []):
                    job.update(ready=0, active=0, failed=1)
            else:
                self._condition(obj, "Running", "False", "TFJobRunning", "")
            self._condition(obj, "Failed", "True", reason, message)

    def admit_custom(self, plural: str, name: str, namespace: str = "kfnas") -> None:
        """Kueue admits a suspended object: it is resumed (its nodes not running yet)."""
        with self._lock:
            obj = self.custom(plural, name, namespace)
            if plural == "trainjobs":
                obj["spec"]["suspend"] = False
                self._condition(obj, "Suspended", "False", "Resumed", "TrainJob is resumed")
                obj["status"]["jobsStatus"] = [self._node_job()]
            else:
                obj["spec"]["runPolicy"]["suspend"] = False
                message = f"TFJob {namespace}/{name} is resumed."
                self._condition(obj, "Suspended", "False", "TFJobResumed", message)

    def delete_custom(self, plural: str, name: str, namespace: str = "kfnas") -> None:
        """Deletes the object (as ``kubectl delete`` does)."""
        with self._lock:
            del self.customs[(plural, namespace, name)]

    # --- the Kubeflow controllers ------------------------------------------------------------

    @staticmethod
    def _node_job() -> dict[str, Any]:
        return {
            "name": "node",
            "ready": 0,
            "succeeded": 0,
            "failed": 0,
            "active": 1,
            "suspended": 0,
        }

    @staticmethod
    def _condition(obj: dict[str, Any], kind: str, status: str, reason: str, message: str) -> None:
        """Sets a condition as ``meta.SetStatusCondition`` does (one per type)."""
        now = _now()
        conditions = obj["status"].setdefault("conditions", [])
        condition = next((c for c in conditions if c["type"] == kind), None)
        if condition is None:
            condition = {"type": kind}
            conditions.append(condition)
        condition.update(status=status, reason=reason, message=message, lastTransitionTime=now)
        if obj["kind"] == "TFJob":
            condition["lastUpdateTime"] = now

    def _custom_invalid(self, plural: str, obj: dict[str, Any]) -> list[dict[str, str]]:
        """The CRD schema's validation of what the launcher sets (a subset of it): 422."""
        causes = []
        name = (obj.get("metadata") or {}).get("name", "")
        spec = obj.get("spec") or {}
        if plural == "trainjobs":
            if not _RFC1035.match(name):
                causes.append(("<nil>", "metadata.name must match RFC 1035 DNS label format"))
            if len(name) > 63:
                causes.append(("<nil>", "metadata.name must be no more than 63 characters"))
            if not (spec.get("runtimeRef") or {}).get("name"):
                causes.append(("spec.runtimeRef.name", "Required value"))
        elif "tfReplicaSpecs" not in spec:
            causes.append(("spec.tfReplicaSpecs", "Required value"))
        return [
            {
                "reason": "FieldValueRequired" if what == "Required value" else "FieldValueInvalid",
                "field": field,
                "message": f"{field}: {what}"
                if what == "Required value"
                else f'{field}: Invalid value: "object": {what}',
            }
            for field, what in causes
        ]

    def _custom_denied(self, plural: str, obj: dict[str, Any]) -> list[str]:
        """The operator's admission webhook (a subset of it): 403, as controller-runtime denies."""
        spec, errors = obj.get("spec") or {}, []
        if plural == "trainjobs":
            runtime_name = spec["runtimeRef"]["name"]
            runtime = self.runtimes.get(runtime_name)
            if runtime is None:
                return [
                    f"spec.RuntimeRef: Invalid value: {json.dumps(spec['runtimeRef'])}: "
                    f'clustertrainingruntimes.trainer.kubeflow.org "{runtime_name}" not found: '
                    "specified clusterTrainingRuntime must be created before the TrainJob is "
                    "created"
                ]
            for patch in spec.get("runtimePatches") or []:
                template = (patch.get("trainingRuntimeSpec") or {}).get("template") or {}
                for rjob in (template.get("spec") or {}).get("replicatedJobs") or []:
                    if rjob["name"] not in runtime:
                        errors.append(
                            "spec.runtimePatches: Invalid value: must not have replicated job "
                            "that doesn't exist in the runtime job template"
                        )
                        continue
                    pod = ((rjob.get("template") or {}).get("spec") or {}).get("template") or {}
                    for container in (pod.get("spec") or {}).get("containers") or []:
                        if container["name"] not in runtime[rjob["name"]]:
                            errors.append(
                                "spec.runtimePatches: Invalid value: must not have container "
                                f"that doesn't exist in the runtime job {rjob['name']}"
                            )
                        elif container.get("env") and container["name"] == "node":
                            errors.append(
                                "spec.runtimePatches: Invalid value: must not have envs for the "
                                "dataset-initializer, model-initializer, node containers"
                            )
            return errors
        name = obj["metadata"].get("name", "")
        if len(name) > 63 or not _RFC1035.match(name):
            errors.append(
                f'metadata.name: Invalid value: "{name}": should match: a DNS-1035 label must '
                "consist of lower case alphanumeric characters or '-', start with an alphabetic "
                "character, and end with an alphanumeric character"
            )
        for rtype, rspec in spec["tfReplicaSpecs"].items():
            path = f"spec.tfReplicaSpecs[{rtype}].template.spec.containers"
            containers = ((rspec.get("template") or {}).get("spec") or {}).get("containers") or []
            errors += [
                f"{path}[{i}].image: Required value: must be required"
                for i, c in enumerate(containers)
                if not c.get("image")
            ]
            if not any(c.get("name") == "tensorflow" for c in containers):
                errors.append(
                    f"{path}: Required value: must have at least one container with name tensorflow"
                )
        return errors

    # --- the Job controller ------------------------------------------------------------------

    def _new_pod(
        self, name: str, namespace: str, labels: dict[str, str], spec: dict[str, Any]
    ) -> dict[str, Any]:
        now = _now()
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "labels": labels,
                "creationTimestamp": now,
            },
            "spec": copy.deepcopy(spec),
            "status": {
                "phase": "Running",
                "startTime": now,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": now}},
                    }
                    for c in spec["containers"]
                ],
            },
        }

    def _start_pod(self, job: dict[str, Any]) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        suffix = "".join(random.choices(_POD_SUFFIX, k=5))
        pod = self._new_pod(
            f"{meta['name']}-{suffix}",
            meta["namespace"],
            dict(template["metadata"]["labels"]),
            template["spec"],
        )
        pod["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        self.pods[(meta["namespace"], pod["metadata"]["name"])] = pod
        job["status"].update(active=1, ready=1)
        job["status"].setdefault("startTime", _now())

    def _running(self, name: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
        job = self.jobs[(namespace, name)]
        running = [p for p in self.job_pods(name, namespace) if p["status"]["phase"] == "Running"]
        assert running, f"Job {name} has no running pod"
        return job, running[-1]

    @staticmethod
    def _terminate(pod: dict[str, Any], code: int, reason: str, phase: str) -> None:
        now = _now()
        pod["status"]["phase"] = phase
        for condition in pod["status"]["conditions"]:
            if condition["type"] == "Ready":
                condition["status"] = "False"
        for status in pod["status"]["containerStatuses"]:
            status["ready"] = False
            status["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": pod["status"]["startTime"],
                    "finishedAt": now,
                }
            }

    def _pod_failed(self, job: dict[str, Any], pod: dict[str, Any]) -> None:
        """What the Job controller does with a failed pod: the first matching rule's action."""
        rules = (job["spec"].get("podFailurePolicy") or {}).get("rules", [])
        action, index = "Count", None
        for i, rule in enumerate(rules):
            if self._rule_matches(rule, pod):
                action, index = rule["action"], i
                break
        job["status"].update(active=0, ready=0)
        if action == "FailJob":
            (code,) = [
                s["state"]["terminated"]["exitCode"] for s in pod["status"]["containerStatuses"]
            ]
            self._fail(
                job,
                "PodFailurePolicy",
                f"Container trial for pod {pod['metadata']['namespace']}/"
                f"{pod['metadata']['name']} failed with exit code {code} matching FailJob rule "
                f"at index {index}",
            )
            return
        if action != "Ignore":
            job["status"]["failed"] = job["status"].get("failed", 0) + 1
            if job["status"]["failed"] > job["spec"].get("backoffLimit", 6):
                self._fail(
                    job, "BackoffLimitExceeded", "Job has reached the specified backoff limit"
                )
                return
        self._start_pod(job)
        self._changed(job)

    @staticmethod
    def _rule_matches(rule: dict[str, Any], pod: dict[str, Any]) -> bool:
        if exit_codes := rule.get("onExitCodes"):
            codes = [
                s["state"]["terminated"]["exitCode"]
                for s in pod["status"]["containerStatuses"]
                if exit_codes.get("containerName") in (None, s["name"])
            ]
            wanted = set(exit_codes["values"])
            if exit_codes["operator"] == "In":
                return any(c in wanted for c in codes)
            return any(c not in wanted and c != 0 for c in codes)
        conditions = {(c["type"], c["status"]) for c in pod["status"].get("conditions", [])}
        return any(
            (p["type"], p.get("status", "True")) in conditions
            for p in rule.get("onPodConditions", [])
        )

    def _fail(self, job: dict[str, Any], reason: str, message: str) -> None:
        for pod in self.job_pods(job["metadata"]["name"], job["metadata"]["namespace"]):
            if pod["status"]["phase"] == "Running":
                self._terminate(pod, 143, "Error", "Failed")
        job["status"].update(active=0, ready=0)
        self._conditions(job, ("FailureTarget", reason, message), ("Failed", reason, message))
        self._changed(job)

    @staticmethod
    def _conditions(job: dict[str, Any], *conditions: tuple[str, str, str]) -> None:
        now = _now()
        job["status"].setdefault("conditions", []).extend(
            {
                "type": kind,
                "status": "True",
                "reason": reason or None,
                "message": message or None,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
            for kind, reason, message in conditions
        )

    def _changed(self, job: dict[str, Any], kind: str = "MODIFIED") -> None:
        self._rv += 1
        job["metadata"]["resourceVersion"] = str(self._rv)
        self._events.append((self._rv, kind, copy.deepcopy(job)))
        self._lock.notify_all()

    def _delete(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.jobs.pop((namespace, name), None)
        for key in [
            k for k, p in self.pods.items() if k[0] == namespace and self._owner(p) == name
        ]:
            del self.pods[key]
        if job is not None:
            self._changed(job, "DELETED")
        return job

    @staticmethod
    def _owner(pod: dict[str, Any]) -> str | None:
        owners = [
            o["name"] for o in pod["metadata"].get("ownerReferences", []) if o["kind"] == "Job"
        ]
        return owners[0] if owners else None

    # --- HTTP ----------------------------------------------------------------------------------

    @Request.application
    def _wsgi(self, request: Request) -> Response:
        self.requests.append((request.method, request.path, request.query_string.decode()))
        what = f"{request.method} {request.full_path}"
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            self.unexpected.append(f"{what} without the bearer token")
            return _status(401, "Unauthorized", "Unauthorized")
        if authorization != f"Bearer {self._token}":
            self.rejected.append(what)
            return _status(401, "Unauthorized", "Unauthorized")
        try:
            endpoint, args = self._routes.bind_to_environ(request.environ).match()
        except HTTPException:
            self.unexpected.append(what)
            return _status(404, "NotFound", f"the stand-in does not serve {what}")
        handler = getattr(self, f"_{endpoint}_{request.method.lower()}", None)
        if handler is None:
            self.unexpected.append(what)
            return _status(405, "MethodNotAllowed", f"the stand-in does not serve {what}")
        try:
            with self._lock:
                return handler(request, **args)
        except ValueError as e:
            self.unexpected.append(f"{what}: {e}")
            return _status(400, "BadRequest", str(e))

    def _forbidden(
        self, verb: str, resource: str, group: str, ns: str, name: str = ""
    ) -> Response | None:
        if (verb, resource) in self.allowed:
            return None
        plural = resource.split("/")[0]
        return _status(
            403,
            "Forbidden",
            f'{plural}{"." + group if group else ""} "{name}" is forbidden: User '
            f'"{SERVICE_ACCOUNT}" cannot {verb} resource "{resource}" in API group "{group}" in '
            f'the namespace "{ns}"',
            name=name,
            group=group,
            kind=plural,
        )

    def _jobs_post(self, request: Request, ns: str) -> Response:
        if denied := self._forbidden("create", "jobs", "batch", ns):
            return denied
        job = request.get_json()
        name = (job.get("metadata") or {}).get("name", "")
        if causes := self._invalid(job):
            return _status(
                422,
                "Invalid",
                f'Job.batch "{name}" is invalid: ' + "; ".join(c["message"] for c in causes),
                name=name,
                group="batch",
                kind="Job",
                causes=causes,
            )
        if (ns, name) in self.jobs:
            return _status(
                409,
                "AlreadyExists",
                f'jobs.batch "{name}" already exists',
                name=name,
                group="batch",
                kind="jobs",
            )
        meta = job["metadata"]
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        spec = job["spec"]
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("suspend", False)
        controller_labels = {
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": name,
            "controller-uid": meta["uid"],
            "job-name": name,
        }
        template_meta = spec["template"].setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **controller_labels}
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}}
        job["status"] = {}
        self.jobs[(ns, name)] = job
        self._changed(job, "ADDED")
        if spec["suspend"]:
            self._conditions(job, ("Suspended", "JobSuspended", "Job suspended"))
        else:
            self._start_pod(job)
        self._changed(job)
        return _json(job, 201)

    @staticmethod
    def _invalid(job: dict[str, Any]) -> list[dict[str, str]]:
        """The API server's validation of what the launcher sets (a subset of it)."""
        causes = []
        name = (job.get("metadata") or {}).get("name", "")
        if len(name) > 63 or not _DNS_LABEL.match(name):
            causes.append(
                {
                    "reason": "FieldValueInvalid",
                    "field": "metadata.name",
                    "message": f"metadata.name: Invalid value: {name!r}: must be a DNS-1123 "
                    "label of at most 63 characters",
                }
            )
        pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
        for i, container in enumerate(pod.get("containers") or [{}]):
            for key in ("name", "image"):
                if not container.get(key):
                    field = f"spec.template.spec.containers[{i}].{key}"
                    causes.append(
                        {
                            "reason": "FieldValueRequired",
                            "field": field,
                            "message": f"{field}: Required value",
                        }
                    )
        if job["spec"].get("podFailurePolicy") and pod.get("restartPolicy") != "Never":
            causes.append(
                {
                    "reason": "FieldValueNotSupported",
                    "field": "spec.template.spec.restartPolicy",
                    "message": "spec.template.spec.restartPolicy: Unsupported value: "
                    f'{pod.get("restartPolicy")!r}: supported values: "Never" (only '
                    '"Never" is supported when podFailurePolicy is specified)',
                }
            )
        return causes

    def _jobs_get(self, request: Request, ns: str) -> Response:
        verb = "watch" if request.args.get("watch", "").lower() in ("true", "1") else "list"
        if denied := self._forbidden(verb, "jobs", "batch", ns):
            return denied
        terms = _selector_terms(request.args.get("labelSelector", ""))
        if verb == "watch":
            return Response(
                self._watch(
                    ns,
                    terms,
                    request.args.get("resourceVersion", ""),
                    float(request.args.get("timeoutSeconds", 5)),
                ),
                content_type="application/json",
            )
        items = [
            j
            for (n, _), j in self.jobs.items()
            if n == ns and _matches(j["metadata"].get("labels") or {}, terms)
        ]
        return _json(
            {
                "kind": "JobList",
                "apiVersion": "batch/v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    def _watch(
        self, ns: str, terms: list[tuple[str, str, set[str]]], since: str, timeout: float
    ) -> Iterator[str]:
        with self._lock:
            if since in ("", "0"):
                pending = [("ADDED", j) for (n, _), j in self.jobs.items() if n == ns]
                seen = self._rv
            else:
                seen = int(since)
                pending = []
        deadline = time.monotonic() + min(timeout, 10)
        while True:
            for kind, job in pending:
                if _matches(job["metadata"].get("labels") or {}, terms):
                    yield json.dumps({"type": kind, "object": job}) + "\n"
            with self._lock:
                while not self._closed and self._rv == seen and time.monotonic() < deadline:
                    self._lock.wait(timeout=max(0.0, deadline - time.monotonic()))
                if self._closed or self._rv == seen:
                    return
                pending = [
                    (kind, job)
                    for rv, kind, job in self._events
                    if rv > seen and job["metadata"]["namespace"] == ns
                ]
                seen = self._rv

    def _job_get(self, request: Request, ns: str, name: str) -> Response:
        if denied := self._forbidden("get", "jobs", "batch", ns, name):
            return denied
        if (ns, name) not in self.jobs:
            return _status(
                404, "NotFound", f'jobs.batch "{name}" not found', name=name, kind="jobs"
            )
        return _json(self.jobs[(ns, name)])

    def _job_delete(self, request: Request, ns: str, name: str) -> Response:
        if denied := self._forbidden("delete", "jobs", "batch", ns, name):
            return denied
        job = self._delete(ns, name)
        if job is None:
            return _status(
                404, "NotFound", f'jobs.batch "{name}" not found', name=name, kind="jobs"
            )
        return _status(
            200, "", "", name=name, group="batch", kind="jobs", uid=job["metadata"]["uid"]
        )

    def _pods_get(self, request: Request, ns: str) -> Response:
        if denied := self._forbidden("list", "pods", "", ns):
            return denied
        terms = _selector_terms(request.args.get("labelSelector", ""))
        items = [
            p
            for (n, _), p in self.pods.items()
            if n == ns and _matches(p["metadata"].get("labels") or {}, terms)
        ]
        return _json(
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    def _pod_get(self, request: Request, ns: str, name: str) -> Response:
        if denied := self._forbidden("get", "pods", "", ns, name):
            return denied
        if (ns, name) not in self.pods:
            return _status(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        return _json(self.pods[(ns, name)])

    def _secret_get(self, request: Request, ns: str, name: str) -> Response:
        if denied := self._forbidden("get", "secrets", "", ns, name):
            return denied
        if (ns, name) not in self.secrets:
            return _status(
                404, "NotFound", f'secrets "{name}" not found', name=name, kind="secrets"
            )
        return _json(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": name, "namespace": ns},
                "data": {},
            }
        )

    def _custom_check(self, verb: str, plural: str, ns: str, name: str = "") -> Response | None:
        """RBAC first (the API server authorizes before it routes), then whether it is served."""
        if denied := self._forbidden(verb, plural, CUSTOM_RESOURCES[plural][0], ns, name):
            return denied
        if plural not in self.installed:
            return Response("404 page not found\n", status=404, content_type="text/plain")
        return None

    def _custom_missing(self, plural: str, name: str) -> Response:
        group = CUSTOM_RESOURCES[plural][0]
        return _status(
            404,
            "NotFound",
            f'{plural}.{group} "{name}" not found',
            name=name,
            group=group,
            kind=plural,
        )

    def _customs_post(self, request: Request, ns: str, plural: str) -> Response:
        if refused := self._custom_check("create", plural, ns):
            return refused
        group, version, kind = CUSTOM_RESOURCES[plural]
        obj = request.get_json()
        name = (obj.get("metadata") or {}).get("name", "")
        if causes := self._custom_invalid(plural, obj):
            return _status(
                422,
                "Invalid",
                f'{kind}.{group} "{name}" is invalid: ' + "; ".join(c["message"] for c in causes),
                name=name,
                group=group,
                kind=kind,
                causes=causes,
            )
        if errors := self._custom_denied(plural, obj):
            return _status(
                403,
                "Forbidden",
                f'admission webhook "{_WEBHOOKS[plural]}" denied the request: '
                + (errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"),
            )
        if (plural, ns, name) in self.customs:
            return _status(
                409,
                "AlreadyExists",
                f'{plural}.{group} "{name}" already exists',
                name=name,
                group=group,
                kind=plural,
            )
        if obj.get("apiVersion") != f"{group}/{version}" or obj.get("kind") != kind:
            raise ValueError(f"a {kind} must be {group}/{version}, got {obj.get('apiVersion')}")
        obj["metadata"].update(
            namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1
        )
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        obj["status"] = {}
        if plural == "trainjobs":
            obj["spec"].setdefault("suspend", False)
            obj["spec"].setdefault("managedBy", "trainer.kubeflow.org/trainjob-controller")
            if obj["spec"]["suspend"]:
                self._condition(obj, "Suspended", "True", "Suspended", "TrainJob is suspended")
            else:
                obj["status"]["jobsStatus"] = [self._node_job()]
        else:
            run_policy = obj["spec"].setdefault("runPolicy", {})
            run_policy.setdefault("suspend", False)
            self._condition(obj, "Created", "True", "TFJobCreated", f"TFJob {name} is created.")
            if run_policy["suspend"]:
                message = f"TFJob {name} is suspended."
                self._condition(obj, "Suspended", "True", "TFJobSuspended", message)
        self.customs[(plural, ns, name)] = obj
        return _json(obj, 201)

    def _customs_get(self, request: Request, ns: str, plural: str) -> Response:
        if refused := self._custom_check("list", plural, ns):
            return refused
        group, version, kind = CUSTOM_RESOURCES[plural]
        terms = _selector_terms(request.args.get("labelSelector", ""))
        items = [
            o
            for (p, n, _), o in self.customs.items()
            if (p, n) == (plural, ns) and _matches(o["metadata"].get("labels") or {}, terms)
        ]
        return _json(
            {
                "apiVersion": f"{group}/{version}",
                "kind": f"{kind}List",
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            }
        )

    def _custom_get(self, request: Request, ns: str, plural: str, name: str) -> Response:
        if refused := self._custom_check("get", plural, ns, name):
            return refused
        if (plural, ns, name) not in self.customs:
            return self._custom_missing(plural, name)
        return _json(self.customs[(plural, ns, name)])

    def _custom_delete(self, request: Request, ns: str, plural: str, name: str) -> Response:
        if refused := self._custom_check("delete", plural, ns, name):
            return refused
        obj = self.customs.pop((plural, ns, name), None)
        if obj is None:
            return self._custom_missing(plural, name)
        return _status(
            200,
            "",
            "",
            name=name,
            group=CUSTOM_RESOURCES[plural][0],
            kind=plural,
            uid=obj["metadata"]["uid"],
        )

    def _access_review_post(self, request: Request) -> Response:
        review = request.get_json()
        attributes = review["spec"]["resourceAttributes"]
        resource = attributes["resource"] + (
            f"/{attributes['subresource']}" if attributes.get("subresource") else ""
        )
        review["status"] = {"allowed": (attributes["verb"], resource) in self.allowed}
        return _json(review, 201)


@pytest.fixture(name="k8s")
def k8s_fixture() -> Iterator[K8sStandIn]:
    """A running stand-in; the test fails if the launcher made a request it does not serve."""
    standin = K8sStandIn().start()
    yield standin
    standin.stop()
    assert not standin.unexpected, f"unexpected requests: {standin.unexpected}"
