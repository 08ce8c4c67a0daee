"""``GcsStore``: an ``ArtifactStore`` on Google Cloud Storage, ``gs://bucket/prefix``.

Built on google-cloud-storage with the client injected (tests point one at gcp-storage-emulator).
Every call passes an explicit retry policy, by default ``google.cloud.storage.retry.DEFAULT_RETRY``
(exponential back-off on 408, 429, 5xx and connection errors, 120 s deadline). Single-object
uploads are atomic by the service. Create-only writes send ``ifGenerationMatch=0``; because a
retried create may find its own earlier success, a 412 answer is followed by a read, and identical
content counts as success. Service errors become the ``StoreError`` family, naming the URI.

Generations are Cloud Storage's own object generations. ``write_if_generation`` sends
``ifGenerationMatch`` (412 -> ``GenerationMismatch``, unless the object now holds exactly the bytes
written: a retried write meeting its own success). ``read_with_generation`` reads the object's
generation, downloads that generation (``ifGenerationMatch``) and checks that the generation has
not moved meanwhile, so the pair is consistent even on servers that ignore the download
precondition.

To extend: run every new call inside ``_call`` (which translates errors) and pass ``self._retry``.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY

from kfnas.store.base import (
    AccessDenied,
    ArtifactStore,
    GenerationMismatch,
    ObjectExists,
    ObjectNotFound,
    StoreError,
    check_path,
    join,
    local_files,
)

#: Reads of an object that keeps changing before ``read_with_generation`` gives up.
_CONSISTENT_READ_TRIES = 10
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


def parse_gcs_uri(uri: str) -> tuple[str, str]:
    """Splits ``gs://bucket/prefix`` into ``(bucket, prefix)``; the prefix may be ``""``.

    Raises:
        ValueError: The URI does not start with ``gs://``, has no bucket, or has a bad prefix.
    """
    problems = gcs_uri_problems(uri)
    if problems:
        raise ValueError("; ".join(problems))
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    return bucket, check_path(prefix, allow_root=True)


def gcs_uri_problems(uri: str) -> list[str]:
    """What is wrong with a ``gs://`` store URI, found without network access.

    Returns:
        Messages that say what to change; empty if the URI is well formed.
    """
    if not uri.startswith("gs://"):
        return [f"{uri!r} is not a gs:// URI; write gs://BUCKET/PREFIX"]
    bucket, _, prefix = uri[len("gs://") :].partition("/")
    if not bucket:
        return [f"gs:// URI {uri!r} has no bucket; write gs://BUCKET/PREFIX"]
    problems = []
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        problems.append(
            f"bucket name {bucket!r} in {uri!r} is not valid: use 3-63 lowercase letters, digits, "
            f"'-', '_' and '.', starting and ending with a letter or digit"
        )
    try:
        check_path(prefix, allow_root=True)
    except ValueError as e:
        problems.append(f"prefix of {uri!r} is not valid: {e}")
    return problems


class GcsStore(ArtifactStore):
    """An ``ArtifactStore`` on ``gs://bucket/prefix``.

    Args:
        uri: ``gs://BUCKET`` or ``gs://BUCKET/PREFIX``.
        client: A ``google.cloud.storage.Client``; if ``None``, a default client is created on first
            use (it honours ``STORAGE_EMULATOR_HOST``).
        retry: The retry policy passed to every call; defaults to google-cloud-storage's
            ``DEFAULT_RETRY``. Tests pass a fast one.
        timeout: Seconds to wait for the server on each HTTP request.

    Raises:
        ValueError: ``uri`` is not a valid gs:// URI.
    """

    def __init__(
        self,
        uri: str,
        client: Any = None,
        *,
        retry: Retry | None = None,
        timeout: float = 60.0,
    ):
        self.bucket_name, self.prefix = parse_gcs_uri(uri)
        self._client = client
        self._retry = DEFAULT_RETRY if retry is None else retry
        self._timeout = timeout

    @property
    def root(self) -> str:
        """``gs://bucket`` or ``gs://bucket/prefix``, without a trailing '/'."""
        return f"gs://{join(self.bucket_name, self.prefix)}"

    @property
    def client(self) -> Any:
        """The ``google.cloud.storage.Client`` in use (created on first use if none was given)."""
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client()
        return self._client

    def _name(self, path: str, *, allow_root: bool = False) -> str:
        return join(self.prefix, check_path(path, allow_root=allow_root))

    def _blob(self, path: str) -> Any:
        return self.client.bucket(self.bucket_name).blob(self._name(path))

    def _folder(self, prefix: str) -> str:
        name = self._name(prefix, allow_root=True)
        return f"{name}/" if name else ""

    @contextlib.contextmanager
    def _call(self, action: str, path: str, *, on_bucket: bool = False) -> Iterator[None]:
        """Turns google-cloud errors into the ``StoreError`` family, naming the URI.

        Args:
            action: What is being done, for messages ("read", "write", ...).
            path: The store path acted on.
            on_bucket: The call addresses the bucket (a write or a listing), so a 404 means that
                the bucket is missing rather than the object.
        """
        uri = self.uri(path)
        try:
            yield
        except gexc.NotFound as e:
            if on_bucket:
                raise StoreError(
                    f"cannot {action} {uri}: bucket {self.bucket_name!r} does not exist or is not "
                    f"visible to these credentials; create it or fix the store URI"
                ) from e
            raise ObjectNotFound(f"{uri} does not exist (while trying to {action})") from e
        except (gexc.Forbidden, gexc.Unauthorized) as e:
            raise AccessDenied(
                f"cannot {action} {uri}: permission denied ({e.message}); check that the "
                f"credentials in use may read and write objects in bucket {self.bucket_name!r}"
            ) from e
        except auth_exceptions.TransportError as e:
            raise StoreError(
                f"cannot {action} {uri}: cannot reach the credentials service ({e})"
            ) from e
        except auth_exceptions.GoogleAuthError as e:
            raise AccessDenied(
                f"cannot {action} {uri}: no usable Google credentials ({e}); run `gcloud auth "
                f"application-default login`, set GOOGLE_APPLICATION_CREDENTIALS or use workload "
                f"identity"
            ) from e
        except gexc.RetryError as e:
            raise StoreError(
                f"cannot {action} {uri}: Cloud Storage kept failing with transient errors until "
                f"the retry deadline passed (last error: {e.cause}); try again later"
            ) from e
        except gexc.GoogleAPICallError as e:
            raise StoreError(f"cannot {action} {uri}: {e}") from e

    def read_bytes(self, path: str) -> bytes:
        """See ``ArtifactStore.read_bytes``."""
        with self._call("read", path):
            blob = self._blob(path)
            return blob.download_as_bytes(retry=self._retry, timeout=self._timeout)

    def write_bytes(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        """See ``ArtifactStore.write_bytes``."""
        found_existing = False
        with self._call("write", path, on_bucket=True):
            try:
                self._upload(path, data, 0 if if_absent else None)
            except gexc.PreconditionFailed:
                if not if_absent:
                    raise
                found_existing = True
        # A retried create can meet its own earlier success: the same bytes mean it happened.
        if found_existing and self.read_bytes(path) != data:
            raise ObjectExists(f"{self.uri(path)} already exists; it is never overwritten")

    def _upload(self, path: str, data: bytes, if_generation_match: int | None) -> int:
        """Uploads ``data`` to ``path`` (0: only if absent; None: unconditionally).

        Returns:
            The generation written.

        Raises:
            google.api_core.exceptions.PreconditionFailed: The precondition did not hold.
        """
        blob = self._blob(path)
        blob.upload_from_string(
            data,
            content_type=_content_type(path),
            if_generation_match=if_generation_match,
            retry=self._retry,
            timeout=self._timeout,
        )
        return int(blob.generation)

    def read_with_generation(self, path: str) -> tuple[bytes, int]:
        """See ``ArtifactStore.read_with_generation``."""
        for _ in range(_CONSISTENT_READ_TRIES):
            before = self._generation(path)
            if before == 0:
                break
            with self._call("read", path):
                blob = self._blob(path)
                try:
                    data = blob.download_as_bytes(
                        if_generation_match=before, retry=self._retry, timeout=self._timeout
                    )
                except (gexc.PreconditionFailed, gexc.NotFound):
                    continue  # written or removed meanwhile: read again
            if self._generation(path) == before:
                return data, before
        else:
            raise StoreError(
                f"cannot read {self.uri(path)}: it changed on every one of "
                f"{_CONSISTENT_READ_TRIES} reads; another writer rewrites it constantly"
            )
        raise ObjectNotFound(f"{self.uri(path)} does not exist (while trying to read)")

    def _generation(self, path: str) -> int:
        """The live generation of the object at ``path``; 0 if there is none."""
        with self._call("read", path):
            blob = self.client.bucket(self.bucket_name).get_blob(
                self._name(path), retry=self._retry, timeout=self._timeout
            )
        return 0 if blob is None else int(blob.generation)

    def write_if_generation(self, path: str, data: bytes, generation: int) -> int:
        """See ``ArtifactStore.write_if_generation``."""
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise ValueError(f"generation must be an int >= 0 (0: create), got {generation!r}")
        with self._call("write", path, on_bucket=True):
            try:
                return self._upload(path, data, generation)
            except gexc.PreconditionFailed:
                pass
        try:  # A retried write can meet its own earlier success: the same bytes mean it happened.
            current, now = self.read_with_generation(path)
        except ObjectNotFound:
            current, now = None, 0
        if current == data:
            return now
        raise GenerationMismatch(
            f"{self.uri(path)} is at generation {now}, not {generation}: another writer changed "
            f"it since it was read; read it again and decide anew"
        )

    def exists(self, path: str) -> bool:
        """See ``ArtifactStore.exists``."""
        with self._call("check", path):
            blob = self._blob(path)
            return bool(blob.exists(retry=self._retry, timeout=self._timeout))

    def _iterate(self, prefix: str, *, delimiter: str | None) -> tuple[list[str], list[str]]:
        """Object names and (with ``delimiter``) sub-folder prefixes under folder ``prefix``."""
        folder = self._folder(prefix)
        with self._call("list", prefix, on_bucket=True):
            iterator = self.client.list_blobs(
                self.bucket_name,
                prefix=folder,
                delimiter=delimiter,
                retry=self._retry,
                timeout=self._timeout,
            )
            names = [blob.name[len(folder) :] for page in iterator.pages for blob in page]
        return names, [p[len(folder) :] for p in iterator.prefixes]

    def list(self, prefix: str = "") -> list[str]:
        """See ``ArtifactStore.list``."""
        names, _ = self._iterate(prefix, delimiter=None)
        return sorted(n for n in names if n and not n.endswith("/"))

    def list_children(self, prefix: str = "") -> list[str]:
        """See ``ArtifactStore.list_children``."""
        names, folders = self._iterate(prefix, delimiter="/")
        children = {n for n in names if n} | {f.rstrip("/") for f in folders}
        return sorted(c for c in children if c)

    def upload_dir(self, local_dir: str | os.PathLike[str], path: str) -> None:
        """See ``ArtifactStore.upload_dir``; each file is streamed from disk."""
        path = check_path(path, allow_root=True)
        for relative, file in local_files(local_dir):
            target = join(path, relative)
            with self._call("upload", target, on_bucket=True):
                blob = self._blob(target)
                blob.upload_from_filename(
                    str(file),
                    content_type=_content_type(target),
                    retry=self._retry,
                    timeout=self._timeout,
                )

    def download_dir(self, path: str, local_dir: str | os.PathLike[str]) -> None:
        """See ``ArtifactStore.download_dir``; each object is streamed to disk."""
        path = check_path(path, allow_root=True)
        names = self.list(path)
        if not names:
            raise ObjectNotFound(f"nothing to download: there is no object under {self.uri(path)}")
        for relative in names:
            source = join(path, relative)
            target = Path(local_dir, *relative.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._call("download", source):
                blob = self._blob(source)
                blob.download_to_filename(str(target), retry=self._retry, timeout=self._timeout)


def _content_type(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"
