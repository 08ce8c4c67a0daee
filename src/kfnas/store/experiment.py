"""The ``Experiment`` handle: an experiment's store, layout, resolved spec and trial records.

An experiment URI is ``<store_root>/<experiment name>``; ``experiment.json`` under it (written once
by the ``init_experiment`` stage) holds the resolved spec. Every stage, view and command that works
on an existing experiment opens it here, so there is one way to get from a URI to its records.
"""

from __future__ import annotations

import dataclasses

from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.store.base import ArtifactStore, ObjectNotFound
from kfnas.store.layout import ExperimentLayout
from kfnas.store.schemes import open_store
from kfnas.store.trials import TrialRecords


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An opened experiment: its store, layout, resolved spec and trial records."""

    uri: str
    store: ArtifactStore
    layout: ExperimentLayout
    spec: ExperimentSpec

    @property
    def records(self) -> TrialRecords:
        """The trial records of this experiment."""
        return TrialRecords(self.store, self.layout)


def split_experiment_uri(experiment_uri: str) -> tuple[str, str]:
    """``<store_root>/<name>`` -> ``(store_root, name)``.

    Raises:
        SpecError: The URI has no experiment name.
    """
    root, _, name = experiment_uri.rstrip("/").rpartition("/")
    if not name:
        raise SpecError(f"experiment URI {experiment_uri!r} must look like <store_root>/<name>")
    return root or ".", name


def experiment_uri(spec: ExperimentSpec) -> str:
    """The URI of the experiment ``spec`` describes: ``<store_root>/<name>``."""
    return f"{open_store(spec.store_root).root.rstrip('/')}/{spec.name}"


def open_experiment(experiment_uri: str) -> Experiment:
    """Opens an experiment written by ``init_experiment``.

    Raises:
        SpecError: No experiment at that URI (the message says to run init_experiment first).
    """
    root, name = split_experiment_uri(experiment_uri)
    store = open_store(root)
    layout = ExperimentLayout(name)
    try:
        text = store.read_text(layout.experiment_json())
    except ObjectNotFound as e:
        raise SpecError(
            f"no experiment at {experiment_uri!r} ({e}); create it first with init_experiment "
            f"(kfnas init SPEC)"
        ) from e
    return Experiment(experiment_uri, store, layout, ExperimentSpec.from_json(text))
