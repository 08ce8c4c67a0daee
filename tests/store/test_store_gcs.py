"""GcsStore against the real google-cloud-storage client and a gcp-storage-emulator server.

Faults are injected below the client: a requests adapter mounted on the client's HTTP session
answers some requests itself (503, 429, 403, a dropped connection) before forwarding the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
from google.cloud import storage
from requests.adapters import HTTPAdapter

from kfnas.store import AccessDenied, GcsStore, ObjectExists, ObjectNotFound, StoreError, open_store

if TYPE_CHECKING:
    from conftest import Emulator
    from google.api_core.retry import Retry


class FaultyAdapter(HTTPAdapter):
    """Answers the first ``failures`` requests that ``match`` with ``status`` (or drops them).

    ``status=None`` raises a connection error; ``after_forwarding=True`` forwards the request first
    and then answers with the failure, like a response lost on the way back.
    """

    def __init__(
        self,
        failures: int,
        status: int | None = 503,
        *,
        match: Callable[[requests.PreparedRequest], bool] = lambda request: True,
        after_forwarding: bool = False,
    ):
        super().__init__()
        self.failures = failures
        self.status = status
        self.match = match
        self.after_forwarding = after_forwarding
        self.requests: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:  # type: ignore[override]
        self.requests.append(f"{request.method} {request.url}")
        if self.failures <= 0 or not self.match(request):
            return super().send(request, **kwargs)  # type: ignore[arg-type]
        self.failures -= 1
        if self.after_forwarding:
            super().send(request, **kwargs)  # type: ignore[arg-type]
        if self.status is None:
            raise requests.ConnectionError("injected: connection reset")
        response = requests.Response()
        response.status_code = self.status
        response.reason = "injected"
        response._content = (
            f'{{"error": {{"code": {self.status}, "message": "injected"}}}}'.encode()
        )
        response.headers["content-type"] = "application/json"
        response.request = request
        response.url = request.url or ""
        return response


def _mount(client: storage.Client, emulator: Emulator, adapter: FaultyAdapter) -> FaultyAdapter:
    client._http.mount(emulator.endpoint, adapter)
    return adapter


@pytest.fixture
def gcs(gcs_client: storage.Client, gcs_bucket: str, fast_retry: Retry) -> GcsStore:
    return GcsStore(f"gs://{gcs_bucket}/pre/fix", gcs_client, retry=fast_retry)


def _upload_one(store: GcsStore, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("file")
    store.upload_dir(tmp_path / "d", "up")


OPERATIONS: dict[str, Callable[[GcsStore, Path], object]] = {
    "write": lambda s, _: s.write_text("x.txt", "new"),
    "read": lambda s, _: s.read_text("x.txt"),
    "exists": lambda s, _: s.exists("x.txt"),
    "list": lambda s, _: s.list(),
    "list_children": lambda s, _: s.list_children(),
    "upload_dir": _upload_one,
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("status", [503, 429, None], ids=["503", "429", "connection"])
def test_transient_errors_are_retried(
    gcs: GcsStore,
    gcs_emulator: Emulator,
    tmp_path: Path,
    operation: str,
    status: int | None,
) -> None:
    gcs.write_text("x.txt", "old")
    adapter = _mount(gcs.client, gcs_emulator, FaultyAdapter(2, status))
    OPERATIONS[operation](gcs, tmp_path)
    assert adapter.failures == 0
    assert len(adapter.requests) == 3, adapter.requests  # two failures, then success


def test_retried_reads_return_the_content(gcs: GcsStore, gcs_emulator: Emulator) -> None:
    gcs.write_text("x.txt", "content")
    _mount(gcs.client, gcs_emulator, FaultyAdapter(2, 503))
    assert gcs.read_text("x.txt") == "content"
    assert gcs.list() == ["x.txt"]


def test_a_create_whose_response_was_lost_still_succeeds(
    gcs: GcsStore, gcs_emulator: Emulator
) -> None:
    adapter = _mount(
        gcs.client,
        gcs_emulator,
        FaultyAdapter(1, 503, match=lambda r: r.method == "POST", after_forwarding=True),
    )
    gcs.write_text("result.json", '{"done": true}', if_absent=True)
    uploads = [r for r in adapter.requests if r.startswith("POST")]
    assert len(uploads) == 2  # the first reached the server; its retry met a 412 ...
    assert any("alt=media" in r for r in adapter.requests[2:])  # ... so the object was read back
    assert gcs.read_text("result.json") == '{"done": true}'


def test_a_retried_create_over_other_content_is_refused(gcs: GcsStore) -> None:
    gcs.write_text("result.json", "first")
    with pytest.raises(ObjectExists, match="already exists"):
        gcs.write_text("result.json", "second", if_absent=True)
    assert gcs.read_text("result.json") == "first"


@pytest.mark.parametrize(
    ("status", "words"), [(403, "permission denied"), (401, "no usable Google credentials")]
)
def test_permission_errors_are_not_retried(
    gcs: GcsStore, gcs_emulator: Emulator, status: int, words: str
) -> None:
    adapter = _mount(gcs.client, gcs_emulator, FaultyAdapter(100, status))
    with pytest.raises(AccessDenied) as info:
        gcs.read_text("x.txt")
    assert isinstance(info.value, PermissionError)
    assert words in str(info.value)
    assert gcs.uri("x.txt") in str(info.value)
    with pytest.raises(AccessDenied):
        gcs.write_text("x.txt", "data")
    assert len(adapter.requests) == 2  # one attempt each


def test_a_missing_object_is_not_retried(gcs: GcsStore, gcs_emulator: Emulator) -> None:
    adapter = _mount(gcs.client, gcs_emulator, FaultyAdapter(0))
    with pytest.raises(ObjectNotFound, match="does not exist"):
        gcs.read_text("missing.txt")
    assert len(adapter.requests) == 1


def test_persistent_transient_errors_give_up_at_the_deadline(
    gcs_client: storage.Client, gcs_bucket: str, gcs_emulator: Emulator, fast_retry: Retry
) -> None:
    store = GcsStore(f"gs://{gcs_bucket}", gcs_client, retry=fast_retry.with_timeout(0.5))
    adapter = _mount(gcs_client, gcs_emulator, FaultyAdapter(10_000, 503))
    start = time.monotonic()
    with pytest.raises(StoreError) as info:
        store.write_text("x.txt", "data")
    assert time.monotonic() - start < 5
    assert len(adapter.requests) > 1
    assert "transient errors" in str(info.value)
    assert "gs://" in str(info.value)


def test_a_missing_bucket_is_reported(
    gcs_client: storage.Client, fast_retry: Retry, tmp_path: Path
) -> None:
    store = GcsStore("gs://no-such-bucket-here/p", gcs_client, retry=fast_retry)
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist"):
        store.write_text("x.txt", "data")
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist"):
        store.list()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist"):
        store.upload_dir(tmp_path / "d", "up")
    with pytest.raises(ObjectNotFound, match="does not exist"):
        store.read_text("x.txt")


def test_objects_lie_under_the_prefix(gcs: GcsStore, gcs_client: storage.Client) -> None:
    gcs.write_text("exp/experiment.json", "{}")
    names = [b.name for b in gcs_client.list_blobs(gcs.bucket_name)]
    assert names == ["pre/fix/exp/experiment.json"]
    blob = gcs_client.bucket(gcs.bucket_name).get_blob("pre/fix/exp/experiment.json")
    assert blob is not None
    assert blob.content_type == "application/json"


def test_open_store_parses_bucket_and_prefix(gcs_client: storage.Client) -> None:
    store = open_store("gs://my-bucket/runs/a", client=gcs_client)
    assert isinstance(store, GcsStore)
    assert (store.bucket_name, store.prefix) == ("my-bucket", "runs/a")
    assert store.client is gcs_client
    assert store.root == "gs://my-bucket/runs/a"
    assert store.uri("x/y.json") == "gs://my-bucket/runs/a/x/y.json"
    bare = open_store("gs://my-bucket/", client=gcs_client)
    assert isinstance(bare, GcsStore)
    assert (bare.bucket_name, bare.prefix, bare.root) == ("my-bucket", "", "gs://my-bucket")


def test_open_store_creates_a_default_client_from_the_environment(
    gcs_emulator: Emulator,
    gcs_bucket: str,
    gcs_client: storage.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    store = open_store(f"gs://{gcs_bucket}/env")
    store.write_text("a.txt", "via the default client")
    blob = gcs_client.bucket(gcs_bucket).blob("env/a.txt")
    assert blob.download_as_text() == "via the default client"


@pytest.mark.parametrize(
    ("uri", "words"),
    [("gs://", "has no bucket"), ("gs://Bad_Bucket/x", "not valid"), ("gs://b/../x", "'..'")],
)
def test_bad_gcs_uris_are_refused(uri: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        GcsStore(uri, client=None)
