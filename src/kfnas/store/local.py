"""``LocalStore``: an ``ArtifactStore`` on plain folders (a local disk, a mounted volume or a PVC).

Objects are regular files under the root. Writes go to a temporary file in the same folder, are
fsynced, then renamed into place (``os.replace``), so readers never see a partial file; a
create-only write links the temporary file to its final name instead (``os.link`` fails
atomically if the name exists). Temporary files carry the ``.kfnas-tmp-`` prefix and are never
listed, even if a crash leaves one behind.

Files are created with mode ``0o666 & ~umask`` and folders with ``0o777 & ~umask`` (a umask of
``0o022`` gives ``0644`` files), so a serving pod or notebook of another uid can read them.

Generations (``read_with_generation``, ``write_if_generation``) are emulated: beside object
``dir/name`` a hidden counter file ``dir/.kfnas-tmp-gen-name`` holds the object's generation.
A conditional write holds an exclusive POSIX record lock (``fcntl.lockf``) on it (plus a thread
lock, since POSIX locks are per process) while it compares the generation, bumps the counter
(first: a crash then leaves the old content at a new generation, never a new content at the old
one) and replaces the object; ``read_with_generation`` reads under a shared lock. Creating
(generation 0) links the new file into place, so it cannot overwrite a create-only writer either.
Guarantee: exact compare-and-swap between threads and processes of one machine, and between pods
sharing a volume whose filesystem supports POSIX locks, hard links and atomic rename (a local disk;
NFS v4). Filesystems without POSIX locks are refused with a message (``store_problems`` in
``kfnas.store.schemes`` probes this at init). Plain writes of a path that has a counter file bump it
too, but paths written conditionally should only be written conditionally.

To extend: keep every write going through ``_write_via_temp`` so the atomicity holds, and every
conditional operation inside ``_locked``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from kfnas.store.base import (
    ArtifactStore,
    GenerationMismatch,
    ObjectExists,
    ObjectNotFound,
    StoreError,
    check_path,
    join,
    local_files,
)

TEMP_PREFIX = ".kfnas-tmp-"

# errno values of filesystems without hard links (some FUSE and network mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK}
#: The counter file of object ``name`` is ``GEN_PREFIX + name`` in the same folder (never listed).
GEN_PREFIX = TEMP_PREFIX + "gen-"
# POSIX locks belong to a process, so the threads of one process also take a lock of their own.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
_UMASK_GUARD = threading.Lock()


class LocalStore(ArtifactStore):
    """An ``ArtifactStore`` on a local folder (created on the first write).

    Args:
        root: The folder holding the objects (a path; ``~`` is expanded).

    Raises:
        ValueError: ``root`` is empty.
    """

    def __init__(self, root: str | os.PathLike[str]):
        if not str(root):
            raise ValueError("local store root is empty; give a folder path")
        self._root = Path(root).expanduser().absolute()

    @property
    def root(self) -> str:
        """The absolute path of the root folder."""
        return str(self._root)

    def _file(self, path: str) -> Path:
        path = check_path(path)
        if any(part.startswith(TEMP_PREFIX) for part in path.split("/")):
            raise ValueError(f"store path {path!r} uses the reserved prefix {TEMP_PREFIX!r}")
        return self._root.joinpath(*path.split("/"))

    def _folder(self, prefix: str) -> Path:
        prefix = check_path(prefix, allow_root=True)
        return self._root.joinpath(*prefix.split("/")) if prefix else self._root

    def read_bytes(self, path: str) -> bytes:
        """See ``ArtifactStore.read_bytes``."""
        file = self._file(path)
        try:
            return file.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise ObjectNotFound(f"{self.uri(path)} does not exist") from e

    def write_bytes(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        """See ``ArtifactStore.write_bytes``."""
        final = self._file(path)
        if not if_absent and _gen_file(final).exists():  # a conditionally written path
            with self._locked(final, path, exclusive=True) as fd:
                _write_counter(fd, _next_generation(fd, final))
                self._write_via_temp(path, lambda out: out.write(data), if_absent=False)
            return
        self._write_via_temp(path, lambda out: out.write(data), if_absent=if_absent)

    def read_with_generation(self, path: str) -> tuple[bytes, int]:
        """See ``ArtifactStore.read_with_generation``."""
        final = self._file(path)
        if not _gen_file(final).exists():  # never written conditionally: generation 1
            return self.read_bytes(path), 1
        with self._locked(final, path, exclusive=False) as fd:
            return self.read_bytes(path), max(_read_counter(fd), 1)

    def write_if_generation(self, path: str, data: bytes, generation: int) -> int:
        """See ``ArtifactStore.write_if_generation``; see the module docstring for the guarantee."""
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise ValueError(f"generation must be an int >= 0 (0: create), got {generation!r}")
        final = self._file(path)
        self._make_parent(final, path)
        with self._locked(final, path, exclusive=True) as fd:
            counter = _read_counter(fd)
            current = max(counter, 1) if final.is_file() else 0
            if current != generation:
                raise GenerationMismatch(
                    f"{self.uri(path)} is at generation {current}, not {generation}: another "
                    f"writer changed it since it was read; read it again and decide anew"
                )
            new = max(counter, current) + 1
            _write_counter(fd, new)  # first: see the module docstring
            try:
                self._write_via_temp(path, lambda out: out.write(data), if_absent=generation == 0)
            except ObjectExists as e:  # created meanwhile by a create-only write
                raise GenerationMismatch(
                    f"{self.uri(path)} was created by another writer meanwhile; read it again"
                ) from e
        return new

    @contextlib.contextmanager
    def _locked(self, final: Path, path: str, *, exclusive: bool) -> Iterator[int]:
        """Holds the lock of ``final``'s counter file; yields the file's descriptor."""
        counter = _gen_file(final)
        with _thread_lock(str(counter)):
            try:
                fd = os.open(counter, os.O_RDWR | os.O_CREAT if exclusive else os.O_RDONLY, 0o666)
            except OSError as e:
                raise StoreError(
                    f"cannot open the generation file of {self.uri(path)} ({e}); the store must "
                    f"be writable for conditional writes"
                ) from e
            try:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                except OSError as e:
                    raise StoreError(
                        f"cannot lock {counter} ({e}): this filesystem has no POSIX locks, which "
                        f"leases and export/latest need; use a local disk, an NFS v4 volume or "
                        f"gs://BUCKET/PREFIX as the store"
                    ) from e
                yield fd
            finally:
                os.close(fd)  # also releases the lock

    def _make_parent(self, final: Path, path: str) -> None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise StoreError(
                f"cannot write {self.uri(path)}: a part of its folder is an object, not a folder"
            ) from e

    def _write_via_temp(
        self, path: str, fill: Callable[[BinaryIO], object], *, if_absent: bool
    ) -> None:
        final = self._file(path)
        self._make_parent(final, path)
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=final.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                os.fchmod(out.fileno(), 0o666 & ~_umask())  # mkstemp gives 0600: others can't read
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            if if_absent:
                self._link_new(temp, final, path)
            else:
                os.replace(temp, final)
            _fsync_folder(final.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)

    def _link_new(self, temp: str, final: Path, path: str) -> None:
        try:
            os.link(temp, final)
        except FileExistsError as e:
            raise ObjectExists(f"{self.uri(path)} already exists; it is never overwritten") from e
        except OSError as e:
            if e.errno not in _NO_HARD_LINKS:
                raise
            # No hard links here: create the final name exclusively and copy the content in. Still
            # exclusive, but a reader may see a partial file while it is written.
            try:
                with open(final, "xb") as out, open(temp, "rb") as source:
                    shutil.copyfileobj(source, out)
                    out.flush()
                    os.fsync(out.fileno())
            except FileExistsError as e2:
                raise ObjectExists(
                    f"{self.uri(path)} already exists; it is never overwritten"
                ) from e2

    def exists(self, path: str) -> bool:
        """See ``ArtifactStore.exists``."""
        return self._file(path).is_file()

    def list(self, prefix: str = "") -> list[str]:
        """See ``ArtifactStore.list``."""
        folder = self._folder(prefix)
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
            relative = Path(dirpath).relative_to(folder).as_posix()
            found.extend(
                join("" if relative == "." else relative, name)
                for name in filenames
                if not name.startswith(TEMP_PREFIX)
            )
        return sorted(found)

    def list_children(self, prefix: str = "") -> list[str]:
        """See ``ArtifactStore.list_children``; folders without any object are not listed."""
        try:
            entries = list(os.scandir(self._folder(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            entry.name
            for entry in entries
            if not entry.name.startswith(TEMP_PREFIX)
            and (entry.is_file() or (entry.is_dir() and _holds_objects(Path(entry.path))))
        )

    def upload_dir(self, local_dir: str | os.PathLike[str], path: str) -> None:
        """See ``ArtifactStore.upload_dir``; each file is streamed and written atomically."""
        path = check_path(path, allow_root=True)
        for relative, file in local_files(local_dir):
            with open(file, "rb") as source:
                self._write_via_temp(
                    join(path, relative),
                    lambda out, source=source: shutil.copyfileobj(source, out),
                    if_absent=False,
                )

    def download_dir(self, path: str, local_dir: str | os.PathLike[str]) -> None:
        """See ``ArtifactStore.download_dir``; files are copied, not read whole."""
        path = check_path(path, allow_root=True)
        names = self.list(path)
        if not names:
            raise ObjectNotFound(f"nothing to download: there is no object under {self.uri(path)}")
        folder = self._folder(path)
        for relative in names:
            target = Path(local_dir, *relative.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder.joinpath(*relative.split("/")), target)


def _gen_file(final: Path) -> Path:
    return final.with_name(GEN_PREFIX + final.name)


def _read_counter(fd: int) -> int:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else 0


def _write_counter(fd: int, value: int) -> None:
    os.pwrite(fd, f"{value:020d}\n".encode("ascii"), 0)  # fixed width: always the whole file
    os.fsync(fd)


def _next_generation(fd: int, final: Path) -> int:
    counter = _read_counter(fd)
    return max(counter, 1 if final.is_file() else 0) + 1


def _thread_lock(key: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


def _umask() -> int:
    """The process umask, read without changing it where Linux allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_GUARD:  # elsewhere: set and restore (other threads' umask-less calls only)
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def _holds_objects(folder: Path) -> bool:
    """Whether ``folder`` holds an object at any depth (stops at the first one found)."""
    for _dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
        if any(not name.startswith(TEMP_PREFIX) for name in filenames):
            return True
    return False


def _fsync_folder(folder: Path) -> None:
    """Makes a rename in ``folder`` durable, where the filesystem allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _writable_suggestion() -> str:
    for candidate in (Path.cwd(), Path.home(), Path(tempfile.gettempdir())):
        if candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK):
            return str(candidate / "kfnas-store")
    return "a folder you can write"


def local_root_problems(root: str) -> list[str]:
    """What stops ``root`` from serving as a writable local store root, without touching it.

    Walks up to the nearest existing ancestor and checks that it is a folder this process can
    write, so a root that does not exist yet is fine if it can be created.

    Args:
        root: The local path (or mounted volume path) of the store.

    Returns:
        Messages that say what to change; empty if the root can be used.
    """
    if not root:
        return ["local store root is empty; give a folder path or gs://BUCKET/PREFIX"]
    path = Path(root).expanduser().absolute()
    fix = f"use a writable path such as {_writable_suggestion()} or mount a writable volume there"
    try:
        nearest = path
        while not nearest.exists() and nearest != nearest.parent:
            nearest = nearest.parent
        if not nearest.is_dir():
            return [
                f"local store root {str(path)!r} cannot be created: {str(nearest)!r} is a file, "
                f"not a folder; {fix}"
            ]
        if not os.access(nearest, os.W_OK | os.X_OK):
            return [
                f"local store root {str(path)!r} is not writable: folder {str(nearest)!r} cannot "
                f"be written by this user (uid {os.getuid()}); {fix}"
            ]
    except OSError as e:
        return [f"local store root {str(path)!r} cannot be checked ({e}); {fix}"]
    return []
