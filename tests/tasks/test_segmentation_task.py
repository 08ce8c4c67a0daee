"""The segmentation task and the nasfpn space end to end on generated TFRecords.

A random NAS-FPN cell over a narrow ResNet-10 builds into official.vision's segmentation model and
RetinaNet, both run forward; one short real trial each (nasfpn x segmentation, nasfpn x detection)
trains, evaluates and measures through ``kfnas.training.runner.execute_trial``. NAS-FPN always
builds levels
3..7, so these tests use 128 px images (the smallest side the cell takes), not 64.
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

from kfnas.config.spec import BudgetSpec, SpecError, TaskSpec, parse_spec
from kfnas.records.trial import TrialStatus
from kfnas.spaces import get_space
from kfnas.spaces.base import Network, dna_spec, materialize
from kfnas.spaces.spinenet import SHARED_BACKBONE_DEFAULTS
from kfnas.tasks import TASKS
from kfnas.tasks.base import TaskKind
from kfnas.tasks.segmentation import OPTIONS, SEGMENTATION, option_problems
from kfnas.validation import validate

SIZE = 128
NARROW = {
    "backbone": "resnet10",
    "filter_size_scale": 0.25,
    "decoder_num_filters": 16,
    "decoder_num_repeats": 1,
}
SEG_TASK = TaskSpec(
    kind="segmentation",
    num_classes=3,
    image_size=SIZE,
    options={**NARROW, "head_num_convs": 1, "head_num_filters": 16, "fpn_num_filters": 16},
)
BUDGET = BudgetSpec(train_steps=2, batch_size=2)

TRIAL_SPEC = """
name: nasfpn-{kind}
task:
  kind: {kind}
  num_classes: 3
  image_size: 128
  options: {options}
studies:
  proxy: {{space: nasfpn}}
objectives: {{metric: {metric}}}
budget: {{train_steps: 3, batch_size: 2, latency_runs: 3}}
measurement: {{min_seconds: 0}}
"""
TRIAL_OPTIONS = {
    "segmentation": {**SEG_TASK.options, "learning_rate": 0.02, "warmup_steps": 2},
    "detection": {
        **NARROW,
        "head_num_convs": 1,
        "head_num_filters": 16,
        "validation_batch_size": 2,
        "learning_rate": 0.01,
        "warmup_steps": 2,
    },
}


@pytest.fixture(scope="module")
def seg_files(tmp_path_factory: pytest.TempPathFactory):
    from kfnas.data.synthetic_segmentation import write_segmentation_dataset

    out = tmp_path_factory.mktemp("segmentation")
    return write_segmentation_dataset(out, num_train=4, num_validation=3, image_size=SIZE)


@pytest.fixture(scope="module")
def det_files(tmp_path_factory: pytest.TempPathFactory):
    from kfnas.data.synthetic import write_detection_dataset

    out = tmp_path_factory.mktemp("detection")
    return write_detection_dataset(out, num_train=4, num_validation=2, image_size=SIZE)


def random_arch(seed: int):
    space = get_space("nasfpn")
    return space, materialize(space, pg.random_dna(dna_spec(space), random.Random(seed)))


def input_specs():
    import tf_keras

    return tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3])


@pytest.mark.tf
def test_random_nasfpn_segmentation_model_trains_and_evaluates(seg_files) -> None:
    space, arch = random_arch(seed=5)
    official_task = SEGMENTATION.build_task(SEG_TASK, seg_files.data_spec(), BUDGET)
    network = space.build_network(arch, SEG_TASK, input_specs())
    assert type(network.decoder).__name__ == "NASFPN"
    model = SEGMENTATION.build_model(official_task, network)
    assert model.decoder is network.decoder and model.backbone is network.backbone

    config = official_task.task_config
    batch = next(iter(official_task.build_inputs(config.train_data)))
    assert batch[0].shape == (2, SIZE, SIZE, 3)
    assert batch[1]["masks"].shape == (2, SIZE, SIZE, 1)
    assert set(np.unique(batch[1]["masks"].numpy())) <= {0, 1, 2, 3}
    logits = model(batch[0], training=False)["logits"]
    assert logits.shape == (2, SIZE // 8, SIZE // 8, 4)  # head level 3, background + 3 classes
    optimizer = official_task.create_optimizer(SEGMENTATION.optimizer_config(SEG_TASK, BUDGET))
    logs = official_task.train_step(
        batch, model, optimizer, official_task.build_metrics(training=True)
    )
    assert np.isfinite(float(logs["loss"])) and float(logs["loss"]) > 0

    metrics = official_task.build_metrics(training=False)
    state = None
    for batch in official_task.build_inputs(config.validation_data):
        state = official_task.aggregate_logs(
            state, official_task.validation_step(batch, model, metrics)
        )
    logs = official_task.reduce_aggregated_logs(state)
    results = {name: float(logs[name]) for name in SEGMENTATION.metric_names}
    assert tuple(results) == SEGMENTATION.metric_names == ("mean_iou", "pixel_accuracy")
    assert all(0.0 <= value <= 1.0 for value in results.values()), results
    assert results["mean_iou"] == pytest.approx(
        np.mean([float(logs[f"iou/{k}"]) for k in range(4)])
    )


@pytest.mark.tf
def test_random_nasfpn_retinanet_runs_forward() -> None:
    from kfnas.config.spec import DataSpec
    from kfnas.tasks.detection import DETECTION

    task = TaskSpec(num_classes=3, image_size=SIZE, options=TRIAL_OPTIONS["detection"])
    space, arch = random_arch(seed=9)
    official_task = DETECTION.build_task(task, DataSpec(train="x", validation="y"), BUDGET)
    model = DETECTION.build_model(official_task, space.build_network(arch, task, input_specs()))
    outputs = model(np.zeros((1, SIZE, SIZE, 3), np.float32), training=True)
    assert sorted(outputs["cls_outputs"]) == ["3", "4", "5", "6", "7"]
    assert outputs["cls_outputs"]["7"].shape[1:3] == (1, 1)


@pytest.mark.tf
def test_backbone_only_networks_get_identity_or_fpn(seg_files) -> None:
    from official.vision.modeling import backbones

    official_task = SEGMENTATION.build_task(SEG_TASK, seg_files.data_spec(), BUDGET)
    resnet = backbones.ResNet(model_id=10, input_specs=input_specs(), depth_multiplier=0.25)
    with_fpn = SEGMENTATION.build_model(official_task, Network(backbone=resnet))
    assert type(with_fpn.decoder).__name__ == "FPN"  # ResNet stops at level 5; FPN adds 6, 7.
    spinenet = backbones.SpineNet(
        input_specs=input_specs(), filter_size_scale=0.25, endpoints_num_filters=16
    )
    with_identity = SEGMENTATION.build_model(official_task, Network(backbone=spinenet))
    assert with_identity.decoder is None  # official.vision's "identity" decoder builder
    image = np.zeros((1, SIZE, SIZE, 3), np.float32)
    for model in (with_fpn, with_identity):
        assert model(image, training=False)["logits"].shape == (1, SIZE // 8, SIZE // 8, 4)


@pytest.mark.tf
@pytest.mark.parametrize(
    ("kind", "metric", "names"),
    [
        ("segmentation", "mean_iou", ("mean_iou", "pixel_accuracy")),
        ("detection", "AP", ("AP", "AP50")),
    ],
)
def test_a_short_nasfpn_trial_completes(kind, metric, names, seg_files, det_files, tmp_path):
    from kfnas.training.runner import execute_trial, local_trial

    files = seg_files if kind == "segmentation" else det_files
    text = TRIAL_SPEC.format(kind=kind, options=json.dumps(TRIAL_OPTIONS[kind]), metric=metric)
    spec = validate(
        parse_spec(
            text,
            [f"data.train={files.train_pattern}", f"data.validation={files.validation_pattern}"],
        )
    )
    trial = local_trial(spec, "proxy", seed=2)
    result = execute_trial(spec, trial, tmp_path / "work")
    assert result.status is TrialStatus.COMPLETED, result.error
    for name in names:
        assert -1.0 <= result.metrics[name] <= 1.0, result.metrics
    assert result.metrics["params"] > 0 and result.metrics["flops"] > 0
    assert result.reward == pytest.approx(result.metrics[metric])
    assert (tmp_path / "work" / "logs").is_dir()
    assert result.metrics["train_step_traces"] == 1  # every variable made before the trace


def test_option_problems_name_the_fix() -> None:
    unknown = option_problems(TaskSpec(kind="segmentation", options={"head_levels": 4}))
    assert unknown == [
        "task.options.head_levels is not a segmentation option (did you mean 'head_level'?); "
        f"valid options: {', '.join(sorted(SEGMENTATION.option_table()))}"
    ]
    assert option_problems(TaskSpec(kind="segmentation", image_size=128)) == []
    assert option_problems(
        TaskSpec(kind="segmentation", image_size=128, options={"head_level": 2})
    ) == [
        "task.options.head_level 2 must lie in min_level..max_level = 3..7: the head reads that "
        "decoder level"
    ]
    assert option_problems(TaskSpec(kind="segmentation", image_size=96)) == [
        "task.image_size 96 is not divisible by 2**max_level = 128 (task.options.max_level = 7): "
        "use a multiple of 128 such as 128, or lower max_level"
    ]


def test_build_task_refuses_bad_options(seg_files) -> None:
    bad = TaskSpec(kind="segmentation", image_size=SIZE, options={"colour": "red"})
    with pytest.raises(SpecError, match=r"task\.options\.colour is not a segmentation option"):
        SEGMENTATION.build_task(bad, seg_files.data_spec(), BUDGET)


def test_spec_validation_names_the_nasfpn_fixes() -> None:
    text = TRIAL_SPEC.format(
        kind="segmentation", options=json.dumps({"backbone": "resnet11"}), metric="mean_iou"
    ).replace("image_size: 128", "image_size: 64")
    with pytest.raises(SpecError) as error:
        validate(parse_spec(text))
    message = str(error.value)
    assert "task.options.backbone 'resnet11' is not a backbone nasfpn can sit on" in message
    assert "task.image_size 64 is not a multiple of 128" in message


def test_segmentation_is_the_registered_task_kind() -> None:
    assert TASKS.get("segmentation") is SEGMENTATION
    assert isinstance(SEGMENTATION, TaskKind)
    assert SEGMENTATION.default_metric == "mean_iou" in SEGMENTATION.metric_names
    assert SEGMENTATION.input_shape(SEG_TASK) == (SIZE, SIZE, 3)
    for key, value in SHARED_BACKBONE_DEFAULTS.items():
        assert OPTIONS[key].default == value, key


@pytest.mark.tf
def test_optimizer_config_is_sized_to_the_budget() -> None:
    config = SEGMENTATION.optimizer_config(
        TaskSpec(kind="segmentation", image_size=128), BudgetSpec(train_steps=100, batch_size=8)
    ).as_dict()
    assert config["optimizer"]["sgd"]["momentum"] == 0.9
    assert config["learning_rate"]["cosine"]["initial_learning_rate"] == pytest.approx(0.0025)
    assert config["learning_rate"]["cosine"]["decay_steps"] == 100
    assert config["warmup"]["linear"]["warmup_steps"] == 10


def test_modules_import_without_tensorflow() -> None:
    code = (
        "import json, sys\n"
        "from kfnas.tasks import TASKS\n"
        "from kfnas.spaces import get_space\n"
        "import kfnas.data, kfnas.data.segmentation, kfnas.data.synthetic_segmentation\n"
        "from kfnas.config.spec import TaskSpec\n"
        "task = TASKS.get('segmentation')\n"
        "space = get_space('nasfpn')\n"
        "problems = space.task_problems(TaskSpec(image_size=128)) + task.option_problems(\n"
        "    TaskSpec(kind='segmentation', image_size=128))\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules}"
        " & {'tensorflow', 'tf_keras', 'keras', 'official'})\n"
        "print(json.dumps({'reference': len(space.reference().output_blocks),"
        " 'problems': problems, 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {
        "reference": 5,
        "problems": [],
        "heavy": [],
    }
