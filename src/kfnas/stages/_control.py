"""The search controller's state in the store: its lease and status, and stop requests.

``controller.json`` (``ExperimentLayout.study_controller``) is written by the running controller at
every poll: its run, state, heartbeat, slots, the trials it runs and where, and the counts of
finished trials. It is also the controller's *lease*: a controller refuses to start on a study
whose ``controller.json`` names another run that is still alive (a heartbeat younger than
``LEASE_S``), so two runs never launch the same study's trials at once; a controller whose pod
died stops renewing it and the next one takes over after ``LEASE_S``. The same run (a retried
KFP step) takes its own lease back at once.

``stop.json`` (``ExperimentLayout.study_stop``) asks the controller of a run to stop launching
trials (``kfnas stop``); trials already running finish.

To add a field to the status: set it in ``ControllerState`` and read it in ``kfnas status``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from kfnas.store import Experiment

#: Seconds after its last heartbeat that a controller's lease lapses.
LEASE_S = 300.0

#: Controller states in which the lease is held.
HOLDING = ("running", "stopping")


class ControllerConflictError(RuntimeError):
    """Another run's controller is searching the study."""


@dataclasses.dataclass
class ControllerState:
    """What ``controller.json`` holds.

    Attributes:
        run_id: The KFP run (or local run) of the controller.
        study: The study it searches.
        state: ``running``, ``stopping`` (no new trials), ``finished`` or ``failed``.
        heartbeat: When it last wrote this (seconds since the epoch).
        parallelism: Its trial slots.
        budget: Trials the study may propose in all.
        proposed: Trials proposed so far.
        completed: Finished trials that COMPLETED.
        failed: Finished trials that did not.
        running: Trial id (as text) -> where its job runs and logs.
        launcher: The launcher's name.
        reason: Why it stopped or failed; empty while running.
        busy_s: Slot-seconds spent with a trial running.
        elapsed_s: Seconds since the controller started.
        proposal_s: Seconds spent proposing, in all.
        promoted: ASHA promotions started (multi-fidelity studies; not counted in ``proposed``).
    """

    run_id: str
    study: str
    state: str = "running"
    heartbeat: float = 0.0
    parallelism: int = 0
    budget: int = 0
    proposed: int = 0
    completed: int = 0
    failed: int = 0
    running: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    launcher: str = ""
    reason: str = ""
    busy_s: float = 0.0
    elapsed_s: float = 0.0
    proposal_s: float = 0.0
    promoted: int = 0

    @property
    def utilization(self) -> float:
        """The fraction of slot time spent with a trial running (0 before any time passed)."""
        return self.busy_s / (self.parallelism * self.elapsed_s) if self.elapsed_s else 0.0

    def to_json(self) -> str:
        """The stored text."""
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ControllerState:
        """Reads the stored text; unknown keys (a newer kfnas) are ignored."""
        data: dict[str, Any] = json.loads(text)
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def read_state(exp: Experiment, study: str) -> ControllerState | None:
    """The study's ``controller.json``, or None if no controller ever ran it."""
    path = exp.layout.study_controller(study)
    if not exp.store.exists(path):
        return None
    return ControllerState.from_json(exp.store.read_text(path))


def write_state(exp: Experiment, state: ControllerState) -> None:
    """Writes ``controller.json`` (the heartbeat is the caller's)."""
    exp.store.write_text(exp.layout.study_controller(state.study), state.to_json())


def acquire(exp: Experiment, state: ControllerState, now: float) -> None:
    """Takes the study's lease for ``state.run_id``, writing ``state`` as its first heartbeat.

    Raises:
        ControllerConflictError: Another run holds a live lease (the message names it).
    """
    held = read_state(exp, state.study)
    if (
        held is not None
        and held.state in HOLDING
        and held.run_id != state.run_id
        and now - held.heartbeat < LEASE_S
    ):
        raise ControllerConflictError(
            f"study {state.study!r} of experiment {exp.spec.name!r} is being searched by run "
            f"{held.run_id!r} (last heartbeat {now - held.heartbeat:.0f} s ago, "
            f"{len(held.running)} trials running): two controllers would launch the same trials. "
            f"Stop that run (kfnas stop {exp.store.uri(exp.layout.experiment_dir())}) and wait "
            f"for it to finish, or give this run another experiment name; a controller that died "
            f"releases the study {LEASE_S:.0f} s after its last heartbeat"
        )
    state.heartbeat = now
    write_state(exp, state)


def request_stop(exp: Experiment, study: str, now: float | None = None) -> ControllerState | None:
    """Asks the study's running controller to stop launching trials (``kfnas stop``).

    Returns:
        The controller's state when it was asked, or None when no controller holds the study
        (nothing is written then).
    """
    state = read_state(exp, study)
    if state is None or state.state not in HOLDING:
        return None
    request = {"run_id": state.run_id, "requested_at": now if now is not None else time.time()}
    exp.store.write_text(exp.layout.study_stop(study), json.dumps(request))
    return state


def stop_requested(exp: Experiment, study: str, run_id: str) -> bool:
    """Whether ``kfnas stop`` asked this run's controller of the study to stop."""
    path = exp.layout.study_stop(study)
    if not exp.store.exists(path):
        return False
    try:
        target = json.loads(exp.store.read_text(path)).get("run_id", "")
    except (ValueError, AttributeError):
        target = ""  # A request we cannot read still asks to stop.
    return target in ("", run_id)
