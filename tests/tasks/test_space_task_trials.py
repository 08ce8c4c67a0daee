"""One short real trial for every (built-in space, task it serves) pair, on generated data.

Each trial trains 3 steps through ``kfnas.training.runner.execute_trial`` (the code a pipeline step
runs), evaluates with the task's official metrics and measures params, multiply-adds and latency.
Pairs whose trial is tested with more detail elsewhere are listed in ``ELSEWHERE``; a new built-in
space, or a new task a space serves, gets a trial here as soon as it is registered (a new task kind
needs a line in ``TASK_OPTIONS``).
"""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import parse_spec
from kfnas.records.trial import TrialStatus
from kfnas.spaces import SPACES, get_space
from kfnas.spaces.base import is_refinement
from kfnas.tasks import TASKS
from kfnas.tasks.frameworks import framework_of
from kfnas.training.runner import execute_trial, local_trial
from kfnas.validation import validate

pytestmark = pytest.mark.tf

#: Pairs with their own trial test, and where.
ELSEWHERE = {
    ("spinenet", "detection"): "test_detection_task.py, tests/e2e/test_pipeline_local.py",
    ("spinenet_v2", "detection"): "test_detection_task.py",
    ("spinenet_mbconv", "detection"): "tests/shared_fixtures.py (export, handoff, retraining)",
    ("mnasnet", "detection"): "test_mobile_backbones.py",
    ("nasfpn", "detection"): "test_segmentation_task.py",
    ("nasfpn", "segmentation"): "test_segmentation_task.py",
    ("pointpillars", "lidar_detection"): "test_lidar_task.py, tests/e2e/test_pipeline_lidar.py",
}
#: Proxy-sized options per task kind (narrow heads and decoders, levels 3..5).
TASK_OPTIONS = {
    "classification": {"endpoints_num_filters": 64, "validation_batch_size": 2},
    "detection": {
        "min_level": 3,
        "max_level": 5,
        "head_num_convs": 1,
        "head_num_filters": 16,
        "fpn_num_filters": 16,
        "validation_batch_size": 2,
    },
    "segmentation": {
        "min_level": 3,
        "max_level": 5,
        "head_num_filters": 16,
        "fpn_num_filters": 16,
        "validation_batch_size": 2,
    },
}
SPEC = """
name: pair-trial
task: {{kind: {kind}, num_classes: 3, image_size: 64, options: {options}}}
studies:
  proxy: {{space: {space}}}
budget: {{train_steps: 3, batch_size: 2, latency_runs: 5}}
measurement: {{min_seconds: 0}}
"""
# Network spaces only: a refinement space (scaling, augmentation) retrains another study's trial
# (tests/e2e/test_pipeline_local.py).
PAIRS = [
    (space, task)
    for space in sorted(SPACES.names())
    if not is_refinement(get_space(space))
    for task in get_space(space).tasks
    # PyTorch kinds train through their own framework: tests/torch/test_torch_trials.py.
    if (space, task) not in ELSEWHERE and framework_of(TASKS.get(task)).name == "tensorflow"
]


@pytest.fixture
def datasets(request):
    """The session's generated dataset of a task kind (``<kind>_data`` in shared_fixtures.py)."""
    return lambda kind: request.getfixturevalue(f"{kind}_data")


@pytest.mark.parametrize(("space", "kind"), PAIRS)
def test_a_short_trial_completes_with_the_task_metrics(space, kind, datasets, tmp_path):
    files = datasets(kind)
    text = SPEC.format(kind=kind, space=space, options=json.dumps(TASK_OPTIONS[kind]))
    data = [f"data.{k}={v}" for k, v in vars(files.data_spec()).items() if v]
    spec = validate(parse_spec(text, data))  # resolved, as the trial runner gets it
    trial = local_trial(spec, "proxy", seed=3)
    result = execute_trial(spec, trial, tmp_path / "work")
    assert result.status is TrialStatus.COMPLETED, result.error
    task = TASKS.get(kind)
    for name in task.metric_names:
        if name in result.metrics:  # COCO leaves a size class with no object out
            assert -1.0 <= result.metrics[name] <= 1.0, (name, result.metrics)
    assert task.default_metric in result.metrics
    assert result.reward == pytest.approx(result.metrics[task.default_metric])
    assert result.metrics["params"] > 0 and result.metrics["flops"] > 0
    assert result.metrics["latency_ms"] > 0 and result.metrics["train_seconds"] > 0
    # Every layer and optimizer variable exists before the step is traced: one trace, not two.
    assert result.metrics["train_step_traces"] == 1


def test_every_pair_tested_elsewhere_still_exists():
    pairs = {(space, task) for space in SPACES.names() for task in get_space(space).tasks}
    assert set(ELSEWHERE) <= pairs
