"""A small experiment written straight into a store: real trial records and TensorBoard logs.

``write_sample(root)`` creates an experiment (its ``experiment.json``, so ``open_experiment``
finds it) whose proxy study has trials of the ``mnasnet`` space with random decisions, rewards,
latencies and event files (TensorBoard's own writer, tensor scalars as TensorFlow 2 writes them),
a failed and an open trial, a validation study retraining the three best, and a final trial.
No training: reports and the live view are tested on it in seconds.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pyglove as pg
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.util import tensor_util

from kfnas.config.spec import ConstraintSpec, ExperimentSpec, ObjectiveSpec, StudySpec
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus
from kfnas.spaces import get_space
from kfnas.spaces.base import architecture_json, dna_spec
from kfnas.store import Experiment, ExperimentLayout, LocalStore

METRIC = "accuracy"
SPEC = ExperimentSpec(
    name="sample",
    studies={
        "proxy": StudySpec(space="mnasnet"),
        "validation": StudySpec(),
        "final": StudySpec(),
    },
    objectives=ObjectiveSpec(
        metric=METRIC, constraints=[ConstraintSpec(measure="latency_ms", target=20.0)]
    ),
)


def write_logs(folder: Path, steps: int, final: float, seed: int) -> None:
    """``train`` (loss, learning_rate) and ``eval`` (loss, accuracy) event files in ``folder``."""
    rng = random.Random(seed)
    for split in ("train", "eval"):
        writer = EventFileWriter(str(folder / split))
        points = range(10, steps + 1, 10) if split == "train" else (steps // 2, steps)
        for step in points:
            done = step / steps
            values = {"loss": 2.0 * (1.2 - done) + rng.random() * 0.1}
            if split == "train":
                values["learning_rate"] = 0.1 * (1 - done) + 1e-4
            else:
                values[METRIC] = final * done
            summary = summary_pb2.Summary(
                value=[
                    summary_pb2.Summary.Value(
                        tag=tag, tensor=tensor_util.make_tensor_proto(value, dtype="float32")
                    )
                    for tag, value in values.items()
                ]
            )
            writer.add_event(event_pb2.Event(step=step, wall_time=1.0 + step, summary=summary))
        writer.close()


def _result(trial_id: int, rng: random.Random, scale: float = 1.0) -> TrialResult:
    value = round(rng.uniform(0.3, 0.7) * scale, 4)
    latency = round(rng.uniform(10, 30), 2)
    metrics = {
        METRIC: value,
        "latency_ms": latency,
        "latency_p90_ms": latency * 1.05,
        "flops": rng.uniform(50e6, 300e6),
        "params": float(rng.randint(1_000_000, 4_000_000)),
    }
    reward = value * min(1.0, (20.0 / latency) ** 0.07)
    return TrialResult(trial_id, TrialStatus.COMPLETED, metrics, round(reward, 4), duration_s=30)


def write_sample(root: Path, proxy_trials: int = 12, seed: int = 0) -> Experiment:
    """Writes the sample experiment under ``root`` and returns it opened."""
    store = LocalStore(root)
    layout = ExperimentLayout(SPEC.name)
    store.write_text(layout.experiment_json(), SPEC.to_json())
    exp = Experiment(store.uri(layout.experiment_dir()), store, layout, SPEC)
    records = exp.records
    space = get_space("mnasnet")
    rng = random.Random(seed)
    proxy = []
    for trial_id in range(1, proxy_trials + 1):
        dna = pg.random_dna(dna_spec(space), random.Random(seed * 1000 + trial_id))
        spec = TrialSpec(
            SPEC.name,
            "proxy",
            trial_id,
            1 + (trial_id - 1) // 4,
            "mnasnet",
            pg.to_json_str(dna),
            architecture_json(space, dna),
            {"train_steps": 40},
        )
        records.write_spec(spec)
        if trial_id == proxy_trials:
            continue  # open: no result yet
        if trial_id == 3:
            records.write_result(
                "proxy", TrialResult(3, TrialStatus.FAILED, error="OOM when allocating tensor")
            )
            continue
        result = _result(trial_id, rng)
        records.write_result("proxy", result)
        write_logs(
            Path(root) / layout.trial_logs_dir("proxy", trial_id),
            40,
            result.metrics[METRIC],
            trial_id,
        )
        proxy.append((spec, result))
    best = sorted(proxy, key=lambda p: -p[1].reward)[:3]
    for new_id, (spec, _) in enumerate(best, 1):
        copy = dataclasses.replace(
            spec,
            study="validation",
            trial_id=new_id,
            round=1,
            source_study="proxy",
            source_trial=spec.trial_id,
        )
        records.write_spec(copy)
        result = _result(new_id, rng, scale=1.3)
        records.write_result("validation", result)
        write_logs(
            Path(root) / layout.trial_logs_dir("validation", new_id),
            80,
            result.metrics[METRIC],
            50 + new_id,
        )
    final = dataclasses.replace(
        best[0][0], study="final", trial_id=1, round=1, source_study="validation", source_trial=1
    )
    records.write_spec(final)
    records.write_result("final", _result(1, rng, scale=1.4))
    return exp
