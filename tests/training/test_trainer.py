"""The trial trainer on a real, tiny tf-models-official Task: training, logs, checkpoints, errors.

``ToyTask`` is a genuine ``official.core.base_task.Task``: 3-way classification of 8x8x3 images
whose label is the channel with the largest mean, over an in-memory ``tf.data`` dataset, so the
trainer is tested without the detection task. Its switches inject the failures under test.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
from official.core import base_task  # noqa: E402
from official.core import config_definitions as cfg  # noqa: E402
from official.modeling import optimization  # noqa: E402

from kfnas.records.trial import TrialStatus  # noqa: E402
from kfnas.training import TrainOutcome, scalar_logs, train_and_evaluate  # noqa: E402
from kfnas.training.logs import ERROR_LOG  # noqa: E402

pytestmark = pytest.mark.tf

NUM_CLASSES = 3
BATCH = 16


@dataclasses.dataclass
class ToyTaskConfig(cfg.TaskConfig):
    """The toy task's knobs: where to inject NaN, errors or an endless validation set."""

    nan_at_step: int = 0
    assert_below_step: int = 0
    raise_in_build_inputs: str = ""  # "missing" or "oom"
    raise_when_tracing_step: bool = False
    repeat_validation: bool = False
    branch_on_loss: bool = False  # Python `if` on a tensor: traces only with AutoGraph


class ToyTask(base_task.Task):
    """Argmax-of-channel-means classification; a real base_task.Task."""

    def __init__(self, params: ToyTaskConfig) -> None:
        super().__init__(params)
        self.losses_built = tf.Variable(0, dtype=tf.int64, trainable=False)

    def build_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input((8, 8, 3))
        x = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = tf_keras.layers.GlobalAveragePooling2D()(x)
        return tf_keras.Model(inputs, tf_keras.layers.Dense(NUM_CLASSES)(x))

    def build_inputs(self, params: cfg.DataConfig, input_context: Any = None) -> tf.data.Dataset:
        if self.task_config.raise_in_build_inputs == "missing":
            raise FileNotFoundError("no files match /nowhere/train-*.tfrecord")
        if self.task_config.raise_in_build_inputs == "oom":
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating [64,512]")
        rng = np.random.default_rng(1 if params.is_training else 2)
        n = 256 if params.is_training else 64
        images = rng.normal(size=(n, 8, 8, 3)).astype("float32")
        images += rng.normal(scale=0.5, size=(n, 1, 1, 3)).astype("float32")
        labels = images.mean(axis=(1, 2)).argmax(axis=1).astype("int32")
        data = tf.data.Dataset.from_tensor_slices((images, labels))
        if params.is_training:
            data = data.shuffle(n, seed=0)
        data = data.batch(params.global_batch_size, drop_remainder=params.is_training)
        if self.task_config.repeat_validation and not params.is_training:
            data = data.repeat()
        return data

    def build_losses(self, labels: Any, model_outputs: Any, aux_losses: Any = None) -> tf.Tensor:
        config = self.task_config
        if config.raise_when_tracing_step:
            raise RuntimeError("the head does not fit the backbone")
        loss = tf.reduce_mean(
            tf_keras.losses.sparse_categorical_crossentropy(labels, model_outputs, True)
        )
        count = self.losses_built.assign_add(1)
        if config.branch_on_loss and loss > 100.0:  # a Python branch on a tensor, on purpose
            loss = loss / 100.0
        if config.assert_below_step:
            tf.debugging.assert_less(
                count,
                tf.constant(config.assert_below_step, tf.int64),
                message="anchor labels out of range",
            )
        if config.nan_at_step:
            loss = tf.where(count >= config.nan_at_step, tf.constant(np.nan, loss.dtype), loss)
        return loss

    def build_metrics(self, training: bool = True) -> list[Any]:
        return [tf_keras.metrics.SparseCategoricalAccuracy("accuracy")]

    def create_optimizer(self, optimizer_config: Any, runtime_config: Any = None) -> Any:
        self.last_optimizer = super().create_optimizer(optimizer_config, runtime_config)
        return self.last_optimizer

    def aggregate_logs(self, state: Any = None, step_logs: Any = None) -> Any:
        state = state or {"batches": 0}
        # Per-replica tuples, as the official base_trainer passes them.
        assert isinstance(step_logs["loss"], tuple)
        state["batches"] += 1
        return state

    def reduce_aggregated_logs(self, aggregated_logs: Any, global_step: Any = None) -> dict:
        return {"batches": aggregated_logs["batches"], "per_class": np.zeros(NUM_CLASSES)}


def make_task(**switches: Any) -> ToyTask:
    config = ToyTaskConfig(
        train_data=cfg.DataConfig(global_batch_size=BATCH, is_training=True),
        validation_data=cfg.DataConfig(global_batch_size=BATCH, is_training=False),
        **switches,
    )
    return ToyTask(config)


def sgd(learning_rate: float = 0.1) -> optimization.OptimizationConfig:
    return optimization.OptimizationConfig(
        {
            "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
            "learning_rate": {"type": "constant", "constant": {"learning_rate": learning_rate}},
        }
    )


def train(task: ToyTask, root: Any, steps: int, **kwargs: Any) -> TrainOutcome:
    tf_keras.utils.set_random_seed(0)
    model = task.build_model()
    kwargs.setdefault("summary_every", 5)
    return train_and_evaluate(
        task,
        model,
        sgd(),
        train_steps=steps,
        log_dir=str(root / "logs"),
        checkpoint_dir=str(root / "ckpt"),
        **kwargs,
    )


def scalars(event_dir: str) -> dict[str, list[tuple[int, float]]]:
    """Every scalar summary under ``event_dir``: tag -> [(step, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(glob.glob(os.path.join(event_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                out.setdefault(value.tag, []).append((event.step, number))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainOutcome, Any, list]:
    root = tmp_path_factory.mktemp("trained")
    calls: list[tuple[int, dict]] = []
    outcome = train(
        make_task(),
        root,
        40,
        eval_every=20,
        progress=lambda step, logs: calls.append((step, dict(logs))),
    )
    return outcome, root, calls


def test_trains_and_the_loss_goes_down(trained: tuple) -> None:
    outcome, root, _ = trained
    assert outcome.status is TrialStatus.COMPLETED, outcome.error
    assert outcome.error == ""
    assert outcome.steps_done == 40 and outcome.initial_step == 0
    losses = [value for _, value in scalars(str(root / "logs" / "train"))["loss"]]
    assert len(losses) == 8  # every 5 steps
    assert losses[-1] < 0.6 * losses[0]
    assert outcome.metrics["accuracy"] > 0.6  # chance is 1/3
    assert outcome.metrics["loss"] > 0
    assert outcome.metrics["batches"] == 4.0  # 64 validation examples, batches of 16
    assert "per_class" not in outcome.metrics  # non-scalars are left out
    assert all(isinstance(v, float) for v in outcome.metrics.values())
    assert outcome.step_traces == 1  # the optimizer's slots exist before the step is traced


def test_the_step_is_traced_twice_when_its_first_trace_makes_the_optimizer_slots(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``create_optimizer_variables`` saves: TensorFlow's second trace of the step."""
    from kfnas.training import trainer

    monkeypatch.setattr(trainer._TrialRun, "CREATE_OPTIMIZER_VARIABLES", False)
    before = train(make_task(), tmp_path / "before", 6)
    monkeypatch.undo()
    after = train(make_task(), tmp_path / "after", 6)
    assert (before.step_traces, after.step_traces) == (2, 1)
    assert after.metrics["loss"] == pytest.approx(before.metrics["loss"], rel=1e-5)


def test_a_cpu_trial_trains_without_grappler_and_puts_the_setting_back(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Grappler off while a CPU trial runs (``kfnas.tasks.tracing``): same losses, not after."""
    from kfnas.tasks import tracing

    def grappler_off() -> bool:
        return bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer"))

    seen: list[bool] = []
    plain = train(
        make_task(), tmp_path / "plain", 6, progress=lambda *_: seen.append(grappler_off())
    )
    assert seen == [True, True] and not grappler_off()
    monkeypatch.setattr(tracing, "SKIP_GRAPPLER_ON_CPU", False)
    seen.clear()
    optimized = train(
        make_task(), tmp_path / "optimized", 6, progress=lambda *_: seen.append(grappler_off())
    )
    assert seen == [False, False]
    assert plain.metrics["loss"] == pytest.approx(optimized.metrics["loss"], rel=1e-5)


def test_writes_tensorboard_scalars_and_reports_progress(trained: tuple) -> None:
    _, root, calls = trained
    train_logs = scalars(str(root / "logs" / "train"))
    assert {"loss", "accuracy", "learning_rate"} <= set(train_logs)
    assert [step for step, _ in train_logs["loss"]] == list(range(5, 41, 5))
    assert train_logs["learning_rate"][0][1] == pytest.approx(0.1)
    eval_logs = scalars(str(root / "logs" / "eval"))
    assert [step for step, _ in eval_logs["loss"]] == [20, 40]  # periodic, then final
    assert {"accuracy", "batches"} <= set(eval_logs)
    assert [step for step, _ in calls] == list(range(5, 41, 5))
    assert calls[0][1]["loss"] == pytest.approx(train_logs["loss"][0][1])


def test_checkpoints_at_evaluations_and_the_end(trained: tuple) -> None:
    _, root, _ = trained
    latest = tf.train.latest_checkpoint(str(root / "ckpt"))
    assert latest is not None and latest.endswith("ckpt-40")
    assert (
        tf.train.get_checkpoint_state(str(root / "ckpt"))
        .all_model_checkpoint_paths[0]
        .endswith("ckpt-20")
    )


def test_timings_are_positive_and_consistent(trained: tuple) -> None:
    outcome = trained[0]
    for name in (
        "setup_seconds",
        "train_seconds",
        "first_step_seconds",
        "eval_seconds",
        "teardown_seconds",
        "steps_per_second",
    ):
        assert getattr(outcome, name) > 0, name
    assert outcome.first_step_seconds < outcome.train_seconds
    steady = outcome.train_seconds - outcome.first_step_seconds
    assert outcome.steps_per_second == pytest.approx(39 / steady)


def test_resumes_from_the_checkpoint_and_skips_finished_training(tmp_path: Any) -> None:
    first = train(make_task(), tmp_path, 10)
    assert first.status is TrialStatus.COMPLETED and first.steps_done == 10
    resumed = train(make_task(), tmp_path, 15)
    assert resumed.status is TrialStatus.COMPLETED, resumed.error
    assert (resumed.initial_step, resumed.steps_done) == (10, 15)
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-15")
    assert [s for s, _ in scalars(str(tmp_path / "logs" / "train"))["loss"]] == [5, 10, 15]
    # A fresh, untrained model restored at step 15 evaluates exactly as the one that trained.
    again = train(make_task(), tmp_path, 15)
    assert (again.initial_step, again.steps_done) == (15, 15)
    assert again.train_seconds == 0 and again.steps_per_second == 0
    assert again.metrics == pytest.approx(resumed.metrics)


@pytest.mark.parametrize("steps", [40, 7])
def test_nan_loss_is_infeasible_at_its_step(tmp_path: Any, steps: int) -> None:
    outcome = train(make_task(nan_at_step=7), tmp_path, steps)
    assert outcome.status is TrialStatus.INFEASIBLE
    assert outcome.error == "loss became NaN at step 7"
    assert 7 <= outcome.steps_done <= 8  # stops at once (the check lags at most one step)
    assert outcome.metrics == {}
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")) is None  # NaN weights not saved
    with open(tmp_path / "logs" / ERROR_LOG) as f:
        assert "NaN at step 7" in f.read()


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_the_nan_guard_holds_under_mixed_precision(tmp_path: Any, precision: str) -> None:
    from kfnas.training.distribution import Distribution

    task = make_task(nan_at_step=7)
    dist = Distribution(tf.distribute.get_strategy(), "one_device", 1, precision=precision)
    with dist.scope():
        model = task.build_model()
    assert model.layers[1].compute_dtype == precision  # the mixed policy built it
    assert tf_keras.mixed_precision.global_policy().name == "float32"  # and was reset
    seen: list[Any] = []
    outcome = train_and_evaluate(
        task,
        model,
        sgd(),
        train_steps=20,
        log_dir=str(tmp_path / "logs"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        summary_every=5,
        distribution=dist,
        runtime_config=dist.runtime_config(),
        progress=lambda step, logs: seen.append(logs["loss"]),
    )
    assert outcome.status is TrialStatus.INFEASIBLE
    assert outcome.error == "loss became NaN at step 7"
    assert seen and all(np.isfinite(seen))  # it trained under the policy until then
    scaled = isinstance(task.last_optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
    assert scaled is (precision == "float16")  # dynamic loss scaling for float16 only
    assert outcome.step_traces == 1  # the slots were made through the loss-scale wrapper


def test_diverging_learning_rate_is_infeasible(tmp_path: Any) -> None:
    task = make_task()
    model = task.build_model()
    outcome = train_and_evaluate(
        task,
        model,
        sgd(1e12),
        train_steps=50,
        log_dir=str(tmp_path / "logs"),
        checkpoint_dir=str(tmp_path),
    )
    assert outcome.status is TrialStatus.INFEASIBLE
    assert outcome.error.startswith("loss became ") and " at step " in outcome.error
    assert outcome.steps_done < 50


def test_a_step_that_branches_on_tensors_is_traced_again_with_autograph(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    task = make_task(branch_on_loss=True)
    with caplog.at_level(logging.INFO, logger="kfnas.training.trainer"):
        outcome = train(task, tmp_path, 6)
    assert "the training step needs AutoGraph" in caplog.text
    assert outcome.status is TrialStatus.COMPLETED, outcome.error
    assert outcome.step_traces == 1  # the failed plain trace is not a trace
    assert outcome.metrics["accuracy"] >= 0
    plain = train(make_task(), tmp_path / "plain", 6)
    assert outcome.metrics["loss"] == pytest.approx(plain.metrics["loss"], rel=1e-5)


@pytest.mark.parametrize(
    ("switch", "expected"),
    [
        (
            "raise_in_build_inputs",
            "FileNotFoundError during setup: no files match /nowhere/train-*.tfrecord",
        ),
        (
            "raise_when_tracing_step",
            "RuntimeError in training step 1: the head does not fit the backbone",
        ),
        ("assert_below_step", "InvalidArgumentError in training step 4: "),
    ],
)
def test_exceptions_end_the_trial_as_failed(tmp_path: Any, switch: str, expected: str) -> None:
    value = {"assert_below_step": 4, "raise_in_build_inputs": "missing"}.get(switch, True)
    outcome = train(make_task(**{switch: value}), tmp_path, 10)
    assert outcome.status is TrialStatus.FAILED
    assert outcome.error.startswith(expected)
    assert outcome.metrics == {}
    with open(tmp_path / "logs" / ERROR_LOG) as f:
        log = f.read()
    assert log.startswith(expected) and "Traceback (most recent call last)" in log


def test_a_runtime_error_without_op_stacks_says_how_to_record_them(
    tmp_path: Any, monkeypatch: Any
) -> None:
    from tensorflow.python.framework import ops

    from kfnas.tasks import tracing

    monkeypatch.setattr(ops, "tf_stack", ops.tf_stack)  # put back when the test ends
    monkeypatch.delenv(tracing.OP_TRACEBACKS_ENV, raising=False)
    assert tracing.skip_op_tracebacks()
    outcome = train(make_task(assert_below_step=4), tmp_path, 10)
    assert outcome.status is TrialStatus.FAILED
    assert outcome.error.startswith("InvalidArgumentError in training step 4: ")
    assert outcome.error.endswith(
        "set KFNAS_OP_TRACEBACKS=1 in the trial's environment to see where the failing op was "
        "defined)"
    )


def test_a_cpu_trial_s_input_pipelines_run_without_tf_data_autotuning(
    tmp_path: Any, monkeypatch: Any
) -> None:
    from kfnas.training import trainer

    data = tf.data.Dataset.range(5).map(lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE)
    cpu_pipeline = trainer.cpu_pipeline
    piped = cpu_pipeline(data)
    assert piped.options().autotune.enabled is False
    assert list(piped.as_numpy_iterator()) == [0, 2, 4, 6, 8]  # the same elements
    assert cpu_pipeline([1, 2]) == [1, 2]  # not a dataset: as it is
    seen: list[Any] = []
    monkeypatch.setattr(trainer, "cpu_pipeline", lambda d: seen.append(d) or cpu_pipeline(d))
    assert train(make_task(), tmp_path, 2).status is TrialStatus.COMPLETED
    assert len(seen) == 2  # the training data and the validation data
    monkeypatch.setattr(trainer, "SKIP_DATA_AUTOTUNE_ON_CPU", False)
    assert cpu_pipeline(data) is data


def test_out_of_memory_is_infeasible(tmp_path: Any) -> None:
    outcome = train(make_task(raise_in_build_inputs="oom"), tmp_path, 10)
    assert outcome.status is TrialStatus.INFEASIBLE
    assert outcome.error == "out of memory during setup: OOM when allocating [64,512]"


def test_scalar_logs_flattens_and_keeps_only_scalars() -> None:
    logs = {
        "AP": np.float32(0.5),
        "loss": tf.constant(2.0),
        "count": 3,
        "one": np.array([7.0]),
        "per_class": np.zeros(3),
        "name": "x",
        "coco": {"AP50": tf.constant(0.25), "images": tf.zeros([2, 2])},
    }
    assert scalar_logs(logs) == {
        "AP": 0.5,
        "loss": 2.0,
        "count": 3.0,
        "one": 7.0,
        "coco/AP50": 0.25,
    }


def test_training_package_imports_no_kfp_pyglove_or_google_cloud() -> None:
    code = (
        "import sys, kfnas.training.trainer, kfnas.training.measure, kfnas.training.checkpoints; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kfp', 'pyglove') "
        "or m.startswith('google.cloud')); print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_endless_validation_data_needs_eval_steps(tmp_path: Any) -> None:
    failed = train(make_task(repeat_validation=True), tmp_path / "a", 2)
    assert failed.status is TrialStatus.FAILED
    assert "validation dataset repeats forever" in failed.error
    bounded = train(make_task(repeat_validation=True), tmp_path / "b", 2, eval_steps=3)
    assert bounded.status is TrialStatus.COMPLETED
    assert bounded.metrics["batches"] == 3.0


def test_invalid_arguments_raise(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="summary_every"):
        train(make_task(), tmp_path, 5, summary_every=0)


def test_checkpoints_on_the_step_schedule_and_calls_the_hook(tmp_path: Any) -> None:
    saved: list[tuple[int, str]] = []
    outcome = train(
        make_task(),
        tmp_path,
        20,
        checkpoint_every_steps=7,
        on_checkpoint=lambda step, prefix: saved.append((step, prefix)),
    )
    assert outcome.status is TrialStatus.COMPLETED, outcome.error
    assert outcome.checkpoints == (7, 14, 20)
    assert saved == [(s, str(tmp_path / "ckpt" / f"ckpt-{s}")) for s in (7, 14, 20)]
    assert 0 < outcome.checkpoint_seconds < outcome.train_seconds + outcome.teardown_seconds


def test_checkpoints_on_the_time_schedule(tmp_path: Any) -> None:
    # An interval shorter than any step: a checkpoint after every step, the end's included.
    outcome = train(make_task(), tmp_path, 4, checkpoint_every_seconds=1e-9)
    assert outcome.checkpoints == (1, 2, 3, 4)
    hourly = train(make_task(), tmp_path / "hourly", 4, checkpoint_every_seconds=3600)
    assert hourly.checkpoints == (4,)


def test_a_checkpoint_is_never_taken_after_a_nan_loss(tmp_path: Any) -> None:
    outcome = train(make_task(nan_at_step=5), tmp_path, 10, checkpoint_every_steps=5)
    assert outcome.status is TrialStatus.INFEASIBLE
    assert outcome.checkpoints == ()


def test_resumes_from_a_checkpoint_restored_from_the_store(tmp_path: Any) -> None:
    """Upload while training, restore in a fresh folder: same step, optimizer and learning rate."""
    from kfnas.store.local import LocalStore
    from kfnas.training.checkpoints import CheckpointUploader, TrialCheckpoints

    stored = TrialCheckpoints(LocalStore(tmp_path / "store"), "trial/checkpoints")
    first = tmp_path / "first"
    uploader = CheckpointUploader(stored, first / "logs", first / "staging", attempt=1)
    killed = train(make_task(), first, 12, checkpoint_every_steps=5, on_checkpoint=uploader)
    uploader.close()
    assert killed.checkpoints == (5, 10, 12)
    assert uploader.uploaded[-1] == 12 and not uploader.failures
    # The newest two uploaded are kept; a checkpoint still waiting when a newer one is saved is
    # replaced by it (newest wins), so which older one survives depends on timing.
    kept = [c.step for c in stored.complete()]
    assert kept[-1] == 12 and len(kept) <= 2 and set(kept) <= {5, 10, 12}, kept

    # The attempt that resumes: a fresh folder, the newest checkpoint and logs from the store.
    # A real next attempt starts seconds later in another process; TensorBoard (and ``scalars``)
    # read a run's event files in name order, whose first field is the creation second, then the
    # pid and a per-process counter compared as text (".10." < ".9."). Two attempts in one
    # process within one second could sort the wrong way round: start the next one a second on.
    time.sleep(1.0 - time.time() % 1.0)
    second = tmp_path / "second"
    assert stored.restore(stored.latest(), second / "ckpt", second / "logs")
    resumed = train(make_task(), second, 20, summary_every=4)
    assert resumed.status is TrialStatus.COMPLETED, resumed.error
    assert (resumed.initial_step, resumed.steps_done) == (12, 20)
    latest = tf.train.latest_checkpoint(str(second / "ckpt"))
    assert tf.train.load_variable(latest, "optimizer/iter/.ATTRIBUTES/VARIABLE_VALUE") == 20
    # The TensorBoard curve continues: the first attempt's points, then the resumed ones.
    steps = [s for s, _ in scalars(str(second / "logs" / "train"))["loss"]]
    assert steps == [5, 10, 12, 16, 20]
