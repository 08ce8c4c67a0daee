"""The distribution strategy and precision a trial trains under (``kfnas.training.distribution``).

The mirrored-vs-one-device comparison runs ``two_devices.py`` in a process of its own: two logical
CPU devices must be configured before TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

tf = pytest.importorskip("tensorflow")

from kfnas.training.distribution import (  # noqa: E402
    Distribution,
    TrialRuntime,
    batch_problems,
    choose_distribution,
)

pytestmark = pytest.mark.tf
SCRIPT = Path(__file__).with_name("two_devices.py")
#: float32 sums in another order on two replicas: the weights may differ by rounding only.
WEIGHT_TOLERANCE = 1e-5


def two_devices(tmp_path: Path, precision: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), precision],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_mirrored_over_two_devices_trains_as_one_device_with_the_same_global_batch(tmp_path):
    report = two_devices(tmp_path, "float32")
    assert report["chosen"] == {
        "strategy": "mirrored",
        "replicas": "2",
        "workers": "1",
        "precision": "float32",
        "devices": "/device:CPU:0,/device:CPU:1",
        "all_reduce": "reduce_to_one",
    }
    one, mirrored = report["one_device"], report["mirrored"]
    assert one["status"] == mirrored["status"] == "COMPLETED", (one["error"], mirrored["error"])
    assert report["max_weight_change"] > 0.1  # it trained
    assert report["max_weight_difference"] < WEIGHT_TOLERANCE
    assert mirrored["train_loss"] == pytest.approx(one["train_loss"], abs=1e-5)
    assert mirrored["eval"]["loss"] == pytest.approx(one["eval"]["loss"], abs=1e-5)
    # A time-based checkpoint due after every step: one process saves after every step; processes
    # that must agree (workers > 1) save at the train summaries (every 10 steps) and the end.
    assert one["checkpoints"] == list(range(1, 31))
    assert mirrored["checkpoints"] == [10, 20, 30]


def test_float16_with_loss_scaling_trains_mirrored_and_warns_without_a_gpu(tmp_path):
    report = two_devices(tmp_path, "float16")
    assert report["chosen"]["precision"] == "float16"
    assert "float16 without a GPU" in report["chosen"]["warnings"]
    assert report["mirrored"]["status"] == "COMPLETED", report["mirrored"]["error"]
    assert report["max_weight_difference"] < 1e-2  # float16 rounding, same training


def test_one_device_is_the_default_strategy_and_is_recorded():
    dist = choose_distribution(TrialRuntime())
    assert dist.kind == "one_device" and dist.replicas == 1 and dist.chief
    assert dist.strategy is tf.distribute.get_strategy()
    assert dist.runtime_config() is None
    assert dist.record() == {
        "strategy": "one_device",
        "replicas": "1",
        "workers": "1",
        "precision": "float32",
        "devices": "/device:CPU:0",
    }


def test_precision_selects_the_runtime_config_of_the_library():
    half = Distribution(tf.distribute.get_strategy(), "one_device", 1, precision="float16")
    assert (half.runtime_config().mixed_precision_dtype, half.runtime_config().loss_scale) == (
        "float16",
        "dynamic",
    )
    brain = Distribution(tf.distribute.get_strategy(), "one_device", 1, precision="bfloat16")
    assert brain.runtime_config().loss_scale is None


def test_the_runtime_comes_from_the_pod_environment_and_is_checked():
    env = {"KFNAS_PRECISION": "bfloat16", "KFNAS_ALL_REDUCE": "nccl"}
    assert TrialRuntime.from_env(env) == TrialRuntime("bfloat16", "nccl")
    assert TrialRuntime.from_env({}) == TrialRuntime("float32", "hierarchical_copy")
    problems = TrialRuntime("mixed_float16", "ring").problems()
    assert (
        "KFNAS_PRECISION='mixed_float16' is not a precision: float32, float16, bfloat16"
        in (problems[0])
    )
    assert "KFNAS_ALL_REDUCE='ring' is not an all-reduce algorithm" in problems[1]
    with pytest.raises(ValueError, match="is not a precision"):
        choose_distribution(TrialRuntime(precision="fp8"))


def test_a_global_batch_that_does_not_divide_across_replicas_is_refused():
    config = SimpleNamespace(train_data=SimpleNamespace(global_batch_size=6))
    assert batch_problems(config, 1) == [] and batch_problems(config, 3) == []
    (problem,) = batch_problems(config, 4)
    assert problem == (
        "the global batch size 6 does not divide across 4 replicas: set budget.batch_size (or "
        "the study's batch size) to a multiple of 4, e.g. 4 or 8"
    )
