"""How a trial trains on the devices its pod has: the distribution strategy and numeric precision.

``TrialRuntime`` is what the cluster profile asks for, handed to the trial's pod as environment
variables (``KFNAS_PRECISION``, ``KFNAS_ALL_REDUCE``; the profile's ``precision`` and
``all_reduce``). ``choose_distribution`` turns it into a ``Distribution`` from what the process
sees:

* several processes (``TF_CONFIG``, ``kfnas.launch.tf_config``): ``multi_worker_mirrored`` over
  every GPU of every node (its cross-node all-reduce: ring over gRPC, or NCCL);
* else several GPUs: ``mirrored`` over all of them, all-reduced by ``hierarchical_copy`` (the
  default: Google's NAS trainer uses it, NCCL hung for them) or ``nccl``;
* else several logical CPU devices (configured before TensorFlow starts, as the tests do):
  ``mirrored`` over them;
* else ``one_device``: TensorFlow's default strategy, training exactly as a single device does.

The global batch size keeps its meaning: each replica gets ``global / replicas`` examples (the
official input readers do the split through the strategy's input context), and the official
tasks divide each replica's loss by the number of replicas, so the summed gradients are those of
the global batch. ``batch_problems`` refuses a global batch that does not divide.

Precision follows the library: ``float16`` and ``bfloat16`` set Keras's mixed policy
(``official.modeling.performance.set_mixed_precision_policy``) while the trial's model is built
and trained, and ``float16`` adds dynamic loss scaling (``runtime_config``, which
``base_task.create_optimizer`` reads). ``float16`` on a process without a GPU runs (slowly) with a
warning in the trial's record; the cluster profile refuses it for a step without accelerators.

To add a strategy: extend ``choose_distribution``; to add an all-reduce algorithm: add it to
``ALL_REDUCE`` (its mirrored and multi-worker names) and to
``kfnas.launch.tf_config.ALL_REDUCE_ALGORITHMS``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import tensorflow as tf

from kfnas.launch.tf_config import (
    ALL_REDUCE_ALGORITHMS,
    ENV_ALL_REDUCE,
    ENV_PRECISION,
    PRECISIONS,
    ClusterRole,
    cluster_role,
)

#: All-reduce algorithms: the name in a profile -> (MirroredStrategy's, across nodes).
ALL_REDUCE = {"hierarchical_copy": ("hierarchical_copy", "ring"), "nccl": ("nccl", "nccl")}
DEFAULT_ALL_REDUCE = ALL_REDUCE_ALGORITHMS[0]
assert set(ALL_REDUCE) == set(ALL_REDUCE_ALGORITHMS)


@dataclasses.dataclass(frozen=True)
class TrialRuntime:
    """What the trial's pod asks for: precision and all-reduce algorithm."""

    precision: str = "float32"
    all_reduce: str = DEFAULT_ALL_REDUCE

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrialRuntime:
        """Reads ``KFNAS_PRECISION`` and ``KFNAS_ALL_REDUCE`` (unset: the defaults)."""
        env = os.environ if env is None else env
        return cls(
            precision=env.get(ENV_PRECISION) or "float32",
            all_reduce=env.get(ENV_ALL_REDUCE) or DEFAULT_ALL_REDUCE,
        )

    def problems(self) -> list[str]:
        """What is wrong, naming the variable and the accepted values."""
        out = []
        if self.precision not in PRECISIONS:
            out.append(
                f"{ENV_PRECISION}={self.precision!r} is not a precision: {', '.join(PRECISIONS)} "
                "(the cluster profile's precision)"
            )
        if self.all_reduce not in ALL_REDUCE:
            out.append(
                f"{ENV_ALL_REDUCE}={self.all_reduce!r} is not an all-reduce algorithm: "
                f"{', '.join(ALL_REDUCE)} (the cluster profile's all_reduce)"
            )
        return out


@dataclasses.dataclass
class Distribution:
    """The strategy a trial trains under, and how it was chosen (recorded with the result).

    Attributes:
        strategy: The ``tf.distribute`` strategy (the default one for ``one_device``).
        kind: ``one_device``, ``mirrored`` or ``multi_worker_mirrored``.
        replicas: Replicas in sync (devices, over all workers).
        workers: Processes training the trial.
        chief: Whether this process writes the trial's records.
        precision: ``float32``, ``float16`` or ``bfloat16``.
        all_reduce: The all-reduce algorithm (none for one device).
        devices: The devices of this process's replicas.
        warnings: What the trial's record should say about the choice (float16 without a GPU).
    """

    strategy: Any
    kind: str
    replicas: int
    workers: int = 1
    chief: bool = True
    precision: str = "float32"
    all_reduce: str = ""
    devices: tuple[str, ...] = ()
    warnings: list[str] = dataclasses.field(default_factory=list)

    def record(self) -> dict[str, str]:
        """What the trial's result records about how it trained (``TrialResult.runtime``)."""
        out = {
            "strategy": self.kind,
            "replicas": str(self.replicas),
            "workers": str(self.workers),
            "precision": self.precision,
            "devices": ",".join(self.devices),
        }
        if self.all_reduce:
            out["all_reduce"] = self.all_reduce
        if self.warnings:
            out["warnings"] = "; ".join(self.warnings)
        return out

    def runtime_config(self) -> Any:
        """The ``RuntimeConfig`` ``base_task.create_optimizer`` reads (loss scaling for float16)."""
        from official.core.config_definitions import RuntimeConfig

        if self.precision == "float32":
            return None
        return RuntimeConfig(
            mixed_precision_dtype=self.precision,
            loss_scale="dynamic" if self.precision == "float16" else None,
        )

    @contextlib.contextmanager
    def scope(self, *, distributed: bool = True) -> Iterator[None]:
        """The strategy's scope under the precision's Keras policy (float32 again on exit).

        Args:
            distributed: False: the policy alone, for a model that lives outside the strategy
                (the copy a multi-replica trial is measured on, which runs no collectives).
        """
        from official.modeling import performance

        performance.set_mixed_precision_policy(tf.as_dtype(self.precision))
        try:
            with self.strategy.scope() if distributed else contextlib.nullcontext():
                yield
        finally:
            performance.set_mixed_precision_policy(tf.float32)


def choose_distribution(
    runtime: TrialRuntime | None = None, role: ClusterRole | None = None
) -> Distribution:
    """The distribution for this process (see the module docstring).

    Args:
        runtime: Precision and all-reduce; ``None``: from the environment.
        role: This process's place in a multi-node trial; ``None``: from ``TF_CONFIG``.

    Raises:
        ValueError: The runtime is not valid (the message names the variable).
        kfnas.launch.tf_config.ClusterConfigError: ``TF_CONFIG`` is not valid.
    """
    runtime = runtime or TrialRuntime.from_env()
    if problems := runtime.problems():
        raise ValueError("; ".join(problems))
    role = role or cluster_role()
    mirrored, across = ALL_REDUCE[runtime.all_reduce]
    # The multi-worker strategy configures collectives, which must come before any other op.
    multi = _multi_worker(across) if role is not None and role.workers > 1 else None
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    common = {"precision": runtime.precision, "devices": tuple(gpus)}
    if multi is not None:
        strategy = multi
        replicas = int(strategy.num_replicas_in_sync)
        dist = Distribution(
            strategy,
            "multi_worker_mirrored",
            replicas,
            role.workers,  # type: ignore[union-attr]
            role.chief,  # type: ignore[union-attr]
            all_reduce=f"{runtime.all_reduce} (across nodes: {across})",
            **common,
        )
    elif len(gpus) > 1:
        from official.common import distribute_utils

        strategy = distribute_utils.get_distribution_strategy(
            "mirrored", num_gpus=len(gpus), all_reduce_alg=mirrored
        )
        dist = Distribution(strategy, "mirrored", len(gpus), all_reduce=mirrored, **common)
    else:
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        if not gpus and len(cpus) > 1:
            strategy = tf.distribute.MirroredStrategy(cpus)
            common["devices"] = tuple(cpus)
            dist = Distribution(
                strategy, "mirrored", len(cpus), all_reduce="reduce_to_one", **common
            )
        else:
            common["devices"] = tuple(gpus or cpus[:1])
            dist = Distribution(tf.distribute.get_strategy(), "one_device", 1, **common)
    if runtime.precision == "float16" and not gpus:
        dist.warnings.append(
            "float16 without a GPU: it runs, slowly and with loss scaling; use float32 (or "
            "bfloat16) on CPUs"
        )
    return dist


def _multi_worker(across: str) -> Any:
    """``MultiWorkerMirroredStrategy`` with the cross-node algorithm (created before any op)."""
    from official.common import distribute_utils

    return distribute_utils.get_distribution_strategy(
        "multi_worker_mirrored", all_reduce_alg=across
    )


def batch_problems(task_config: Any, replicas: int) -> list[str]:
    """Global batch sizes of ``task_config``'s train and validation data that do not divide.

    Only the train batch is split across replicas (evaluation runs on one replica per process),
    so only it must divide.
    """
    batch = int(getattr(task_config.train_data, "global_batch_size", 0) or 0)
    if replicas <= 1 or batch % replicas == 0:
        return []
    lower, upper = (batch // replicas) * replicas, -(-batch // replicas) * replicas
    return [
        f"the global batch size {batch} does not divide across {replicas} replicas: set "
        f"budget.batch_size (or the study's batch size) to a multiple of {replicas}, e.g. "
        f"{lower or upper} or {upper}"
    ]
