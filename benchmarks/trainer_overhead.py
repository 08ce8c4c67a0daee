"""What the trial trainer costs over a bare training loop, on the same task, model, batch and data.

Prints, side by side in one run, the steady-state training speed (steps per second, the first
step excluded since it traces) of:

* ``bare``: the task's own ``train_step`` in a minimal ``tf.function`` loop, nothing else;
* ``trainer``: ``kfnas.training.train_and_evaluate`` (NaN guard, loss mean, TensorBoard summaries
  every ``--summary-every`` steps, final checkpoint and evaluation),

their ratio (target >= 0.95), and the trainer's fixed seconds before the first step (setup) and
after the last (teardown; evaluation shown apart). Runs alternate ``--repeats`` times, each on a
fresh model with the same seed, in alternating order; the ratio is the median over the
back-to-back pairs (which share the machine's load), speeds and times are medians. The last line is
a one-line JSON summary.

Run: ``.venv/bin/python benchmarks/trainer_overhead.py [--task toy|tiny|detection] [--steps N]``.
``toy`` is a small CNN classifier over in-memory data (defined here); ``tiny`` is the same with a
step so cheap that the trainer's per-step host work shows; ``detection`` is kfnas' RetinaNet task
around a SpineNet-MBConv backbone on generated TFRecords (``kfnas.tasks.detection`` and
``kfnas.data.synthetic``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras
from official.core import base_task
from official.core import config_definitions as cfg
from official.modeling import optimization

from kfnas.records.trial import TrialStatus
from kfnas.training import seed_everything, train_and_evaluate

TARGET_RATIO = 0.95


@dataclasses.dataclass(frozen=True)
class Setup:
    """One benchmark subject: a configured task, a model factory and an optimizer config."""

    name: str
    task: Any
    make_model: Callable[[], tf_keras.Model]
    optimizer_config: Any
    batch_size: int


class ToyTask(base_task.Task):
    """10-way classification of square RGB images (label: brightest of 10 fixed patterns)."""

    def __init__(self, params: cfg.TaskConfig, size: int, widths: tuple[int, ...]) -> None:
        super().__init__(params)
        self.size, self.widths = size, widths

    def build_model(self) -> tf_keras.Model:
        """Strided conv-BN-ReLU blocks, global pooling and a dense classifier."""
        inputs = tf_keras.Input((self.size, self.size, 3))
        x = inputs
        for filters in self.widths:
            x = tf_keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
            x = tf_keras.layers.BatchNormalization()(x)
            x = tf_keras.layers.ReLU()(x)
        x = tf_keras.layers.GlobalAveragePooling2D()(x)
        return tf_keras.Model(inputs, tf_keras.layers.Dense(10)(x))

    def build_inputs(self, params: cfg.DataConfig, input_context: Any = None) -> tf.data.Dataset:
        """In-memory images, cached; the training split shuffled and repeated."""
        rng = np.random.default_rng(0 if params.is_training else 1)
        shape = (self.size, self.size, 3)
        patterns = rng.normal(size=(10, *shape)).astype("float32")
        n = 2048 if params.is_training else 256
        images = rng.normal(size=(n, *shape)).astype("float32")
        labels = np.einsum("nhwc,phwc->np", images, patterns).argmax(axis=1).astype("int32")
        data = tf.data.Dataset.from_tensor_slices((images, labels)).cache()
        if params.is_training:
            data = data.shuffle(n, seed=0).repeat()
        return data.batch(params.global_batch_size, drop_remainder=params.is_training).prefetch(2)

    def build_losses(self, labels: Any, model_outputs: Any, aux_losses: Any = None) -> tf.Tensor:
        """Mean sparse softmax cross-entropy over logits."""
        loss = tf_keras.losses.sparse_categorical_crossentropy(labels, model_outputs, True)
        return tf.reduce_mean(loss)

    def build_metrics(self, training: bool = True) -> list[Any]:
        """Top-1 accuracy."""
        return [tf_keras.metrics.SparseCategoricalAccuracy("accuracy")]


def toy_setup(name: str, batch_size: int) -> Setup:
    """The toy task: ``toy`` has 32x32 images and 3 conv blocks, ``tiny`` 8x8 and one block.

    A ``tiny`` step is so cheap that the trainer's per-step host work dominates it.
    """
    size, widths = (32, (32, 64, 128)) if name == "toy" else (8, (8,))
    config = cfg.TaskConfig(
        train_data=cfg.DataConfig(global_batch_size=batch_size, is_training=True),
        validation_data=cfg.DataConfig(global_batch_size=batch_size, is_training=False),
    )
    task = ToyTask(config, size, widths)
    optimizer_config = optimization.OptimizationConfig(
        {
            "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
            "learning_rate": {"type": "constant", "constant": {"learning_rate": 0.05}},
        }
    )
    return Setup(name, task, task.build_model, optimizer_config, batch_size)


def detection_setup(batch_size: int, steps: int, work: str) -> Setup:
    import pyglove as pg

    from kfnas.config.spec import BudgetSpec, TaskSpec
    from kfnas.data.synthetic import write_detection_dataset
    from kfnas.spaces import get_space
    from kfnas.tasks.detection import DETECTION

    files = write_detection_dataset(work, num_train=64, num_validation=16, image_size=64)
    task_spec = TaskSpec(
        kind="detection",
        num_classes=files.num_classes,
        image_size=64,
        options={
            "min_level": 3,
            "max_level": 5,
            "head_num_convs": 2,
            "head_num_filters": 64,
            "cache_data": True,
        },
    )
    budget = BudgetSpec(train_steps=steps, batch_size=batch_size)
    task = DETECTION.build_task(task_spec, files.data_spec(), budget)
    space = get_space("spinenet_mbconv")
    hyper = space.hyper()
    arch = pg.materialize(hyper, pg.random_dna(pg.dna_spec(hyper), random.Random(0)))

    def make_model() -> tf_keras.Model:
        input_specs = tf_keras.layers.InputSpec(shape=[None, *DETECTION.input_shape(task_spec)])
        return DETECTION.build_model(task, space.build_network(arch, task_spec, input_specs))

    return Setup(
        "detection", task, make_model, DETECTION.optimizer_config(task_spec, budget), batch_size
    )


def run_bare(setup: Setup, steps: int) -> dict[str, float]:
    """The task's train_step in a minimal tf.function loop: steady steps/s and first-step time."""
    task = setup.task
    seed_everything(0)
    model = setup.make_model()
    optimizer = task.create_optimizer(setup.optimizer_config)
    metrics = task.build_metrics(training=True)
    data = task.build_inputs(task.task_config.train_data)
    iterator = iter(data.repeat())

    @tf.function
    def step(it: Any) -> tf.Tensor:
        return task.train_step(next(it), model=model, optimizer=optimizer, metrics=metrics)["loss"]

    start = time.perf_counter()
    float(step(iterator))
    first = time.perf_counter()
    for _ in range(steps - 1):
        loss = step(iterator)
    float(loss)
    tf.test.experimental.sync_devices()
    end = time.perf_counter()
    return {"steps_per_second": (steps - 1) / (end - first), "first_step_seconds": first - start}


def run_trainer(setup: Setup, steps: int, summary_every: int) -> dict[str, float]:
    """``train_and_evaluate`` on a fresh model; its own steady speed and fixed costs."""
    seed_everything(0)
    model = setup.make_model()
    with tempfile.TemporaryDirectory() as work:
        outcome = train_and_evaluate(
            setup.task,
            model,
            setup.optimizer_config,
            train_steps=steps,
            log_dir=f"{work}/logs",
            checkpoint_dir=f"{work}/ckpt",
            summary_every=summary_every,
        )
    if outcome.status is not TrialStatus.COMPLETED:
        raise RuntimeError(f"the trainer did not complete: {outcome.error}")
    return {
        "steps_per_second": outcome.steps_per_second,
        "first_step_seconds": outcome.first_step_seconds,
        "setup_seconds": outcome.setup_seconds,
        "teardown_seconds": outcome.teardown_seconds,
        "eval_seconds": outcome.eval_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=["toy", "tiny", "detection"], default="toy")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: 32 (toy, tiny), 8 (detection)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--summary-every", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        if args.task in ("toy", "tiny"):
            setup = toy_setup(args.task, args.batch_size or 32)
        else:
            setup = detection_setup(args.batch_size or 8, args.steps, work)
        bare, trainer, ratios = [], [], []
        for repeat in range(args.repeats):
            # Alternate which runs first, so a drift in machine load does not favour one side.
            if repeat % 2:
                trainer.append(run_trainer(setup, args.steps, args.summary_every))
                bare.append(run_bare(setup, args.steps))
            else:
                bare.append(run_bare(setup, args.steps))
                trainer.append(run_trainer(setup, args.steps, args.summary_every))
            ratios.append(trainer[-1]["steps_per_second"] / bare[-1]["steps_per_second"])
            print(
                f"repeat {repeat + 1}: bare {bare[-1]['steps_per_second']:8.2f} steps/s   "
                f"trainer {trainer[-1]['steps_per_second']:8.2f} steps/s   "
                f"ratio {ratios[-1]:.3f}",
                flush=True,
            )

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    bare_speed = median(bare, "steps_per_second")
    trainer_speed = median(trainer, "steps_per_second")
    summary = {
        "task": setup.name,
        "device": "GPU" if tf.config.list_logical_devices("GPU") else "CPU",
        "steps": args.steps,
        "batch_size": setup.batch_size,
        "repeats": args.repeats,
        "bare_steps_per_second": round(bare_speed, 3),
        "trainer_steps_per_second": round(trainer_speed, 3),
        "overhead_us_per_step": round((1 / trainer_speed - 1 / bare_speed) * 1e6, 1),
        "ratio": round(statistics.median(ratios), 4),
        "ratio_min": round(min(ratios), 4),
        "ratio_max": round(max(ratios), 4),
        "target_ratio": TARGET_RATIO,
        "bare_first_step_seconds": round(median(bare, "first_step_seconds"), 3),
        "trainer_first_step_seconds": round(median(trainer, "first_step_seconds"), 3),
        "trainer_setup_seconds": round(median(trainer, "setup_seconds"), 3),
        "trainer_teardown_seconds": round(median(trainer, "teardown_seconds"), 3),
        "trainer_eval_seconds": round(median(trainer, "eval_seconds"), 3),
    }
    print()
    print(f"{'':28}{'bare':>12}{'trainer':>12}")
    print(f"{'steps/s (steady, median)':28}{bare_speed:12.2f}{trainer_speed:12.2f}")
    print(
        f"{'first step s (tracing)':28}{summary['bare_first_step_seconds']:12.3f}"
        f"{summary['trainer_first_step_seconds']:12.3f}"
    )
    print(
        f"ratio trainer/bare (median of the {args.repeats} back-to-back pairs): "
        f"{summary['ratio']:.4f}, range {summary['ratio_min']:.4f}..{summary['ratio_max']:.4f} "
        f"(target >= {TARGET_RATIO})"
    )
    print(f"trainer time per step minus bare time per step: {summary['overhead_us_per_step']} us")
    print(
        f"trainer fixed seconds: setup {summary['trainer_setup_seconds']:.3f} before the first "
        f"step, teardown {summary['trainer_teardown_seconds']:.3f} after the last "
        f"(evaluation apart: {summary['trainer_eval_seconds']:.3f})"
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
