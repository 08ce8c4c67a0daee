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
SCHEMA_VERSION = 7


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

    def __post_init__(self) -> None:
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
            ``all_reduce`` and any ``warnings`` (``kfnas.training.distribution``); empty when
            not recorded.
        measurement: How the measurement step measured the model (``kfnas.training.protocol``):
            the device, the protocol (warm-up, runs, threads, batch sizes), each latency's
            spread (median, p90, mean, standard deviation, coefficient of variation), TensorFlow
            Lite results or conversion errors; empty for a trial that was never measured.
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

    def __post_init__(self) -> None:
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
    """

    KIND = "trial training"
    SCHEMA_VERSION = 1
    SORT_KEYS = True

    trial_id: int
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    model_uri: str = ""
    duration_s: float = 0.0
    attempts: int = 0
    start_steps: tuple[int, ...] = ()
    runtime: dict[str, str] = dataclasses.field(default_factory=dict)

    def result(self, status: TrialStatus, **fields: Any) -> TrialResult:
        """The trial's ``TrialResult``: this training's id, model, time, attempts and runtime.

        Args:
            status: How the trial ended.
            **fields: The rest of the result (``metrics``, ``reward``, ``error``, ...).
        """
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
