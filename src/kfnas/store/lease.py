"""Leases in the store: one holder at a time for a trial (or an export version), with expiry.

A lease is one JSON object in the store, written only with generation preconditions
(``ArtifactStore.write_if_generation``: ``ifGenerationMatch`` on Cloud Storage, a locked counter on
local disk), so that of two runners that try at once exactly one wins:

- ``Lease(store, path).acquire(owner, ttl_s) -> bool`` creates the object (generation 0), or takes
  over an expired or released one with its generation as the precondition; a live lease of
  another holder gives ``False``, unless that holder is a process of this host and PID namespace
  that has ended (``ended_here``: the local launcher's next attempt of a killed trial does not
  wait for the expiry).
- ``renew() -> LeaseInfo`` moves the expiry ``ttl_s`` on, with the generation this holder wrote
  last; ``LeaseLost`` if anyone else wrote the lease since (it expired and was taken over).
- ``release() -> bool`` marks it released (the next taker need not wait for the expiry); ``False``
  if it had been taken over already. ``holder() -> LeaseInfo | None`` reads it (``None``: never
  written); ``LeaseInfo.live(now)`` says whether it still holds.

Expiry compares wall clocks of different machines: keep ``ttl_s`` far above their skew (NTP keeps
cluster nodes within a second) and renew well within it (``check_lease_timing``).

The trial's runner uses ``claim_trial``::

    with claim_trial(store, layout, study, trial_id, owner="pod-x") as claim:
        if claim.outcome is ClaimOutcome.DONE:    # result.json exists (now or after waiting)
            return read the stored result
        # ClaimOutcome.ACQUIRED: this runner holds the lease; a thread renews it every
        # renew_every_s. Call claim.check() before each write of model/, logs/, result.json:
        # it raises LeaseLost once the lease was lost (renewal refused), so a stale runner
        # stops writing.
        ...train, upload, write result.json...
    # leaving the block stops the renewals and releases the lease (also on an exception)

``claim_trial(store, layout, study, trial_id, owner, ttl_s=120, renew_every_s=30, wait=True,
poll_s=5.0)``: with ``wait=True`` a runner that finds a live lease of another polls every
``poll_s`` until ``result.json`` appears (``DONE``) or the lease expires or is released (it takes
over: ``ACQUIRED``). With ``wait=False`` it returns ``ClaimOutcome.WAIT`` at once and the caller
may call ``claim.wait()`` itself. ``TrialClaim.lease_path`` is the lease's store path
(``ExperimentLayout.trial_lease``). ``claim_path(store, lease_path, done_path, owner, note=...)``
is the same for any work whose end is marked by one object (an export's ``handoff.json``).

To extend (another kind of claim): build a ``Lease`` on the claimed thing's path and call
``claim_path`` with the object that marks the work done; see ``kfnas.export.package.claim_export``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kfnas.store.base import ArtifactStore, GenerationMismatch, ObjectNotFound, StoreError
from kfnas.store.layout import ExperimentLayout

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class LeaseLost(StoreError):  # noqa: N818 (reads like the other store errors)
    """The lease was taken over by another holder: stop writing what it protects."""


def check_lease_timing(ttl_s: float, renew_every_s: float) -> list[str]:
    """What is wrong with a lease time-out and its renewal interval.

    Returns:
        Messages that say what to change; empty if the lease would be renewed in time.
    """
    problems = []
    if not ttl_s > 0:
        problems.append(f"lease ttl_s must be > 0 seconds, got {ttl_s!r}")
    if not renew_every_s > 0:
        problems.append(f"lease renew_every_s must be > 0 seconds, got {renew_every_s!r}")
    if not problems and ttl_s <= renew_every_s:
        problems.append(
            f"lease ttl_s={ttl_s:g} s is not longer than its renewal interval "
            f"renew_every_s={renew_every_s:g} s: the lease would expire before it is renewed and "
            f"another runner would take over a live trial; use ttl_s >= 3 x renew_every_s "
            f"(for example ttl_s={3 * renew_every_s:g})"
        )
    return problems


def default_owner() -> str:
    """``host:pid``, naming this process in a lease (``$HOSTNAME`` is the pod's name)."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}:{os.getpid()}"


def process_identity() -> str:
    """This process as ``host|pid namespace|pid|start time``; "" where ``/proc`` is missing.

    A lease records it so that a runner on the same host and in the same PID namespace (the local
    launcher's next attempt, a restarted container sharing the namespace) can tell that the holder
    has ended (SIGKILL, out of memory) and take over at once instead of waiting for the expiry.
    The start time tells a reused pid apart.
    """
    try:
        namespace = os.readlink("/proc/self/ns/pid")
        start = _start_time(os.getpid())
    except (OSError, IndexError):
        return ""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}|{namespace}|{os.getpid()}|{start}"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    stat = f"/proc/{pid}/stat"
    with open(stat, encoding="ascii") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def ended_here(identity: str) -> bool:
    """Whether ``identity`` names an ended process of this host and PID namespace.

    Args:
        identity: A ``process_identity()`` of another process.

    Returns:
        True when that process no longer runs; False whenever that cannot be known here (another
        host or namespace, no ``/proc``, no identity recorded).
    """
    mine = process_identity()
    parts = identity.split("|")
    if not mine or len(parts) != 4 or parts[:2] != mine.split("|")[:2]:
        return False
    try:
        return _start_time(int(parts[2])) != parts[3]
    except (OSError, ValueError, IndexError):  # no such process (any more)
        return True


@dataclasses.dataclass(frozen=True)
class LeaseInfo:
    """One state of a lease as stored.

    Attributes:
        owner: Who holds (or held) it, for people (``host:pid``).
        token: Unique per acquisition: tells two holders with the same owner apart.
        acquired: When it was acquired (epoch seconds).
        expires: When it expires unless renewed (epoch seconds).
        released: Whether its holder gave it up.
        process: The holder's ``process_identity()``: a holder seen to have ended on this host
            frees the lease before its expiry.
        generation: The store generation of this state (``write_if_generation``'s precondition).
        note: What the holder wrote about what it does (e.g. the trial an exporter exports).
    """

    owner: str
    token: str
    acquired: float
    expires: float
    released: bool = False
    process: str = ""
    generation: int = 0
    note: dict[str, Any] = dataclasses.field(default_factory=dict)

    def live(self, now: float) -> bool:
        """Whether the lease still holds at ``now`` (not released, not expired)."""
        return not self.released and now < self.expires

    def to_bytes(self) -> bytes:
        """The stored JSON (without the generation, which the store keeps)."""
        fields = dataclasses.asdict(self)
        del fields["generation"]
        return json.dumps(fields, sort_keys=True).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, generation: int) -> LeaseInfo | None:
        """The lease stored as ``data``; ``None`` if it is not a lease (damaged: take it over)."""
        try:
            fields = json.loads(data)
            return cls(
                owner=str(fields["owner"]),
                token=str(fields["token"]),
                acquired=float(fields["acquired"]),
                expires=float(fields["expires"]),
                released=bool(fields.get("released", False)),
                process=str(fields.get("process", "")),
                generation=generation,
                note=dict(fields.get("note") or {}),
            )
        except (ValueError, KeyError, TypeError):
            return None


class Lease:
    """The lease stored at ``path`` (see the module docstring).

    Args:
        store: The store holding it.
        path: Its store path (e.g. ``ExperimentLayout.trial_lease``).
        clock: Epoch seconds now (tests pass a fake one).
    """

    def __init__(self, store: ArtifactStore, path: str, *, clock: Clock = time.time):
        self.store = store
        self.path = path
        self.clock = clock
        self._held: LeaseInfo | None = None
        self._ttl_s = 0.0

    def __repr__(self) -> str:
        return f"Lease({self.store.uri(self.path)!r})"

    @property
    def held(self) -> LeaseInfo | None:
        """The state this holder wrote last, or ``None`` if it does not hold the lease."""
        return self._held

    def _read(self) -> tuple[LeaseInfo | None, int]:
        """The stored lease (``None`` if absent or damaged) and its generation (0: absent)."""
        try:
            data, generation = self.store.read_with_generation(self.path)
        except ObjectNotFound:
            return None, 0
        return LeaseInfo.from_bytes(data, generation), generation

    def holder(self) -> LeaseInfo | None:
        """The stored lease, live or not; ``None`` if there is none (or it is damaged)."""
        return self._read()[0]

    def acquire(self, owner: str, ttl_s: float, *, note: dict[str, Any] | None = None) -> bool:
        """Takes the lease if nobody holds it live; see the module docstring.

        Args:
            owner: Who takes it, for people (``default_owner()``).
            ttl_s: Seconds it holds unless renewed.
            note: JSON-able facts about the holder's work, stored with the lease.

        Returns:
            Whether this holder now holds it (``True`` again if it already did: renewed).

        Raises:
            ValueError: ``ttl_s`` is not positive.
        """
        if not ttl_s > 0:
            raise ValueError(f"lease ttl_s must be > 0 seconds, got {ttl_s!r}")
        current, generation = self._read()
        now = self.clock()
        if current is not None and current.live(now):
            if self._held is not None and current.token == self._held.token:
                self._ttl_s = ttl_s
                self.renew()
                return True
            if not ended_here(current.process):
                return False
            log.info("%s: its holder %s has ended; taking it over", self, current.owner)
        mine = LeaseInfo(
            owner,
            uuid.uuid4().hex,
            now,
            now + ttl_s,
            process=process_identity(),
            note=dict(note or {}),
        )
        try:
            new_generation = self.store.write_if_generation(self.path, mine.to_bytes(), generation)
        except GenerationMismatch:
            return False  # another taker won this generation
        self._held = dataclasses.replace(mine, generation=new_generation)
        self._ttl_s = ttl_s
        return True

    def renew(self) -> LeaseInfo:
        """Moves the expiry ``ttl_s`` on from now.

        Returns:
            The renewed state.

        Raises:
            LeaseLost: This holder does not hold it, or someone wrote it since (a takeover).
        """
        if self._held is None:
            raise LeaseLost(f"{self!r} is not held by this holder; acquire it first")
        now = self.clock()
        renewed = dataclasses.replace(self._held, expires=now + self._ttl_s)
        try:
            generation = self.store.write_if_generation(
                self.path, renewed.to_bytes(), self._held.generation
            )
        except GenerationMismatch as e:
            self._held = None
            current = self.holder()
            by = f" by {current.owner}" if current else ""
            raise LeaseLost(
                f"lease {self.store.uri(self.path)} was taken over{by} after it expired; this "
                f"holder must stop writing what it protects"
            ) from e
        self._held = dataclasses.replace(renewed, generation=generation)
        return self._held

    def release(self) -> bool:
        """Gives the lease up so that the next taker need not wait for the expiry.

        Returns:
            Whether it was released; ``False`` if this holder did not hold it (any more).
        """
        if self._held is None:
            return False
        released = dataclasses.replace(self._held, released=True, expires=self.clock())
        try:
            self.store.write_if_generation(self.path, released.to_bytes(), self._held.generation)
        except GenerationMismatch:
            return False
        finally:
            self._held = None
        return True


class Claim:
    """A held lease, renewed every ``renew_every_s`` by a daemon thread until ``stop``.

    Args:
        lease: The lease, already acquired.
        renew_every_s: Seconds between renewals.
    """

    def __init__(self, lease: Lease, renew_every_s: float):
        self.lease = lease
        self._every = renew_every_s
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"renew {lease.path}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.lease.renew()
            except LeaseLost as e:
                log.warning("%s", e)
                self.lost.set()
                return
            except (StoreError, OSError) as e:  # transient: the next renewal may get through
                held = self.lease.held
                log.warning("renewing %r failed (%s); trying again", self.lease, e)
                if held is not None and self.lease.clock() >= held.expires:
                    self.lost.set()
                    return

    def check(self) -> None:
        """Raises ``LeaseLost`` if the lease was lost: call it before each protected write."""
        if self.lost.is_set() or self.lease.held is None:
            raise LeaseLost(
                f"lease {self.lease.store.uri(self.lease.path)} was lost (not renewed in time or "
                f"taken over); stop writing: another runner owns this work now"
            )

    def stop(self, *, release: bool = True) -> None:
        """Stops renewing and (by default) releases the lease."""
        self._stop.set()
        self._thread.join()
        if release and not self.lost.is_set():
            try:
                self.lease.release()
            except (StoreError, OSError) as e:  # it expires on its own after ttl_s
                log.warning("releasing %r failed (%s); it expires on its own", self.lease, e)


class ClaimOutcome(enum.Enum):
    """What ``claim_trial`` found."""

    ACQUIRED = "acquired"  # this runner holds the lease: run the trial
    WAIT = "wait"  # another runner holds a live lease (only with wait=False)
    DONE = "done"  # result.json exists: read it, run nothing


class TrialClaim:
    """The outcome of ``claim_trial`` (or ``claim_path``); see the module docstring.

    ``done_path`` (``result_path``) is the object whose existence means the work is done.
    """

    def __init__(
        self,
        store: ArtifactStore,
        lease: Lease,
        result_path: str,
        owner: str,
        ttl_s: float,
        renew_every_s: float,
        poll_s: float,
        note: dict[str, Any],
    ):
        self.store = store
        self.lease = lease
        self.lease_path = lease.path
        self.result_path = result_path
        self._owner, self._ttl_s, self._every, self._poll_s = owner, ttl_s, renew_every_s, poll_s
        self._note = note
        self._claim: Claim | None = None
        self.outcome = self._try()

    def _try(self) -> ClaimOutcome:
        if self.store.exists(self.result_path):
            return ClaimOutcome.DONE
        if not self.lease.acquire(self._owner, self._ttl_s, note=self._note):
            return ClaimOutcome.WAIT
        if self.store.exists(self.result_path):  # finished between the check and the acquire
            self.lease.release()
            return ClaimOutcome.DONE
        self._claim = Claim(self.lease, self._every)
        return ClaimOutcome.ACQUIRED

    def wait(self, timeout_s: float | None = None) -> ClaimOutcome:
        """Polls until the result appears (``DONE``) or the lease is free and taken (``ACQUIRED``).

        Args:
            timeout_s: Give up after this long and return ``WAIT``; ``None``: wait as long as the
                other runner keeps its lease alive.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.outcome is ClaimOutcome.WAIT:
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(self._poll_s)
            self.outcome = self._try()
        return self.outcome

    def check(self) -> None:
        """Raises ``LeaseLost`` unless this runner still holds the lease (``ACQUIRED``)."""
        if self._claim is None:
            raise LeaseLost(
                f"this runner does not hold {self.store.uri(self.lease_path)} "
                f"(outcome {self.outcome.value}); it must not write the trial's files"
            )
        self._claim.check()

    def close(self) -> None:
        """Stops the renewals and releases the lease, if held."""
        if self._claim is not None:
            self._claim.stop()
            self._claim = None


@contextmanager
def claim_path(
    store: ArtifactStore,
    lease_path: str,
    done_path: str,
    owner: str | None = None,
    *,
    note: dict[str, Any] | None = None,
    ttl_s: float = 120.0,
    renew_every_s: float = 30.0,
    wait: bool = True,
    poll_s: float = 5.0,
    clock: Clock = time.time,
) -> Iterator[TrialClaim]:
    """Claims the work that ``done_path`` completes, with the lease at ``lease_path``.

    ``claim_trial`` is this for a trial (its lease and ``result.json``); the arguments are
    explained there. ``note`` is stored with the lease.

    Raises:
        ValueError: ``ttl_s`` is not longer than ``renew_every_s``, or a value is not positive.
    """
    problems = check_lease_timing(ttl_s, renew_every_s)
    if not poll_s > 0:
        problems.append(f"poll_s must be > 0 seconds, got {poll_s!r}")
    if problems:
        raise ValueError("; ".join(problems))
    claim = TrialClaim(
        store,
        Lease(store, lease_path, clock=clock),
        done_path,
        owner or default_owner(),
        ttl_s,
        renew_every_s,
        poll_s,
        dict(note or {}),
    )
    try:
        if wait:
            claim.wait()
        yield claim
    finally:
        claim.close()


@contextmanager
def claim_trial(
    store: ArtifactStore,
    layout: ExperimentLayout,
    study: str,
    trial_id: int,
    owner: str | None = None,
    *,
    ttl_s: float = 120.0,
    renew_every_s: float = 30.0,
    wait: bool = True,
    poll_s: float = 5.0,
    clock: Clock = time.time,
) -> Iterator[TrialClaim]:
    """Claims a trial for this runner; see the module docstring for the protocol.

    Args:
        store: The experiment's store.
        layout: The experiment's layout.
        study: The trial's study.
        trial_id: The trial's id.
        owner: Who runs it, for people; default ``default_owner()``.
        ttl_s: Seconds the lease holds without a renewal.
        renew_every_s: Seconds between renewals (well below ``ttl_s``).
        wait: Wait for a live runner's result or expiry; ``False``: return ``WAIT`` at once.
        poll_s: Seconds between looks while waiting.
        clock: Epoch seconds now (tests).

    Yields:
        The claim: its ``outcome``, ``check()`` and ``wait()``.

    Raises:
        ValueError: ``ttl_s`` is not longer than ``renew_every_s``, or a value is not positive.
    """
    with claim_path(
        store,
        layout.trial_lease(study, trial_id),
        layout.trial_result(study, trial_id),
        owner,
        note={"study": study, "trial_id": trial_id},
        ttl_s=ttl_s,
        renew_every_s=renew_every_s,
        wait=wait,
        poll_s=poll_s,
        clock=clock,
    ) as claim:
        yield claim
