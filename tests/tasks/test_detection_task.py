"""The detection task end to end on generated TFRecords: every SpineNet space trains and evaluates.

Each SpineNet space builds a random architecture into a proxy-sized RetinaNet (64 px, levels 3..5,
narrow backbone and head), takes one training step on a batch from tf-models' own input pipeline
and runs one full validation pass through tf-models' COCO evaluator.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import BudgetSpec, SpecError, TaskSpec
from kfnas.spaces import get_space
from kfnas.spaces.base import dna_spec, materialize
from kfnas.spaces.spinenet import SHARED_BACKBONE_DEFAULTS
from kfnas.tasks import TASKS
from kfnas.tasks.base import TaskKind
from kfnas.tasks.detection import DETECTION, OPTIONS, option_problems

SIZE = 64
PROXY_OPTIONS = {
    "min_level": 3,
    "max_level": 5,
    "filter_size_scale": 0.25,
    "endpoints_num_filters": 16,
    "resample_alpha": 0.25,
    "head_num_convs": 1,
    "head_num_filters": 16,
    "aug_rand_hflip": False,
    "learning_rate": 0.01,
    "warmup_steps": 1,
}
TASK = TaskSpec(num_classes=3, image_size=SIZE, options=PROXY_OPTIONS)
BUDGET = BudgetSpec(train_steps=4, batch_size=4)
NUM_VALIDATION = 6  # One full batch of 4 and a partial one of 2.


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    from kfnas.data.synthetic import write_detection_dataset

    out = tmp_path_factory.mktemp("detection")
    return write_detection_dataset(out, num_train=8, num_validation=NUM_VALIDATION)


@pytest.fixture(scope="module")
def batches(files):
    """One training batch and the whole validation set, through tf-models' input pipeline.

    The pipeline depends on the input size, levels and anchors only, so every space shares it.
    """
    official_task = DETECTION.build_task(TASK, files.data_spec(with_annotations=False), BUDGET)
    config = official_task.task_config
    train = next(iter(official_task.build_inputs(config.train_data)))
    return train, list(official_task.build_inputs(config.validation_data))


def random_arch(space_name: str, seed: int):
    space = get_space(space_name)
    return space, materialize(space, pg.random_dna(dna_spec(space), random.Random(seed)))


@pytest.mark.tf
@pytest.mark.parametrize(
    ("space_name", "with_annotations", "built_output_levels"),
    [
        # SpineNet keeps the levels above max_level 5 (and leaves those outputs unused) ...
        ("spinenet", False, [3, 4, 5, 6, 7]),
        ("spinenet_v2", True, [3, 4, 5, 6, 7]),
        # ... SpineNetMobile clips them to 5 (see kfnas.spaces.spinenet).
        ("spinenet_mbconv", True, [3, 4, 5, 5, 5]),
    ],
)
def test_random_architecture_trains_and_evaluates(
    files, batches, space_name, with_annotations, built_output_levels
) -> None:
    import tf_keras

    space, arch = random_arch(space_name, seed=7)
    data = files.data_spec(with_annotations=with_annotations)
    official_task = DETECTION.build_task(TASK, data, BUDGET)
    input_specs = tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3])
    network = space.build_network(arch, TASK, input_specs)
    backbone = network.backbone
    assert {level: spec.as_list() for level, spec in backbone.output_specs.items()} == {
        str(level): [None, SIZE >> level, SIZE >> level, 16] for level in (3, 4, 5)
    }
    built = backbone._block_specs  # tf-models' own list, after it built the blocks.
    assert sorted(spec.level for spec in built if spec.is_output) == built_output_levels
    model = DETECTION.build_model(official_task, network)
    optimizer = official_task.create_optimizer(DETECTION.optimizer_config(TASK, BUDGET))

    train_batch, validation_batches = batches
    assert train_batch[0].shape == (BUDGET.batch_size, SIZE, SIZE, 3)
    logs = official_task.train_step(
        train_batch, model, optimizer, official_task.build_metrics(training=True)
    )
    assert np.isfinite(float(logs["total_loss"])) and float(logs["total_loss"]) > 0
    assert int(optimizer.iterations) == 1

    metrics = official_task.build_metrics(training=False)
    state = None
    for batch in validation_batches:
        state = official_task.aggregate_logs(
            state, official_task.validation_step(batch, model, metrics)
        )
    assert sum(int(batch[0].shape[0]) for batch in validation_batches) == NUM_VALIDATION
    logs = official_task.reduce_aggregated_logs(state)
    results = {name: float(logs[name]) for name in DETECTION.metric_names}
    assert tuple(results) == DETECTION.metric_names == ("AP", "AP50", "AP75", "APs", "APm", "APl")
    assert all(-1.0 <= value <= 1.0 for value in results.values()), results


@pytest.mark.tf
def test_task_config_follows_the_spec(files) -> None:
    official_task = DETECTION.build_task(TASK, files.data_spec(), BUDGET)
    config = official_task.task_config
    assert config.model.num_classes == TASK.num_classes + 1
    assert config.model.input_size == [SIZE, SIZE, 3]
    assert (config.model.min_level, config.model.max_level) == (3, 5)
    assert (config.model.head.num_convs, config.model.head.num_filters) == (1, 16)
    assert config.model.decoder.type == "identity"
    assert config.model.norm_activation.activation == "swish"
    assert config.annotation_file == files.annotations and config.use_coco_metrics
    assert config.train_data.input_path == files.train_pattern
    assert config.train_data.is_training and config.train_data.drop_remainder
    assert config.validation_data.input_path == files.validation_pattern
    assert not config.validation_data.is_training and not config.validation_data.drop_remainder
    assert config.train_data.global_batch_size == config.validation_data.global_batch_size == 4
    without = DETECTION.build_task(TASK, files.data_spec(with_annotations=False), BUDGET)
    assert without.task_config.annotation_file is None
    with pytest.raises(RuntimeError, match="has no network"):
        without.build_model()


@pytest.mark.tf
def test_optimizer_config_is_sized_to_the_budget() -> None:
    plain = TaskSpec(num_classes=3, image_size=128)
    config = DETECTION.optimizer_config(plain, BudgetSpec(train_steps=100, batch_size=8)).as_dict()
    assert config["optimizer"]["type"] == "sgd"
    assert config["optimizer"]["sgd"]["momentum"] == 0.9
    stepwise = config["learning_rate"]["stepwise"]
    assert stepwise["boundaries"] == [95, 98]
    np.testing.assert_allclose(stepwise["values"], [0.01, 0.001, 0.0001])
    assert config["warmup"]["linear"]["warmup_steps"] == 10
    assert config["warmup"]["linear"]["warmup_learning_rate"] == pytest.approx(0.01 * 0.0067 / 0.32)

    tuned = TaskSpec(image_size=128, options={"learning_rate": 0.5, "warmup_steps": 0})
    config = DETECTION.optimizer_config(tuned, BudgetSpec(train_steps=1)).as_dict()
    assert config["learning_rate"]["stepwise"] == {
        "boundaries": [],
        "values": [0.5],
        "name": "PiecewiseConstantDecay",
        "offset": 0,
    }
    assert config["warmup"]["type"] is None


def test_option_problems_name_the_fix() -> None:
    unknown = option_problems(TaskSpec(options={"head_num_filter": 8}))
    assert unknown == [
        "task.options.head_num_filter is not a detection option (did you mean "
        f"'head_num_filters'?); valid options: {', '.join(sorted(DETECTION.option_table()))}"
    ]
    assert option_problems(TaskSpec(image_size=96, options={"max_level": 6})) == [
        "task.image_size 96 is not divisible by 2**max_level = 64 (task.options.max_level = 6): "
        "use a multiple of 64 such as 128, or lower max_level"
    ]
    # The default max_level 7 needs multiples of 128; the proxy levels 3..5 take 64.
    assert option_problems(TaskSpec(image_size=64)) != []
    assert option_problems(TASK) == []
    wrong = option_problems(
        TaskSpec(image_size=128, options={"head_num_convs": "2", "anchor_size": 0})
    )
    assert wrong == [
        "task.options.head_num_convs must be an integer >= 0, got '2'",
        "task.options.anchor_size must be a number > 0, got 0",
    ]
    levels = option_problems(TaskSpec(image_size=128, options={"min_level": 5, "max_level": 4}))
    assert levels == [
        "task.options min_level 5 and max_level 4 must satisfy 3 <= min_level <= max_level <= 7"
    ]


def test_build_task_refuses_bad_options(files) -> None:
    bad = TaskSpec(image_size=64, options={"colour": "red"})
    with pytest.raises(SpecError, match=r"task\.options\.colour is not a detection option"):
        DETECTION.build_task(bad, files.data_spec(), BUDGET)


def test_detection_is_the_registered_task_kind() -> None:
    assert TASKS.get("detection") is DETECTION
    assert isinstance(DETECTION, TaskKind)
    assert DETECTION.default_metric in DETECTION.metric_names
    assert DETECTION.input_shape(TASK) == (SIZE, SIZE, 3)


def test_backbone_and_head_share_their_defaults() -> None:
    for key, value in SHARED_BACKBONE_DEFAULTS.items():
        assert OPTIONS[key].default == value, key


def test_tasks_and_data_modules_import_without_tensorflow() -> None:
    code = (
        "import json, sys\n"
        "from kfnas.tasks import TASKS\n"
        "import kfnas.data, kfnas.tasks.detection as d\n"
        "task = TASKS.get('detection')\n"
        "from kfnas.config.spec import TaskSpec\n"
        "problems = d.option_problems(TaskSpec(options={'nope': 1}))\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'tensorflow', 'tf_keras', 'keras', 'official'})\n"
        "print(json.dumps({'name': task.name, 'problems': len(problems), 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "name": "detection",
        "problems": 1,
        "heavy": [],
    }
