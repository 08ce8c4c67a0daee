"""The launcher interface: how the search controller starts trials and learns how they ended.

A launcher runs one trial per *job*: a local subprocess (``kfnas.launch.local``) or a Kubernetes
Job (``kfnas.launch.kubernetes``). The controller (``kfnas.stages.controller``) only talks to this
interface, so both launchers schedule the same way:

* ``check()`` refuses, before any trial starts, what would make every launch fail (missing RBAC,
  an image pull secret that does not exist), with a message saying what to apply or change.
* ``start(job)`` starts a trial under a deterministic name (``job_name``) and returns where its pod
  and log are. Starting a name that already exists adopts the running job instead of starting it
  twice, so a restarted controller (a retried KFP step, a resubmitted run) picks up its trials.
* ``poll(names)`` says, for each name, whether its job is pending, running, succeeded, failed (with
  the reason: out of memory, deadline, backoff limit, exit code) or missing (never started here,
  or deleted).
* ``wait(names, timeout_s, sleep)`` returns when a job may have ended, at the latest after
  ``timeout_s`` (the poll interval): by default it just sleeps; a launcher that can tell sooner
  (a local process exiting) returns then, so a freed slot does not wait for the next poll.
* ``close()`` releases what the launcher holds; running jobs keep running.

A trial job runs ``python -m kfnas.stages.worker <experiment uri> <study> <trial id>``, which
trains the trial and writes its ``result.json`` as the ``run_trial`` step does; the launcher adds
the interpreter (``sys.executable`` locally, ``python`` in the image).

To add a launcher: subclass ``Launcher``, build it from a JSON-ready config in a ``from_config``
class method, and add one line to ``LAUNCHERS``'s lazy table in ``kfnas.launch``.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

#: The module a trial job runs (``python -m``).
WORKER_MODULE = "kfnas.stages.worker"

#: The module a measurement job runs (``python -m``): it measures a trained trial's model.
MEASURE_MODULE = "kfnas.stages.measure_worker"
#: How many models one long-lived local measurement worker (``--serve``) measures before it exits
#: and the launcher starts a fresh one: each model leaves ~42 MB behind in the process even after
#: ``release_models`` (TensorFlow's caches; ``benchmarks/measurement_worker_memory.py`` on the
#: demo's models, ~0.9 GB after the first), so a worker stays under ~1.3 GB however long the
#: search, at the cost of one TensorFlow import per this many models.
MEASUREMENTS_PER_WORKER = 10
#: The kinds of jobs: proxy trials, full trainings and measurements (the cluster profile's
#: ``trial``, ``training`` and ``latency`` sections).
JOB_KINDS = ("trial", "training", "latency")
#: The job kind that measures a trained trial on the latency device instead of training it.
MEASURE_KIND = "latency"

_DNS_LABEL = 63


class LaunchError(RuntimeError):
    """A launcher cannot start trials; the message says what to fix."""


class JobState(enum.Enum):
    """Where a trial job stands."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    MISSING = "missing"

    @property
    def active(self) -> bool:
        """Whether the job still holds its slot (pending or running)."""
        return self in (JobState.PENDING, JobState.RUNNING)


@dataclasses.dataclass(frozen=True)
class TrialJob:
    """One trial to run as a job.

    Attributes:
        experiment_uri: The experiment (``<store_root>/<name>``).
        study: The study's name.
        trial_id: The trial's id (its ``trial.json`` exists).
        kind: ``trial`` (a proxy trial) or ``training`` (a full training): which settings of the
            cluster profile the job gets.
    """

    experiment_uri: str
    study: str
    trial_id: int
    kind: str = "trial"

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise ValueError(f"job kind must be one of {', '.join(JOB_KINDS)}, got {self.kind!r}")

    @property
    def name(self) -> str:
        """The job's deterministic name (see ``job_name``); a measurement's ends in ``-m``."""
        if self.kind == MEASURE_KIND:
            name = job_name(self.experiment_uri, self.study, self.trial_id, _MEASURE_SUFFIX)
            return name + _MEASURE_SUFFIX
        return job_name(self.experiment_uri, self.study, self.trial_id)

    def worker_args(self) -> list[str]:
        """The arguments after the interpreter: ``-m kfnas.stages.worker <uri> <study> <id>``.

        A trial job trains only (``--train-only``): the measurement job measures it after.
        """
        if self.kind == MEASURE_KIND:
            return ["-m", MEASURE_MODULE, self.experiment_uri, self.study, str(self.trial_id)]
        args = ["-m", WORKER_MODULE, self.experiment_uri, self.study, str(self.trial_id)]
        return [*args, "--train-only"]


@dataclasses.dataclass(frozen=True)
class JobStatus:
    """How a job stands, as ``poll`` reports it.

    Attributes:
        state: Pending, running, succeeded, failed or missing.
        reason: Why it failed, in words a user acts on (``out of memory (OOMKilled)``, ``deadline
            exceeded``, ``exit code 1``); empty otherwise.
        out_of_memory: Whether the failure was an out-of-memory kill.
    """

    state: JobState
    reason: str = ""
    out_of_memory: bool = False


_MEASURE_SUFFIX = "-m"


def job_name(experiment_uri: str, study: str, trial_id: int, reserve: str = "") -> str:
    """The deterministic job name of a trial: a DNS-1123 label of at most 63 characters.

    ``kfnas-<experiment, shortened>-<hash of the experiment URI>-<study>-<trial id>``: the same
    trial always gets the same name (so a restarted controller adopts it), and two experiments of
    the same name in different stores never share one. ``reserve``: a suffix the caller adds
    (the head is shortened to leave room for it).
    """
    digest = hashlib.sha256(experiment_uri.encode()).hexdigest()[:8]
    experiment = experiment_uri.rstrip("/").rsplit("/", 1)[-1]
    tail = f"-{digest}-{_label(study)}-{trial_id}"
    head = f"kfnas-{_label(experiment)}"[: _DNS_LABEL - len(tail) - len(reserve)].rstrip("-")
    return f"{head}{tail}"


def experiment_label(experiment_uri: str) -> str:
    """A label value naming the experiment's jobs (the hash part of ``job_name``)."""
    return hashlib.sha256(experiment_uri.encode()).hexdigest()[:16]


def _label(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:20].strip("-") or "x"


class Launcher(abc.ABC):
    """Starts trial jobs and reports how they stand (see the module docstring)."""

    #: The launcher's name in ``LAUNCHERS`` and in a launch config's ``kind``.
    NAME: ClassVar[str]

    #: Whether a job retries itself (its own retry and failure policy) and so reports FAILED only
    #: when no retry is left; otherwise the controller starts a failed trial again while it has
    #: attempts left (``budget.max_attempts``).
    RETRIES_ITSELF: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: Mapping[str, Any]) -> Launcher:
        """Builds the launcher from its JSON-ready config (``kind`` removed).

        Raises:
            LaunchError: The config is not valid (the message names the key).
        """

    def check(self) -> None:  # noqa: B027 - a launcher with nothing to check keeps this.
        """Refuses what would make every launch fail, before any trial starts.

        Raises:
            LaunchError: Naming the problem and the fix.
        """

    @abc.abstractmethod
    def start(self, job: TrialJob) -> dict[str, str]:
        """Starts ``job`` under ``job.name``, or adopts the job of that name if it exists.

        Returns:
            Where the job runs and logs (for example ``pod``, ``namespace``, ``log``), recorded
            in the trial's ``launch.json``.

        Raises:
            LaunchError: The job cannot be started (the message says why).
        """

    @abc.abstractmethod
    def poll(self, names: Iterable[str]) -> dict[str, JobStatus]:
        """How each named job stands; a name this launcher has no job for is ``MISSING``."""

    def wait(self, names: Iterable[str], timeout_s: float, sleep: Callable[[float], None]) -> None:
        """Waits until one of ``names`` may have ended, or ``timeout_s``; ``sleep`` waits."""
        sleep(timeout_s)

    def close(self) -> None:  # noqa: B027 - a launcher holding nothing keeps this.
        """Releases what the launcher holds; jobs that run keep running."""
