"""Storage of kfnas: the ``ArtifactStore`` contract, its backends, the layout and the trial records.

``open_store(uri)`` (``schemes``) picks the backend from the URI scheme: ``gs://BUCKET/PREFIX``
gives a ``GcsStore``; a plain path or ``file://PATH`` gives a ``LocalStore`` (also for mounted
volumes). ``root_problems(uri)`` says, without network access, what would stop a URI from working.

``Experiment`` / ``open_experiment`` (``experiment``) open an experiment by its URI.

To add a backend: implement ``ArtifactStore`` in a module of this package, then add one entry to
``schemes._SCHEMES`` (its opener and its offline checks). Nothing else branches on the scheme.
``GcsStore`` is imported on first use, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kfnas.store.base import (
    AccessDenied,
    ArtifactStore,
    ObjectExists,
    ObjectNotFound,
    StoreError,
    check_path,
)
from kfnas.store.experiment import Experiment, experiment_uri, open_experiment
from kfnas.store.layout import ExperimentLayout
from kfnas.store.local import LocalStore
from kfnas.store.schemes import open_store, root_problems
from kfnas.store.trials import (
    TrialAlreadyFinished,
    TrialConflict,
    TrialNotProposed,
    TrialRecords,
)

if TYPE_CHECKING:
    from kfnas.store.gcs import GcsStore

__all__ = [
    "AccessDenied",
    "ArtifactStore",
    "Experiment",
    "ExperimentLayout",
    "GcsStore",
    "LocalStore",
    "ObjectExists",
    "ObjectNotFound",
    "StoreError",
    "TrialAlreadyFinished",
    "TrialConflict",
    "TrialNotProposed",
    "TrialRecords",
    "check_path",
    "experiment_uri",
    "open_experiment",
    "open_store",
    "root_problems",
]


def __getattr__(name: str) -> Any:
    if name == "GcsStore":  # imported on first use: google-cloud-storage is slow to import
        from kfnas.store.gcs import GcsStore

        return GcsStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
