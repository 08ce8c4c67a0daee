"""The frameworks a trial trains in, and what each one does for a trial: ``FRAMEWORKS``.

A task kind names its framework (``TaskKind.framework``: ``tensorflow`` unless it says otherwise);
the trial step, the measurement step and export look the framework up here and call its entry
points, so a PyTorch trainer plugs in beside the TensorFlow one and the search, the store,
rewards, reports and pipelines stay the same. Entry points are ``"module:function"`` strings,
loaded on first use: naming a framework imports neither TensorFlow nor torch.

Each framework gives three functions with one signature across frameworks:

* ``trainer``: ``execute_trial(spec, trial, work_dir, *, on_checkpoint=None, distribution=None,
  measure=True, on_evaluation=None) -> TrialResult | TrialTraining`` (the contract of
  ``kfnas.training.runner.execute_trial``: checkpoints ``model/ckpt-<step>.*`` reported through
  ``on_checkpoint(step, prefix)``, curves through ``on_evaluation(step, metrics)`` with
  ``train_seconds``, never raises for a bad trial);
* ``measurer``: ``measure_stored_trial(spec, trial, model_dir, *, threads=0, exclusive=None) ->
  kfnas.training.stats.ModelMeasurement`` (rebuild the trained model from a local copy of its
  ``model/`` folder and measure it by the fixed protocol); a framework with
  ``reuses_measurements`` also takes ``known=`` (``kfnas.training.protocol.KnownMeasurements``)
  and returns the measurement stored there for a model that computes the same;
* ``exporter``: ``export_trial_model(spec, trial, model_dir, export_dir, *, metrics, check=None)``
  (write the servable model and its model card to ``export_dir``).

To add a framework: write the three functions and add one ``Framework`` line to ``_BUILTINS``
(or call ``FRAMEWORKS.register(name, Framework(...))``); task kinds then name it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import Any

from kfnas.registry import Registry, load_object

#: The framework of a task kind that names none.
DEFAULT_FRAMEWORK = "tensorflow"


@dataclasses.dataclass(frozen=True)
class Framework:
    """One framework's entry points (``"module:function"``; see the module docstring).

    Attributes:
        name: The framework's name, as task kinds write it.
        trainer: Trains, evaluates and (when asked) measures one trial.
        measurer: Measures a trained trial's stored model.
        exporter: Exports a trained trial's model with its model card.
        module: The Python module the framework needs (``torch``...), to tell a missing install.
        install: How to install it, for the message when ``module`` is missing.
        multi_device: Whether one trial trains across several accelerators or pods; a framework
            without it trains each trial in one process on one device, and a run whose trial pods
            ask for more is refused before any trial (``kfnas.validation.trial_pod_problems``).
        reuses_measurements: Whether its measurer takes ``known=`` and reuses the measurement of
            a model that computes the same (the spec's ``measurement.reuse``); one without it
            measures every trained model anew.
    """

    name: str
    trainer: str
    measurer: str
    exporter: str
    module: str
    install: str
    multi_device: bool = True
    reuses_measurements: bool = False

    def entry(self, role: str) -> Callable[..., Any]:
        """The function of ``role`` (``trainer``, ``measurer`` or ``exporter``), imported."""
        return load_object(getattr(self, role))  # type: ignore[return-value]

    def missing(self) -> str:
        """Why this framework cannot run here (its module is not installed), or ``""``."""
        if importlib.util.find_spec(self.module) is not None:
            return ""
        return (
            f"the {self.name} framework is not installed ({self.module} is missing): {self.install}"
        )


FRAMEWORKS: Registry[Framework] = Registry("framework")
FRAMEWORKS.register(
    "tensorflow",
    Framework(
        name="tensorflow",
        trainer="kfnas.training.runner:execute_trial",
        measurer="kfnas.training.measurement:measure_stored_trial",
        exporter="kfnas.export.saved_model:export_saved_model",
        module="tensorflow",
        install="pip install kfnas",
        reuses_measurements=True,
    ),
)
FRAMEWORKS.register(
    "pytorch",
    Framework(
        name="pytorch",
        trainer="kfnas.torch.runner:execute_trial",
        measurer="kfnas.torch.measure:measure_stored_trial",
        exporter="kfnas.torch.export:export_trial_model",
        module="torch",
        install="pip install 'kfnas[torch]' (or use the image built from images/Dockerfile.torch)",
        multi_device=False,
    ),
)


def framework_of(task_kind: Any) -> Framework:
    """The framework a task kind trains in (``task_kind.framework``, default ``tensorflow``)."""
    return FRAMEWORKS.get(getattr(task_kind, "framework", DEFAULT_FRAMEWORK))


__all__ = ["DEFAULT_FRAMEWORK", "FRAMEWORKS", "Framework", "framework_of"]
