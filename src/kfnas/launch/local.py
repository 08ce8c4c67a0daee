"""The local launcher: each trial a subprocess of the controller, its output in a log file.

What ``kfp.local``, ``kfnas run`` and ``make demo`` use (a pipeline compiled without a cluster
profile). A trial job is ``<this Python> -m kfnas.stages.worker <uri> <study> <id>``, started in
its own process group with its output in ``<log_dir>/<job name>.log``; by default forked from a
process that imported TensorFlow once (``kfnas.launch.warm``: no interpreter start and imports per
trial), which behaves as that subprocess would. Threads: with
``threads_per_trial`` set, each trial gets ``OMP_NUM_THREADS`` and TensorFlow's intra- and
inter-op thread counts, so ``parallelism`` trials share the CPU instead of fighting over it.
Trials train with TensorFlow's own CPU kernels, not oneDNN's (``kfnas.launch.warm.TRAINING_ENV``;
the measurement worker keeps TensorFlow's defaults).

Adoption: a subprocess dies with the controller's process group only if killed with it; a
controller started again cannot see the old process, so its trials without a result are started
again (``run_trial`` skips a trial whose ``result.json`` exists).

Measurements (job kind ``latency``) go to one long-lived measurement worker
(``python -m kfnas.stages.measure_worker --serve``: TensorFlow is imported once for the whole
study), one at a time, on this machine (latency device ``local``). So that a timing never overlaps
a training, the worker asks before each timed part and the launcher pauses every running trial
(``SIGSTOP`` to its process group; a trial started meanwhile is paused at once) until the worker
says the timing is over (``SIGCONT``): trials are held for the seconds the timing takes, not for
the model's rebuilding or FLOPs count. A paused trial's wall-clock figures include the pause.
The worker exits after ``MEASUREMENTS_PER_WORKER`` models (saying ``retiring`` before its last
answer, so nothing is sent to a process that is exiting) and the next measurement starts a fresh
one: its memory stays bounded however long the search. Only the worker that paused the trials
resumes them when it ends.

To change how a local trial runs (a container, a remote shell): subclass ``LocalLauncher`` and
override ``command``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, ClassVar

from kfnas.config.spec import ENV_LATENCY_DEVICE, ENV_LATENCY_THREADS, LOCAL_DEVICE
from kfnas.launch.base import (
    MEASURE_KIND,
    MEASURE_MODULE,
    MEASUREMENTS_PER_WORKER,
    JobState,
    JobStatus,
    Launcher,
    LaunchError,
    TrialJob,
)
from kfnas.launch.warm import start_warm, training_environment

_OOM_EXIT = -signal.SIGKILL
_WAIT_STEP_S = 0.2  # how often ``wait`` looks at the processes


class LocalLauncher(Launcher):
    """Runs trial jobs as subprocesses of this process.

    Args:
        log_dir: Where each job's log goes; empty: a new temporary folder.
        threads_per_trial: CPU threads each trial may use; 0: no limit set.
        env: More environment variables for every trial.
        latency_threads: Threads the measurement pins (``KFNAS_LATENCY_THREADS``); 0: unpinned.
        warm_start: Fork each trial from a process that imported TensorFlow once
            (``kfnas.launch.warm``) instead of starting a new interpreter.
        measurements_per_worker: Models a measurement worker measures before a fresh one takes
            over (0: one worker for the whole search).
    """

    NAME: ClassVar[str] = "local"

    def __init__(
        self,
        log_dir: str = "",
        threads_per_trial: int = 0,
        env: Mapping[str, str] | None = None,
        latency_threads: int = 0,
        warm_start: bool = True,
        measurements_per_worker: int = MEASUREMENTS_PER_WORKER,
    ):
        if min(threads_per_trial, latency_threads, measurements_per_worker) < 0:
            raise LaunchError(
                "threads_per_trial, latency_threads and measurements_per_worker must be >= 0, "
                f"got {threads_per_trial}, {latency_threads} and {measurements_per_worker}"
            )
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="kfnas-trials-"))
        self.threads_per_trial = threads_per_trial
        self.latency_threads = latency_threads
        self.warm_start = warm_start
        self.measurements_per_worker = measurements_per_worker
        self.env = dict(env or {})
        self._procs: dict[str, Any] = {}  # subprocess.Popen or warm.WarmProcess
        self._lock = threading.Lock()  # the trials' processes and whether they are paused
        self._paused = False
        self._server: _MeasureServer | None = None
        self._measurements: dict[str, JobStatus] = {}  # of every worker this launcher started

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LocalLauncher:
        """Builds it from ``{"log_dir", "threads_per_trial", "env", "latency_threads", ...}``."""
        known = {
            "log_dir",
            "threads_per_trial",
            "env",
            "latency_threads",
            "warm_start",
            "measurements_per_worker",
            "run_id",
        }
        if unknown := set(config) - known:
            raise LaunchError(
                f"local launch config: unknown keys {sorted(unknown)}; known: "
                + ", ".join(sorted(known))
            )
        return cls(
            str(config.get("log_dir", "")),
            int(config.get("threads_per_trial", 0)),
            config.get("env"),
            int(config.get("latency_threads", 0)),
            bool(config.get("warm_start", True)),
            int(config.get("measurements_per_worker", MEASUREMENTS_PER_WORKER)),
        )

    def command(self, job: TrialJob) -> list[str]:
        """The trial's command line: this interpreter and the worker's arguments."""
        return [sys.executable, *job.worker_args()]

    def _environment(self, training: bool = True) -> dict[str, str]:
        """A process's environment: a training's gets ``TRAINING_ENV`` (``kfnas.launch.warm``)."""
        env = {**os.environ, **self.env}
        if training:
            env = training_environment(env)
        if self.threads_per_trial:
            threads = str(self.threads_per_trial)
            env.update(
                OMP_NUM_THREADS=threads,
                TF_NUM_INTRAOP_THREADS=threads,
                TF_NUM_INTEROP_THREADS="1",
            )
        return env

    def start(self, job: TrialJob) -> dict[str, str]:
        """Starts the trial's subprocess, or adopts the one of that name still running.

        A measurement goes to the measurement worker (started on first use). A trial started
        while a measurement is timing is paused at once, until the timing ends.
        """
        name = job.name
        if job.kind == MEASURE_KIND:
            if self._server is None or not self._server.alive():
                self._server = _MeasureServer(self, self._measurements)
            return self._server.submit(job)
        log = self.log_dir / f"{name}.log"
        with self._lock:
            proc = self._procs.get(name)
            if proc is None or proc.poll() is not None:
                proc = self._launch(job, log)
                if self._paused:
                    _signal(proc, signal.SIGSTOP)
                self._procs[name] = proc
        return {"launcher": self.NAME, "job": name, "pid": str(proc.pid), "log": str(log)}

    def _launch(self, job: TrialJob, log: Path) -> Any:
        """The trial's process: forked warm (``kfnas.launch.warm``), or ``command(job)`` run.

        A subclass that overrides ``command`` (or ``warm_start=False``) runs its command as a
        plain subprocess.
        """
        if self.warm_start and type(self).command is LocalLauncher.command:
            module, *args = job.worker_args()[1:]  # after "-m"
            self.log_dir.mkdir(parents=True, exist_ok=True)
            try:
                return start_warm(module, args, log, self._environment())
            except OSError as e:
                raise LaunchError(f"cannot start {job.name}: {e}") from e
        return self._spawn(self.command(job), log, job.name)

    def _spawn(
        self, command: list[str], log: Path, name: str, training: bool = True, **popen: Any
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            try:
                return subprocess.Popen(
                    command,
                    stdout=popen.pop("stdout", out),
                    stderr=out if "stdin" in popen else subprocess.STDOUT,
                    env={**self._environment(training), **popen.pop("env", {})},
                    start_new_session=True,
                    **popen,
                )
            except OSError as e:
                raise LaunchError(f"cannot start {name}: {e}") from e

    def poll(self, names: Iterable[str]) -> dict[str, JobStatus]:
        """How each named job stands: running, its exit status, or missing."""
        out = {}
        for name in names:
            proc = self._procs.get(name)
            if name in self._measurements:
                out[name] = self._measurements[name]
            elif proc is None:
                out[name] = JobStatus(JobState.MISSING)
            elif (code := proc.poll()) is None:
                out[name] = JobStatus(JobState.RUNNING)
            elif code == 0:
                out[name] = JobStatus(JobState.SUCCEEDED)
            else:
                out[name] = _failure(code, self.log_dir / f"{name}.log")
        return out

    def wait(self, names: Iterable[str], timeout_s: float, sleep: Callable[[float], None]) -> None:
        """Returns as soon as one of the named jobs ends, or after ``timeout_s``."""
        names = list(names)
        waited = 0.0
        while waited < timeout_s and all(s.state.active for s in self.poll(names).values()):
            step = min(_WAIT_STEP_S, timeout_s - waited)
            sleep(step)
            waited += step

    def pause_trials(self) -> None:
        """Pauses every running trial (``SIGSTOP``) and trials started until ``resume_trials``."""
        with self._lock:
            self._paused = True
            for proc in self._procs.values():
                _signal(proc, signal.SIGSTOP)

    def resume_trials(self) -> None:
        """Lets the paused trials run again (``SIGCONT``)."""
        with self._lock:
            self._paused = False
            for proc in self._procs.values():
                _signal(proc, signal.SIGCONT)

    def stop(self, name: str) -> None:
        """Terminates a running trial's process group (tests and shutdown use it)."""
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            _signal(proc, signal.SIGCONT)  # a paused process acts on SIGTERM once continued
            proc.wait()

    def close(self) -> None:
        """Ends the measurement worker; running trials keep running (and are resumed)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.resume_trials()
        self._procs.clear()


class _MeasureServer:
    """The local measurement worker: requests on its stdin, answers on its stdout (a thread).

    ``jobs`` holds each submitted measurement's status: running until the worker answers
    ``done`` (succeeded: the trial's ``result.json`` is written) or ``error`` (failed), or exits
    (shared by the launcher's successive workers). ``alive`` is false from the worker's
    ``retiring`` on, which it says before the answer to its last request.
    """

    def __init__(self, launcher: LocalLauncher, jobs: dict[str, JobStatus]):
        self.launcher = launcher
        self.log = launcher.log_dir / "measurements.log"
        env = {ENV_LATENCY_DEVICE: LOCAL_DEVICE}
        if launcher.latency_threads:
            env[ENV_LATENCY_THREADS] = str(launcher.latency_threads)
        self.proc = launcher._spawn(
            [
                sys.executable,
                "-m",
                MEASURE_MODULE,
                "--serve",
                f"--retire-after={launcher.measurements_per_worker}",
            ],
            self.log,
            "the measurement worker",
            training=False,  # TensorFlow's default kernels, as a deployed model runs
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self.jobs = jobs
        self.current = ""
        self.retiring = False
        self.paused = False  # this worker paused the trials and has not resumed them yet
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def alive(self) -> bool:
        """Whether the worker still runs and takes requests (it has not said ``retiring``)."""
        return not self.retiring and self.proc.poll() is None

    def submit(self, job: TrialJob) -> dict[str, str]:
        """Sends one measurement (the controller starts one at a time)."""
        if self.jobs.get(job.name, JobStatus(JobState.MISSING)).state.active:
            return self._location(job.name)
        self.current = job.name
        self.jobs[job.name] = JobStatus(JobState.RUNNING)
        self._send(f"{job.experiment_uri} {job.study} {job.trial_id}")
        return self._location(job.name)

    def _location(self, name: str) -> dict[str, str]:
        return {"launcher": "local", "job": name, "pid": str(self.proc.pid), "log": str(self.log)}

    def _send(self, line: str) -> None:
        stdin: IO[bytes] | None = self.proc.stdin
        try:
            assert stdin is not None
            stdin.write(f"{line}\n".encode())
            stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the reader sees the worker gone and fails the job

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for raw in self.proc.stdout:
                word, _, rest = raw.decode(errors="replace").strip().partition(" ")
                if word == "pause":
                    self.paused = True
                    self.launcher.pause_trials()
                    self._send("paused")
                elif word == "resume":
                    self.paused = False
                    self.launcher.resume_trials()
                elif word == "retiring":
                    self.retiring = True
                elif word == "done":
                    self.jobs[self.current] = JobStatus(JobState.SUCCEEDED)
                elif word == "error":
                    reason = rest.partition(" ")[2]
                    self.jobs[self.current] = JobStatus(
                        JobState.FAILED, f"{reason}; log: {self.log}"
                    )
        finally:
            if self.paused:  # never leave trials paused behind a dead worker, nor resume the
                self.launcher.resume_trials()  # trials a newer worker paused
            code = self.proc.wait()
            if self.current and self.jobs[self.current].state.active:
                self.jobs[self.current] = _failure(code or 1, self.log)

    def close(self) -> None:
        """Ends the worker: its requests end; a measurement under way finishes first."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Sends ``sig`` to a live process's group (a process that just ended is skipped)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


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
