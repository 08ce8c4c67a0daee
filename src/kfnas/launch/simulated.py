"""A launcher that replays trial durations on a virtual clock: schedules measured without GPUs.

``SimulatedLauncher(clock, duration, finish)`` "runs" each job for ``duration(job)`` virtual
seconds; when that time has passed on ``clock`` (a ``VirtualClock``), the next ``poll`` calls
``finish(job)`` (which writes the trial's result, as a real trial would) and reports the job
SUCCEEDED. ``VirtualClock`` runs at real speed plus whatever ``sleep`` skips, so the controller's
own work (proposals, store reads and writes) costs its real time while trials cost none.
``benchmarks/slot_utilization.py`` replays trial durations through the controller with it, and
the controller's tests script outcomes with it.

To simulate more (pending pods, preemptions): return a ``JobStatus`` of that state from ``poll``
in a subclass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from kfnas.launch.base import JobState, JobStatus, Launcher, LaunchError, TrialJob


class VirtualClock:
    """Real elapsed time plus every slept interval, which passes at once."""

    def __init__(self, start: float = 0.0):
        self._skipped = start
        self._origin = time.perf_counter()

    def time(self) -> float:
        """Seconds: real time since creation plus the time slept."""
        return self._skipped + time.perf_counter() - self._origin

    def sleep(self, seconds: float) -> None:
        """Advances the clock by ``seconds`` without waiting."""
        self._skipped += max(0.0, seconds)


class SimulatedLauncher(Launcher):
    """Jobs that end after a given virtual duration (see the module docstring).

    Args:
        clock: The clock the controller uses too.
        duration: Seconds each job runs.
        finish: Called once per job when it ends (writes its result); its return value, a
            ``JobStatus`` or None (SUCCEEDED), is what ``poll`` reports.
    """

    NAME: ClassVar[str] = "simulated"

    def __init__(
        self,
        clock: VirtualClock,
        duration: Callable[[TrialJob], float],
        finish: Callable[[TrialJob], JobStatus | None],
    ):
        self.clock, self.duration, self.finish = clock, duration, finish
        self.jobs: dict[str, tuple[TrialJob, float]] = {}  # name -> (job, end time)
        self.ended: dict[str, JobStatus] = {}
        self.starts: list[str] = []  # every start call, adoptions included

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SimulatedLauncher:
        """Not buildable from a launch config: it needs callables."""
        raise LaunchError(
            "the simulated launcher is built in code (benchmarks, tests), not from a config"
        )

    def start(self, job: TrialJob) -> dict[str, str]:
        """Starts ``job`` (adopts it if it runs) and returns its simulated location."""
        self.starts.append(job.name)
        if job.name not in self.jobs or job.name in self.ended:
            self.ended.pop(job.name, None)
            self.jobs[job.name] = (job, self.clock.time() + self.duration(job))
        return {"launcher": self.NAME, "job": job.name}

    def poll(self, names: Iterable[str]) -> dict[str, JobStatus]:
        """Ends the jobs whose time has come, then reports each name."""
        now = self.clock.time()
        out = {}
        for name in names:
            if name not in self.jobs:
                out[name] = JobStatus(JobState.MISSING)
                continue
            job, end = self.jobs[name]
            if name not in self.ended and end <= now:
                self.ended[name] = self.finish(job) or JobStatus(JobState.SUCCEEDED)
            out[name] = self.ended.get(name, JobStatus(JobState.RUNNING))
        return out

    def wait(self, names: Iterable[str], timeout_s: float, sleep: Callable[[float], None]) -> None:
        """Advances the clock to the next job's end, or by ``timeout_s`` if none ends sooner."""
        ends = [
            self.jobs[name][1] for name in names if name in self.jobs and name not in self.ended
        ]
        step = min([timeout_s, *(end - self.clock.time() for end in ends)])
        self.clock.sleep(max(step, 0.0))

    def next_end(self) -> float | None:
        """When the next running job ends (virtual seconds), or None if none runs."""
        ends = [end for name, (_, end) in self.jobs.items() if name not in self.ended]
        return min(ends, default=None)
