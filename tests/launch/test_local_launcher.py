"""The local launcher: real subprocesses, their exit states, logs, adoption and thread limits.

The trial command is replaced by small Python scripts (a real trial imports TensorFlow; the
search pipeline's end-to-end test runs real trials through this launcher).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import pytest

from kfnas.launch import JobState, LaunchError, TrialJob, launcher_from_config
from kfnas.launch.local import LocalLauncher

SCRIPTS = {
    1: "print('trained'); import os; print('threads', os.environ.get('OMP_NUM_THREADS'), "
    "'onednn', os.environ.get('TF_ENABLE_ONEDNN_OPTS'))",
    2: "import sys; print('bad data', file=sys.stderr); sys.exit(3)",
    3: "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",  # what the OOM killer does
    4: "import time; time.sleep(30)",
}


class ScriptLauncher(LocalLauncher):
    """Runs ``SCRIPTS[trial_id]`` instead of a trial."""

    def command(self, job: TrialJob) -> list[str]:
        return [sys.executable, "-c", SCRIPTS[job.trial_id]]


def _wait(launcher, names, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = launcher.poll(names)
        if not any(s.state.active for s in statuses.values()):
            return statuses
        time.sleep(0.05)
    raise AssertionError(f"jobs still running after {timeout} s: {statuses}")


def test_exit_states_logs_and_threads(tmp_path):
    launcher = ScriptLauncher(str(tmp_path), threads_per_trial=1)
    jobs = {i: TrialJob("/store/exp", "proxy", i) for i in (1, 2, 3)}
    where = {i: launcher.start(job) for i, job in jobs.items()}
    statuses = _wait(launcher, [job.name for job in jobs.values()])
    ok, bad, killed = (statuses[jobs[i].name] for i in (1, 2, 3))
    assert ok.state is JobState.SUCCEEDED
    assert bad.state is JobState.FAILED and bad.reason.startswith("exit code 3; log: ")
    assert killed.state is JobState.FAILED and killed.out_of_memory
    assert "usually out of memory" in killed.reason
    log = (tmp_path / f"{jobs[1].name}.log").read_text()
    assert where[1]["log"] == str(tmp_path / f"{jobs[1].name}.log")
    assert "trained" in log and "threads 1 onednn 0" in log  # TensorFlow's own CPU kernels
    assert "bad data" in (tmp_path / f"{jobs[2].name}.log").read_text()


def test_starting_a_running_job_again_adopts_it(tmp_path):
    launcher = ScriptLauncher(str(tmp_path))
    job = TrialJob("/store/exp", "proxy", 4)
    first = launcher.start(job)
    assert launcher.start(job)["pid"] == first["pid"]
    assert launcher.poll([job.name])[job.name].state is JobState.RUNNING
    assert launcher.poll(["kfnas-unknown"])["kfnas-unknown"].state is JobState.MISSING
    launcher.stop(job.name)
    assert launcher.poll([job.name])[job.name].state is JobState.FAILED


def test_the_worker_command_and_configs():
    job = TrialJob("gs://bucket/exp", "proxy", 7)
    launcher = launcher_from_config({"kind": "local", "threads_per_trial": 2})
    assert launcher.command(job) == [
        sys.executable, "-m", "kfnas.stages.worker", "gs://bucket/exp", "proxy", "7",
        "--train-only",
    ]  # fmt: skip
    with pytest.raises(LaunchError, match="unknown launcher 'locl' \\(did you mean 'local'\\?\\)"):
        launcher_from_config({"kind": "locl"})
    with pytest.raises(LaunchError, match="unknown keys \\['thread'\\]"):
        launcher_from_config({"kind": "local", "thread": 2})
    assert launcher_from_config({"kind": "local"}).measurements_per_worker == 10
    with pytest.raises(LaunchError, match="measurements_per_worker must be >= 0, got 0, 0 and -1"):
        launcher_from_config({"kind": "local", "measurements_per_worker": -1})
    with pytest.raises(ValueError, match="job kind must be one of trial, training"):
        TrialJob("gs://bucket/exp", "proxy", 7, kind="gpu")


def test_job_names_are_deterministic_dns_labels():
    long = TrialJob("gs://b/" + "An_Experiment.Name" * 5, "augmentation", 123456)
    assert long.name == TrialJob("gs://b/" + "An_Experiment.Name" * 5, "augmentation", 123456).name
    assert len(long.name) <= 63 and long.name.endswith("-augmentation-123456")
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", long.name)
    other_store = TrialJob("gs://c/" + "An_Experiment.Name" * 5, "augmentation", 123456)
    assert other_store.name != long.name


def test_a_warm_started_trial_is_a_process_of_its_own_with_its_log_env_and_exit(tmp_path):
    """The default trial command, forked from a process that imported TensorFlow once."""
    launcher = LocalLauncher(log_dir=str(tmp_path / "logs"), threads_per_trial=1)
    missing = TrialJob(f"{tmp_path}/store/no-such-experiment", "proxy", 1)
    location = launcher.start(missing)
    statuses = _wait(launcher, [missing.name], timeout=120)
    status = statuses[missing.name]
    assert status.state is JobState.FAILED and status.reason.startswith("exit code 1")
    log = (tmp_path / "logs" / f"{missing.name}.log").read_text()
    assert "no-such-experiment" in log  # the worker's own error, in the job's log
    assert location["log"].endswith(f"{missing.name}.log")

    sleeper = TrialJob(f"{tmp_path}/store/no-such-experiment", "proxy", 2)
    launcher.start(sleeper)
    launcher.pause_trials()  # a paused warm trial is stopped, then killed like any other
    launcher.stop(sleeper.name)
    assert launcher.poll([sleeper.name])[sleeper.name].state is not JobState.RUNNING
    launcher.close()


def test_warm_trials_train_with_tensorflows_own_cpu_kernels(tmp_path, monkeypatch):
    """A forked trial runs without oneDNN (read at import: the fork server started with it off)."""
    from kfnas.launch.warm import start_warm, training_environment

    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    out = tmp_path / "kernels.json"
    env = training_environment(dict(os.environ))
    process = start_warm("kernels_probe", [str(out)], tmp_path / "probe.log", env)
    assert process.wait() == 0, (tmp_path / "probe.log").read_text()
    assert json.loads(out.read_text()) == {"env": "0", "onednn": False}
    assert "TF_ENABLE_ONEDNN_OPTS" not in os.environ  # set only while the server started
    assert training_environment({"TF_ENABLE_ONEDNN_OPTS": "1"})["TF_ENABLE_ONEDNN_OPTS"] == "1"
    # A server started for a trial whose environment asks for oneDNN imports TensorFlow with it.
    from kfnas.launch.warm import _server_environment

    with _server_environment({"TF_ENABLE_ONEDNN_OPTS": "1"}):
        assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "2")
    with _server_environment({}):
        assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "2"  # as it was


def test_the_measurement_worker_keeps_tensorflows_default_kernels(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    launcher = LocalLauncher(str(tmp_path))
    assert launcher._environment()["TF_ENABLE_ONEDNN_OPTS"] == "0"
    assert "TF_ENABLE_ONEDNN_OPTS" not in launcher._environment(training=False)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")  # the user's choice holds for both
    assert launcher._environment()["TF_ENABLE_ONEDNN_OPTS"] == "1"
