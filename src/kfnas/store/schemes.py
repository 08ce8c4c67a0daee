"""Store URIs: which backend a scheme opens, and what would stop a URI from working.

``root_problems(uri)`` checks a URI offline; ``store_problems(store)`` checks, by writing small
probe objects, that an opened store takes the writes kfnas relies on (create-only writes and
generation preconditions), for the first step of a run to refuse a store that cannot.

To add a backend: implement ``ArtifactStore`` in a module of this package, then add one entry to
``_SCHEMES`` (its opener and its offline checks). Nothing else branches on the scheme.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from typing import Any

from kfnas.store.base import ArtifactStore, GenerationMismatch, ObjectExists
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


#: Folder (under the store root) of the objects ``store_problems`` writes; they are left there
#: (the store has no delete): one small object per check, safe to remove by hand.
PROBE_DIR = ".kfnas-probe"


def store_problems(store: ArtifactStore) -> list[str]:
    """What stops ``store`` from keeping kfnas's guarantees, found by writing one probe object.

    Writes ``<root>/.kfnas-probe/<random>`` create-only twice (the second must be refused), then
    rewrites it with its generation as precondition twice (the second, with the stale generation,
    must be refused). The object is left in place (see ``PROBE_DIR``). Run it once at init.

    Returns:
        Messages that say what to change; empty if the store can be used.
    """
    path = f"{PROBE_DIR}/{uuid.uuid4().hex}"
    uri = store.uri(path)
    fix = (
        "give a writable volume or bucket (for gs://, credentials with roles/storage.objectAdmin "
        "on the bucket; for a volume, mount it read-write)"
    )
    try:
        store.write_bytes(path, b"probe 1", if_absent=True)
    except OSError as e:
        return [f"store {store.root} cannot be written (probe {uri}: {e}); {fix}"]
    guarantee = (
        "kfnas needs them for trial leases and export/latest; on gs:// use a bucket without a "
        "retention policy or object holds (preconditions must hold on every object); on a local "
        "or mounted path use a filesystem with hard links, atomic rename and POSIX locks (a local "
        "disk, NFS v4)"
    )
    try:
        store.write_bytes(path, b"probe 2", if_absent=True)
        return [
            f"store {store.root} does not honour create-only writes: a second create of {uri} "
            f"succeeded; {guarantee}"
        ]
    except ObjectExists:
        pass
    except OSError as e:
        return [f"store {store.root} failed a create-only write of {uri} ({e}); {guarantee}"]
    try:
        _, generation = store.read_with_generation(path)
        store.write_if_generation(path, b"probe 3", generation)
    except OSError as e:
        return [f"store {store.root} failed a conditional write of {uri} ({e}); {guarantee}"]
    try:
        store.write_if_generation(path, b"probe 4", generation)
    except GenerationMismatch:
        return []
    except OSError as e:
        return [f"store {store.root} failed a conditional write of {uri} ({e}); {guarantee}"]
    return [
        f"store {store.root} does not honour generation preconditions: a write of {uri} with a "
        f"stale generation succeeded; {guarantee}"
    ]
