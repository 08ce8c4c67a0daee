"""The experiment spec: what a user asks kfnas to do, as typed dataclasses.

Life cycle: ``load_spec`` reads YAML strictly (an unknown key is an error that lists the valid
ones), ``with_overrides`` applies dotted ``key=value`` pairs (from the CLI or the pipeline
parameters), ``validate`` reports every problem at once with what to change, and ``resolved`` fills
each study's algorithm, budget and seed from the experiment defaults. ``init_experiment`` writes the
resolved spec once as ``experiment.json``; every later step reads that file, never the user's YAML.

To extend: add a field with a default to the right dataclass (old specs keep loading), document it
in the attribute list, and check it in that dataclass's ``problems()``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml

from kfnas.config.strict import SpecError, from_data, load_yaml, set_dotted, to_data

# Quantities a trial measures that a reward constraint may target.
CONSTRAINT_MEASURES = (
    "latency_ms",
    "latency_p90_ms",
    "flops",
    "memory_mb",
    "params",
    "tflite_float_latency_ms",
    "tflite_int8_latency_ms",
)
#: TensorFlow Lite measurements a spec may ask for: ``float`` and dynamic-range ``int8``.
TFLITE_MODES = ("float", "int8")
#: The latency device of a run without a cluster profile (``kfp.local``, ``kfnas run``).
LOCAL_DEVICE = "local"
#: Seconds each timed part of a measurement lasts at least (``MeasurementSpec.min_seconds``).
DEFAULT_MIN_SECONDS = 5.0
#: The most ``MeasurementSpec.min_seconds`` may ask for: every new model holds the latency
#: device (and, locally, pauses the trials) for that long per timed part.
MAX_MIN_SECONDS = 600.0
#: Environment variables of measurement pods: the device's name and the threads to pin.
ENV_LATENCY_DEVICE = "KFNAS_LATENCY_DEVICE"
ENV_LATENCY_THREADS = "KFNAS_LATENCY_THREADS"

__all__ = [
    "MULTI_FIDELITY_SCHEDULERS",
    "AlgorithmSpec",
    "BudgetSpec",
    "ConstraintSpec",
    "DataSpec",
    "EarlyStoppingSpec",
    "ExperimentSpec",
    "MeasurementSpec",
    "MultiFidelitySpec",
    "ObjectiveSpec",
    "SpecError",
    "StudySpec",
    "TaskSpec",
    "load_spec",
    "parse_spec",
]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What is learned.

    Attributes:
        kind: A registered task kind (``kfnas.tasks.TASKS``: ``detection``, ...).
        num_classes: Number of classes (for detection, without the background).
        image_size: Side of the square model input, in pixels.
        options: Task-specific model knobs that a proxy task shrinks (see the task's docs).
    """

    kind: str = "detection"
    num_classes: int = 3
    image_size: int = 64
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def problems(self) -> list[str]:
        """What is wrong with this part of the spec, as messages that say what to change."""
        out = []
        if self.num_classes < 1:
            out.append(f"task.num_classes must be at least 1, got {self.num_classes}")
        if self.image_size < 8:
            out.append(f"task.image_size must be at least 8 pixels, got {self.image_size}")
        return out


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """Where the data lies.

    Attributes:
        train: File pattern of the training TFRecords (local path or ``gs://``).
        validation: File pattern of the validation TFRecords used to score trials.
        annotations: Optional COCO-style annotation JSON for detection evaluation.
    """

    train: str = ""
    validation: str = ""
    annotations: str = ""


@dataclasses.dataclass(frozen=True)
class AlgorithmSpec:
    """The search algorithm of a study.

    Attributes:
        name: A registered algorithm (``kfnas algorithms`` lists them).
        options: Its keyword options, e.g. ``population_size`` for regularized evolution.
    """

    name: str = "regularized_evolution"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class BudgetSpec:
    """How much work a study may do.

    Attributes:
        rounds: Rounds of proposals (the pipeline fixes its own count when it is compiled).
        trials_per_round: Trials proposed per round.
        train_steps: Training steps of each trial.
        batch_size: Training batch size of each trial.
        max_consecutive_failures: A study stops with an error after this many failed trials in a
        row.
        latency_runs: Batch-1 inference runs timed for each trial's ``latency_ms`` (their median),
            after a fifth as many warm-up runs. Smoke tests and CI may lower it; a search that
            ranks by latency should keep it high.
        evaluations: Evaluations spread evenly over each trial's training; with more than one, the
            trial reports the best by ``objectives.metric`` (and its ``eval_step``), as
            augmentation studies do: they train to the end and keep the best evaluation.
        checkpoint_every_steps: Also checkpoint each trial to the store every this many steps (0:
            only on the time schedule), so a rerun of a killed trial continues from there.
        checkpoint_every_minutes: Also checkpoint every this many minutes of training (0: only on
            the step schedule); whichever schedule comes first triggers a checkpoint. The default
            bounds what a preempted full training loses to about 10 minutes.
        max_attempts: Runs a trial may start; one killed on every attempt (out of memory, evicted)
            is recorded FAILED after this many, so the search goes on without it.
        lease_timeout_s: Seconds a trial's runner holds its claim without renewing it: a second
            runner (a resubmitted run, a retried pod) waits while the claim is live and takes the
            trial over once it expires, so a dead runner's trial waits at most this long.
        lease_renew_s: Seconds between the runner's renewals of its claim; keep it at most a
            third of ``lease_timeout_s`` so one slow store write never lets the claim lapse.
    """

    rounds: int = 2
    trials_per_round: int = 3
    train_steps: int = 100
    batch_size: int = 8
    max_consecutive_failures: int = 5
    latency_runs: int = 100
    evaluations: int = 1
    checkpoint_every_steps: int = 0
    checkpoint_every_minutes: float = 10.0
    max_attempts: int = 3
    lease_timeout_s: float = 120.0
    lease_renew_s: float = 30.0

    def problems(self, where: str) -> list[str]:
        """What is wrong with this budget (``where`` names it in the messages)."""
        may_be_zero = {"checkpoint_every_steps", "checkpoint_every_minutes"}
        out = [
            f"{where}.{f.name} must be a positive integer, got {getattr(self, f.name)}"
            for f in dataclasses.fields(self)
            if f.name not in may_be_zero and getattr(self, f.name) < 1
        ]
        out.extend(
            f"{where}.{name} must be 0 (off) or positive, got {getattr(self, name)}"
            for name in sorted(may_be_zero)
            if getattr(self, name) < 0
        )
        if self.checkpoint_every_steps > self.train_steps >= 1:
            out.append(
                f"{where}.checkpoint_every_steps {self.checkpoint_every_steps} is longer than the "
                f"training ({where}.train_steps {self.train_steps}): no checkpoint would be "
                f"written before the end; lower it, or set it to 0 to checkpoint by time only"
            )
        if 1 <= self.lease_timeout_s <= self.lease_renew_s:
            out.append(
                f"{where}.lease_timeout_s {self.lease_timeout_s:g} is not longer than "
                f"{where}.lease_renew_s {self.lease_renew_s:g}: a runner's claim would lapse "
                f"before it is renewed and a second runner would take over a live trial; set "
                f"lease_timeout_s to at least 3 x lease_renew_s "
                f"({3 * self.lease_renew_s:g})"
            )
        return out


@dataclasses.dataclass(frozen=True)
class EarlyStoppingSpec:
    """Stops a study's hopeless trials while they train (``kfnas.search.stopping``).

    A trial decides at each of its periodic evaluations (``budget.evaluations`` of at least 2),
    from its own curve and the other trials' curves in the store. A stopped trial is COMPLETED
    with ``stopped_early`` and its last evaluation's metrics.

    Attributes:
        rule: A registered stopping rule (``median``, ``rank``, ``value``); empty: off.
        options: Its options, e.g. ``min_trials`` or ``threshold``.
    """

    rule: str = ""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


#: The multi-fidelity schedulers a searched study may use ("": none).
MULTI_FIDELITY_SCHEDULERS = ("asha",)


@dataclasses.dataclass(frozen=True)
class MultiFidelitySpec:
    """Asynchronous successive halving (``kfnas.search.asha``) for a searched study.

    New architectures train for ``min_steps`` (rung 0); when a slot frees, the best
    ``1 / reduction_factor`` of each rung's finished trials are promoted to the next rung's budget
    (``min_steps * reduction_factor ** k``, up to ``budget.train_steps``) and continue from their
    checkpoint. ``budget.rounds * budget.trials_per_round`` counts the new architectures.

    Attributes:
        scheduler: ``asha``; empty: off (every trial trains for ``budget.train_steps``).
        min_steps: Training steps of rung 0.
        reduction_factor: The rungs' ratio (eta): each rung keeps the best 1/eta.
    """

    scheduler: str = ""
    min_steps: int = 0
    reduction_factor: int = 3


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """One search of the experiment; unset fields take the experiment defaults in ``resolved()``.

    Attributes:
        space: A registered search space, or ``"package.module:object"`` for a user's own.
        algorithm: The study's algorithm (default: the experiment's).
        budget: The study's budget (default: the experiment's).
        seed: The study's seed (default: the experiment's).
        early_stopping: Stops hopeless trials as they train (default: off).
        multi_fidelity: Asynchronous successive halving (default: off); not with early stopping.
    """

    space: str = ""
    algorithm: AlgorithmSpec | None = None
    budget: BudgetSpec | None = None
    seed: int | None = None
    early_stopping: EarlyStoppingSpec = dataclasses.field(default_factory=EarlyStoppingSpec)
    multi_fidelity: MultiFidelitySpec = dataclasses.field(default_factory=MultiFidelitySpec)


@dataclasses.dataclass(frozen=True)
class ConstraintSpec:
    """A MnasNet-style constraint on a measured quantity, folded into the reward.

    Attributes:
        measure: The trial measurement it applies to (one of ``CONSTRAINT_MEASURES``).
        target: The target value, in the measurement's unit (ms, multiply-adds, MB, count).
        form: ``hard``: factor ``min(1, target/measured) ** exponent`` (no bonus below target);
            ``soft``: factor ``(target/measured) ** exponent`` on both sides of the target.
        exponent: The exponent; default 1 for ``hard`` and 0.07 for ``soft`` (MnasNet's w = -0.07).
    """

    measure: str = "latency_ms"
    target: float = 1.0
    form: Literal["hard", "soft"] = "hard"
    exponent: float | None = None

    @property
    def resolved_exponent(self) -> float:
        """The exponent in force: the given one or the form's default."""
        if self.exponent is not None:
            return self.exponent
        return 1.0 if self.form == "hard" else 0.07


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
    """What the search maximizes.

    Attributes:
        metric: The evaluation metric that measures quality (``AP``, ``top_1_accuracy``,
            ``mean_iou``: one the task reports); empty takes the task kind's default metric.
        reward: A registered reward function (``kfnas rewards`` lists them).
        constraints: Constraints on latency, FLOPs or memory; several multiply.
    """

    metric: str = ""
    reward: str = "mnas"
    constraints: list[ConstraintSpec] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class MeasurementSpec:
    """How finished trials are measured (``kfnas.training.protocol``), on the latency device.

    Every trial's model is measured by the measurement step, one model at a time, on the device
    the cluster profile's ``latency`` section names (``local`` without a profile): warm-up calls,
    then ``budget.latency_runs`` timed batch-1 calls, and more until ``min_seconds`` have passed
    (median and 90th percentile), the same for each of ``batch_sizes``, FLOPs, parameters and (on
    a GPU) peak memory.

    Attributes:
        device: The device latency is measured on, as a cluster profile's ``latency.device``
            names it (``local`` for runs without a profile); empty: whichever the run's profile
            measures on. A run whose profile measures elsewhere is refused before any trial.
        min_seconds: Each timed part goes on past ``budget.latency_runs`` calls until this many
            seconds have passed (0: exactly ``latency_runs`` calls). A shared machine's speed
            drifts over seconds: on a 2-core virtual machine 100-call medians of one model (2 s)
            in five fresh processes varied by a CV of 6.5 %, 300-call ones (6 s) by 4 %
            (``benchmarks/latency_repeatability.py``). A fast, quiet device (a GPU) may lower it.
        batch_sizes: More batch sizes to time besides batch 1 (``latency_ms_b<N>`` metrics).
        tflite: TensorFlow Lite measurements: ``float`` and/or ``int8`` (dynamic-range
            quantization), timed with the TFLite interpreter (``tflite_<mode>_latency_ms``).
        tflite_fallback: When a model does not convert to TensorFlow Lite: ``false`` records the
            trial FAILED with the conversion error; ``true`` records the error and lets a
            constraint on a TFLite latency use the TensorFlow latency instead.
        reuse: A trained model that computes the same as one measured before in this
            experiment (the same architecture and input, weights aside; the same protocol,
            device and threads) gets that measurement instead of a new one: a proxy trial's
            validation and final trainings then report the latency it was searched with, not a
            second sample of the device's noise. ``false`` measures every model anew.
            TensorFlow models only (``kfnas.tasks.frameworks``); the record names the reuse.
    """

    device: str = ""
    min_seconds: float = DEFAULT_MIN_SECONDS
    batch_sizes: list[int] = dataclasses.field(default_factory=list)
    tflite: list[str] = dataclasses.field(default_factory=list)
    tflite_fallback: bool = False
    reuse: bool = True

    def problems(self) -> list[str]:
        """What is wrong with this part of the spec, as messages that say what to change."""
        out = [
            f"measurement.batch_sizes.{i} must be at least 1, got {size}: list the batch sizes "
            f"to time besides batch 1, e.g. [8, 32]"
            for i, size in enumerate(self.batch_sizes)
            if size < 1
        ]
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            out.append(f"measurement.batch_sizes {self.batch_sizes} lists a size twice")
        if not 0 <= self.min_seconds <= MAX_MIN_SECONDS:
            out.append(
                f"measurement.min_seconds must be between 0 (exactly budget.latency_runs calls) "
                f"and {MAX_MIN_SECONDS:g} seconds per timed part, got {self.min_seconds}"
            )
        out.extend(
            f"measurement.tflite.{i} {mode!r} is not a TensorFlow Lite measurement: use "
            + " or ".join(TFLITE_MODES)
            for i, mode in enumerate(self.tflite)
            if mode not in TFLITE_MODES
        )
        return out


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
    """One user request: a task, its data and a chain of studies.

    Attributes:
        name: Experiment name (letters, digits, ``-`` and ``_``).
        task: What is learned.
        data: Where the data lies.
        studies: The studies by name, in the order they run (``proxy``, ``validation``, ...).
        algorithm: Default algorithm of the studies.
        budget: Default budget of the studies.
        objectives: What the search maximizes.
        measurement: How finished trials are measured (latency protocol, TFLite, device).
        store_root: Where everything is written: a local folder, a mounted volume or
            ``gs://bucket/prefix``.
        seed: Default seed of the studies.
    """

    name: str = "kfnas-experiment"
    task: TaskSpec = dataclasses.field(default_factory=TaskSpec)
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    studies: dict[str, StudySpec] = dataclasses.field(default_factory=dict)
    algorithm: AlgorithmSpec = dataclasses.field(default_factory=AlgorithmSpec)
    budget: BudgetSpec = dataclasses.field(default_factory=BudgetSpec)
    objectives: ObjectiveSpec = dataclasses.field(default_factory=ObjectiveSpec)
    measurement: MeasurementSpec = dataclasses.field(default_factory=MeasurementSpec)
    store_root: str = "kfnas-store"
    seed: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> ExperimentSpec:
        """Builds a spec from plain data, strictly (see ``load_spec``).

        A study's ``budget`` may give only the keys it changes: the others come from the
        experiment's ``budget``. A study's ``algorithm`` replaces the experiment's as a whole.
        """
        return from_data(cls, _merge_study_budgets(data))

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data."""
        return to_data(self)

    def to_json(self) -> str:
        """The spec as the JSON text of ``experiment.json``."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ExperimentSpec:
        """Reads a spec written by ``to_json``."""
        return cls.from_dict(json.loads(text))

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> ExperimentSpec:
        """A copy with dotted ``key=value`` overrides applied, e.g. ``budget.train_steps=50``.

        Raises:
            SpecError: An override is malformed or names an unknown key.
        """
        data = self.to_dict()
        for assignment in overrides:
            set_dotted(data, assignment)
        return self.from_dict(data)

    def resolved(self) -> ExperimentSpec:
        """A copy whose studies carry their algorithm, budget and seed explicitly.

        ``kfnas.validation.resolve`` also fills an empty ``objectives.metric`` with the task's
        default (it needs the task registry, which this layer does not see).
        """
        studies = {
            name: dataclasses.replace(
                study,
                algorithm=study.algorithm or self.algorithm,
                budget=study.budget or self.budget,
                seed=self.seed if study.seed is None else study.seed,
            )
            for name, study in self.studies.items()
        }
        return dataclasses.replace(self, studies=studies)

    def study(self, name: str) -> StudySpec:
        """The resolved study ``name``.

        Raises:
            SpecError: No such study; the message lists the studies of the experiment.
        """
        if name not in self.studies:
            raise SpecError(
                f"no study {name!r} in the experiment; studies: {', '.join(self.studies)}"
            )
        return self.resolved().studies[name]


def _merge_study_budgets(data: Any) -> Any:
    if not isinstance(data, dict) or not isinstance(data.get("studies"), dict):
        return data
    default = data.get("budget") if isinstance(data.get("budget"), dict) else {}
    from_data(BudgetSpec, default, "budget")  # Report its problems under its own name first.
    studies = {}
    for name, study in data["studies"].items():
        if isinstance(study, dict) and isinstance(study.get("budget"), dict):
            study = {**study, "budget": {**default, **study["budget"]}}
        studies[name] = study
    return {**data, "studies": studies}


def load_spec(
    path: str | os.PathLike[str], overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentSpec:
    """Loads an experiment spec from a YAML file and applies dotted ``key=value`` overrides.

    Returns:
        The spec, not yet validated.

    Raises:
        SpecError: The file is missing or not valid YAML, or has an unknown key or a wrong type.
    """
    file = Path(path)
    if not file.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist")
    return parse_spec(file.read_text(), overrides, source=str(path))


def parse_spec(
    text: str, overrides: list[str] | tuple[str, ...] = (), *, source: str = "the spec"
) -> ExperimentSpec:
    """Parses an experiment spec from YAML text (see ``load_spec``)."""
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise SpecError(f"{source} is not valid YAML: {e}") from e
    return ExperimentSpec.from_dict(data if data is not None else {}).with_overrides(overrides)
