"""Launchers: how the search controller runs trial jobs (local subprocesses, Kubernetes Jobs).

``launcher_from_config({"kind": "local", ...})`` builds the launcher a launch config names (the
controller adds the ``run_id`` of its run to every config); the
pipeline compiles one config into the search step (``kfnas.pipelines.trial_pods``): ``local``
without a cluster profile, ``kubernetes`` with one. This package never imports TensorFlow or kfp;
the ``kubernetes`` client is imported only by the Kubernetes launcher.

To add a launcher: subclass ``kfnas.launch.base.Launcher`` and add one line to ``_BUILTINS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfnas.launch.base import (
    JOB_KINDS,
    WORKER_MODULE,
    JobState,
    JobStatus,
    Launcher,
    LaunchError,
    TrialJob,
    job_name,
)
from kfnas.registry import Registry, RegistryError

_BUILTINS = {
    "local": "kfnas.launch.local:LocalLauncher",
    "kubernetes": "kfnas.launch.kubernetes:KubernetesLauncher",
}

#: Launcher classes by the ``kind`` of a launch config.
LAUNCHERS: Registry[type[Launcher]] = Registry("launcher", _BUILTINS)


def launcher_from_config(config: Mapping[str, Any]) -> Launcher:
    """The launcher a launch config names by its ``kind``, built from the rest of the config.

    Raises:
        LaunchError: No ``kind``, an unknown one (the message lists the known), or a bad config.
    """
    options = dict(config)
    kind = options.pop("kind", "")
    try:
        cls = LAUNCHERS.get(kind)
    except RegistryError as e:
        raise LaunchError(f"launch config: {e}") from e
    return cls.from_config(options)


__all__ = [
    "JOB_KINDS",
    "LAUNCHERS",
    "WORKER_MODULE",
    "JobState",
    "JobStatus",
    "LaunchError",
    "Launcher",
    "TrialJob",
    "job_name",
    "launcher_from_config",
]
