"""Store URIs: which backend a scheme opens, and what would stop a URI from working.

To add a backend: implement ``ArtifactStore`` in a module of this package, then add one entry to
``_SCHEMES`` (its opener and its offline checks). Nothing else branches on the scheme.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kfnas.store.base import ArtifactStore
from kfnas.store.local import LocalStore, local_root_problems


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
