"""One PyTorch trial: architecture -> torch module -> training -> evaluations -> measurement.

``execute_trial`` is the PyTorch framework's trainer (``kfnas.tasks.frameworks``), with the
contract of ``kfnas.training.runner.execute_trial``, so the trial step, early stopping, ASHA
promotions, resumption and the proxy-task tools treat a torch trial as any other:

* the architecture comes from the trial's ``arch_json`` and the network from the space's entry in
  ``kfnas.torch.networks.TORCH_NETWORKS``; the task kind (``kfnas.torch.tasks``) gives batches,
  loss and evaluation;
* training is seeded (``torch.manual_seed``, NumPy's generator for batches), with the task's
  optimizer, a linear warm-up and a cosine decay to 0 over the budget's steps;
* checkpoints are ``model/ckpt-<step>.pt`` (model, optimizer, schedule and the batch generator's
  state), saved on the budget's schedule (``checkpoint_every_steps``,
  ``checkpoint_every_minutes``), at each evaluation and at the end, each reported through
  ``on_checkpoint(step, prefix)`` (``CheckpointUploader`` copies it to the store); a checkpoint
  already in ``model/`` (a rerun's restored one, or a promoted trial's parent's) is resumed
  from, so a preempted trial loses at most the steps since its last checkpoint;
* each periodic evaluation is reported through ``on_evaluation(step, metrics)`` with
  ``train_seconds`` (this call's training time, evaluations excluded); a non-empty answer stops
  training there (``stopped_early``);
* TensorBoard scalars (``train/loss``, ``validation/<metric>``) go to ``logs/`` through
  tensorboard's own event writer (no TensorFlow);
* a non-finite loss makes the trial INFEASIBLE, any exception FAILED: never raised.

To extend what a torch trial does per step or per evaluation: here; what it measures:
``kfnas.torch.measure``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kfnas.config.spec import BudgetSpec, ExperimentSpec
from kfnas.records.trial import TRAIN_SECONDS, TrialResult, TrialSpec, TrialStatus, TrialTraining
from kfnas.spaces import declared_options, get_space
from kfnas.spaces.base import load_architecture
from kfnas.tasks import TASKS
from kfnas.torch.networks import TORCH_NETWORKS
from kfnas.training.runner import LOGS_DIR, MODEL_DIR, best_evaluation, trial_experiment_spec

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^ckpt-(\d+)\.pt$")
#: Checkpoints kept in ``model/`` (the store keeps its own two).
_KEEP = 2


def execute_trial(
    spec: ExperimentSpec,
    trial: TrialSpec,
    work_dir: str | Path,
    *,
    on_checkpoint: Callable[[int, str], None] | None = None,
    distribution: Any = None,
    measure: bool = True,
    on_evaluation: Callable[[int, Mapping[str, float]], str] | None = None,
) -> TrialResult | TrialTraining:
    """Builds, trains, evaluates and (with ``measure``) measures one torch trial.

    Args:
        spec: The experiment spec; resolved here with the trial's overrides.
        trial: The trial: its space, architecture JSON, budget and seed.
        work_dir: A local folder for checkpoints (``model/``) and TensorBoard logs (``logs/``).
        on_checkpoint: Called as ``on_checkpoint(step, prefix)`` after each checkpoint.
        distribution: Unused: a torch trial trains in one process on one device, the pod's
            first GPU when it has one (``trial_device``; the result's ``runtime`` says which, and
            warns when more GPUs were visible).
        measure: Measure the model here (``kfnas.torch.measure``) and compute the reward;
            without it a trial that trained well returns its ``TrialTraining``.
        on_evaluation: Called as ``on_evaluation(step, metrics)`` after each periodic
            evaluation; a non-empty return stops training there.

    Returns:
        As ``kfnas.training.runner.execute_trial``.
    """
    del distribution
    start = time.monotonic()
    work = Path(work_dir)
    try:
        return _execute(
            trial_experiment_spec(spec, trial),
            trial,
            work,
            start,
            on_checkpoint,
            measure,
            on_evaluation,
        )
    except Exception as e:  # A trial's failure must not stop the study.
        (work / LOGS_DIR).mkdir(parents=True, exist_ok=True)
        (work / LOGS_DIR / "error.txt").write_text(traceback.format_exc())
        log.warning("trial %d failed: %s", trial.trial_id, e)
        return TrialResult(
            trial.trial_id,
            TrialStatus.FAILED,
            error=f"{type(e).__name__}: {e}",
            duration_s=time.monotonic() - start,
        )


def build_trial_module(spec: ExperimentSpec, trial: TrialSpec) -> Any:
    """The trial's torch module, from its ``arch_json`` and its space's torch builder."""
    space = get_space(trial.space)
    arch = load_architecture(space, trial.arch_json, f"trial {trial.trial_id}")
    return TORCH_NETWORKS.get(trial.space)(arch, spec.task)  # type: ignore[operator]


def latest_checkpoint(model_dir: Path) -> Path | None:
    """The ``ckpt-<step>.pt`` of the highest step in ``model_dir``, or ``None``."""
    found = [
        (int(m.group(1)), path)
        for path in (model_dir.iterdir() if model_dir.is_dir() else ())
        if (m := _CHECKPOINT.match(path.name))
    ]
    return max(found)[1] if found else None


@dataclasses.dataclass
class _Outcome:
    """What the loop did (the attributes ``best_evaluation`` reads, and timings)."""

    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    evaluations: list[tuple[int, dict[str, float]]] = dataclasses.field(default_factory=list)
    step: int = 0
    initial_step: int = 0
    train_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    stopped_early: str = ""
    infeasible: str = ""


def _execute(
    spec: ExperimentSpec,
    trial: TrialSpec,
    work: Path,
    start: float,
    on_checkpoint: Callable[[int, str], None] | None,
    measure: bool,
    on_evaluation: Callable[[int, Mapping[str, float]], str] | None,
) -> TrialResult | TrialTraining:
    import numpy as np
    import torch

    budget = BudgetSpec(**trial.budget)
    kind: Any = TASKS.get(spec.task.kind)
    opts = kind.check(spec.task, declared_options(spec.task.kind, [get_space(trial.space)]))
    torch.manual_seed(trial.seed)
    np.random.seed(trial.seed % 2**32)
    device = trial_device()
    runtime = device_runtime(device)
    model = build_trial_module(spec, trial).to(device)
    train, validation = kind.batches(
        spec.task, spec.data, batch_size=budget.batch_size, seed=trial.seed
    )
    optimizer = _optimizer(model, opts, kind.learning_rate(opts, budget.batch_size))
    steps = max(1, budget.train_steps)
    warmup = int(opts.get("warmup_steps", steps // 10))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _rate(s, steps, warmup))
    model_dir, logs = work / MODEL_DIR, _Scalars(work / LOGS_DIR)
    model_dir.mkdir(parents=True, exist_ok=True)
    outcome = _Outcome()
    resumed = latest_checkpoint(model_dir)
    if resumed is not None:
        state = torch.load(resumed, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        outcome.step = outcome.initial_step = int(state["step"])
        if state.get("batches") is not None and hasattr(train, "rng"):
            train.rng.bit_generator.state = state["batches"]
    evaluations = min(budget.evaluations, budget.train_steps)
    every = budget.train_steps // evaluations if evaluations > 1 else 0
    last_save = time.monotonic()

    def save() -> None:
        nonlocal last_save
        began = time.monotonic()
        prefix = model_dir / f"ckpt-{outcome.step}"
        rng = getattr(train, "rng", None)  # the batches' generator, resumed with the model
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "step": outcome.step,
                "batches": rng.bit_generator.state if rng is not None else None,
            },
            f"{prefix}.pt",
        )
        for old in sorted(model_dir.glob("ckpt-*.pt"), key=_step_of)[:-_KEEP]:
            old.unlink()
        if on_checkpoint is not None:
            on_checkpoint(outcome.step, str(prefix))
        last_save = time.monotonic()
        outcome.checkpoint_seconds += last_save - began

    def evaluate(final: bool) -> None:
        model.eval()
        metrics = kind.evaluate(model, validation)
        model.train()
        outcome.evaluations.append((outcome.step, metrics))
        outcome.metrics = metrics
        logs.write("validation", metrics, outcome.step)
        if on_evaluation is not None:
            reason = on_evaluation(outcome.step, {**metrics, TRAIN_SECONDS: outcome.train_seconds})
            if reason and not final:
                outcome.stopped_early = reason

    model.train()
    while outcome.step < budget.train_steps and not outcome.stopped_early:
        began = time.monotonic()
        images, labels = next(train)
        inputs, targets = torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)
        loss = kind.loss(model(inputs), targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            outcome.infeasible = f"the training loss became {value} at step {outcome.step}"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        outcome.step += 1
        outcome.train_seconds += time.monotonic() - began
        logs.write("train", {"loss": value}, outcome.step)
        due = budget.checkpoint_every_steps and outcome.step % budget.checkpoint_every_steps == 0
        late = (
            budget.checkpoint_every_minutes
            and time.monotonic() - last_save >= budget.checkpoint_every_minutes * 60
        )
        if every and outcome.step % every == 0 and outcome.step < budget.train_steps:
            evaluate(final=False)
            save()
        elif due or late:
            save()
    logs.close()
    duration = time.monotonic() - start
    if outcome.infeasible:
        return TrialResult(
            trial.trial_id,
            TrialStatus.INFEASIBLE,
            error=outcome.infeasible,
            duration_s=duration,
            runtime=runtime,
        )
    if not outcome.stopped_early:
        logs = _Scalars(work / LOGS_DIR)
        evaluate(final=True)
        logs.close()
        save()
    if outcome.stopped_early:
        evaluated = {**outcome.metrics, "eval_step": float(outcome.step)}
    else:
        evaluated = best_evaluation(outcome, spec.objectives.metric, evaluations)
    ran = outcome.step - outcome.initial_step
    metrics = {
        **evaluated,
        "train_steps_per_second": ran / outcome.train_seconds if outcome.train_seconds else 0.0,
        TRAIN_SECONDS: outcome.train_seconds,
        "checkpoint_seconds": outcome.checkpoint_seconds,
    }
    training = TrialTraining(
        trial.trial_id,
        metrics,
        duration_s=time.monotonic() - start,
        runtime=runtime,
        stopped_early=bool(outcome.stopped_early),
        stop_reason=outcome.stopped_early,
    )
    if not measure:
        return training
    from kfnas.torch.measure import measure_trial_module
    from kfnas.training.measurement import latency_device, score_trial

    device, threads = latency_device()
    model.eval()
    measured = measure_trial_module(spec, trial, model, threads=threads)
    result = score_trial(spec, training, measured, device=device)
    return dataclasses.replace(result, duration_s=time.monotonic() - start)


def trial_device() -> Any:
    """The device a torch trial trains and is measured on: the first CUDA GPU, else the CPU."""
    import torch

    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def device_runtime(device: Any) -> dict[str, Any]:
    """What a torch trial's result records of where it ran (``TrialResult.runtime``).

    ``framework``, ``torch`` (version), ``device``, ``gpus`` (visible), and ``warnings`` when the
    pod has GPUs the single-process trial leaves idle.
    """
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    runtime: dict[str, Any] = {
        "framework": "pytorch",
        "torch": torch.__version__,
        "device": str(device),
        "gpus": gpus,
    }
    if gpus > 1:
        runtime["warnings"] = (
            f"{gpus} GPUs visible but a torch trial trains in one process on {device}: "
            f"{gpus - 1} stayed idle; give torch trials 1 accelerator per pod in the cluster "
            f"profile"
        )
    return runtime


def _optimizer(model: Any, opts: Mapping[str, Any], rate: float) -> Any:
    """The task options' optimizer over the model's parameters."""
    import torch

    name, decay = opts.get("optimizer", "adam"), float(opts.get("weight_decay", 0.0))
    momentum = float(opts.get("momentum", 0.9))
    makers: dict[str, Callable[[], Any]] = {
        "sgd": lambda: torch.optim.SGD(
            model.parameters(), lr=rate, momentum=momentum, weight_decay=decay
        ),
        "adam": lambda: torch.optim.Adam(
            model.parameters(), lr=rate, betas=(momentum, 0.999), weight_decay=decay
        ),
        "adamw": lambda: torch.optim.AdamW(
            model.parameters(), lr=rate, betas=(momentum, 0.999), weight_decay=decay
        ),
    }
    return makers[name]()


def _rate(step: int, steps: int, warmup: int) -> float:
    """The learning-rate factor at ``step``: linear warm-up, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _step_of(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


class _Scalars:
    """TensorBoard scalars under ``<logs>/<split>/``, one event file per split.

    Written with tensorboard's ``RecordWriter`` on a plain file (its ``EventFileWriter`` would
    load TensorFlow through ``tensorboard.compat``, seconds a torch trial need not pay).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.writers: dict[str, Any] = {}

    def write(self, split: str, values: Mapping[str, float], step: int) -> None:
        from tensorboard.compat.proto import event_pb2, summary_pb2

        if split not in self.writers:
            from tensorboard.summary.writer.record_writer import RecordWriter

            folder = self.folder / split
            folder.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
            self.writers[split] = RecordWriter((folder / name).open("wb"))
            version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
            self.writers[split].write(version.SerializeToString())
        summary = summary_pb2.Summary(
            value=[
                summary_pb2.Summary.Value(tag=name, simple_value=float(value))
                for name, value in values.items()
                if math.isfinite(value)
            ]
        )
        event = event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
        self.writers[split].write(event.SerializeToString())

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
