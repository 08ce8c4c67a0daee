"""The trial pods of the search controller: a cluster profile's sections as a launch config.

The search controller step runs each trial as a Kubernetes Job (``kfnas.launch.kubernetes``), and
once it has trained, measures it with another Job (kind ``latency``: ``python -m
kfnas.stages.measure_worker``) on the latency target device. What those Jobs get on the cluster
comes from the cluster profile's ``trial``, ``training`` and ``latency`` sections (the last with
the device and threads as ``KFNAS_LATENCY_DEVICE`` and ``KFNAS_LATENCY_THREADS``, as the
pipeline's own measurement steps get them; a profile without that section measures on its
``light`` section), compiled here into the JSON-ready launch config the step receives:

* no profile: ``{"kind": "local"}`` (trials run as subprocesses of the controller);
* a profile: ``{"kind": "kubernetes", "namespace": "", "image": ..., "owner_from_pod": true,
  "settings": {"trial": <PodSettings>, "training": <PodSettings>, "latency": <PodSettings>}}``;
  the namespace is the controller pod's own, and every Job is owned by the run's Argo Workflow.

A section that cannot form a valid Job (an accelerator type that is not an extended resource, a
negative quantity, a limit below its request) raises ``ProfileError`` at compile time, naming the
profile's key. To carry another profile setting to the trial pods: add it to ``PodSettings``
(``kfnas.launch.k8s_manifest``), fill it in ``pod_settings`` and name its key in ``_KEYS``.
"""

from __future__ import annotations

from typing import Any

from kfnas.launch.base import JOB_KINDS
from kfnas.launch.k8s_manifest import PodSettings, PvcMount, SecretEnv, SecretVolume, Toleration
from kfnas.pipelines.profiles import ClusterProfile, ProfileError, StepProfile

#: How the profile names each ``PodSettings`` field that it names differently.
_KEYS = {
    "accelerator_type": "accelerator.type",
    "accelerator_count": "accelerator.count",
    "cpu_request": "resources.cpu_request",
    "cpu_limit": "resources.cpu_limit",
    "memory_request": "resources.memory_request",
    "memory_limit": "resources.memory_limit",
    "pvcs": "volumes.pvcs",
    "shm_size": "volumes.shm_size",
    "secret_env": "secrets.as_env",
    "secret_volumes": "secrets.as_volume",
    "backoff_limit": "retries.num_retries",
    "active_deadline_s": "timeout_s",
    "run_as_user": "security_context.run_as_user",
    "run_as_group": "security_context.run_as_group",
    "run_as_non_root": "security_context.run_as_non_root",
}


def pod_settings(step: StepProfile) -> PodSettings:
    """The pod settings of one profile section (its image aside).

    Its environment is the section's ``env`` and then its ``runtime_env()``: precision and
    all-reduce for a section that trains, the latency device and threads for ``latency``.
    """
    accelerator, security = step.accelerator, step.security_context
    return PodSettings(
        accelerator_type=accelerator.type if accelerator else "",
        accelerator_count=accelerator.count if accelerator else 0,
        cpu_request=step.resources.cpu_request,
        cpu_limit=step.resources.cpu_limit,
        memory_request=step.resources.memory_request,
        memory_limit=step.resources.memory_limit,
        node_selector=dict(step.node_selector),
        tolerations=[
            Toleration(t.key, t.operator, t.value, t.effect, t.toleration_seconds)
            for t in step.tolerations
        ],
        pvcs=[PvcMount(p.claim, p.mount_path, p.sub_path) for p in step.volumes.pvcs],
        shm_size=step.volumes.shm_size,
        secret_env=[SecretEnv(s.secret, dict(s.keys), s.optional) for s in step.secrets.as_env],
        secret_volumes=[
            SecretVolume(v.secret, v.mount_path, v.optional) for v in step.secrets.as_volume
        ],
        env={**step.env, **step.runtime_env()},
        image_pull_secrets=list(step.image_pull_secrets),
        backoff_limit=step.retries.num_retries if step.retries else 0,
        active_deadline_s=step.timeout_s,
        run_as_user=security.run_as_user if security else None,
        run_as_group=security.run_as_group if security else None,
        run_as_non_root=security.run_as_non_root if security else None,
        queue=step.queue,
        workers=step.workers,
        engine=step.engine,
        runtime=step.runtime,
    )


def launch_config(profile: ClusterProfile | None, image: str) -> dict[str, Any]:
    """The search controller's launch config (see the module docstring).

    Args:
        profile: The cluster profile; ``None``: trials run locally.
        image: The trials' image (it has kfnas installed).

    Raises:
        ProfileError: A section cannot form a valid Job (every problem, with its key).
    """
    if profile is None:
        return {"kind": "local"}
    settings = {kind: pod_settings(profile.step(kind)) for kind in JOB_KINDS}
    problems = [p for kind, s in settings.items() for p in s.problems(f"steps.{kind}", _KEYS)]
    if problems:
        raise ProfileError(
            f"cluster profile {profile.name!r} cannot run trial Jobs:\n  - "
            + "\n  - ".join(problems)
        )
    return {
        "kind": "kubernetes",
        "namespace": "",
        "image": image,
        "owner_from_pod": True,
        "settings": {kind: s.to_dict() for kind, s in settings.items()},
    }
