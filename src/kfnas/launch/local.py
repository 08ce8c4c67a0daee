"""The local launcher: each trial a subprocess of the controller, its output in a log file.

What ``kfp.local``, ``kfnas run`` and ``make demo`` use (a pipeline compiled without a cluster
profile). A trial job is ``<this Python> -m kfnas.stages.worker <uri> <study> <id>``, started in
its own process group with its output in ``<log_dir>/<job name>.log``. Threads: with
``threads_per_trial`` set, each trial gets ``OMP_NUM_THREADS`` and TensorFlow's intra- and
inter-op thread counts, so ``parallelism`` trials share the CPU instead of fighting over it.

Adoption: a subprocess dies with the controller's process group only if killed with it; a
controller started again cannot see the old process, so its trials without a result are started
again (``run_trial`` skips a trial whose ``result.json`` exists).

To change how a local trial runs (a container, a remote shell): subclass ``LocalLauncher`` and
override ``command``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from kfnas.launch.base import JobState, JobStatus, Launcher, LaunchError, TrialJob

_OOM_EXIT = -signal.SIGKILL
_WAIT_STEP_S = 0.2  # how often ``wait`` looks at the processes


class LocalLauncher(Launcher):
    """Runs trial jobs as subprocesses of this process.

    Args:
        log_dir: Where each job's log goes; empty: a new temporary folder.
        threads_per_trial: CPU threads each trial may use; 0: no limit set.
        env: More environment variables for every trial.
    """

    NAME: ClassVar[str] = "local"

    def __init__(
        self, log_dir: str = "", threads_per_trial: int = 0, env: Mapping[str, str] | None = None
    ):
        if threads_per_trial < 0:
            raise LaunchError(f"threads_per_trial must be >= 0, got {threads_per_trial}")
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="kfnas-trials-"))
        self.threads_per_trial = threads_per_trial
        self.env = dict(env or {})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalLauncher:
        """Builds it from ``{"log_dir", "threads_per_trial", "env"}`` (``run_id`` is not needed)."""
        unknown = set(config) - {"log_dir", "threads_per_trial", "env", "run_id"}
        if unknown:
            raise LaunchError(
                f"local launch config: unknown keys {sorted(unknown)}; known: env, log_dir, "
                f"run_id, threads_per_trial"
            )
        return cls(
            str(config.get("log_dir", "")),
            int(config.get("threads_per_trial", 0)),
            config.get("env"),
        )

    def command(self, job: TrialJob) -> list[str]:
        """The trial's command line: this interpreter and the worker's arguments."""
        return [sys.executable, *job.worker_args()]

    def _environment(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        if self.threads_per_trial:
            threads = str(self.threads_per_trial)
            env.update(
                OMP_NUM_THREADS=threads,
                TF_NUM_INTRAOP_THREADS=threads,
                TF_NUM_INTEROP_THREADS="1",
            )
        return env

    def start(self, job: TrialJob) -> dict[str, str]:
        """Starts the trial's subprocess, or adopts the one of that name still running."""
        name = job.name
        log = self.log_dir / f"{name}.log"
        proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                try:
                    proc = subprocess.Popen(
                        self.command(job),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=self._environment(),
                        start_new_session=True,
                    )
                except OSError as e:
                    raise LaunchError(f"cannot start {name}: {e}") from e
            self._procs[name] = proc
        return {"launcher": self.NAME, "job": name, "pid": str(proc.pid), "log": str(log)}

    def poll(self, names: Iterable[str]) -> dict[str, JobStatus]:
        """How each named subprocess stands: running, its exit status, or missing."""
        out = {}
        for name in names:
            proc = self._procs.get(name)
            if proc is None:
                out[name] = JobStatus(JobState.MISSING)
            elif (code := proc.poll()) is None:
                out[name] = JobStatus(JobState.RUNNING)
            elif code == 0:
                out[name] = JobStatus(JobState.SUCCEEDED)
            else:
                out[name] = _failure(code, self.log_dir / f"{name}.log")
        return out

    def wait(self, names: Iterable[str], timeout_s: float, sleep: Callable[[float], None]) -> None:
        """Returns as soon as one of the named processes exits, or after ``timeout_s``."""
        procs = [self._procs[name] for name in names if name in self._procs]
        waited = 0.0
        while waited < timeout_s and all(proc.poll() is None for proc in procs):
            step = min(_WAIT_STEP_S, timeout_s - waited)
            sleep(step)
            waited += step

    def stop(self, name: str) -> None:
        """Terminates a running trial's process group (tests and shutdown use it)."""
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()

    def close(self) -> None:
        """Waits for nothing: running subprocesses keep running (their results reach the store)."""
        self._procs.clear()


def _failure(code: int, log: Path) -> JobStatus:
    if code == _OOM_EXIT:
        return JobStatus(
            JobState.FAILED,
            "killed (SIGKILL, usually out of memory): lower the batch size or the parallelism; "
            f"log: {log}",
            out_of_memory=True,
        )
    if code < 0:
        return JobStatus(JobState.FAILED, f"killed by signal {-code}; log: {log}")
    return JobStatus(JobState.FAILED, f"exit code {code}; log: {log}")
