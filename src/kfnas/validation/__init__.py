"""Checking a run before any trial starts: the spec against the registries, the data, the chain.

The layer above the registries (spaces, algorithms, rewards, tasks, stores), below training.
``validate(spec)`` gathers every problem of a spec, each saying what to change, and returns it
resolved; ``check_data`` reads a bounded sample of the data with the task's own checks;
``experiment_spec`` builds a run's resolved spec from text, settings and overrides.

To add a check: write a ``_<part>_problems(spec)`` function in ``checks`` returning messages, and
add it to ``checks._CHECKS``.
"""

from kfnas.validation.checks import (
    check_data,
    latency_device_problems,
    resolve,
    spec_problems,
    trial_pod_problems,
    validate,
)
from kfnas.validation.experiment import complete_studies, experiment_spec

__all__ = [
    "check_data",
    "complete_studies",
    "experiment_spec",
    "latency_device_problems",
    "resolve",
    "spec_problems",
    "trial_pod_problems",
    "validate",
]
