"""The ArtifactStore and TrialRecords contract, run on every store kind (the ``store`` fixture)."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.store import (
    ArtifactStore,
    ExperimentLayout,
    LocalStore,
    ObjectExists,
    ObjectNotFound,
    TrialAlreadyFinished,
    TrialConflict,
    TrialNotProposed,
    TrialRecords,
)
from kfnas.store.local import TEMP_PREFIX

# --- objects -------------------------------------------------------------------------------------


def test_text_round_trip(store: ArtifactStore) -> None:
    store.write_text("a/b.json", '{"name": "Zürich ✓"}')
    assert store.read_text("a/b.json") == '{"name": "Zürich ✓"}'


def test_bytes_round_trip(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 4
    store.write_bytes("blob.bin", data)
    assert store.read_bytes("blob.bin") == data


def test_missing_object_raises_object_not_found_naming_the_uri(store: ArtifactStore) -> None:
    with pytest.raises(ObjectNotFound) as info:
        store.read_text("nope/missing.json")
    assert isinstance(info.value, FileNotFoundError)
    assert store.uri("nope/missing.json") in str(info.value)
    assert "does not exist" in str(info.value)


def test_a_folder_is_not_an_object(store: ArtifactStore) -> None:
    store.write_text("dir/file.txt", "x")
    assert store.exists("dir/file.txt")
    assert not store.exists("dir")
    assert not store.exists("dir/other.txt")
    with pytest.raises(ObjectNotFound):
        store.read_bytes("dir")


def test_overwrite_replaces_the_whole_object(store: ArtifactStore) -> None:
    store.write_text("x.txt", "a long first version")
    store.write_text("x.txt", "short")
    assert store.read_text("x.txt") == "short"


def test_if_absent_creates_a_new_object(store: ArtifactStore) -> None:
    store.write_text("new.txt", "first", if_absent=True)
    assert store.read_text("new.txt") == "first"


def test_if_absent_refuses_an_existing_object(store: ArtifactStore) -> None:
    store.write_text("x.txt", "kept")
    with pytest.raises(ObjectExists) as info:
        store.write_text("x.txt", "other", if_absent=True)
    assert isinstance(info.value, FileExistsError)
    assert store.uri("x.txt") in str(info.value)
    assert "already exists" in str(info.value)
    assert store.read_text("x.txt") == "kept"


def _run_threads(threads: list[threading.Thread], timeout_s: float = 20.0) -> None:
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads did not finish in time"


def test_concurrent_creators_exactly_one_wins(store: ArtifactStore) -> None:
    barrier = threading.Barrier(6, timeout=10)
    outcomes: dict[int, str] = {}

    def create(i: int) -> None:
        barrier.wait()
        try:
            store.write_text("race.txt", f"writer {i}", if_absent=True)
            outcomes[i] = "won"
        except ObjectExists:
            outcomes[i] = "refused"

    _run_threads([threading.Thread(target=create, args=(i,)) for i in range(6)])
    winners = [i for i, outcome in outcomes.items() if outcome == "won"]
    assert len(outcomes) == 6
    assert len(winners) == 1
    assert store.read_text("race.txt") == f"writer {winners[0]}"


def test_readers_only_see_whole_objects_during_overwrites(store: ArtifactStore) -> None:
    versions = [bytes([65 + i % 26]) * (256 * 1024) for i in range(20)]
    store.write_bytes("big.bin", versions[0])
    done, reading = threading.Event(), threading.Event()
    seen: list[bytes] = []
    bad: list[int] = []

    def read() -> None:
        deadline = time.monotonic() + 15
        while not done.is_set() and time.monotonic() < deadline:
            data = store.read_bytes("big.bin")
            seen.append(data)
            reading.set()
            if data not in versions:
                bad.append(len(data))

    def write() -> None:
        try:
            reading.wait(timeout=10)
            for version in versions[1:]:
                store.write_bytes("big.bin", version)
        finally:
            done.set()

    _run_threads(
        [threading.Thread(target=read) for _ in range(3)] + [threading.Thread(target=write)]
    )
    assert len(set(seen)) >= 2, "readers should have read while the writer wrote"
    assert bad == []
    assert store.read_bytes("big.bin") == versions[-1]


def _fill(store: ArtifactStore) -> None:
    for path in ["a/b/c.txt", "a/x.txt", "a/b2.txt", "ab.txt", "z.txt"]:
        store.write_text(path, path)


def test_list_is_recursive_sorted_and_relative_to_the_prefix(store: ArtifactStore) -> None:
    _fill(store)
    assert store.list("a") == ["b/c.txt", "b2.txt", "x.txt"]
    assert store.list("a/") == ["b/c.txt", "b2.txt", "x.txt"]
    assert store.list("a/b") == ["c.txt"]
    assert store.list() == ["a/b/c.txt", "a/b2.txt", "a/x.txt", "ab.txt", "z.txt"]
    assert store.list("missing") == []


def test_list_children_gives_immediate_names(store: ArtifactStore) -> None:
    _fill(store)
    assert store.list_children() == ["a", "ab.txt", "z.txt"]
    assert store.list_children("a") == ["b", "b2.txt", "x.txt"]
    assert store.list_children("missing") == []


def test_upload_and_download_a_nested_folder(store: ArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "source"
    files = {
        "saved_model.pb": b"\x00\x01model",
        "variables/variables.index": b"index",
        "variables/deep/er/data-00000-of-00001": bytes(range(256)) * 100,
        "assets/empty.txt": b"",
    }
    for relative, data in files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_bytes(data)
    store.upload_dir(source, "exp/export/v1")
    assert store.list("exp/export/v1") == sorted(files)
    assert store.read_bytes("exp/export/v1/variables/variables.index") == b"index"

    target = tmp_path / "target"
    store.download_dir("exp/export/v1", target)
    got = {
        p.relative_to(target).as_posix(): p.read_bytes() for p in target.rglob("*") if p.is_file()
    }
    assert got == files


def test_download_of_an_empty_folder_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound, match="nothing to download"):
        store.download_dir("no/such/folder", tmp_path / "out")


def test_upload_of_a_missing_folder_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="not a folder"):
        store.upload_dir(tmp_path / "missing", "dest")


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("../escape.txt", "'..'"),
        ("a/../../b", "'..'"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty"),
        ("./a", "'.'"),
        ("", "empty"),
        ("a\\b", "backslash"),
    ],
)
def test_bad_paths_are_refused(store: ArtifactStore, path: str, words: str) -> None:
    for call in (
        lambda: store.read_text(path),
        lambda: store.write_text(path, "x"),
        lambda: store.exists(path),
    ):
        with pytest.raises(ValueError, match=words):
            call()


def test_uri_names_the_root_and_path(store: ArtifactStore) -> None:
    assert store.uri("a/b.json") == f"{store.root}/a/b.json"
    assert store.uri("") == store.root
    assert not store.root.endswith("/")


# --- local atomicity -----------------------------------------------------------------------------


def test_local_crash_before_rename_leaves_the_old_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.write_text("a/result.json", "old")

    def crash(*args: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(os, "unlink", lambda *args: None)  # as if killed: no clean-up runs
    with pytest.raises(OSError, match="simulated crash"):
        store.write_text("a/result.json", "new content")
    monkeypatch.undo()

    leftovers = [p.name for p in (tmp_path / "a").iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert len(leftovers) == 1, "the simulated crash should leave its temp file"
    assert store.read_text("a/result.json") == "old"
    assert store.list() == ["a/result.json"]
    assert store.list_children("a") == ["result.json"]


def test_local_failed_write_removes_its_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)
    store.write_text("x.txt", "old")

    def fail(fd: int) -> None:
        raise OSError(errno.EIO, "simulated disk error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="simulated disk error"):
        store.write_text("x.txt", "new")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    assert store.read_text("x.txt") == "old"


def test_local_folder_with_only_a_temp_file_is_not_a_child(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_text("trials/000001/trial.json", "{}")
    (tmp_path / "trials" / "000002").mkdir()
    (tmp_path / "trials" / "000002" / f"{TEMP_PREFIX}abc").write_text("partial")
    assert store.list_children("trials") == ["000001"]


def test_local_create_only_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(*args: object) -> None:
        raise OSError(errno.EPERM, "hard links not supported here")

    monkeypatch.setattr(os, "link", no_links)
    store = LocalStore(tmp_path)
    store.write_text("x.txt", "first", if_absent=True)
    with pytest.raises(ObjectExists):
        store.write_text("x.txt", "second", if_absent=True)
    assert store.read_text("x.txt") == "first"
    assert store.list() == ["x.txt"]


def test_local_temp_prefix_is_reserved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        LocalStore(tmp_path).write_text(f"a/{TEMP_PREFIX}x", "x")


# --- trial records -------------------------------------------------------------------------------


def _spec(trial_id: int, study: str = "proxy", seed: int = 0) -> TrialSpec:
    return TrialSpec(
        experiment="exp-1",
        study=study,
        trial_id=trial_id,
        round=1,
        space="mnasnet",
        dna_json="{}",
        arch_json="{}",
        budget={"steps": 10},
        seed=seed,
    )


def _result(trial_id: int, reward: float = 0.5) -> TrialResult:
    return TrialResult(trial_id=trial_id, status=TrialStatus.COMPLETED, reward=reward)


@pytest.fixture
def records(store: ArtifactStore) -> TrialRecords:
    return TrialRecords(store, ExperimentLayout("exp-1"))


def test_result_json_written_last_marks_the_trial_done(records: TrialRecords) -> None:
    records.write_spec(_spec(7))
    assert records.read_spec("proxy", 7) == _spec(7)
    assert records.read_result("proxy", 7) is None
    records.write_result("proxy", _result(7))
    assert records.read_result("proxy", 7) == _result(7)
    assert records.store.exists("exp-1/studies/proxy/trials/000007/result.json")


def test_a_finished_trial_is_never_overwritten(records: TrialRecords) -> None:
    records.write_spec(_spec(3))
    records.write_result("proxy", _result(3, reward=0.9))
    failed = TrialResult(trial_id=3, status=TrialStatus.FAILED, error="OOM")
    with pytest.raises(TrialAlreadyFinished) as info:
        records.write_result("proxy", failed)
    assert "trial 3" in str(info.value)
    assert "never overwritten" in str(info.value)
    assert records.read_result("proxy", 3) == _result(3, reward=0.9)


def test_a_result_without_trial_json_is_refused(records: TrialRecords) -> None:
    with pytest.raises(TrialNotProposed) as info:
        records.write_result("proxy", _result(4))
    assert "trial.json" in str(info.value)
    assert "trial 4" in str(info.value)
    assert records.read_result("proxy", 4) is None


def test_rewriting_a_spec_is_a_no_op_but_a_different_one_is_refused(records: TrialRecords) -> None:
    records.write_spec(_spec(1))
    records.write_spec(_spec(1))
    with pytest.raises(TrialConflict, match=r"different trial\.json"):
        records.write_spec(_spec(1, seed=42))
    assert records.read_spec("proxy", 1).seed == 0


def test_a_spec_of_another_experiment_is_refused(store: ArtifactStore) -> None:
    records = TrialRecords(store, ExperimentLayout("other"))
    with pytest.raises(ValueError, match="belongs to experiment 'exp-1'"):
        records.write_spec(_spec(1))


def test_trial_ids_are_in_numeric_order(records: TrialRecords) -> None:
    assert records.trial_ids("proxy") == []
    assert records.next_trial_id("proxy") == 1
    for trial_id in (2, 10, 1):
        records.write_spec(_spec(trial_id))
    records.store.write_text("exp-1/studies/proxy/trials/notes.txt", "not a trial")
    assert records.trial_ids("proxy") == [1, 2, 10]
    assert records.next_trial_id("proxy") == 11
    assert records.trial_ids("validation") == []


def test_history_pairs_specs_with_results_in_id_order(records: TrialRecords) -> None:
    for trial_id in (3, 1, 2):
        records.write_spec(_spec(trial_id))
    records.write_result("proxy", _result(1, reward=0.1))
    records.write_result("proxy", _result(3, reward=0.3))
    assert records.history("proxy") == [
        (_spec(1), _result(1, reward=0.1)),
        (_spec(2), None),
        (_spec(3), _result(3, reward=0.3)),
    ]
