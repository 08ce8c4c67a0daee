"""Trains a small real ``base_task.Task`` on one device and mirrored over two logical CPU devices.

Run as a script in a process of its own (the two logical devices must be configured before
TensorFlow starts): ``python two_devices.py <work folder> [precision]``. It prints one JSON line:
the largest absolute weight difference between the two trainings (same initial weights, same
global batch, same data order), both final training losses and evaluations, and what
``kfnas.training.distribution`` chose.

The mirrored run also stands in for one process of several (``workers=2``): with a time-based
checkpoint due at every step, the processes must agree when to save (an all-reduce at each train
summary), so it checkpoints only at summaries; the one-device run checkpoints at every step.

The task classifies 8x8x3 images by their brightest channel, without batch normalisation (whose
per-replica batch statistics would differ by design); its inputs honour the strategy's input
context (per-replica batch size) and ``base_task.Task.train_step`` divides each replica's loss by
the replicas in sync, as the official tasks do.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import tensorflow as tf

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    CPU, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import numpy as np  # noqa: E402
import tf_keras  # noqa: E402
from official.core import base_task  # noqa: E402
from official.core import config_definitions as cfg  # noqa: E402
from official.modeling import optimization  # noqa: E402

from kfnas.training import train_and_evaluate  # noqa: E402
from kfnas.training.distribution import (  # noqa: E402
    Distribution,
    TrialRuntime,
    choose_distribution,
)

BATCH, STEPS = 16, 30


@dataclasses.dataclass
class ChannelTaskConfig(cfg.TaskConfig):
    """No knobs: the data and model are fixed."""


class ChannelTask(base_task.Task):
    """Argmax-of-channel-means classification over in-memory data."""

    def build_model(self) -> tf_keras.Model:
        inputs = tf_keras.Input((8, 8, 3))
        x = tf_keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
        x = tf_keras.layers.GlobalAveragePooling2D()(x)
        outputs = tf_keras.layers.Dense(3, dtype="float32")(x)
        return tf_keras.Model(inputs, outputs)

    def build_inputs(self, params: cfg.DataConfig, input_context: Any = None) -> tf.data.Dataset:
        rng = np.random.default_rng(1 if params.is_training else 2)
        n = 512 if params.is_training else 64
        images = rng.normal(size=(n, 8, 8, 3)).astype("float32")
        images += rng.normal(scale=0.5, size=(n, 1, 1, 3)).astype("float32")
        labels = images.mean(axis=(1, 2)).argmax(axis=1).astype("int32")
        batch = params.global_batch_size
        if input_context is not None:
            batch = input_context.get_per_replica_batch_size(batch)
        data = tf.data.Dataset.from_tensor_slices((images, labels))
        return data.batch(batch, drop_remainder=params.is_training)

    def build_losses(self, labels: Any, model_outputs: Any, aux_losses: Any = None) -> tf.Tensor:
        losses = tf_keras.losses.sparse_categorical_crossentropy(labels, model_outputs, True)
        return tf.reduce_mean(losses)

    def build_metrics(self, training: bool = True) -> list[Any]:
        return [tf_keras.metrics.SparseCategoricalAccuracy("accuracy")]


def train(distribution: Distribution, initial: list[Any], root: Path) -> tuple[Any, list[Any]]:
    """Trains ``STEPS`` steps from ``initial`` weights; returns the outcome and the weights."""
    task = ChannelTask(
        ChannelTaskConfig(
            train_data=cfg.DataConfig(global_batch_size=BATCH, is_training=True),
            validation_data=cfg.DataConfig(global_batch_size=BATCH, is_training=False),
        )
    )
    with distribution.scope():
        model = task.build_model()
    model.set_weights(initial)
    optimizer = optimization.OptimizationConfig(
        {
            "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9}},
            "learning_rate": {"type": "constant", "constant": {"learning_rate": 0.1}},
        }
    )
    outcome = train_and_evaluate(
        task,
        model,
        optimizer,
        train_steps=STEPS,
        log_dir=str(root / "logs"),
        checkpoint_dir=str(root / "ckpt"),
        summary_every=10,
        checkpoint_every_seconds=1e-6,  # due after every step
        distribution=distribution,
        runtime_config=distribution.runtime_config(),
        progress=lambda step, logs: losses.append(logs["loss"]),
    )
    return outcome, model.get_weights()


losses: list[float] = []


def main(work: Path, precision: str) -> None:
    tf_keras.utils.set_random_seed(0)
    initial = ChannelTask(ChannelTaskConfig()).build_model().get_weights()
    runtime = TrialRuntime(precision=precision)
    one = choose_distribution(runtime)  # chosen first: two CPUs -> mirrored
    report: dict[str, Any] = {"chosen": one.record()}
    mirrored = dataclasses.replace(one, workers=2)  # as one process of two: they must agree
    one = Distribution(tf.distribute.get_strategy(), "one_device", 1, precision=precision)
    weights = {}
    for name, dist in (("one_device", one), ("mirrored", mirrored)):
        losses.clear()
        outcome, weights[name] = train(dist, initial, work / name)
        report[name] = {
            "status": outcome.status.value,
            "error": outcome.error,
            "train_loss": losses[-1] if losses else None,
            "eval": outcome.metrics,
            "steps_per_second": outcome.steps_per_second,
            "checkpoints": list(outcome.checkpoints),
        }
    report["max_weight_difference"] = max(
        float(np.max(np.abs(a - b)))
        for a, b in zip(weights["one_device"], weights["mirrored"], strict=True)
    )
    report["max_weight_change"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(weights["one_device"], initial, strict=True)
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "float32")
