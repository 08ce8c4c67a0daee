"""The trial trainer: trains and evaluates any tf-models-official ``Task`` for a step budget.

``train_and_evaluate`` is generic over ``official.core.base_task.Task`` (detection, segmentation
and classification all go through it) and uses the task's own machinery: ``build_inputs``,
``create_optimizer``, ``build_metrics``, ``train_step``, ``validation_step``, ``aggregate_logs``
and ``reduce_aggregated_logs``, with the same per-replica log structure as the official
``base_trainer``. It is pure TensorFlow: it knows nothing of KFP, PyGlove or GCS beyond the paths it
is handed (any path ``tf.io.gfile`` writes, ``gs://`` included).

It never raises for a trial that goes wrong: a non-finite loss or running out of memory ends the
trial as INFEASIBLE, any other exception as FAILED, with the reason in ``TrainOutcome.error`` and
the traceback in ``<log_dir>/trainer_error.log``.

Cost of the NaN guard: each step returns its loss, and the host checks step *n*'s loss after it has
launched step *n + 1* (one scalar copy of a finished value per step), so the accelerator is never
idle waiting for the check. A non-finite loss therefore stops training at most one step late; the
error names the exact step whose loss was not finite.

Distribution (``kfnas.training.distribution``): every step runs under the trial's strategy
(``strategy.run`` on each replica over a dataset the strategy splits, the loss averaged over the
replicas); with one device that is TensorFlow's default strategy and nothing changes. The averaged
loss is what the NaN guard checks, so with several processes every process sees the same value and
stops at the same step. Several processes also agree on time-based checkpoints (an all-reduce of
"is one due" at each train summary, so such a checkpoint comes at most ``summary_every`` steps
late); step-based ones need no agreement. Every process saves (saving may take part in
collectives); only the chief's checkpoint directory is kept, the caller gives the others a
temporary one. Evaluation runs on one replica per process, outside the strategy.

Input pipelines on CPU (``cpu_pipeline``): in a process without GPU or TPU the trial's datasets
run without tf.data's autotuning model (``tf.data.Options().autotune.enabled = False``; parallel
maps then use every core, as autotuning settles on for these small pipelines). Its background
thread re-optimizes the pipeline every few seconds on cores the training step needs, and freeing
the training iterator waits for a running optimization: in one of two to four demo proxy trials
that wait took 4.7-5 s (``py-spy dump``: ``RootDataset::Iterator`` destroying its model thread),
and with autotuning off it never did, at the same training speed (six trials, 4.2-5.3 s loops
against 4.8-5.4 s; ``benchmarks/trial_fixed_cost.py`` runs a trial each way).

The evaluation pass lives in ``kfnas.training.evaluation``, the TensorBoard and error logs in
``kfnas.training.logs``. To extend: new per-trial behaviour (XLA, more summaries) goes in
``_TrialRun``; keep ``TrainOutcome`` fields additive, since stages read them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from kfnas.records.trial import TRAIN_SECONDS, TrialStatus
from kfnas.tasks.tracing import has_accelerator, op_tracebacks_hint, unoptimized_on_cpu
from kfnas.training.evaluation import Evaluator, is_infinite, scalar_logs
from kfnas.training.logs import TrialLogs, learning_rate, short_message, write_error_log

log = logging.getLogger(__name__)

Progress = Callable[[int, Mapping[str, float]], None]
"""``progress(step, logs)``: called at each training summary with the scalars just written."""

OnEvaluation = Callable[[int, Mapping[str, float]], str]
"""``on_evaluation(step, metrics) -> reason``: called after each evaluation; a non-empty reason
after a periodic one stops training there (early stopping). ``metrics`` also holds
``train_seconds``: this call's seconds of training by then, evaluations excluded."""

OnCheckpoint = Callable[[int, str], None]
"""``on_checkpoint(step, prefix)``: called after each checkpoint is saved at ``prefix``
(``<checkpoint_dir>/ckpt-<step>``), with the train logs flushed; e.g. an uploader to the store."""


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """How one ``train_and_evaluate`` call ended.

    Timings are wall-clock seconds of this call and add up to its duration (up to the few
    microseconds between phases): ``setup + train + eval + teardown``.

    Attributes:
        status: COMPLETED (trained and evaluated), INFEASIBLE (non-finite loss or out of memory) or
            FAILED (any other exception).
        metrics: The final evaluation, as plain floats, flattened (``a/b`` for nested dicts);
            non-scalar results are left out. ``loss`` is the mean validation loss when the task's
            ``validation_step`` reports one. Empty unless COMPLETED.
        error: Why the trial is not COMPLETED; empty when it is.
        steps_done: The global step reached: optimizer steps the model has taken, including those
            restored from a checkpoint. After a non-finite loss at step k it is k or k + 1 (the
            check runs one step behind; see the module docstring).
        initial_step: The step restored from ``checkpoint_dir`` (0 for a fresh start).
        setup_seconds: Fixed cost before the first step: seeding, input pipelines, optimizer,
            metrics, summary writers, checkpoint restore.
        train_seconds: The training loop, from launching the first step to the last step's loss
            check, including tracing the step (see ``first_step_seconds``) and periodic summaries
            and checkpoints, excluding evaluations done during training.
        first_step_seconds: The part of ``train_seconds`` the first step took (tracing and
            compiling the step function happen there).
        eval_seconds: All evaluations (periodic and final), their summaries included.
        teardown_seconds: Fixed cost after the last step, excluding evaluation: the last train
            summaries, the final checkpoint and flushing and closing the summary writers.
        steps_per_second: Steady-state speed: the steps after the first divided by their time
            (``train_seconds - first_step_seconds``); ``steps / train_seconds`` when one step ran,
            0 when none did.
        evaluations: Every evaluation of this call as ``(step, metrics)``, periodic ones first and
            the final one last (``metrics`` is the last one's). A restarted pod's call holds only
            the evaluations it ran itself.
        checkpoint_seconds: The part of ``train_seconds`` and ``teardown_seconds`` spent saving
            checkpoints and in ``on_checkpoint``: what checkpointing costs the training loop.
        checkpoints: The steps checkpoints were saved at by this call, in order.
        stopped_early: Why ``on_evaluation`` stopped training before ``train_steps`` (empty:
            it did not). ``metrics`` are then the evaluation it stopped at (no second one).
        step_traces: How many times the training step was traced: 1, unless its first trace
            created variables (a layer built lazily inside the step: TensorFlow then traces it
            again) or it needed AutoGraph; 0 when no step ran.
    """

    status: TrialStatus
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    error: str = ""
    steps_done: int = 0
    initial_step: int = 0
    setup_seconds: float = 0.0
    train_seconds: float = 0.0
    first_step_seconds: float = 0.0
    eval_seconds: float = 0.0
    teardown_seconds: float = 0.0
    steps_per_second: float = 0.0
    evaluations: tuple[tuple[int, dict[str, float]], ...] = ()
    checkpoint_seconds: float = 0.0
    checkpoints: tuple[int, ...] = ()
    stopped_early: str = ""
    step_traces: int = 0


class NonFiniteLossError(ArithmeticError):
    """The training loss became NaN or infinite (the trial is INFEASIBLE)."""

    def __init__(self, step: int, value: float) -> None:
        kind = "NaN" if math.isnan(value) else f"infinite ({value})"
        super().__init__(f"loss became {kind} at step {step}")
        self.step = step
        self.value = value


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy and TensorFlow from ``seed``.

    ``train_and_evaluate`` calls it; call it also before building the model so that the initial
    weights are reproducible.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    tf.random.set_seed(seed)


def train_and_evaluate(
    task: Any,
    model: tf_keras.Model,
    optimizer_config: Any,
    *,
    train_steps: int,
    log_dir: str,
    checkpoint_dir: str,
    eval_every: int | None = None,
    eval_steps: int | None = None,
    summary_every: int = 100,
    seed: int = 0,
    progress: Progress | None = None,
    runtime_config: Any = None,
    checkpoint_every_steps: int | None = None,
    checkpoint_every_seconds: float | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    distribution: Any = None,
    on_evaluation: OnEvaluation | None = None,
) -> TrainOutcome:
    """Trains ``model`` on ``task`` for ``train_steps`` steps, evaluates it, and checkpoints it.

    The train data (``task.task_config.train_data``) is repeated as needed. TensorBoard scalars
    (``loss``, ``learning_rate`` and the train metrics, averaged over the last ``summary_every``
    steps) go to ``<log_dir>/train``, evaluation results to ``<log_dir>/eval``. A checkpoint of the
    model, optimizer and step is written to ``checkpoint_dir`` at the end, at each periodic
    evaluation and on the checkpoint schedule (every ``checkpoint_every_steps`` steps or
    ``checkpoint_every_seconds`` seconds since the last one, whichever comes first); after each,
    ``on_checkpoint`` is called. If ``checkpoint_dir`` already holds one (a preempted pod
    restarting), training resumes from its step (the input pipeline restarts from its beginning);
    if that step is ``train_steps`` already, only the evaluation runs.

    Args:
        task: A configured ``official.core.base_task.Task``.
        model: The task's model (``task.build_model()`` or one built around a searched backbone).
        optimizer_config: An ``official.modeling.optimization.OptimizationConfig``.
        train_steps: The global step to train to.
        log_dir: Where TensorBoard summaries and the error log go.
        checkpoint_dir: Where checkpoints go and are resumed from.
        eval_every: Also evaluate (and checkpoint) every this many steps; None: only at the end.
        eval_steps: Evaluate on at most this many validation batches; None: one full pass (the
            validation dataset must then be finite).
        summary_every: Write train summaries every this many steps (and after the last one).
        seed: Seeds Python, NumPy and TensorFlow (see ``seed_everything``).
        progress: Called as ``progress(step, logs)`` after each train summary.
        runtime_config: Optional ``RuntimeConfig`` for ``task.create_optimizer`` (loss scaling for
            float16 mixed precision).
        checkpoint_every_steps: Also checkpoint every this many steps; None or 0: not by steps.
        checkpoint_every_seconds: Also checkpoint when this many seconds of training passed since
            the last checkpoint (or the start); None or 0: not by time.
        on_checkpoint: Called as ``on_checkpoint(step, prefix)`` after each checkpoint is saved.
        distribution: The ``kfnas.training.distribution.Distribution`` to train under (``model``
            must have been built in its ``scope()``); ``None``: the default strategy.
        on_evaluation: Called as ``on_evaluation(step, metrics)`` after each evaluation (the
            final one too, whose return is ignored); a non-empty return after a periodic one
            stops training there: the checkpoint is saved, the
            final evaluation is that one, and ``TrainOutcome.stopped_early`` holds the reason.
            With several processes, training stops wherever one process's callback says so
            (the decision is all-reduced, so they stop at the same step).

    Returns:
        How training ended; see ``TrainOutcome``. Never raises for a failed trial.

    Raises:
        ValueError: The arguments themselves are invalid (non-positive counts).
    """
    if train_steps < 0:
        raise ValueError(f"train_steps must be >= 0, got {train_steps}")
    for name, value in (
        ("summary_every", summary_every),
        ("eval_every", eval_every),
        ("eval_steps", eval_steps),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 (or None), got {value}")
    for name, value in (
        ("checkpoint_every_steps", checkpoint_every_steps),
        ("checkpoint_every_seconds", checkpoint_every_seconds),
    ):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0 (0 or None: off), got {value}")
    run = _TrialRun(task, model, log_dir, checkpoint_dir, summary_every, progress)
    run.schedule = _CheckpointSchedule(checkpoint_every_steps or 0, checkpoint_every_seconds or 0)
    run.on_checkpoint = on_checkpoint
    run.on_evaluation = on_evaluation
    if distribution is not None:
        run.strategy, run.workers = distribution.strategy, distribution.workers
    with unoptimized_on_cpu():  # Grappler costs a CPU trial more than it gains it
        return run.execute(
            optimizer_config, runtime_config, train_steps, eval_every, eval_steps, seed
        )


@dataclasses.dataclass
class _CheckpointSchedule:
    """When the training loop checkpoints besides evaluations and the end (0: that rule is off)."""

    every_steps: int = 0
    every_seconds: float = 0.0
    last_time: float = 0.0

    def due(self, step: int, now: float) -> bool:
        """Whether a checkpoint is due after ``step`` at time ``now`` (``perf_counter``)."""
        if self.every_steps and step % self.every_steps == 0:
            return True
        return bool(self.every_seconds) and now - self.last_time >= self.every_seconds


class _TrialRun:
    """State of one ``train_and_evaluate`` call; timings survive a failure midway."""

    #: Off switch for ``create_optimizer_variables`` (``benchmarks/trial_fixed_cost.py``'s
    #: "before" traces the step twice, as trials did until then).
    CREATE_OPTIMIZER_VARIABLES = True

    def __init__(
        self,
        task: Any,
        model: tf_keras.Model,
        log_dir: str,
        checkpoint_dir: str,
        summary_every: int,
        progress: Progress | None,
    ) -> None:
        self.task, self.model = task, model
        self.log_dir, self.checkpoint_dir = log_dir, checkpoint_dir
        self.summary_every, self.progress = summary_every, progress
        self.phase, self.step, self.initial_step = "setup", 0, 0
        self.times = {"setup": 0.0, "train": 0.0, "first_step": 0.0, "eval": 0.0, "teardown": 0.0}
        self.times["checkpoint"] = 0.0
        self.evaluations: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[int] = []
        self.logs: TrialLogs | None = None
        self.schedule = _CheckpointSchedule()
        self.on_checkpoint: OnCheckpoint | None = None
        self.on_evaluation: OnEvaluation | None = None
        self.stopped_early = ""
        self.strategy: Any = tf.distribute.get_strategy()
        self.workers = 1
        # The training step traced without and with AutoGraph (``_setup``; None until then).
        self.plain_step: Any = None
        self.autograph_step: Any = None

    def execute(
        self,
        optimizer_config: Any,
        runtime_config: Any,
        train_steps: int,
        eval_every: int | None,
        eval_steps: int | None,
        seed: int,
    ) -> TrainOutcome:
        metrics: dict[str, float] = {}
        status, error = TrialStatus.COMPLETED, ""
        try:
            start = time.perf_counter()
            self._setup(optimizer_config, runtime_config, seed)
            self.times["setup"] = time.perf_counter() - start
            self.phase = "training"
            self._train(train_steps, eval_every, eval_steps)
            start = time.perf_counter()
            self.phase = "teardown"
            self._finish_training()
            self.times["teardown"] += time.perf_counter() - start
            self.phase = "evaluation"
            # A trial stopped early was evaluated at this very step: no second evaluation.
            if self.stopped_early:
                metrics = self.evaluations[-1][1]
            else:
                metrics = self._evaluate(eval_steps)
                if self.on_evaluation is not None:  # the curve's last point; nothing to stop
                    self.on_evaluation(self.step, {**metrics, TRAIN_SECONDS: self.times["train"]})
            start = time.perf_counter()
            self.phase = "teardown"
            self.logs.close()
            self.times["teardown"] += time.perf_counter() - start
        except NonFiniteLossError as e:
            status, error = TrialStatus.INFEASIBLE, str(e)
            write_error_log(self.log_dir, error)
        except tf.errors.ResourceExhaustedError as e:
            first_line = (e.message or str(e)).strip().splitlines()[0]
            status = TrialStatus.INFEASIBLE
            error = f"out of memory {self._where()}: {first_line}"
            write_error_log(self.log_dir, error + "\n\n" + traceback.format_exc())
        except Exception as e:  # a trial's failure must never escape
            status = TrialStatus.FAILED
            error = f"{type(e).__name__} {self._where()}: {short_message(e)}"
            if isinstance(e, tf.errors.OpError):
                error += op_tracebacks_hint()
            write_error_log(self.log_dir, error + "\n\n" + traceback.format_exc())
        finally:
            if self.logs is not None:
                self.logs.close(quietly=True)
        return self._outcome(status, metrics if status is TrialStatus.COMPLETED else {}, error)

    def _where(self) -> str:
        """Where the run is, for error messages (steps count from 1, as in the NaN message)."""
        if self.phase == "setup":
            return "during setup"
        if self.phase == "training":
            return f"in training step {self.step + 1}"
        return f"during {self.phase} at step {self.step}"

    # -- setup -------------------------------------------------------------------------------

    def _setup(self, optimizer_config: Any, runtime_config: Any, seed: int) -> None:
        task, model, strategy = self.task, self.model, self.strategy
        seed_everything(seed)
        self.logs = TrialLogs(self.log_dir)
        train_config = task.task_config.train_data
        with strategy.scope():
            self.train_data = strategy.distribute_datasets_from_function(
                lambda context: cpu_pipeline(_repeated(task.build_inputs(train_config, context)))
            )
            self.optimizer = task.create_optimizer(optimizer_config, runtime_config)
            if self.CREATE_OPTIMIZER_VARIABLES and (variables := _built_variables(model)):
                create_optimizer_variables(self.optimizer, variables)  # one trace, not two
            self.train_metrics = tf.nest.flatten(task.build_metrics(training=True))
            self.train_loss = tf_keras.metrics.Mean("loss")
            self.step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.checkpoint = tf.train.Checkpoint(
                model=model, optimizer=self.optimizer, step=self.step_var
            )
        validation_data = cpu_pipeline(task.build_inputs(task.task_config.validation_data))
        self.evaluator = Evaluator(task, model, validation_data, self.step_var)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.checkpoint_dir, max_to_keep=2
        )
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
            self.initial_step = self.step = int(self.step_var.numpy())
        elif getattr(task.task_config, "init_checkpoint", None):
            task.initialize(model)  # official warm start from task_config.init_checkpoint
        self.saved_step = self.initial_step if self.manager.latest_checkpoint else -1

        train_loss, train_metrics, optimizer = self.train_loss, self.train_metrics, self.optimizer

        def replica_step(inputs: Any) -> tf.Tensor:
            logs = task.train_step(inputs, model=model, optimizer=optimizer, metrics=train_metrics)
            loss = logs[task.loss]
            train_loss.update_state(loss)
            return loss

        def train_step(iterator: Any) -> tf.Tensor:
            losses = strategy.run(replica_step, args=(next(iterator),))
            return strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)

        # Traced without AutoGraph first: converting the task's and every layer's Python code
        # costs ~2.5 s of a demo proxy trial's ~12 s first step, and the official tasks' steps
        # branch on their configs only. A step whose Python branches on tensors fails that trace
        # with a TypeError; it is then traced again with AutoGraph (``_first_step``).
        self.autograph_step = tf.function(train_step)

        @tf.function
        def any_process(flag: tf.Tensor) -> tf.Tensor:
            flags = strategy.run(lambda: tf.identity(flag))  # ReduceOp has no MAX: sum them
            return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None) > 0

        self.train_step = self.plain_step = tf.function(train_step, autograph=False)
        self.any_process = any_process

    # -- training ----------------------------------------------------------------------------

    def _train(self, train_steps: int, eval_every: int | None, eval_steps: int | None) -> None:
        if self.step >= train_steps:
            return
        iterator = iter(self.train_data)
        start = time.perf_counter()
        self.schedule.last_time = start
        self.eval_time_in_training = 0.0
        try:
            self._loop(iterator, start, train_steps, eval_every, eval_steps)
        finally:
            elapsed = time.perf_counter() - start
            self.times["train"] = elapsed - self.eval_time_in_training

    def _loop(
        self,
        iterator: Any,
        start: float,
        train_steps: int,
        eval_every: int | None,
        eval_steps: int | None,
    ) -> None:
        pending: tuple[int, tf.Tensor] | None = None
        while self.step < train_steps:
            if self.step == self.initial_step:
                loss = self._first_step(iterator)
            else:
                loss = self.train_step(iterator)
            self.step += 1
            if pending is not None:  # step n-1 finished long ago: the check does not stall
                _check_loss(*pending)
            pending = (self.step, loss)
            if self.step == self.initial_step + 1:
                _check_loss(*pending)
                pending = None
                self.times["first_step"] = time.perf_counter() - start
            at_eval = bool(eval_every) and self.step % eval_every == 0 and self.step < train_steps
            if at_eval or self.step % self.summary_every == 0:
                if pending is not None:
                    _check_loss(*pending)
                    pending = None
                self._write_train_summaries()
            if at_eval:
                eval_start = time.perf_counter()
                trained = eval_start - start - self.eval_time_in_training
                self.phase = "evaluation"
                metrics = self._evaluate(eval_steps)
                self.phase = "training"
                self.stopped_early = self._stop_reason({**metrics, TRAIN_SECONDS: trained})
                self.eval_time_in_training += time.perf_counter() - eval_start
                self._save()
                if self.stopped_early:
                    log.info("training stopped early at step %d: %s", self.step, self.stopped_early)
                    break
            elif self.step < train_steps and self._checkpoint_due():
                if pending is not None:  # never checkpoint a step whose loss was not finite
                    _check_loss(*pending)
                    pending = None
                self._save()
        if pending is not None:
            _check_loss(*pending)

    def _stop_reason(self, metrics: Mapping[str, float]) -> str:
        """Whether ``on_evaluation`` stops training here; every process agrees (module doc)."""
        reason = self.on_evaluation(self.step, metrics) if self.on_evaluation else ""
        if self.workers > 1:
            anyone = bool(self.any_process(tf.constant(1 if reason else 0)).numpy())
            reason = reason or ("stopped by another process" if anyone else "")
        return reason

    def _first_step(self, iterator: Any) -> tf.Tensor:
        """The first step, traced without AutoGraph, or with it when the step needs it."""
        try:
            return self.train_step(iterator)
        except TypeError as e:  # e.g. OperatorNotAllowedInGraphError: a tensor as a Python bool
            log.info("the training step needs AutoGraph (%s); tracing it with AutoGraph", e)
            self.train_step = self.autograph_step
            return self.train_step(iterator)

    def _checkpoint_due(self) -> bool:
        """Whether to checkpoint now; several processes agree at train summaries (module doc)."""
        if self.workers <= 1:
            return self.schedule.due(self.step, time.perf_counter())
        if self.schedule.every_steps and self.step % self.schedule.every_steps == 0:
            return True
        if not self.schedule.every_seconds or self.step % self.summary_every:
            return False
        due = self.schedule.due(self.step, time.perf_counter())
        return bool(self.any_process(tf.constant(1 if due else 0)).numpy())

    def _write_train_summaries(self) -> None:
        if int(self.train_loss.count.numpy()) == 0:
            return
        logs: dict[str, Any] = {"loss": self.train_loss.result()}
        logs.update({m.name: m.result() for m in self.train_metrics})
        rate = learning_rate(self.optimizer)
        if rate is not None:
            logs["learning_rate"] = rate
        scalars = scalar_logs(logs)
        self.logs.write("train", scalars, self.step)
        for metric in [self.train_loss, *self.train_metrics]:
            metric.reset_state()
        if self.progress is not None:
            self.progress(self.step, scalars)

    def _finish_training(self) -> None:
        self._write_train_summaries()
        self._save()
        self.logs.flush("train")

    def _save(self) -> None:
        if self.step == self.saved_step:
            return
        start = time.perf_counter()
        self.step_var.assign(self.step)
        prefix = self.manager.save(checkpoint_number=self.step)
        self.saved_step = self.step
        self.checkpoints.append(self.step)
        if self.on_checkpoint is not None:
            self.logs.flush("train")
            self.on_checkpoint(self.step, prefix)
        end = time.perf_counter()
        self.schedule.last_time = end
        self.times["checkpoint"] += end - start

    # -- evaluation --------------------------------------------------------------------------

    def _evaluate(self, eval_steps: int | None) -> dict[str, float]:
        start = time.perf_counter()
        metrics = self.evaluator.evaluate(eval_steps)
        self.evaluations.append((self.step, metrics))
        self.logs.write("eval", metrics, self.step)
        if self.evaluator.report:
            self.logs.write_text("eval", "evaluation_report", self.evaluator.report, self.step)
        self.logs.flush("eval")
        self.times["eval"] += time.perf_counter() - start
        return metrics

    # -- ending ------------------------------------------------------------------------------

    def _outcome(self, status: TrialStatus, metrics: dict[str, float], error: str) -> TrainOutcome:
        t = self.times
        steps = self.step - self.initial_step
        steady = t["train"] - t["first_step"]
        if steps > 1 and steady > 0:
            speed = (steps - 1) / steady
        else:
            speed = steps / t["train"] if steps and t["train"] > 0 else 0.0
        return TrainOutcome(
            status=status,
            metrics=metrics,
            error=error,
            steps_done=self.step,
            initial_step=self.initial_step,
            setup_seconds=t["setup"],
            train_seconds=t["train"],
            first_step_seconds=t["first_step"],
            eval_seconds=t["eval"],
            teardown_seconds=t["teardown"],
            steps_per_second=speed,
            evaluations=tuple(self.evaluations),
            checkpoint_seconds=t["checkpoint"],
            checkpoints=tuple(self.checkpoints),
            stopped_early=self.stopped_early,
            step_traces=self._step_traces(),
        )

    def _step_traces(self) -> int:
        steps = (self.plain_step, self.autograph_step)
        return sum(step.experimental_get_tracing_count() for step in steps if step is not None)


def _built_variables(model: tf_keras.Model) -> list[tf.Variable]:
    """The model's trainable variables; none when Keras has none to give yet.

    Keras refuses (``ValueError``) for a subclassed model that was never called: its first trace
    makes its variables, and the optimizer's slots with them, and is traced twice, as before.
    The built-in task kinds build every part with the model.
    """
    try:
        return list(model.trainable_variables)
    except ValueError:  # "Weights for model ... have not yet been created"
        return []


def create_optimizer_variables(optimizer: Any, variables: Sequence[tf.Variable]) -> None:
    """Creates ``optimizer``'s slots and hyperparameters for ``variables`` now, not in a trace.

    A ``tf.function`` whose first trace creates variables is traced a second time (TensorFlow
    then traces a version that may not create any), and Keras optimizers create their variables
    in the first ``apply_gradients``: that second trace was ~4 s of a demo-sized detection proxy
    trial's first step. ``tf_keras``' legacy optimizers (what tf-models creates, the loss-scale
    wrapper included) create them in ``_create_all_weights``, under the optimizer's name scope as
    ``apply_gradients`` does (same variable names); the newer ones in ``build``. A model without
    variables yet (``_built_variables``) is left to the trace.
    """
    # A loss-scale wrapper makes its own variables when created; its inner optimizer, the slots.
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    if hasattr(optimizer, "_create_all_weights"):
        with tf.name_scope(optimizer._name):
            optimizer._create_all_weights(variables)
    else:
        optimizer.build(variables)


def _check_loss(step: int, loss: tf.Tensor) -> None:
    value = float(loss)
    if not math.isfinite(value):
        raise NonFiniteLossError(step, value)


#: Off switch: ``False`` keeps tf.data's autotuning on CPU too (``cpu_pipeline``; what
#: ``benchmarks/trial_fixed_cost.py`` runs as "before").
SKIP_DATA_AUTOTUNE_ON_CPU = True


def cpu_pipeline(data: Any) -> Any:
    """``data`` without tf.data's autotuning model when this process has no GPU or TPU.

    See the module doc (input pipelines on CPU). Anything but a ``tf.data.Dataset`` is returned
    as it is, and so is every dataset in a process with an accelerator.
    """
    if not (SKIP_DATA_AUTOTUNE_ON_CPU and isinstance(data, tf.data.Dataset)) or has_accelerator():
        return data
    options = tf.data.Options()
    options.autotune.enabled = False
    return data.with_options(options)


def _repeated(data: Any) -> Any:
    """The train data, repeated forever if it is a finite ``tf.data.Dataset``."""
    if isinstance(data, tf.data.Dataset) and not is_infinite(data):
        return data.repeat()
    return data
