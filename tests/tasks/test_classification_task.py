"""The classification task end to end on generated TFRecords, around test-local tiny backbones.

SpineNet spaces serve detection only, and the classification spaces live elsewhere, so these tests
wrap official.vision backbones (a quarter-width ResNet-10, MobileNetV2 0.35) as a ``Network``:
the task configures tf-models' ``ImageClassificationTask``, the kfnas trainer trains a few dozen
steps and evaluates top-1 and top-5 accuracy, and a whole trial (through a space registered for
the test) reports them in its ``TrialResult``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pyglove as pg
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kfnas.config.spec import (
    BudgetSpec,
    DataSpec,
    ExperimentSpec,
    ObjectiveSpec,
    SpecError,
    StudySpec,
    TaskSpec,
)
from kfnas.spaces import SPACES
from kfnas.spaces.base import Network
from kfnas.tasks import TASKS
from kfnas.tasks.base import TaskKind
from kfnas.tasks.classification import CLASSIFICATION, option_problems
from kfnas.validation import validate

pytestmark = pytest.mark.tf

SIZE = 32
TASK = TaskSpec(
    kind="classification",
    num_classes=3,
    image_size=SIZE,
    options={"aug_crop": False, "learning_rate": 0.05, "dropout_rate": 0.0},
)
BUDGET = BudgetSpec(train_steps=40, batch_size=16)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory):
    from kfnas.data import GENERATORS

    out = tmp_path_factory.mktemp("classification")
    return GENERATORS.get("classification")(
        out, num_train=64, num_validation=16, image_size=SIZE, num_classes=3
    )


def tiny_resnet(input_specs: Any, depth_multiplier: float = 0.25) -> Any:
    """A quarter-width ResNet-10 (endpoints '2'..'5'); fast-moving batch norm for short runs."""
    from official.vision.modeling.backbones import resnet

    return resnet.ResNet(
        model_id=10,
        depth_multiplier=depth_multiplier,
        input_specs=input_specs,
        norm_momentum=0.5,
    )


def input_specs() -> Any:
    import tf_keras

    return tf_keras.layers.InputSpec(shape=[None, SIZE, SIZE, 3])


@dataclasses.dataclass(frozen=True)
class TinyResNetSpace:
    """A two-architecture space for the trial test: ResNet-10 at a quarter or half width."""

    name: str = "test_tiny_resnet"
    tasks: tuple[str, ...] = ("classification",)

    def hyper(self) -> Any:
        return pg.Dict(depth_multiplier=pg.oneof([0.25, 0.5]))

    def reference(self) -> Any:
        return None

    def task_problems(self, task: Any) -> list[str]:
        return []

    def build_network(self, arch: Any, task: Any, input_specs: Any) -> Network:
        return Network(tiny_resnet(input_specs, arch["depth_multiplier"]))


# -- the task kind and its options ----------------------------------------------------------------


def test_registered_with_top_1_accuracy_as_default_metric() -> None:
    assert TASKS.get("classification") is CLASSIFICATION
    assert isinstance(CLASSIFICATION, TaskKind)
    assert CLASSIFICATION.metric_names == ("top_1_accuracy", "top_5_accuracy")
    assert CLASSIFICATION.default_metric == "top_1_accuracy"
    assert CLASSIFICATION.input_shape(TASK) == (SIZE, SIZE, 3)


def test_options_are_checked_with_messages_that_say_what_to_write() -> None:
    assert option_problems(TASK) == []
    bad = TaskSpec(
        kind="classification",
        options={"dropout": 0.1, "label_smoothing": 2, "lr_schedule": "linear", "aug_crop": 1},
    )
    unknown, smoothing, schedule, crop = option_problems(bad)
    assert "task.options.dropout is not a classification option" in unknown
    assert (
        "did you mean 'dropout_rate'?" in unknown
        and ", ".join(sorted(CLASSIFICATION.option_table())) in unknown
    )
    assert smoothing == "task.options.label_smoothing must be a number in [0, 1], got 2"
    assert schedule == "task.options.lr_schedule must be one of 'cosine', 'step', got 'linear'"
    assert crop == "task.options.aug_crop must be true or false, got 1"
    with pytest.raises(SpecError, match="classification task options are not valid"):
        CLASSIFICATION.build_task(bad, DataSpec(), BUDGET)


def test_task_config_follows_the_spec(files) -> None:
    official_task = CLASSIFICATION.build_task(TASK, files.data_spec(), BUDGET)
    config = official_task.task_config
    assert config.model.num_classes == 3 and config.model.input_size == [SIZE, SIZE, 3]
    assert config.model.dropout_rate == 0.0
    assert config.losses.one_hot and config.losses.label_smoothing == 0.1
    assert config.losses.l2_weight_decay == 4e-5
    assert config.evaluation.top_k == 5
    train, validation = config.train_data, config.validation_data
    assert train.input_path == files.train_pattern and train.is_training
    assert train.drop_remainder and train.aug_rand_hflip and not train.aug_crop
    assert validation.input_path == files.validation_pattern and not validation.is_training
    assert not validation.drop_remainder and not validation.aug_rand_hflip
    assert train.global_batch_size == validation.global_batch_size == 16
    assert not train.decode_jpeg_only
    images, labels = next(iter(official_task.build_inputs(train)))
    assert images.shape == (16, SIZE, SIZE, 3) and labels.shape == (16,)
    names = [m.name for m in official_task.build_metrics(training=False)]
    assert names == list(CLASSIFICATION.metric_names)


def test_optimizer_config_is_sized_to_the_budget() -> None:
    budget = BudgetSpec(train_steps=90, batch_size=64)
    config = CLASSIFICATION.optimizer_config(TaskSpec(kind="classification"), budget)
    assert config.optimizer.type == "sgd" and config.optimizer.sgd.momentum == 0.9
    assert config.learning_rate.type == "cosine"
    assert config.learning_rate.cosine.initial_learning_rate == pytest.approx(0.025)
    assert config.learning_rate.cosine.decay_steps == 90
    assert config.warmup.linear.warmup_steps == 4
    step = TaskSpec(
        kind="classification",
        options={"lr_schedule": "step", "optimizer": "rmsprop", "warmup_steps": 0},
    )
    config = CLASSIFICATION.optimizer_config(step, budget)
    assert config.optimizer.type == "rmsprop" and config.optimizer.rmsprop.epsilon == 0.001
    assert config.learning_rate.stepwise.boundaries == [30, 60, 80]
    assert config.learning_rate.stepwise.values == pytest.approx([0.025, 0.0025, 2.5e-4, 2.5e-5])
    assert config.warmup.type is None


# -- the model ------------------------------------------------------------------------------------


def test_a_network_with_a_decoder_is_refused(files) -> None:
    official_task = CLASSIFICATION.build_task(TASK, files.data_spec(), BUDGET)
    backbone = tiny_resnet(input_specs())
    with pytest.raises(ValueError, match=r"a classification model .* has no decoder"):
        CLASSIFICATION.build_model(official_task, Network(backbone, decoder=backbone))


def test_the_top_level_is_pooled_even_when_string_order_misleads(files) -> None:
    """MobileNet's intermediate endpoints add '5/depthwise', which sorts above '5'."""
    import tensorflow as tf
    import tf_keras
    from official.vision.modeling.backbones import mobilenet

    official_task = CLASSIFICATION.build_task(TASK, files.data_spec(), BUDGET)
    backbone = mobilenet.MobileNet(
        model_id="MobileNetV2",
        filter_size_scale=0.35,
        input_specs=input_specs(),
        output_intermediate_endpoints=True,
    )
    assert max(backbone.output_specs) == "5/depthwise"
    model = CLASSIFICATION.build_model(official_task, Network(backbone))
    images = tf.zeros((2, SIZE, SIZE, 3))
    assert model.backbone is not backbone and list(model.backbone(images)) == ["5"]
    (dense,) = [layer for layer in model.layers if isinstance(layer, tf_keras.layers.Dense)]
    assert dense.kernel.shape == (backbone.output_specs["5"][-1], 3)
    assert model(images).shape == (2, 3)

    resnet = tiny_resnet(input_specs())
    assert CLASSIFICATION.build_model(official_task, Network(resnet)).backbone is resnet


def test_build_model_needs_a_network_factory(files) -> None:
    official_task = CLASSIFICATION.build_task(TASK, files.data_spec(), BUDGET)
    with pytest.raises(RuntimeError, match=r"set task\.network_factory"):
        official_task.build_model()
    official_task.network_factory = lambda specs: Network(tiny_resnet(specs))
    assert official_task.build_model().output_shape == (None, 3)


# -- training, evaluation and a whole trial ------------------------------------------------------


def test_trains_and_evaluates_top_1_accuracy(files, tmp_path: Path) -> None:
    from kfnas.records.trial import TrialStatus
    from kfnas.training.trainer import seed_everything, train_and_evaluate

    official_task = CLASSIFICATION.build_task(TASK, files.data_spec(), BUDGET)
    seed_everything(0)
    model = CLASSIFICATION.build_model(official_task, Network(tiny_resnet(input_specs())))
    images, _ = next(iter(official_task.build_inputs(official_task.task_config.train_data)))
    assert model(images).shape == (BUDGET.batch_size, 3)
    seen: list[dict[str, float]] = []
    outcome = train_and_evaluate(
        official_task,
        model,
        CLASSIFICATION.optimizer_config(TASK, BUDGET),
        train_steps=BUDGET.train_steps,
        log_dir=str(tmp_path / "logs"),
        checkpoint_dir=str(tmp_path / "model"),
        summary_every=20,
        progress=lambda step, logs: seen.append(dict(logs)),
    )
    assert outcome.status is TrialStatus.COMPLETED, outcome.error
    assert outcome.steps_done == BUDGET.train_steps
    assert set(CLASSIFICATION.metric_names) <= set(outcome.metrics)
    metrics = outcome.metrics
    # Colour gives the class away: 40 steps learn it (chance is 1/3).
    assert metrics["top_1_accuracy"] >= 0.75, outcome.metrics
    # With 3 classes every class is among the top 5 (see the module docstring).
    assert metrics["top_5_accuracy"] == 1.0
    assert len(seen) == 2 and seen[-1]["top_1_accuracy"] >= 0.75, seen


@pytest.fixture
def tiny_space():
    space = SPACES.register("test_tiny_resnet", TinyResNetSpace())
    yield space
    SPACES.unregister("test_tiny_resnet")


def test_a_trial_result_carries_the_accuracy_metrics(files, tmp_path: Path, tiny_space) -> None:
    from kfnas.records.trial import TrialStatus
    from kfnas.training.runner import execute_trial, local_trial

    spec = validate(
        ExperimentSpec(
            name="classification-trial",
            task=TASK,
            data=files.data_spec(),
            studies={"proxy": StudySpec(space=tiny_space.name)},
            budget=BudgetSpec(train_steps=10, batch_size=8),
            objectives=ObjectiveSpec(metric=CLASSIFICATION.default_metric),
            store_root=str(tmp_path / "store"),
        )
    )
    result = execute_trial(spec, local_trial(spec, "proxy", seed=1), tmp_path / "work")
    assert result.status is TrialStatus.COMPLETED, result.error
    for key in (*CLASSIFICATION.metric_names, "params", "flops", "latency_ms"):
        assert key in result.metrics
    assert 0.0 <= result.metrics["top_1_accuracy"] <= 1.0
    assert result.reward == pytest.approx(result.metrics["top_1_accuracy"])
    assert result.runtime["strategy"] == "one_device" and result.runtime["precision"] == "float32"


def test_a_batch_that_does_not_divide_across_replicas_fails_before_training(
    files, tmp_path: Path, tiny_space
) -> None:
    import tensorflow as tf

    from kfnas.records.trial import TrialStatus
    from kfnas.training.distribution import Distribution
    from kfnas.training.runner import execute_trial, local_trial

    spec = validate(
        ExperimentSpec(
            name="classification-trial",
            task=TASK,
            data=files.data_spec(),
            studies={"proxy": StudySpec(space=tiny_space.name)},
            budget=BudgetSpec(train_steps=10, batch_size=8),
            store_root=str(tmp_path / "store"),
        )
    )
    three = Distribution(tf.distribute.get_strategy(), "mirrored", 3)
    result = execute_trial(spec, local_trial(spec, "proxy"), tmp_path / "work", distribution=three)
    assert result.status is TrialStatus.FAILED
    assert "the global batch size 8 does not divide across 3 replicas" in result.error
    assert result.runtime["replicas"] == "3"
    assert not (tmp_path / "work" / "model").exists()  # nothing trained
