"""A scaling study end to end through the stages, on generated detection data.

The chain is the search pipeline's: ``proxy`` (one spinenet trial) -> ``validation`` (it, trained
again) -> ``scaling`` -> ``final``. The built-in ``spinenet_scaling`` candidates make 512 and 640
px models, far too slow to train on CI's CPUs, so the scaling study here uses a test-only variant
of the same class with proxy-sized candidates (128 px, 16 endpoint filters, 2 block
repeats, ...), registered for this module; the built-in space's proposals are checked, without
training, in ``tests/unit/test_spaces_scaling.py``. One scaled trial trains; the retrained copy
that ``final`` gets keeps its overrides.
"""

from __future__ import annotations

import json

import pytest

from kfnas.data import write_detection_dataset
from kfnas.records.trial import TrialStatus
from kfnas.spaces import SPACES
from kfnas.spaces.spinenet_scaling import SpineNetScalingSpace
from kfnas.stages import init_experiment, propose_retraining, propose_trials, run_trial, select_top
from kfnas.store import open_experiment
from kfnas.tasks import TASKS
from kfnas.training.runner import trial_experiment_spec

pytestmark = [pytest.mark.tf, pytest.mark.slow]

TINY_SCALING = SpineNetScalingSpace(
    name="test_tiny_spinenet_scaling",
    image_size=(128,),
    endpoints_num_filters=(16,),
    filter_size_scale=(0.25,),
    resample_alpha=(0.5,),
    block_repeats=(2,),
    head_num_convs=(1,),
    head_num_filters=(8, 16),
)

SPEC = f"""
name: scaling-study
task:
  kind: detection
  num_classes: 3
  image_size: 64
  options: {{min_level: 3, max_level: 5, filter_size_scale: 0.25, endpoints_num_filters: 16,
            resample_alpha: 0.25, head_num_convs: 1, head_num_filters: 16,
            validation_batch_size: 2}}
studies:
  proxy: {{space: spinenet}}
  validation: {{budget: {{train_steps: 2}}}}
  scaling: {{space: {TINY_SCALING.name}, budget: {{trials_per_round: 2}}}}
budget: {{rounds: 1, trials_per_round: 1, train_steps: 2, batch_size: 2, latency_runs: 2}}
objectives:
  metric: AP
  constraints: [{{measure: latency_ms, target: 5.0}}]
seed: 1
"""

FIRST_POINT = [
    "task.image_size=128",
    "task.options.endpoints_num_filters=16",
    "task.options.filter_size_scale=0.25",
    "task.options.resample_alpha=0.5",
    "task.options.block_repeats=2",
    "task.options.head_num_convs=1",
]


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """Runs proxy and validation, proposes the scaling round and trains its first trial."""
    SPACES.register(TINY_SCALING.name, TINY_SCALING)
    try:
        root = tmp_path_factory.mktemp("scaling")
        files = write_detection_dataset(root / "data", num_train=4, num_validation=2)
        uri = init_experiment(
            SPEC,
            [
                f"store_root={root / 'store'}",
                f"data.train={files.train_pattern}",
                f"data.validation={files.validation_pattern}",
                f"data.annotations={files.annotations}",
            ],
        )
        (proxy,) = propose_trials(uri, "proxy", 1)
        assert run_trial(uri, "proxy", proxy).completed
        (validated,) = propose_retraining(uri, "proxy", "validation", [proxy])
        assert run_trial(uri, "validation", validated).completed
        trial_ids = propose_trials(uri, "scaling", 1)
        result = run_trial(uri, "scaling", trial_ids[0])
        yield uri, validated, trial_ids, result
    finally:
        SPACES.unregister(TINY_SCALING.name)


def test_the_scaling_study_follows_validation_with_grid(scaled):
    uri, *_ = scaled
    spec = open_experiment(uri).spec
    assert list(spec.studies) == ["proxy", "validation", "scaling", "final"]
    assert spec.studies["scaling"].algorithm.name == "grid"


def test_scaling_trials_retrain_the_validated_network_with_the_grid_points(scaled):
    uri, validated, trial_ids, _ = scaled
    exp = open_experiment(uri)
    base = exp.records.read_spec("validation", validated)
    assert trial_ids == [1, 2]
    trials = [exp.records.read_spec("scaling", i) for i in trial_ids]
    for trial in trials:
        assert (trial.space, trial.arch_json) == ("spinenet", base.arch_json)
        assert (trial.source_study, trial.source_trial) == ("validation", validated)
    assert [t.task_overrides for t in trials] == [
        (*FIRST_POINT, "task.options.head_num_filters=8"),
        (*FIRST_POINT, "task.options.head_num_filters=16"),
    ]
    stored = json.loads(exp.store.read_text(exp.layout.trial_spec("scaling", trial_ids[0])))
    assert stored["task_overrides"] == [*FIRST_POINT, "task.options.head_num_filters=8"]


def test_the_scaled_trial_trains_under_the_scaled_task(scaled):
    uri, validated, trial_ids, result = scaled
    exp = open_experiment(uri)
    assert result.status is TrialStatus.COMPLETED, result.error
    task = trial_experiment_spec(exp.spec, exp.records.read_spec("scaling", trial_ids[0])).task
    assert task.image_size == 128 and TASKS.get("detection").input_shape(task) == (128, 128, 3)
    assert task.options["block_repeats"] == 2 and task.options["head_num_filters"] == 8
    assert task.options["resample_alpha"] == 0.5 and task.options["max_level"] == 5
    # A bigger input and two blocks per node: more work than the validated trial.
    base = exp.records.read_result("validation", validated)
    assert result.metrics["flops"] > base.metrics["flops"]
    assert result.metrics["params"] > base.metrics["params"]
    factor = min(1.0, 5.0 / result.metrics["latency_ms"])
    assert result.reward == pytest.approx(result.metrics["AP"] * factor)


def test_the_final_retraining_keeps_the_chosen_scaling(scaled):
    uri, _, trial_ids, _ = scaled
    exp = open_experiment(uri)
    (best,) = select_top(uri, "scaling", 1)
    assert best == trial_ids[0]
    (final,) = propose_retraining(uri, "scaling", "final", [best])
    chosen = exp.records.read_spec("scaling", best)
    copy = exp.records.read_spec("final", final)
    assert copy.task_overrides == chosen.task_overrides
    assert (copy.space, copy.arch_json) == (chosen.space, chosen.arch_json)
    assert trial_experiment_spec(exp.spec, copy).task == (
        trial_experiment_spec(exp.spec, chosen).task
    )
