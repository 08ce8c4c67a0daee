"""The ``ArtifactStore`` contract that every storage backend of kfnas implements, and its errors.

A store is a flat namespace of objects under one root (a local folder, a mounted volume or
``gs://bucket/prefix``), addressed by '/'-separated paths relative to that root. Every stage reads
and writes through a store, with paths built by ``ExperimentLayout`` only.

To add a backend (for example another object store): subclass ``ArtifactStore``, implement the
abstract methods so that the contract below holds (the shared contract test suite in
``tests/store/test_store_contract.py`` checks it once the new store is added to its ``store``
fixture), and add one entry to the scheme table in ``kfnas.store``. ``upload_dir`` and
``download_dir`` have portable defaults built on the other methods; override them to stream.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path


class StoreError(OSError):
    """A store operation that failed; the message names the URI and says what to change."""


# The names below are the store contract; they read like the builtins they extend.
class ObjectNotFound(StoreError, FileNotFoundError):  # noqa: N818
    """The object asked for does not exist; the message names its URI."""


class ObjectExists(StoreError, FileExistsError):  # noqa: N818
    """A create-only write (``if_absent=True``) found the object already there."""


class AccessDenied(StoreError, PermissionError):  # noqa: N818
    """The store refused the operation for lack of permission (not retried)."""


class GenerationMismatch(StoreError):  # noqa: N818
    """A conditional write (``write_if_generation``) found another generation of the object."""


def check_path(path: str, *, allow_root: bool = False) -> str:
    """Validates a store path and returns it without a trailing '/'.

    Args:
        path: A '/'-separated path relative to the store root, such as ``exp/reports/a.md``.
        allow_root: Whether ``""`` (the root itself) is accepted, as a prefix or folder is.

    Returns:
        The path, with one trailing '/' removed when ``allow_root`` (folders may be written so).

    Raises:
        ValueError: The path is absolute, contains '..', '.', an empty part or a backslash.
    """
    if not isinstance(path, str):
        raise ValueError(f"store path must be a string, got {type(path).__name__}: {path!r}")
    if allow_root and path.endswith("/") and path != "/":
        path = path[:-1]
    if path == "":
        if allow_root:
            return path
        raise ValueError(
            "store path is empty; give a path relative to the store root, like 'a/b.json'"
        )
    if path.startswith("/"):
        raise ValueError(
            f"store path {path!r} is absolute; store paths are relative to the store root "
            f"(write {path.lstrip('/')!r})"
        )
    if "\\" in path:
        raise ValueError(f"store path {path!r} contains a backslash; separate parts with '/'")
    parts = path.split("/")
    if ".." in parts:
        raise ValueError(f"store path {path!r} contains '..'; paths may not leave the store root")
    if "" in parts or "." in parts:
        raise ValueError(f"store path {path!r} has an empty or '.' part; write it like 'a/b/c'")
    return path


def join(*parts: str) -> str:
    """Joins store path parts with '/', skipping empty ones (the root)."""
    return "/".join(p for p in parts if p)


class ArtifactStore(abc.ABC):
    """Objects under one root, addressed by '/'-separated relative paths.

    Contract (every implementation, checked by the shared contract tests):

    - Paths are relative strings like ``exp/studies/proxy/trials/000001/trial.json``; absolute
      paths, '..', '.' and empty parts are refused with ``ValueError``. Folders exist only as the
      common prefixes of objects: there are no empty folders.
    - ``read_text``/``read_bytes`` raise ``ObjectNotFound`` (a ``FileNotFoundError``) naming the
      URI.
    - Single-object writes are atomic: a reader sees the old object or the whole new one, never a
      part, and a failed write leaves the old object in place.
    - ``if_absent=True`` creates the object only if it does not exist, atomically (no
      check-then-write race): exactly one of concurrent creators wins, the others get
      ``ObjectExists`` (a ``FileExistsError``).
    - ``list(prefix)`` returns the paths, relative to ``prefix``, of all objects under it,
      recursively and sorted; ``list_children(prefix)`` the sorted names of its immediate children
      (objects and folders alike). Both return ``[]`` for a prefix with nothing under it.
    - Every object has a generation, an int that changes on every write of it (``0`` stands for
      "no object"). ``read_with_generation`` returns the content and the generation it belongs to;
      ``write_if_generation(path, data, g)`` writes only if the object's generation is still
      ``g`` (compare-and-swap): of concurrent writers holding the same ``g`` exactly one wins, the
      others get ``GenerationMismatch``. Leases and ``export/latest`` are built on it. Write such a
      path only with ``write_if_generation`` and make each writer's content unique (a token), so
      that a retried write can recognise its own earlier success.
    - Transient service errors are retried inside the store; permanent ones surface as
      ``StoreError`` subclasses whose message names the URI.
    """

    @property
    @abc.abstractmethod
    def root(self) -> str:
        """The URI of the store root, without a trailing '/' (a local path or ``gs://b/p``)."""

    def uri(self, path: str) -> str:
        """The full URI of ``path`` (or of the root for ``""``), for messages and for tools.

        Raises:
            ValueError: ``path`` is not a valid store path.
        """
        path = check_path(path, allow_root=True)
        return f"{self.root}/{path}" if path else self.root

    @abc.abstractmethod
    def read_bytes(self, path: str) -> bytes:
        """Returns the content of the object at ``path``.

        Raises:
            ObjectNotFound: There is no such object.
        """

    def read_text(self, path: str) -> str:
        """Returns the content of the object at ``path`` decoded as UTF-8.

        Raises:
            ObjectNotFound: There is no such object.
        """
        return self.read_bytes(path).decode("utf-8")

    @abc.abstractmethod
    def write_bytes(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        """Writes ``data`` as the whole object at ``path``, atomically.

        Args:
            path: Where to write, relative to the root.
            data: The complete new content.
            if_absent: Create only: fail if the object already exists.

        Raises:
            ObjectExists: ``if_absent`` and the object exists (with other content, for stores whose
                retried create may find its own earlier success).
        """

    def write_text(self, path: str, text: str, *, if_absent: bool = False) -> None:
        """Writes ``text`` encoded as UTF-8; see ``write_bytes``."""
        self.write_bytes(path, text.encode("utf-8"), if_absent=if_absent)

    @abc.abstractmethod
    def read_with_generation(self, path: str) -> tuple[bytes, int]:
        """Returns the content of the object at ``path`` and the generation of that content.

        Raises:
            ObjectNotFound: There is no such object.
        """

    @abc.abstractmethod
    def write_if_generation(self, path: str, data: bytes, generation: int) -> int:
        """Writes ``data`` at ``path`` atomically, only if the object is at ``generation``.

        Args:
            path: Where to write, relative to the root.
            data: The complete new content.
            generation: The generation read before (``read_with_generation``), or ``0`` to create
                the object only if it does not exist.

        Returns:
            The generation of the object written.

        Raises:
            GenerationMismatch: The object is at another generation (someone else wrote it since,
                or it exists although ``generation`` is 0, or it is gone).
        """

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether an object (not merely a folder) exists at ``path``."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """The paths, relative to folder ``prefix``, of all objects under it, sorted."""

    @abc.abstractmethod
    def list_children(self, prefix: str = "") -> list[str]:
        """The sorted names of the immediate children (objects and folders) of folder ``prefix``."""

    def upload_dir(self, local_dir: str | os.PathLike[str], path: str) -> None:
        """Copies every file under ``local_dir`` to objects under folder ``path``.

        Existing objects with the same relative paths are replaced; others are left alone. This
        default reads each file whole; stores override it to stream.

        Raises:
            NotADirectoryError: ``local_dir`` is not a folder.
        """
        path = check_path(path, allow_root=True)
        for relative, file in local_files(local_dir):
            self.write_bytes(join(path, relative), file.read_bytes())

    def download_dir(self, path: str, local_dir: str | os.PathLike[str]) -> None:
        """Copies every object under folder ``path`` into ``local_dir``, keeping relative paths.

        Raises:
            ObjectNotFound: There is no object under ``path``.
        """
        path = check_path(path, allow_root=True)
        names = self.list(path)
        if not names:
            raise ObjectNotFound(f"nothing to download: there is no object under {self.uri(path)}")
        for relative in names:
            target = Path(local_dir, *relative.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.read_bytes(join(path, relative)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r})"


def local_files(local_dir: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """The files under ``local_dir`` as sorted ``(relative '/' path, Path)`` pairs, for uploads.

    Raises:
        NotADirectoryError: ``local_dir`` is not a folder.
    """
    base = Path(local_dir)
    if not base.is_dir():
        raise NotADirectoryError(f"cannot upload {str(base)!r}: it is not a folder")
    files = [(p.relative_to(base).as_posix(), p) for p in base.rglob("*") if p.is_file()]
    return sorted(files)
