"""Which process of a multi-node trial this is: ``TF_CONFIG``, read strictly or built from the job.

A trial trained on several nodes runs the same worker (``python -m kfnas.stages.worker``) on
each node; TensorFlow's ``MultiWorkerMirroredStrategy`` finds its peers in ``TF_CONFIG``:
``{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}``.

* Training Operator v1 (``TFJob``) injects ``TF_CONFIG`` itself.
* Kubeflow Trainer v2 has no TensorFlow policy: the kfnas runtime
  (``pipelines/runtimes/kfnas-tensorflow.yaml``) runs the worker with ``KFNAS_CLUSTER=trainer-v2``,
  ``KFNAS_JOB_NAME``, ``KFNAS_WORKERS`` and ``KFNAS_TF_PORT``, and JobSet gives each node its index
  in ``JOB_COMPLETION_INDEX`` and a stable host name (``TRAINER_V2_HOST``); ``prepare_tf_config``
  builds ``TF_CONFIG`` from them before TensorFlow starts.

``cluster_role`` then says which task this process is and whether it is the chief (the one
process that writes the trial's records: ``chief`` if the cluster has one, else worker 0). A
``TF_CONFIG`` that is not JSON, has no ``cluster``, names a task type kfnas does not run
(parameter servers, evaluators) or names this process nowhere in its cluster is refused with
``ClusterConfigError`` before any training. This module never imports TensorFlow.

The pod also tells the trial how to train (``KFNAS_PRECISION``, ``KFNAS_ALL_REDUCE``, from the
cluster profile's ``precision`` and ``all_reduce``); their accepted values live here, where the
profile checks them without TensorFlow (``kfnas.training.distribution`` applies them).

To support another engine that does not inject ``TF_CONFIG``: add a builder to ``_BUILDERS``
keyed by its ``KFNAS_CLUSTER`` value.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, MutableMapping

TF_CONFIG = "TF_CONFIG"
#: The engine that started this node (set by the kfnas manifests).
ENV_CLUSTER = "KFNAS_CLUSTER"
ENV_WORKERS = "KFNAS_WORKERS"
ENV_JOB_NAME = "KFNAS_JOB_NAME"
ENV_PORT = "KFNAS_TF_PORT"
#: The node's index, which an indexed Job (JobSet's, so Trainer v2's) gives each pod.
ENV_INDEX = "JOB_COMPLETION_INDEX"
DEFAULT_PORT = 2222
#: A Trainer v2 node's host name with the kfnas runtime: JobSet's
#: ``<jobset>-<replicated job>-<job index>-<pod index>.<subdomain>``; the JobSet and its subdomain
#: are named after the TrainJob, the replicated job is ``node`` and there is one job.
TRAINER_V2_HOST = "{job}-node-0-{index}.{job}"

ENV_PRECISION = "KFNAS_PRECISION"
ENV_ALL_REDUCE = "KFNAS_ALL_REDUCE"
#: Numeric precisions a trial trains in (Keras policy: float32, mixed_float16, mixed_bfloat16).
PRECISIONS = ("float32", "float16", "bfloat16")
#: All-reduce algorithms a profile may name: ``hierarchical_copy`` (the default; NCCL hung for
#: Google's NAS trainer) or ``nccl``.
ALL_REDUCE_ALGORITHMS = ("hierarchical_copy", "nccl")

#: The task types kfnas trains with (no parameter servers, no evaluator).
_TASK_TYPES = ("chief", "worker")


class ClusterConfigError(ValueError):
    """``TF_CONFIG`` (or what builds it) is wrong; the message says what and how to fix it."""


@dataclasses.dataclass(frozen=True)
class ClusterRole:
    """This process's place in a multi-node trial.

    Attributes:
        task_type: ``chief`` or ``worker``.
        index: Its index among the tasks of that type.
        workers: How many processes train the trial (chief and workers).
        chief: Whether this process writes the trial's records (the chief; without one, worker 0).
    """

    task_type: str
    index: int
    workers: int
    chief: bool

    @property
    def name(self) -> str:
        """``worker 1``, ``chief 0``: for logs and messages."""
        return f"{self.task_type} {self.index}"


def cluster_role(env: Mapping[str, str] | None = None) -> ClusterRole | None:
    """This process's role from ``TF_CONFIG``; ``None`` when there is none (one process).

    Raises:
        ClusterConfigError: ``TF_CONFIG`` is not valid or names this process nowhere.
    """
    text = (os.environ if env is None else env).get(TF_CONFIG, "").strip()
    if not text:
        return None
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ClusterConfigError(f"{TF_CONFIG} is not JSON ({e}): {text[:200]!r}") from e
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise ClusterConfigError(
            f"{TF_CONFIG} has no cluster: it must look like "
            '{"cluster": {"worker": ["host-0:2222", "host-1:2222"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    other = sorted(set(cluster) - set(_TASK_TYPES))
    if other:
        raise ClusterConfigError(
            f"{TF_CONFIG} names task types {', '.join(other)}: kfnas trains with "
            "MultiWorkerMirroredStrategy, whose cluster holds only chief and worker tasks "
            "(configure the job with workers only)"
        )
    for kind, hosts in cluster.items():
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise ClusterConfigError(f"{TF_CONFIG} cluster.{kind} must be a list of host:port")
    task = config.get("task") or {}
    kind, index = task.get("type"), task.get("index")
    hosts = cluster.get(kind) if isinstance(kind, str) else None
    if hosts is None or not isinstance(index, int) or not 0 <= index < len(hosts):
        tasks = ", ".join(f"{k} 0..{len(v) - 1}" for k, v in cluster.items())
        raise ClusterConfigError(
            f"{TF_CONFIG} names this process nowhere: its task is {task or 'missing'} but the "
            f"cluster holds {tasks}; set task.type and task.index to one of them"
        )
    workers = sum(len(v) for v in cluster.values())
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    return ClusterRole(kind, index, workers, chief)


def trainer_v2_tf_config(env: Mapping[str, str]) -> dict[str, object]:
    """``TF_CONFIG`` of a Trainer v2 node started by the kfnas runtime (see module docstring).

    Raises:
        ClusterConfigError: A variable is missing or not a number, or the index is out of range.
    """
    missing = [name for name in (ENV_JOB_NAME, ENV_WORKERS, ENV_INDEX) if not env.get(name)]
    if missing:
        raise ClusterConfigError(
            f"{ENV_CLUSTER}=trainer-v2 but {', '.join(missing)} is not set: run the trial on the "
            "kfnas runtime (pipelines/runtimes/kfnas-tensorflow.yaml), whose TrainJobs the kfnas "
            "launcher creates"
        )
    try:
        workers, index = int(env[ENV_WORKERS]), int(env[ENV_INDEX])
        port = int(env.get(ENV_PORT) or DEFAULT_PORT)
    except ValueError as e:
        raise ClusterConfigError(
            f"{ENV_WORKERS}, {ENV_INDEX} and {ENV_PORT} must be whole numbers: {e}"
        ) from e
    if not 0 <= index < workers:
        raise ClusterConfigError(
            f"{ENV_INDEX}={index} is not a node of this {workers}-node trial ({ENV_WORKERS})"
        )
    job = env[ENV_JOB_NAME]
    hosts = [f"{TRAINER_V2_HOST.format(job=job, index=i)}:{port}" for i in range(workers)]
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}


_BUILDERS: dict[str, Callable[[Mapping[str, str]], dict[str, object]]] = {
    "trainer-v2": trainer_v2_tf_config,
}


def prepare_tf_config(env: MutableMapping[str, str] | None = None) -> ClusterRole | None:
    """Builds ``TF_CONFIG`` when the engine does not inject it, then returns this process's role.

    Call it first thing in a trial process, before TensorFlow initialises (the multi-worker
    strategy reads ``TF_CONFIG`` when it is created).

    Raises:
        ClusterConfigError: See ``cluster_role`` and ``trainer_v2_tf_config``.
    """
    env = os.environ if env is None else env
    builder = _BUILDERS.get(env.get(ENV_CLUSTER, ""))
    if builder is not None and not env.get(TF_CONFIG):
        env[TF_CONFIG] = json.dumps(builder(env))
    return cluster_role(env)
