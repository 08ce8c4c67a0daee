"""Trial records: what a trial is asked to do (``TrialSpec``) and what it did (``TrialResult``).

Both are ``kfnas.records.base.Record`` kinds sharing one ``SCHEMA_VERSION``, stored with sorted
keys as ``trial.json`` and ``result.json``: a reader accepts records of its own version or older
and refuses newer ones, so an old controller never misreads a newer trial. To add a field: give it
a default, bump ``SCHEMA_VERSION`` below and note what it added. ``TrialAttempt`` (one record per
run of a trial, ``attempts/<n>.json``) has a version of its own.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any

from kfnas.records.base import Record, RecordError

# 1 to 4 need no upgrade: the fields added since have defaults that mean "not set".
# 2: TrialSpec gained ``source_study`` and ``source_trial`` (a retrained copy of another trial).
# 3: TrialSpec gained ``task_overrides`` (a scaling or augmentation choice applied to the task).
# 4: TrialSpec gained ``data_overrides`` (a retraining on new data: ``kfnas.stages.retraining``).
# 5: TrialResult gained ``attempts`` and ``start_steps`` (runs it took, the step each resumed from).
# 6: TrialResult gained ``runtime`` (how it trained: strategy, replicas, workers, precision).
# 7: TrialResult gained ``measurement`` (the measurement step's protocol, spread and device).
# 8: TrialSpec gained ``rung`` and ``promoted_from`` (multi-fidelity: a promotion of another
#    trial); TrialResult gained ``stopped_early`` and ``stop_reason`` (early stopping).
# 9: TrialSpec gained ``decisions`` (the DNA's decisions by id, written with the proposal).
SCHEMA_VERSION = 9


class TrialStatus(enum.Enum):
    """How a trial ended. Only COMPLETED trials carry a reward.

    COMPLETED: trained and evaluated; metrics and reward are set.
    FAILED: an exception ended it (``error`` holds the reason); the search goes on.
    INFEASIBLE: the architecture cannot be trained as asked (for example a NaN or infinite loss,
        or it does not fit in memory); ``error`` holds the step and reason.
    """

    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    INFEASIBLE = "INFEASIBLE"


@dataclasses.dataclass(frozen=True)
class TrialSpec(Record):
    """One trial to run, written by ``propose_trials`` as ``trial.json``.

    Attributes:
        experiment: Experiment name.
        study: Study name (``proxy``, ``validation``, ...).
        trial_id: Integer id, increasing in proposal order within the study.
        round: The round of the study that proposed it (1-based).
        space: The search space of ``arch_json``: the network the trial trains. For a study over a
            refinement space (scaling, augmentation) it is the refined trial's space, not the
            study's.
        dna_json: ``pg.to_json_str(dna)`` of the study's own decision, with the metadata the
            algorithms need to recover (a point of the study's space, refinement spaces included).
        arch_json: The materialized network architecture, serialized, so the model can be rebuilt
            without the search code.
        budget: The training budget of the trial (steps, batch size, ...), resolved from the study.
        seed: Seed for the trial's training.
        source_study: For a retrained copy of another trial (validation, final training): the
            study of the trial whose architecture it trains; empty for a proposed trial.
        source_trial: The id of that trial in ``source_study``; ``None`` for a proposed trial.
            A refinement study's trial names the trial it refines here.
        task_overrides: Dotted overrides of the experiment's ``task`` this trial trains with
            (``task.image_size=256``, ``task.options.augmentation=...``): the scaling and
            augmentation choices of its line, oldest first. Retrained copies keep them.
        data_overrides: Dotted overrides of the experiment's ``data`` this trial trains and is
            evaluated on (``data.train=gs://b/new-*.tfrecord``); set by a retraining on new data
            (``kfnas.stages.retraining``), empty otherwise.
        rung: Multi-fidelity (``kfnas.search.asha``): the rung whose step budget
            (``budget.train_steps``) the trial trains to; 0 without multi-fidelity.
        promoted_from: The trial of the same study this one continues from its checkpoint to a
            larger budget (an ASHA promotion; same architecture, the next rung); ``None`` for a
            trial the search algorithm proposed.
        decisions: ``dna_json``'s decisions by readable id (``kfnas.spaces.base.
            decision_values``: ``{"blocks[0].kernel_size": 5}``), written with the proposal,
            which has the space's DNA spec at hand, so a trial's TensorBoard HParams do not
            rebuild it (0.3-0.5 s of a demo proxy trial). Copies keep their source's. Empty:
            computed from ``dna_json`` where needed (``kfnas.training.hparams``).
    """

    KIND = "trial spec"
    SCHEMA_VERSION = SCHEMA_VERSION
    SORT_KEYS = True

    experiment: str
    study: str
    trial_id: int
    round: int
    space: str
    dna_json: str
    arch_json: str
    budget: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    source_study: str = ""
    source_trial: int | None = None
    task_overrides: tuple[str, ...] = ()
    data_overrides: tuple[str, ...] = ()
    rung: int = 0
    promoted_from: int | None = None
    decisions: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rung < 0 or (self.promoted_from is not None and self.rung < 1):
            raise RecordError(
                f"rung must be >= 0, and >= 1 for a promotion, got rung={self.rung}, "
                f"promoted_from={self.promoted_from}"
            )
        for name in ("task", "data"):
            overrides = getattr(self, f"{name}_overrides")
            if bad := [o for o in overrides if not o.startswith(f"{name}.") or "=" not in o]:
                raise RecordError(f"{name}_overrides must read '{name}.<key>=<value>', got {bad}")
        if self.trial_id < 0 or self.round < 1:
            raise RecordError(
                f"trial_id must be >= 0 and round >= 1, got trial_id={self.trial_id}, "
                f"round={self.round}"
            )
        if bool(self.source_study) != (self.source_trial is not None):
            raise RecordError(
                f"source_study and source_trial are set together or not at all, got "
                f"source_study={self.source_study!r}, source_trial={self.source_trial!r}"
            )


@dataclasses.dataclass(frozen=True)
class TrialResult(Record):
    """How one trial ended, written by ``run_trial`` as ``result.json``, the trial's last file.

    Attributes:
        trial_id: The trial's id.
        status: COMPLETED, FAILED or INFEASIBLE.
        metrics: Evaluation metrics and measurements (AP, latency_ms, flops, params, ...).
        reward: The scalar the search maximizes; set only for COMPLETED trials.
        objectives: The objective vector for multi-objective algorithms (each maximized).
        model_uri: Where the trained model or checkpoint lies, if one was kept.
        duration_s: Wall time of the trial.
        error: Why the trial is FAILED or INFEASIBLE; empty for COMPLETED.
        attempts: How many runs of the trial started (a run killed midway counts); 0 in records
            written before attempts were counted.
        start_steps: The training step each attempt started from, oldest first: 0 for a fresh
            start, a checkpoint's step for a run that resumed one; empty when not counted.
        runtime: How the last attempt trained: ``strategy`` (``one_device``, ``mirrored``,
            ``multi_worker_mirrored``), ``replicas``, ``workers``, ``precision``, ``devices``,
            ``all_reduce`` and any ``warnings`` (``kfnas.training.distribution``); a torch
            trial's: ``framework``, ``torch``, ``device``, ``gpus`` and any ``warnings``
            (``kfnas.torch.runner.device_runtime``); empty when not recorded.
        measurement: How the measurement step measured the model (``kfnas.training.protocol``):
            the device, the protocol (warm-up, runs, threads, batch sizes), each latency's
            spread (median, p90, mean, standard deviation, coefficient of variation), TensorFlow
            Lite results or conversion errors; empty for a trial that was never measured.
        stopped_early: The study's early-stopping rule stopped the trial before the end of its
            budget (``kfnas.search.stopping``); it is COMPLETED with its last evaluation's
            metrics (``metrics["eval_step"]`` says where).
        stop_reason: The rule's reason, when ``stopped_early``.
    """

    KIND = "trial result"
    SCHEMA_VERSION = SCHEMA_VERSION
    SORT_KEYS = True

    trial_id: int
    status: TrialStatus
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    reward: float | None = None
    objectives: tuple[float, ...] | None = None
    model_uri: str = ""
    duration_s: float = 0.0
    error: str = ""
    attempts: int = 0
    start_steps: tuple[int, ...] = ()
    runtime: dict[str, str] = dataclasses.field(default_factory=dict)
    measurement: dict[str, Any] = dataclasses.field(default_factory=dict)
    stopped_early: bool = False
    stop_reason: str = ""

    def __post_init__(self) -> None:
        if self.stopped_early and self.status is not TrialStatus.COMPLETED:
            raise RecordError(f"only a COMPLETED trial is stopped early, not {self.status.value}")
        if self.attempts < 0 or any(step < 0 for step in self.start_steps):
            raise RecordError(
                f"attempts and start_steps must not be negative, got attempts={self.attempts}, "
                f"start_steps={self.start_steps}"
            )
        if not isinstance(self.status, TrialStatus):
            raise RecordError(f"status must be a TrialStatus, got {self.status!r}")
        if self.status is TrialStatus.COMPLETED:
            if self.reward is None or not math.isfinite(self.reward):
                raise RecordError(f"a COMPLETED trial needs a finite reward, got {self.reward!r}")
            if self.error:
                raise RecordError("a COMPLETED trial has no error")
        elif not self.error:
            raise RecordError(f"a {self.status.value} trial needs its reason in 'error'")
        elif self.reward is not None:
            raise RecordError(f"a {self.status.value} trial has no reward")

    @property
    def completed(self) -> bool:
        """Whether the trial was trained and evaluated."""
        return self.status is TrialStatus.COMPLETED


@dataclasses.dataclass(frozen=True)
class TrialTraining(Record):
    """A trial trained and evaluated, not yet measured: ``trained.json``, written by ``run_trial``.

    The trial's pod only trains and evaluates; the measurement step (``kfnas.stages.measure``)
    measures the model on the latency device, computes the reward and writes ``result.json``
    from this record and its measurement. Until then the trial has no result, so the search
    algorithm never sees a reward that does not exist yet.

    Attributes:
        trial_id: The trial's id.
        metrics: The evaluation metrics and the training's own figures (``train_seconds``, ...).
        model_uri: Where the trained checkpoint lies in the store.
        duration_s: Wall time of the training run (evaluation included).
        attempts: Runs of the trial that started (see ``TrialResult``).
        start_steps: The step each attempt started from (see ``TrialResult``).
        runtime: How it trained (see ``TrialResult``).
        stopped_early: Stopped by the study's early-stopping rule (see ``TrialResult``).
        stop_reason: The rule's reason.
    """

    KIND = "trial training"
    # 2: gained ``stopped_early`` and ``stop_reason``.
    SCHEMA_VERSION = 2
    SORT_KEYS = True

    trial_id: int
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    model_uri: str = ""
    duration_s: float = 0.0
    attempts: int = 0
    start_steps: tuple[int, ...] = ()
    runtime: dict[str, str] = dataclasses.field(default_factory=dict)
    stopped_early: bool = False
    stop_reason: str = ""

    def result(self, status: TrialStatus, **fields: Any) -> TrialResult:
        """The trial's ``TrialResult``: this training's id, model, time, attempts and runtime.

        A COMPLETED result keeps whether the trial was stopped early, and why.

        Args:
            status: How the trial ended.
            **fields: The rest of the result (``metrics``, ``reward``, ``error``, ...).
        """
        stopped = self.stopped_early and status is TrialStatus.COMPLETED
        fields = {
            "stopped_early": stopped,
            "stop_reason": self.stop_reason if stopped else "",
        } | fields
        return TrialResult(
            trial_id=self.trial_id,
            status=status,
            model_uri=self.model_uri,
            duration_s=self.duration_s,
            attempts=self.attempts,
            start_steps=self.start_steps,
            runtime=dict(self.runtime),
            **fields,
        )


@dataclasses.dataclass(frozen=True)
class TrialAttempt(Record):
    """One run of a trial that started, written create-only by ``run_trial`` before it trains.

    Stored as ``attempts/<n>.json`` (``ExperimentLayout.trial_attempt``); a run killed midway
    leaves its record behind, so the next one knows how many were spent (``budget.max_attempts``).

    Attributes:
        attempt: Its number, from 1.
        host: The machine or pod that ran it (``HOSTNAME``).
        pid: Its process id there.
        started: When it started (unix seconds).
        from_step: The checkpoint step it resumed from; 0 for a fresh start.
    """

    KIND = "trial attempt"
    SCHEMA_VERSION = 1
    SORT_KEYS = True

    attempt: int
    host: str
    pid: int
    started: float
    from_step: int = 0

    def __post_init__(self) -> None:
        if self.attempt < 1 or self.from_step < 0:
            raise RecordError(
                f"attempt must be >= 1 and from_step >= 0, got attempt={self.attempt}, "
                f"from_step={self.from_step}"
            )


#: The key, in a curve point's metrics, of the trial's seconds of training by that step (every
#: attempt together, evaluations excluded).
TRAIN_SECONDS = "train_seconds"


@dataclasses.dataclass(frozen=True)
class TrialCurve(Record):
    """A trial's evaluations so far, rewritten by the trial at each one: ``curve.json``.

    Early-stopping rules (``kfnas.search.stopping``) compare a training trial's curve with the
    study's other trials' curves; reports and the proxy-task tools read them without TensorFlow.
    A promoted trial (``TrialSpec.promoted_from``) starts from its parent's curve.

    Attributes:
        trial_id: The trial's id.
        metric: The study's metric (``objectives.metric``), which ``values`` hold.
        steps: The training step of each evaluation, increasing.
        values: The metric at each step (NaN is stored as null).
        metrics: Every scalar metric of each evaluation, in step order.
    """

    KIND = "trial curve"
    SCHEMA_VERSION = 1
    SORT_KEYS = True

    trial_id: int
    metric: str
    steps: tuple[int, ...] = ()
    values: tuple[float | None, ...] = ()
    metrics: tuple[dict[str, float], ...] = ()

    def __post_init__(self) -> None:
        if len(self.steps) != len(self.values) or len(self.metrics) not in (0, len(self.steps)):
            raise RecordError(
                f"a curve needs one value (and one metrics entry) per step, got "
                f"{len(self.steps)} steps, {len(self.values)} values, {len(self.metrics)} metrics"
            )
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise RecordError(f"a curve's steps must increase, got {list(self.steps)}")

    def seconds(self) -> list[tuple[int, float]]:
        """``(step, training seconds)`` pairs of the points that record them (``TRAIN_SECONDS``)."""
        return [
            (step, float(point[TRAIN_SECONDS]))
            for step, point in zip(self.steps, self.metrics, strict=False)
            if TRAIN_SECONDS in point
        ]

    def points(self) -> list[tuple[int, float]]:
        """``(step, value)`` pairs, a missing value as NaN (what stopping rules read)."""
        return [
            (step, math.nan if value is None else float(value))
            for step, value in zip(self.steps, self.values, strict=True)
        ]

    def with_point(self, step: int, metrics: dict[str, float]) -> TrialCurve:
        """This curve with one more evaluation (a repeated or earlier step replaces the rest).

        A trial resumed from an earlier checkpoint evaluates steps it had evaluated before: the
        newer evaluation replaces those from that step on.
        """
        keep = sum(1 for s in self.steps if s < step)
        value = metrics.get(self.metric)
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        return dataclasses.replace(
            self,
            steps=(*self.steps[:keep], step),
            values=(
                *self.values[:keep],
                None if value is None or not math.isfinite(value) else float(value),
            ),
            metrics=(*self.metrics[:keep], finite),
        )
