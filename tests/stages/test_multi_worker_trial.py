"""A multi-node trial for real: two worker processes, a localhost ``TF_CONFIG``, one trial.

Both processes run the entrypoint a TrainJob or TFJob node runs (``python -m kfnas.stages.worker``)
with the ``TF_CONFIG`` Training Operator v1 would inject (Trainer v2 nodes build the same from their
index and host names: ``kfnas.launch.tf_config``). They train the shared fixtures' smallest
classification trial (the multi-worker mechanics do not depend on the task kind) under
``MultiWorkerMirroredStrategy`` (global batch 2: one example per worker), 4 steps with 2
evaluations; the chief writes the one result and the checkpoint, the other process writes nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from shared_fixtures import CLASSIFICATION_SPEC, data_overrides

from kfnas import stages
from kfnas.records.trial import TrialStatus
from kfnas.store import open_experiment

pytestmark = [pytest.mark.tf, pytest.mark.slow]


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_one_trial_and_only_the_chief_records_it(tmp_path, classification_data):
    uri = stages.init_experiment(
        CLASSIFICATION_SPEC,
        [
            f"store_root={tmp_path / 'store'}",
            *data_overrides(classification_data),
            "studies.proxy.budget.train_steps=4",
            "studies.proxy.budget.evaluations=2",
        ],
    )
    (trial_id,) = stages.propose_trials(uri, "proxy", 1)
    hosts = [f"localhost:{port}" for port in _free_ports(2)]
    processes = []
    start = time.monotonic()
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "kfnas.stages.worker", uri, "proxy", str(trial_id)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    wall_s = time.monotonic() - start
    for p, out in zip(processes, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
    assert "worker 1 of 2: trained (COMPLETED); the chief records the result" in outputs[1]

    exp = open_experiment(uri)
    result = exp.records.read_result("proxy", trial_id)
    assert result is not None and result.status is TrialStatus.COMPLETED, result
    assert result.runtime["strategy"] == "multi_worker_mirrored"
    assert (result.runtime["workers"], result.runtime["replicas"]) == ("2", "2")
    assert result.runtime["precision"] == "float32"
    assert result.attempts == 1 and result.start_steps == (0,)  # one runner recorded
    assert "params" in result.metrics and result.metrics["eval_step"] in (2.0, 4.0)
    # One checkpoint folder, the chief's: the final step, and nothing from the worker.
    model_files = exp.store.list(exp.layout.trial_model_dir("proxy", trial_id))
    assert any(name.startswith("ckpt-4") for name in model_files), model_files
    assert not any("worker" in name for name in model_files), model_files
    print(f"two-process multi-worker trial: {wall_s:.1f} s wall")


def test_a_tf_config_naming_this_process_nowhere_stops_before_training(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": ["a:2222", "b:2222"]}, "task": {"type": "worker", "index": 2}}
    )
    done = subprocess.run(
        [sys.executable, "-m", "kfnas.stages.worker", str(tmp_path / "none"), "proxy", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "names this process nowhere" in done.stderr
    assert "worker 0..1" in done.stderr
