"""Storage of kfnas: the ``ArtifactStore`` contract, its backends, the layout and the trial records.

``open_store(uri)`` picks the backend from the URI scheme: ``gs://BUCKET/PREFIX`` gives a
``GcsStore``; a plain path or ``file://PATH`` gives a ``LocalStore`` (also for mounted volumes).
``root_problems(uri)`` says, without network access, what would stop a URI from working.

To add a backend: implement ``ArtifactStore`` in a module of this package, then add one entry to
``_SCHEMES`` below (its opener and its offline checks). Nothing else branches on the scheme.
``GcsStore`` is imported on first use, so importing this package stays cheap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kfnas.store.base import (
    AccessDenied,
    ArtifactStore,
    ObjectExists,
    ObjectNotFound,
    StoreError,
    check_path,
)
from kfnas.store.layout import ExperimentLayout
from kfnas.store.local import LocalStore, local_root_problems
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
    "open_store",
    "root_problems",
]


@dataclasses.dataclass(frozen=True)
class _Scheme:
    """How one URI scheme is opened and checked."""

    form: str  # how users write it, for messages
    open: Callable[[str, Any], ArtifactStore]
    problems: Callable[[str], list[str]]


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def _open_local(uri: str, client: Any) -> ArtifactStore:
    del client  # local folders need no client
    return LocalStore(_local_path(uri))


def _open_gcs(uri: str, client: Any) -> ArtifactStore:
    from kfnas.store.gcs import GcsStore

    return GcsStore(uri, client)


def _gcs_problems(uri: str) -> list[str]:
    from kfnas.store.gcs import gcs_uri_problems

    return gcs_uri_problems(uri)


_SCHEMES: dict[str, _Scheme] = {
    "gs": _Scheme("gs://BUCKET/PREFIX", _open_gcs, _gcs_problems),
    "file": _Scheme(
        "file://PATH or a plain local path (a folder or mounted volume)",
        _open_local,
        lambda uri: local_root_problems(_local_path(uri)),
    ),
}


def _scheme(uri: str) -> str:
    scheme, sep, _ = uri.partition("://")
    return scheme.lower() if sep else "file"


def _unsupported(uri: str) -> str:
    forms = "; ".join(s.form for s in _SCHEMES.values())
    return f"unsupported store scheme {_scheme(uri) + '://'!r} in {uri!r}; supported: {forms}"


def open_store(uri: str, client: Any = None) -> ArtifactStore:
    """Opens the store at ``uri``.

    Args:
        uri: ``gs://BUCKET/PREFIX``, ``file://PATH`` or a plain local path.
        client: For ``gs://``, a ``google.cloud.storage.Client`` (a default one is created on first
            use if ``None``); ignored for local paths.

    Returns:
        The store; nothing is touched until it is used.

    Raises:
        ValueError: The scheme is not supported or the URI is malformed (the message says why).
    """
    scheme = _SCHEMES.get(_scheme(uri))
    if scheme is None:
        raise ValueError(_unsupported(uri))
    return scheme.open(uri, client)


def root_problems(uri: str) -> list[str]:
    """What would stop ``uri`` from serving as a store root, checked without network access.

    Covers unsupported schemes, malformed ``gs://`` URIs and local roots that cannot be written.

    Returns:
        Messages that each say what to change; empty if nothing is wrong.
    """
    scheme = _SCHEMES.get(_scheme(uri))
    if scheme is None:
        return [_unsupported(uri)]
    return scheme.problems(uri)


def __getattr__(name: str) -> Any:
    if name == "GcsStore":  # imported on first use: google-cloud-storage is slow to import
        from kfnas.store.gcs import GcsStore

        return GcsStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
