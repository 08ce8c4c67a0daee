"""Generations (compare-and-swap), leases, trial claims, file modes and the store probe.

Each store test runs on a LocalStore and on a GcsStore on the emulator (the ``store`` fixture).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kfnas.store import ArtifactStore, ExperimentLayout, LocalStore, ObjectNotFound
from kfnas.store.base import GenerationMismatch, StoreError
from kfnas.store.lease import (
    ClaimOutcome,
    Lease,
    LeaseLost,
    check_lease_timing,
    claim_trial,
    ended_here,
    process_identity,
)
from kfnas.store.local import GEN_PREFIX, TEMP_PREFIX
from kfnas.store.schemes import PROBE_DIR, store_problems


class FakeClock:
    """Epoch seconds that only move when told."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _race(n: int, work) -> dict[int, object]:
    barrier = threading.Barrier(n, timeout=10)
    outcomes: dict[int, object] = {}

    def run(i: int) -> None:
        barrier.wait()
        outcomes[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(outcomes) == n, "racers did not finish"
    return outcomes


# --- generations ---------------------------------------------------------------------------------


def test_a_conditional_write_needs_the_current_generation(store: ArtifactStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.read_with_generation("g/x.json")
    first = store.write_if_generation("g/x.json", b"one", 0)
    assert store.read_with_generation("g/x.json") == (b"one", first)
    with pytest.raises(GenerationMismatch, match="generation"):
        store.write_if_generation("g/x.json", b"again", 0)
    second = store.write_if_generation("g/x.json", b"two", first)
    assert second != first
    with pytest.raises(GenerationMismatch, match="read it again"):
        store.write_if_generation("g/x.json", b"stale", first)
    assert store.read_with_generation("g/x.json") == (b"two", second)
    assert store.list("g") == ["x.json"]  # no counter or lock files listed


def test_a_plain_write_moves_the_generation(store: ArtifactStore) -> None:
    store.write_text("p.json", "plain")
    _, generation = store.read_with_generation("p.json")
    store.write_if_generation("p.json", b"cas", generation)
    _, after_cas = store.read_with_generation("p.json")
    store.write_text("p.json", "plain again")
    assert store.read_with_generation("p.json")[1] != after_cas
    with pytest.raises(GenerationMismatch):
        store.write_if_generation("p.json", b"stale", after_cas)


def test_concurrent_conditional_writers_exactly_one_wins(store: ArtifactStore) -> None:
    store.write_if_generation("race.json", b"start", 0)
    _, generation = store.read_with_generation("race.json")

    def write(i: int) -> str:
        try:
            store.write_if_generation("race.json", f"writer {i}".encode(), generation)
            return "won"
        except GenerationMismatch:
            return "refused"

    outcomes = _race(6, write)
    winners = [i for i, o in outcomes.items() if o == "won"]
    assert len(winners) == 1
    assert store.read_bytes("race.json") == f"writer {winners[0]}".encode()


def test_bad_generations_are_refused(store: ArtifactStore) -> None:
    for bad in (-1, True, "3"):
        with pytest.raises(ValueError, match="generation must be an int"):
            store.write_if_generation("x.json", b"x", bad)  # type: ignore[arg-type]


# --- leases --------------------------------------------------------------------------------------


def test_one_holder_at_a_time_and_takeover_after_expiry(store: ArtifactStore) -> None:
    clock = FakeClock()
    first, second = (
        Lease(store, "l/lease.json", clock=clock),
        Lease(store, "l/lease.json", clock=clock),
    )
    assert second.holder() is None
    assert first.acquire("runner-a", ttl_s=60)
    assert not second.acquire("runner-b", ttl_s=60)
    info = second.holder()
    assert info is not None and info.owner == "runner-a" and info.live(clock.now)
    assert info.expires == clock.now + 60

    clock.now += 30
    assert first.renew().expires == clock.now + 60
    clock.now += 59  # renewed: still live
    assert not second.acquire("runner-b", ttl_s=60)

    clock.now += 2  # expired: the second takes over, the first may no longer renew
    assert second.acquire("runner-b", ttl_s=60)
    with pytest.raises(LeaseLost, match="taken over by runner-b"):
        first.renew()
    assert not first.release()
    assert store.exists("l/lease.json") and second.holder().owner == "runner-b"


HOLDER = """
import os, sys, time
from kfnas.store.lease import Lease
from kfnas.store.local import LocalStore
assert Lease(LocalStore(sys.argv[1]), "l/lease.json").acquire("runner-a", ttl_s=3600)
print("held", flush=True)
if sys.argv[2] == "die":
    os.kill(os.getpid(), 9)
time.sleep(60)
"""


def test_a_lease_whose_holder_ended_on_this_host_is_free_at_once(tmp_path: Path) -> None:
    """A killed runner's next attempt on the same host does not wait an hour for the expiry."""
    store = LocalStore(str(tmp_path))
    died = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path), "die"], check=False)
    assert died.returncode == -9
    holder = Lease(store, "l/lease.json").holder()
    assert holder is not None and holder.live(time.time()) and ended_here(holder.process)
    assert Lease(store, "l/lease.json").acquire("runner-b", ttl_s=60)

    # A live holder keeps it, and so does one this host cannot see (another pod, another node).
    (tmp_path / "l" / "lease.json").unlink()
    live = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "live"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout is not None and live.stdout.readline().strip() == "held"
        assert not Lease(store, "l/lease.json").acquire("runner-b", ttl_s=60)
    finally:
        live.kill()
        live.wait()
    assert ended_here(Lease(store, "l/lease.json").holder().process)
    mine = process_identity().split("|")
    assert not ended_here("|".join(["other-pod", *mine[1:3], "0"]))
    assert not ended_here("") and not ended_here("garbage")
    assert not ended_here(process_identity())


def test_a_released_lease_is_free_at_once(store: ArtifactStore) -> None:
    clock = FakeClock()
    first, second = Lease(store, "lease.json", clock=clock), Lease(store, "lease.json", clock=clock)
    assert first.acquire("a", ttl_s=600)
    assert first.release()
    assert not first.holder().live(clock.now)
    assert second.acquire("b", ttl_s=600)
    assert first.acquire("a", ttl_s=600) is False


def test_acquiring_a_held_lease_again_renews_it(store: ArtifactStore) -> None:
    clock = FakeClock()
    lease = Lease(store, "lease.json", clock=clock)
    assert lease.acquire("a", ttl_s=10)
    clock.now += 5
    assert lease.acquire("a", ttl_s=10)
    assert lease.holder().expires == clock.now + 10


def test_a_damaged_lease_is_taken_over(store: ArtifactStore) -> None:
    store.write_text("lease.json", "{not json")
    lease = Lease(store, "lease.json")
    assert lease.holder() is None
    assert lease.acquire("a", ttl_s=10)
    assert lease.holder().owner == "a"


def test_racing_acquirers_exactly_one_wins(store: ArtifactStore) -> None:
    outcomes = _race(6, lambda i: Lease(store, "race/lease.json").acquire(f"r{i}", ttl_s=60))
    winners = [i for i, won in outcomes.items() if won]
    assert len(winners) == 1
    assert Lease(store, "race/lease.json").holder().owner == f"r{winners[0]}"


def test_racing_takers_of_an_expired_lease_exactly_one_wins(store: ArtifactStore) -> None:
    clock = FakeClock()
    assert Lease(store, "lease.json", clock=clock).acquire("dead", ttl_s=1)
    clock.now += 5
    outcomes = _race(6, lambda i: Lease(store, "lease.json", clock=clock).acquire(f"r{i}", 60))
    assert sum(1 for won in outcomes.values() if won) == 1


# --- trial claims --------------------------------------------------------------------------------


LAYOUT = ExperimentLayout("exp-1")


@pytest.mark.parametrize(("ttl_s", "renew_every_s"), [(10, 30), (30, 30)])
def test_a_lease_shorter_than_its_renewal_interval_is_refused(ttl_s, renew_every_s) -> None:
    problems = check_lease_timing(ttl_s, renew_every_s)
    assert len(problems) == 1 and "not longer than its renewal interval" in problems[0]
    assert "ttl_s >= 3 x renew_every_s" in problems[0]
    with (
        pytest.raises(ValueError, match="would expire before it is renewed"),
        claim_trial(
            LocalStore("/nonexistent"), LAYOUT, "proxy", 1, ttl_s=ttl_s, renew_every_s=renew_every_s
        ),
    ):
        pass
    assert check_lease_timing(90, 30) == []
    assert "must be > 0" in check_lease_timing(0, 30)[0]


def test_a_finished_trial_is_not_claimed(store: ArtifactStore) -> None:
    store.write_text(LAYOUT.trial_result("proxy", 1), "{}")
    with claim_trial(store, LAYOUT, "proxy", 1, "a") as claim:
        assert claim.outcome is ClaimOutcome.DONE
        with pytest.raises(LeaseLost, match="must not write"):
            claim.check()
    assert not store.exists(LAYOUT.trial_lease("proxy", 1))


def test_a_claim_renews_while_held_and_releases_at_the_end(store: ArtifactStore) -> None:
    path = LAYOUT.trial_lease("proxy", 2)
    with claim_trial(store, LAYOUT, "proxy", 2, "a", ttl_s=3, renew_every_s=0.2) as claim:
        assert claim.outcome is ClaimOutcome.ACQUIRED
        first = Lease(store, path).holder()
        time.sleep(0.7)
        claim.check()
        later = Lease(store, path).holder()
        assert later.expires > first.expires and later.token == first.token
        with claim_trial(store, LAYOUT, "proxy", 2, "b", wait=False) as other:
            assert other.outcome is ClaimOutcome.WAIT
    assert not Lease(store, path).holder().live(time.time())


def test_a_waiting_runner_returns_when_the_result_appears(store: ArtifactStore) -> None:
    clock = FakeClock(time.time())
    assert Lease(store, LAYOUT.trial_lease("proxy", 3), clock=clock).acquire("a", 600)
    timer = threading.Timer(0.3, store.write_text, (LAYOUT.trial_result("proxy", 3), "{}"))
    timer.start()
    with claim_trial(store, LAYOUT, "proxy", 3, "b", poll_s=0.05, ttl_s=9, renew_every_s=3) as c:
        assert c.outcome is ClaimOutcome.DONE
    timer.join()


def test_a_waiting_runner_takes_over_an_expired_lease(store: ArtifactStore) -> None:
    clock = FakeClock()
    assert Lease(store, LAYOUT.trial_lease("proxy", 4), clock=clock).acquire("dead", 60)
    with claim_trial(store, LAYOUT, "proxy", 4, "b", wait=False, poll_s=0.01, clock=clock) as claim:
        assert claim.outcome is ClaimOutcome.WAIT
        assert claim.wait(timeout_s=0.0) is ClaimOutcome.WAIT
        clock.now += 61
        assert claim.wait() is ClaimOutcome.ACQUIRED
        claim.check()


def test_a_claim_lost_to_a_takeover_refuses_writes(store: ArtifactStore) -> None:
    path = LAYOUT.trial_lease("proxy", 5)
    with claim_trial(store, LAYOUT, "proxy", 5, "a", ttl_s=3, renew_every_s=0.1) as claim:
        assert claim.outcome is ClaimOutcome.ACQUIRED
        _, generation = store.read_with_generation(path)
        store.write_if_generation(
            path, b'{"owner": "b", "token": "t", "acquired": 0, "expires": 9e12}', generation
        )  # a taker after an expiry
        deadline = time.monotonic() + 5
        while not claim._claim.lost.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LeaseLost, match="stop writing"):
            claim.check()
    assert Lease(store, path).holder().owner == "b"  # not released over the new holder


# --- file modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)]
)
def test_local_files_and_folders_follow_the_umask(
    tmp_path: Path, umask, file_mode, dir_mode
) -> None:
    old = os.umask(umask)
    try:
        store = LocalStore(tmp_path / "store")
        store.write_text("exp/export/v1/handoff.json", "{}")
        store.write_text("exp/created.json", "{}", if_absent=True)
        store.write_if_generation("exp/export/latest", b"{}", 0)
        (tmp_path / "local" / "v1").mkdir(parents=True)
        (tmp_path / "local" / "v1" / "handoff.json").write_text("{}")
        store.upload_dir(tmp_path / "local", "copy")
    finally:
        os.umask(old)
    root = tmp_path / "store"
    for name in (
        "exp/export/v1/handoff.json",
        "exp/created.json",
        "exp/export/latest",
        "copy/v1/handoff.json",
    ):
        assert stat.S_IMODE((root / name).stat().st_mode) == file_mode, name
    for name in ("exp", "exp/export", "exp/export/v1", "copy"):
        assert stat.S_IMODE((root / name).stat().st_mode) == dir_mode, name


# --- the store probe -----------------------------------------------------------------------------


def test_a_working_store_has_no_problems(store: ArtifactStore) -> None:
    assert store_problems(store) == []
    assert len(store.list(PROBE_DIR)) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write any folder")
def test_a_read_only_local_store_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        problems = store_problems(LocalStore(root))
    finally:
        root.chmod(0o755)
    assert len(problems) == 1 and "cannot be written" in problems[0]
    assert "mount it read-write" in problems[0]


class IgnoresPreconditions(LocalStore):
    """A store whose conditional writes always succeed, like a server ignoring preconditions."""

    def write_if_generation(self, path: str, data: bytes, generation: int) -> int:
        self.write_bytes(path, data)
        return self.read_with_generation(path)[1]


class IgnoresCreateOnly(LocalStore):
    def write_bytes(self, path: str, data: bytes, *, if_absent: bool = False) -> None:
        super().write_bytes(path, data)


def test_a_store_without_preconditions_is_refused(tmp_path: Path) -> None:
    problems = store_problems(IgnoresPreconditions(tmp_path))
    assert len(problems) == 1 and "does not honour generation preconditions" in problems[0]
    assert "retention policy" in problems[0] and "NFS v4" in problems[0]
    problems = store_problems(IgnoresCreateOnly(tmp_path))
    assert len(problems) == 1 and "does not honour create-only writes" in problems[0]


def test_a_filesystem_without_posix_locks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import fcntl

    def no_locks(*args: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    problems = store_problems(LocalStore(tmp_path))
    assert len(problems) == 1 and "has no POSIX locks" in problems[0]


def test_counter_files_are_hidden_and_reserved(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_if_generation("a/x.json", b"1", 0)
    assert (tmp_path / "a" / f"{GEN_PREFIX}x.json").is_file()
    assert GEN_PREFIX.startswith(TEMP_PREFIX)
    assert store.list() == ["a/x.json"] and store.list_children("a") == ["x.json"]
    with pytest.raises(ValueError, match="reserved"):
        store.read_bytes(f"a/{GEN_PREFIX}x.json")


def test_a_store_outage_at_release_does_not_fail_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path)

    def outage(*args: object) -> int:
        raise StoreError("simulated outage")

    with claim_trial(store, LAYOUT, "proxy", 6, "a", ttl_s=60, renew_every_s=20) as claim:
        assert claim.outcome is ClaimOutcome.ACQUIRED
        monkeypatch.setattr(store, "write_if_generation", outage)
    holder = Lease(store, LAYOUT.trial_lease("proxy", 6)).holder()
    assert holder.owner == "a" and not holder.released  # it will expire on its own


def test_a_read_only_volume_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root (in containers) chmod does not stop writes: a read-only mount is simulated."""
    import errno
    import tempfile

    def read_only(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    problems = store_problems(LocalStore(tmp_path))
    assert len(problems) == 1 and "Read-only file system" in problems[0]
    assert "cannot be written" in problems[0] and "mount it read-write" in problems[0]
