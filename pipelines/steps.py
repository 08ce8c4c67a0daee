"""How every pipeline configures its steps: by kind of step, from a cluster profile.

``Steps(profile)`` sets each task's display name, turns KFP caching off (stages already skip
finished work, and a cache hit would skip writes to a fresh store) and applies the profile's
settings for the step's kind: ``trial`` for a proxy trial, ``training`` for a full training,
``export`` for the exports (``export_model``, ``publish_if_not_worse``: they load the largest
model of the run), ``latency`` for the measurement steps (``measure_trials``: on the latency
target device, with its ``KFNAS_LATENCY_DEVICE`` and ``KFNAS_LATENCY_THREADS``), ``light`` for
everything else (init, propose, select, report), and ``light`` without its timeout for a search
controller (it runs as long as its study: hours to days; its trials get the ``trial`` or
``training`` settings, their measurements the ``latency`` ones, as Kubernetes Jobs), and a full
training (``full_training``) is ``run_trial`` with the ``training`` settings, or, when they span
several nodes, a light ``launch_trial`` step that starts the multi-node job. Without a profile a
step carries no platform settings (what ``kfp.local`` runs). A sub-pipeline (``group``) only gets
a display name: its own steps are configured inside it.

To add a kind of step: add its method here and its settings to the profiles
(``pipelines/profiles.py``).
"""

# No ``from __future__ import annotations``: kept like the pipeline modules that use it.
import dataclasses
import json
from typing import Any

from kfp import dsl
from kfp.dsl import PipelineTask

from kfnas.pipelines.profiles import ClusterProfile, apply_step_profile


@dataclasses.dataclass(frozen=True)
class Steps:
    """Configures tasks by kind of step: display name, caching off, the profile's settings.

    Attributes:
        profile: The cluster profile; ``None`` for no platform settings (local runs).
    """

    profile: ClusterProfile | None

    def _configure(self, kind: str, task: PipelineTask, name: str, **changes: Any) -> PipelineTask:
        task.set_display_name(name).set_caching_options(enable_caching=False)
        if self.profile is not None:
            apply_step_profile(task, dataclasses.replace(self.profile.step(kind), **changes))
        return task

    def group(self, task: PipelineTask, name: str) -> PipelineTask:
        """A sub-pipeline: a display name; its steps are configured inside it."""
        return task.set_display_name(name)

    def light(self, task: PipelineTask, name: str) -> PipelineTask:
        """A short CPU step: init, propose, select, report."""
        return self._configure("light", task, name)

    def export(self, task: PipelineTask, name: str) -> PipelineTask:
        """An export of a trained model (``export_model``, ``publish_if_not_worse``)."""
        return self._configure("export", task, name)

    def controller(self, task: PipelineTask, name: str) -> PipelineTask:
        """A search controller: a light step without the light steps' timeout."""
        return self._configure("light", task, name, timeout_s=0)

    def launcher(self, task: PipelineTask, name: str) -> PipelineTask:
        """A step that launches a multi-node full training and follows it: light, no timeout."""
        return self._configure("light", task, name, timeout_s=0)

    def full_training(self, name: str, **trial: Any) -> PipelineTask:
        """A full training of one trial (``experiment_uri``, ``study``, ``trial_id``).

        ``run_trial`` with the ``training`` settings; with a profile whose full trainings span
        several nodes, ``launch_trial`` (a light step) with the profile's launch config instead.
        """
        from kfnas.components import launch_trial, run_trial

        if self.profile is None or not self.profile.multi_node():
            return self.training(run_trial(**trial), name)
        from kfnas.components._image import IMAGE
        from kfnas.pipelines.trial_pods import launch_config

        config = json.dumps(launch_config(self.profile, IMAGE), sort_keys=True)
        task = launch_trial(**trial, launch_config=config, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        return self.launcher(task, f"{name} ({self.profile.steps.training.workers} nodes)")

    def latency(self, task: PipelineTask, name: str) -> PipelineTask:
        """A measurement of trained trials (``measure_trials``) on the latency target device."""
        return self._configure("latency", task, name)

    def trial(self, task: PipelineTask, name: str) -> PipelineTask:
        """A proxy trial."""
        return self._configure("trial", task, name)

    def training(self, task: PipelineTask, name: str) -> PipelineTask:
        """A full training (validation, scaling, augmentation, final or retraining)."""
        return self._configure("training", task, name)
