"""Shared fixtures: a real gcp-storage-emulator server, clients and buckets on it, and stores.

The session-scoped datasets and trained, exported model live in ``shared_fixtures.py`` and are
imported here so that every test module can use them.

The emulator runs in this process (``gcp_storage_emulator.server.create_server``), in memory, on a
free 127.0.0.1 port, for the whole session. gcp-storage-emulator ignores ``ifGenerationMatch``
(checked at start-up by a probe); when it does, ``_honour_generation_match`` teaches its upload
handler to answer a failed precondition with 412 the way Cloud Storage does, so GcsStore's
create-only path is tested against the real client and a real HTTP server. The probe keeps the
patch out once an emulator release supports preconditions itself.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import pytest
from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects as emulator_objects
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY
from shared_fixtures import (  # noqa: F401 (fixtures, found by pytest by name)
    classification_data,
    detection_data,
    exported_detection,
    segmentation_data,
)

from kfnas.store import ArtifactStore, GcsStore, LocalStore

# Fast back-off for tests: transient errors are retried within seconds, not minutes.
FAST_RETRY = DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.1, multiplier=2).with_timeout(5.0)


@dataclasses.dataclass(frozen=True)
class Emulator:
    """A running emulator: its endpoint and whether it honoured preconditions on its own."""

    endpoint: str
    native_preconditions: bool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_answers(endpoint: str, deadline_s: float = 10.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            with urllib.request.urlopen(endpoint + "/", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _object_name(request: Any) -> str | None:
    if "name" in request.query:
        return request.query["name"][0]
    data = request.data  # also consumes the body before any early answer
    if isinstance(data, dict):
        return (data.get("meta") or data).get("name")
    return None


def _honour_generation_match() -> Callable[[], None]:
    """Makes the emulator's object insert answer ``ifGenerationMatch``; returns the undo."""
    original = emulator_objects.insert

    def insert(request: Any, response: Any, storage_: Any, *args: Any, **kwargs: Any) -> Any:
        wanted = request.query.get("ifGenerationMatch")
        name = _object_name(request)
        if wanted and name:
            try:
                current = str(
                    storage_.get_file_obj(request.params["bucket_name"], name)["generation"]
                )
            except NotFound:
                current = "0"
            if current != wanted[0]:
                message = "At least one of the pre-conditions you specified did not hold."
                response.status = HTTPStatus.PRECONDITION_FAILED
                response.json({"error": {"code": 412, "message": message}})
                return None
        return original(request, response, storage_, *args, **kwargs)

    def swap(old: Any, new: Any) -> None:
        emulator_objects.insert = new
        for _pattern, handlers in emulator_server.HANDLERS:
            for method, handler in handlers.items():
                if handler is old:
                    handlers[method] = new

    swap(original, insert)
    return lambda: swap(insert, original)


def _honours_generation_match(client: storage.Client) -> bool:
    bucket = client.create_bucket(f"probe-{uuid.uuid4().hex[:12]}")
    bucket.blob("probe").upload_from_string(b"1", if_generation_match=0)
    try:
        bucket.blob("probe").upload_from_string(b"2", if_generation_match=0)
    except gexc.PreconditionFailed:
        return True
    return False


def make_client(endpoint: str) -> storage.Client:
    """A google-cloud-storage client on the emulator (anonymous, project "test")."""
    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """A gcp-storage-emulator server for the session, in memory, on 127.0.0.1."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = emulator_server.create_server("127.0.0.1", port, in_memory=True)
    starter = threading.Thread(target=server.start, daemon=True)
    starter.start()
    starter.join(timeout=10)
    if starter.is_alive():
        pytest.fail(f"gcp-storage-emulator did not start on {endpoint} within 10 s")
    undo: Callable[[], None] | None = None
    try:
        _wait_until_answers(endpoint)
        native = _honours_generation_match(make_client(endpoint))
        if not native:
            undo = _honour_generation_match()
            assert _honours_generation_match(make_client(endpoint)), "412 patch had no effect"
        yield Emulator(endpoint, native)
    finally:
        if undo is not None:
            undo()
        server.stop()


@pytest.fixture
def fast_retry() -> Retry:
    """A retry policy with millisecond back-off and a 5 s deadline, for GcsStore in tests."""
    return FAST_RETRY


@pytest.fixture
def gcs_client(gcs_emulator: Emulator) -> storage.Client:
    """A fresh client on the emulator (tests may mount adapters on its HTTP session)."""
    return make_client(gcs_emulator.endpoint)


@pytest.fixture
def gcs_bucket(gcs_client: storage.Client) -> str:
    """The name of a new, empty bucket on the emulator."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    gcs_client.create_bucket(name)
    return name


@pytest.fixture(params=["local", "gcs"])
def store(request: pytest.FixtureRequest, tmp_path: Any) -> ArtifactStore:
    """Each store kind, empty: a LocalStore in tmp_path and a GcsStore under a bucket prefix."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    client = request.getfixturevalue("gcs_client")
    bucket = request.getfixturevalue("gcs_bucket")
    return GcsStore(f"gs://{bucket}/runs/one", client, retry=FAST_RETRY)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Collects the files that hold slow tests first, each file's tests in their order.

    The workers get whole files in collection order (``--dist loadfile --no-loadscope-reorder``,
    the Makefile's): the minutes-long pipeline files start at once and the many short files fill
    in around them, instead of one long file running alone at the end.
    """
    del config
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: the rest keep their order
