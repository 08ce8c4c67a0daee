"""What a multi-node trial looks like on the cluster: a TrainJob or a TFJob, as plain dicts.

A kind of job whose ``PodSettings`` name an ``engine`` runs each trial on ``settings.workers``
nodes (pods) as a Kubeflow custom object, created through ``CustomObjectsApi``
(``kfnas.launch.multinode``):

* ``trainer-v2``: a ``TrainJob`` of **Kubeflow Trainer v2.3.0** (``trainer.kubeflow.org/v1alpha1``,
  built on JobSet v0.12; schema confirmed in kubeflow/trainer@v2.3.0,
  ``pkg/apis/trainer/v1alpha1/trainjob_types.go``) on a ``ClusterTrainingRuntime`` that kfnas
  ships, ``pipelines/runtimes/kfnas-tensorflow.yaml``. Trainer v2 has no TensorFlow policy (its
  maintainers point to a PlainML runtime and ``TF_CONFIG`` built in the container, kubeflow/trainer
  #2699): the runtime has one replicated job ``node`` whose container ``node`` runs the trainer,
  with JobSet DNS hostnames, so node ``i`` of TrainJob ``<name>`` answers at
  ``<name>-node-0-<i>.<name>`` and gets ``JOB_COMPLETION_INDEX=i``; the worker builds
  ``TF_CONFIG`` from that pattern and ``KFNAS_JOB_NAME``, ``KFNAS_WORKERS``, ``KFNAS_TF_PORT``.
  The trainer's image, command, env, ``numNodes`` and ``resourcesPerNode`` go in
  ``spec.trainer``; volumes, mounts, placement, pull secrets, the container's security context and
  the pods' labels go in one ``spec.runtimePatches`` entry (manager ``kfnas.io/launcher``): the
  field that replaced ``podTemplateOverrides`` (v2.1) and ``podSpecOverrides`` (v2.0) in v2.2, and
  that also carries the labels the TrainJob's ``spec.labels`` used to. Deadline:
  ``spec.activeDeadlineSeconds`` (v2.2+). Retries: a TrainJob has no backoff limit; the runtime's
  JobSet ``failurePolicy`` restarts all nodes (``maxRestarts``) and fails at once when a node is
  killed for memory (exit 137). ``spec.managedBy`` is left to its default (MultiKueue sets it).
* ``training-operator-v1``: a ``TFJob`` of **Training Operator v1.9** (``kubeflow.org/v1``, frozen;
  schema confirmed in kubeflow/trainer@v1.9.4, ``pkg/apis/kubeflow.org/v1``): ``Worker`` replicas
  only, so worker 0 acts as chief; the operator injects ``TF_CONFIG`` (port ``tfjob-port``, 2222).
  ``restartPolicy: OnFailure``: the operator counts container restarts against
  ``runPolicy.backoffLimit`` only for ``OnFailure``/``Always``/``ExitCode``, and ``ExitCode``
  replaces the failed pod (its restart count starts again at 0), so a node killed for memory
  (exit 137, "retryable") would be retried forever; ``OnFailure`` restarts the container in place
  and stops after ``backoff_limit`` restarts, as the batch Job does. ``cleanPodPolicy: Running``
  stops the nodes still running once the TFJob ended and keeps the ended pods' logs until
  ``ttlSecondsAfterFinished`` (7 days, as the batch Job).

Both carry the batch Job's labels (``job_labels``, so ``poll`` lists an experiment's objects with
one request), the experiment URI annotation, owner references, and Kueue's queue label with
``suspend`` (``spec.suspend``; ``runPolicy.suspend``) when a queue is set. The pods get the same
labels. The object's name is the trial's job name, shortened with a hash where the pods' names
would pass 63 characters (``object_name``).

Every node runs ``python -m kfnas.stages.worker <uri> <study> <id>`` with ``KFNAS_CLUSTER`` (the
engine), ``KFNAS_WORKERS``, ``KFNAS_JOB_NAME`` (the object's name) and ``KFNAS_TF_PORT``. The chief
(node 0) writes the checkpoint and ``result.json``; the other nodes never write the trial's records.

To support another engine: add its name to ``k8s_manifest.ENGINES``, a manifest builder and its
pods' label selectors here, and an entry to ``kfnas.launch.multinode.ENGINE_TABLE``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from kubernetes import client

from kfnas.launch.base import TrialJob
from kfnas.launch.k8s_manifest import (
    ANNOTATION_EXPERIMENT_URI,
    DEFAULT_RUNTIME,
    ENGINE_TRAINER_V2,
    ENGINE_TRAINING_OPERATOR_V1,
    LABEL_QUEUE,
    TTL_AFTER_FINISHED_S,
    PodSettings,
    job_labels,
    pod_spec,
)

#: The Kubeflow Trainer release the TrainJob manifests target (``trainer.kubeflow.org/v1alpha1``).
TRAINER_RELEASE = "v2.3.0"
TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
TRAINJOB_KIND, TRAINJOB_PLURAL = "TrainJob", "trainjobs"
#: The Training Operator release the TFJob manifests target (``kubeflow.org/v1``, frozen at 1.9).
TRAINING_OPERATOR_RELEASE = "v1.9.4"
TFJOB_GROUP = "kubeflow.org"
TFJOB_VERSION = "v1"
TFJOB_KIND, TFJOB_PLURAL = "TFJob", "tfjobs"

#: The runtime's replicated job and its trainer container (the Trainer's ``constants.Node``).
NODE_JOB = "node"
NODE_CONTAINER = "node"
#: The TFJob container the operator requires, and the port it builds ``TF_CONFIG`` from.
TFJOB_CONTAINER = "tensorflow"
TFJOB_PORT_NAME = "tfjob-port"
TFJOB_RESTART_POLICY = "OnFailure"
TFJOB_CLEAN_POD_POLICY = "Running"
#: The port of TensorFlow's collective communication between nodes.
TF_PORT = 2222
#: Who owns kfnas's entry of a TrainJob's ``spec.runtimePatches``.
PATCH_MANAGER = "kfnas.io/launcher"
#: The trial's job name, where the object's name is a shortened one.
ANNOTATION_JOB_NAME = "kfnas.io/job-name"

#: The variables every node gets (the worker builds ``TF_CONFIG`` from them under Trainer v2).
ENV_CLUSTER = "KFNAS_CLUSTER"
ENV_WORKERS = "KFNAS_WORKERS"
ENV_JOB_NAME = "KFNAS_JOB_NAME"
ENV_TF_PORT = "KFNAS_TF_PORT"

#: The longest object name whose pods' names stay within 63 characters, for up to 1000 nodes:
#: a JobSet pod is ``<name>-node-0-<index>-<5 random>``; a TFJob pod and service
#: ``<name>-worker-<index>``.
NAME_LIMITS = {
    ENGINE_TRAINER_V2: 63 - len(f"-{NODE_JOB}-0-999-abcde"),
    ENGINE_TRAINING_OPERATOR_V1: 63 - len("-worker-999"),
}


def object_name(job_name: str, engine: str) -> str:
    """The custom object's name for the trial's job name: itself, or shortened with its hash.

    Deterministic, so a restarted controller finds the object again; it starts with ``kfnas-``
    (a letter, as RFC 1035 labels must) and ends with a hex digit.
    """
    limit = NAME_LIMITS[engine]
    if len(job_name) <= limit:
        return job_name
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    return f"{job_name[: limit - len(digest) - 1].rstrip('-')}-{digest}"


def node_env(engine: str, workers: int, name: str) -> dict[str, str]:
    """The variables every node gets: the engine, the node count, the object's name, the port."""
    return {
        ENV_CLUSTER: engine,
        ENV_WORKERS: str(workers),
        ENV_JOB_NAME: name,
        ENV_TF_PORT: str(TF_PORT),
    }


def trainjob_manifest(
    job: TrialJob,
    settings: PodSettings,
    *,
    image: str,
    run_id: str,
    owner_references: Sequence[client.V1OwnerReference] = (),
) -> dict[str, Any]:
    """The Kubeflow Trainer v2 ``TrainJob`` that runs ``job`` (see the module docstring).

    Args:
        job: The trial.
        settings: Its pod settings (``engine: trainer-v2``).
        image: The container image (it has kfnas installed).
        run_id: The pipeline run's id, as a label; empty: no label.
        owner_references: Owners of the TrainJob (the run's Argo Workflow).
    """
    name = object_name(job.name, ENGINE_TRAINER_V2)
    env = node_env(ENGINE_TRAINER_V2, settings.workers, name)
    pod = _plain(pod_spec(job, settings, image, container_name=NODE_CONTAINER, extra_env=env))
    (node,) = pod.pop("containers")
    labels = job_labels(job, run_id)
    trainer = {
        "image": node["image"],
        "command": node["command"],
        "env": node.get("env", []),
        "numNodes": settings.workers,
    }
    if node.get("resources"):
        trainer["resourcesPerNode"] = node["resources"]
    patch_container = {
        "name": NODE_CONTAINER,
        **{k: node[k] for k in ("volumeMounts", "securityContext") if k in node},
    }
    pod_fields = ("volumes", "nodeSelector", "tolerations", "imagePullSecrets")
    pod_patch = {k: pod[k] for k in pod_fields if k in pod}
    if len(patch_container) > 1:
        pod_patch["containers"] = [patch_container]
    annotations = _annotations(job, name)
    spec: dict[str, Any] = {
        "runtimeRef": {
            "apiGroup": TRAINER_GROUP,
            "kind": "ClusterTrainingRuntime",
            "name": settings.runtime or DEFAULT_RUNTIME,
        },
        "trainer": trainer,
        "runtimePatches": [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "metadata": {"labels": labels, "annotations": annotations},
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": NODE_JOB,
                                    "template": {
                                        "metadata": {"labels": labels},
                                        "spec": {
                                            "template": {
                                                "metadata": {
                                                    "labels": labels,
                                                    "annotations": annotations,
                                                },
                                                "spec": pod_patch,
                                            }
                                        },
                                    },
                                }
                            ]
                        },
                    }
                },
            }
        ],
    }
    if settings.queue:
        spec["suspend"] = True
    if settings.active_deadline_s:
        spec["activeDeadlineSeconds"] = settings.active_deadline_s
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": TRAINJOB_KIND,
        "metadata": _metadata(name, labels, annotations, settings, owner_references),
        "spec": spec,
    }


def tfjob_manifest(
    job: TrialJob,
    settings: PodSettings,
    *,
    image: str,
    run_id: str,
    owner_references: Sequence[client.V1OwnerReference] = (),
) -> dict[str, Any]:
    """The Training Operator v1 ``TFJob`` that runs ``job`` (see the module docstring).

    Args:
        job: The trial.
        settings: Its pod settings (``engine: training-operator-v1``).
        image: The container image (it has kfnas installed).
        run_id: The pipeline run's id, as a label; empty: no label.
        owner_references: Owners of the TFJob (the run's Argo Workflow).
    """
    name = object_name(job.name, ENGINE_TRAINING_OPERATOR_V1)
    env = node_env(ENGINE_TRAINING_OPERATOR_V1, settings.workers, name)
    port = client.V1ContainerPort(name=TFJOB_PORT_NAME, container_port=TF_PORT)
    # The pod's restartPolicy stays unset: the operator sets it from the replica's.
    pod = pod_spec(
        job,
        settings,
        image,
        container_name=TFJOB_CONTAINER,
        restart_policy=None,
        extra_env=env,
        ports=[port],
    )
    labels = job_labels(job, run_id)
    annotations = _annotations(job, name)
    run_policy: dict[str, Any] = {
        "cleanPodPolicy": TFJOB_CLEAN_POD_POLICY,
        "backoffLimit": settings.backoff_limit,
        "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
    }
    if settings.active_deadline_s:
        run_policy["activeDeadlineSeconds"] = settings.active_deadline_s
    if settings.queue:
        run_policy["suspend"] = True
    return {
        "apiVersion": f"{TFJOB_GROUP}/{TFJOB_VERSION}",
        "kind": TFJOB_KIND,
        "metadata": _metadata(name, labels, annotations, settings, owner_references),
        "spec": {
            "runPolicy": run_policy,
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": settings.workers,
                    "restartPolicy": TFJOB_RESTART_POLICY,
                    "template": {
                        "metadata": {"labels": labels, "annotations": annotations},
                        "spec": _plain(pod),
                    },
                }
            },
        },
    }


def trainjob_pods_selector(name: str) -> str:
    """The label selector of a TrainJob's pods: those of its JobSet (JobSet labels them)."""
    return f"jobset.sigs.k8s.io/jobset-name={name}"


def trainjob_node0_selector(name: str) -> str:
    """The label selector of a TrainJob's node 0 (the chief): the pod of completion index 0."""
    return f"{trainjob_pods_selector(name)},batch.kubernetes.io/job-completion-index=0"


def tfjob_pods_selector(name: str) -> str:
    """The label selector of a TFJob's pods (the Training Operator labels them)."""
    return f"training.kubeflow.org/job-name={name}"


def tfjob_node0_selector(name: str) -> str:
    """The label selector of a TFJob's worker 0 (the chief: the TFJob has no Chief replica)."""
    return (
        f"{tfjob_pods_selector(name)},training.kubeflow.org/replica-type=worker,"
        "training.kubeflow.org/replica-index=0"
    )


def _annotations(job: TrialJob, name: str) -> dict[str, str]:
    annotations = {ANNOTATION_EXPERIMENT_URI: job.experiment_uri}
    return annotations | ({ANNOTATION_JOB_NAME: job.name} if name != job.name else {})


def _metadata(
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    settings: PodSettings,
    owner_references: Sequence[client.V1OwnerReference],
) -> dict[str, Any]:
    # Kueue admits the object (its queue label), not its pods: the label stays off them.
    metadata: dict[str, Any] = {
        "name": name,
        "labels": labels | ({LABEL_QUEUE: settings.queue} if settings.queue else {}),
        "annotations": annotations,
    }
    if owner_references:
        metadata["ownerReferences"] = _plain(list(owner_references))
    return metadata


@functools.cache
def _serializer() -> client.ApiClient:
    return client.ApiClient()


def _plain(model: Any) -> Any:
    """A client model as the API's JSON (camelCase keys, unset fields left out)."""
    return _serializer().sanitize_for_serialization(model)
