"""The interface of a task kind, and ``OfficialTask``, the base the built-in kinds share.

A ``TaskKind`` must not import TensorFlow at module import time; its methods import it lazily, so
``init_experiment`` can look a task up cheaply and only pays for TensorFlow when it checks data.
Besides its methods it declares what other packages look up by kind: its ``serving_export``
(``kfnas.export``), its ``augmentation_space`` (the augmentation study's default) and the
``known_limits`` its model card states.

``OfficialTask`` owns what the tf-models-official kinds share: the ``task.options`` table and its
checks (own knobs plus those the experiment's spaces declare), the learning-rate schedules,
optimizers and linear warm-up, the searched ``base_task.Task`` subclass (``SearchedTask``) and
the metrics read off the evaluation logs. A kind sets its class attributes and writes
``task_config``, ``build_model``, ``data_problems`` and, if it has more rules, ``extra_problems``.

To extend the interface: add the member here with its contract and implement it in every task kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from kfnas.augment.tables import augmentation_problems
from kfnas.config.spec import SpecError
from kfnas.registry import load_object
from kfnas.spaces import declared_options
from kfnas.spaces.options import (
    LEVEL_RANGE,
    Option,
    flag,
    fraction,
    integer,
    number,
    resolve,
    table_problems,
)
from kfnas.tasks.tracing import without_autograph

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network

#: tf-models' input type (``get_inference_signatures`` key) -> signature name in the SavedModel.
DEFAULT_SIGNATURES: Mapping[str, str] = {
    "image_bytes": "serving_default",
    "image_tensor": "image_tensor",
}


@dataclasses.dataclass(frozen=True)
class ServingExport:
    """How one task kind is exported: an ``official.vision.serving`` module and its settings.

    Attributes:
        module: ``"package.module:name"`` of an ``official.vision.serving.export_base
            .ExportModule`` subclass, or of a factory returning one, called with the keyword
            arguments ``params, batch_size, input_image_size, input_type, num_channels, model``.
        signatures: tf-models input type -> the signature name it gets in the SavedModel.
        config_overrides: Overrides of the tf-models task config applied before the model is
            built (``hyperparams.Config.override``, strict), e.g. its ``export_config``.
    """

    module: str
    signatures: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_SIGNATURES)
    )
    config_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """How the model card words what a task kind's exported model takes.

    Attributes:
        describe_template: ``str.format`` template of the inputs, given the export's input size
            (without the batch) as positional fields, e.g. ``"{0}x{1}x{2} images"``.
        serving_note: One sentence on what the model does to its inputs itself.
        limit_template: The "Known limits" sentence on served inputs (same fields).
    """

    describe_template: str
    serving_note: str
    limit_template: str

    def describe(self, input_size: Sequence[int]) -> str:
        """E.g. ``64x64x3 images``."""
        return self.describe_template.format(*input_size)

    def limit(self, input_size: Sequence[int]) -> str:
        """The model card's limit on served inputs."""
        return self.limit_template.format(*input_size)


#: The inputs of the image kinds (detection, segmentation, classification).
IMAGE_INPUTS = ModelInputs(
    describe_template="{0}x{1}x{2} images",
    serving_note="Images are preprocessed inside the model as evaluation did.",
    limit_template=(
        "Served images are resized (detection and segmentation: keeping their aspect ratio, "
        "padded) to {0}x{1}; images much larger than that, or framed unlike the training data, "
        "were not evaluated."
    ),
)


@runtime_checkable
class TaskKind(Protocol):
    """A kind of task.

    Attributes:
        name: The registry name (``TaskSpec.kind``).
        metric_names: Every metric its evaluation reports (e.g. AP, AP50, ... for detection).
        default_metric: The metric a search maximizes unless the spec says otherwise.
        serving_export: How ``kfnas.export`` serves it, or ``None`` (it cannot be exported).
        augmentation_space: The augmentation study's space unless the settings name one, or
            ``None`` (no default: the settings must name one).
        known_limits: Sentences its model card adds to the "Known limits" section.

    Optionally, ``framework`` names the framework its trials train in (``kfnas.tasks.frameworks``;
    default ``tensorflow``). The methods ``build_task``, ``build_model`` and ``optimizer_config``
    are the TensorFlow framework's; a kind of another framework gives that framework's methods
    instead (PyTorch: ``kfnas.torch.tasks.TorchTask``).

    Optionally, ``model_inputs`` (a ``ModelInputs``) says how the model card words the model's
    inputs (default: ``IMAGE_INPUTS``).

    Optionally, ``measured_model(model)`` returns what the measurement step times and counts
    (``kfnas.training.measurement``): the model without post-processing whose cost depends on the
    trained weights rather than the architecture (detection: non-maximum suppression); without
    it, the whole model.
    """

    name: str
    metric_names: tuple[str, ...]
    default_metric: str
    serving_export: ServingExport | None
    augmentation_space: str | None
    known_limits: tuple[str, ...]

    def build_task(
        self,
        task: TaskSpec,
        data: DataSpec,
        budget: BudgetSpec,
        space_options: Mapping[str, Option] | None = None,
    ) -> Any:
        """A configured ``official.core.base_task.Task`` for one trial (knobs from ``task``).

        ``space_options``: the knobs the trial's space declares (``None``: every registered
        space's), so a space given as ``module:object`` has its own knobs accepted.
        """
        ...

    def build_model(self, official_task: Any, network: Network) -> Any:
        """The full ``tf_keras.Model`` of ``official_task`` around a searched ``network``.

        ``network.backbone`` is always set; ``network.decoder`` is ``None`` unless the space
        searches the decoder, and then the task uses it in place of its own.
        """
        ...

    def optimizer_config(
        self,
        task: TaskSpec,
        budget: BudgetSpec,
        space_options: Mapping[str, Option] | None = None,
    ) -> Any:
        """The ``official.modeling.optimization.OptimizationConfig`` for ``budget``'s steps."""
        ...

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """The shape of one model input, without the batch dimension (e.g. ``(64, 64, 3)``)."""
        ...

    def option_problems(
        self, task: TaskSpec, space_options: Mapping[str, Option] | None = None
    ) -> list[str]:
        """What is wrong with ``task.options``, without importing TensorFlow.

        Unknown keys (listing the valid ones: the task's and ``space_options``, the knobs the
        experiment's spaces declare; ``None``: every registered space's), wrong types or ranges,
        an input size the model cannot take.
        """
        ...

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """What is wrong with the user's data, as messages naming the problem and the fix."""
        ...


#: Knobs every kind reads alike: batch normalization and weight decay of the model, the
#: validation batch, the base learning rate and the warm-up steps.
COMMON_OPTIONS: dict[str, Option] = {
    "norm_momentum": fraction(0.99),
    "norm_epsilon": number(0, 0.001, strict=True),
    "l2_weight_decay": number(0, 4e-5),
    "validation_batch_size": integer(1),
    "learning_rate": number(0, strict=True),
    "warmup_steps": integer(0),
}
#: Training augmentation of the multi-level kinds (detection, segmentation).
AUGMENTATION_OPTIONS: dict[str, Option] = {
    "aug_rand_hflip": flag(True),
    "aug_scale_min": number(0, 1.0, strict=True),
    "aug_scale_max": number(0, 1.0, strict=True),
    # Checked in option_problems by augmentation_problems, whose messages say what to write.
    "augmentation": Option(None, lambda v: True, "a RandAugment or AutoAugment policy"),
}


def cosine(rate: float, steps: int) -> dict[str, Any]:
    """Cosine decay from ``rate`` to 0 over ``steps``."""
    return {"type": "cosine", "cosine": {"initial_learning_rate": rate, "decay_steps": steps}}


def step_decay(*fractions: float) -> Callable[[float, int], dict[str, Any]]:
    """A schedule multiplying the rate by 0.1 after each of ``fractions`` of the steps."""

    def schedule(rate: float, steps: int) -> dict[str, Any]:
        boundaries: list[int] = []
        for share in fractions:
            step = int(share * steps)
            if step >= 1 and (not boundaries or step > boundaries[-1]):
                boundaries.append(step)
        values = [rate * 0.1**i for i in range(len(boundaries) + 1)]
        return {"type": "stepwise", "stepwise": {"boundaries": boundaries, "values": values}}

    return schedule


#: Optimizers: name -> ``momentum -> optimizer config`` (official.modeling.optimization).
OPTIMIZERS: dict[str, Callable[[float], dict[str, Any]]] = {
    "sgd": lambda momentum: {"type": "sgd", "sgd": {"momentum": momentum}},
    "rmsprop": lambda momentum: {
        "type": "rmsprop",
        "rmsprop": {"rho": 0.9, "momentum": momentum, "epsilon": 0.001},
    },
    # ``momentum`` is Adam's beta_1 (the decay of its first moment).
    "adam": lambda momentum: {"type": "adam", "adam": {"beta_1": momentum}},
}


def level_problems(task: TaskSpec, min_level: int, max_level: int) -> list[str]:
    """Levels outside ``LEVEL_RANGE`` or inverted, or an image size ``2**max_level`` misses."""
    low, high = LEVEL_RANGE
    if not low <= min_level <= max_level <= high:
        return [
            f"task.options min_level {min_level} and max_level {max_level} must satisfy "
            f"{low} <= min_level <= max_level <= {high}"
        ]
    if task.image_size % 2**max_level:
        stride = 2**max_level
        bigger = -(-task.image_size // stride) * stride
        return [
            f"task.image_size {task.image_size} is not divisible by 2**max_level = {stride} "
            f"(task.options.max_level = {max_level}): use a multiple of {stride} such as "
            f"{bigger}, or lower max_level"
        ]
    return []


def scale_jitter_problems(opts: Mapping[str, Any]) -> list[str]:
    """An inverted ``aug_scale_min``/``aug_scale_max`` range."""
    if opts["aug_scale_min"] > opts["aug_scale_max"]:
        return ["task.options.aug_scale_min must not exceed task.options.aug_scale_max"]
    return []


class SearchedTask:
    """Mixin for a tf-models ``base_task.Task`` subclass whose network a search space builds.

    Set ``network_factory`` (``input_specs -> Network``, e.g. a space's ``build_network`` with
    its architecture and task bound) before tools that call ``build_model()`` themselves, or build
    the model with the kind's ``build_model``. ``augmentation`` (``task.options.augmentation``)
    makes the training inputs go through ``augmented_inputs`` (``"module:function"``).
    """

    kind: ClassVar[Any]
    augmented_inputs: ClassVar[str | None] = None
    network_factory: Callable[[Any], Any] | None = None
    augmentation: Any = None

    def build_inputs(self, params: Any, input_context: Any = None) -> Any:
        """The tf-models inputs, augmented in training when ``augmentation`` is set.

        Traced without AutoGraph where the parsers allow (``kfnas.tasks.tracing``).
        """

        def build() -> Any:
            if params.is_training and self.augmentation is not None and self.augmented_inputs:
                inputs = load_object(self.augmented_inputs)
                return inputs(self, params, input_context, self.augmentation)  # type: ignore[operator]
            return super(SearchedTask, self).build_inputs(params, input_context)  # type: ignore[misc]

        return without_autograph(build, "the input pipeline")

    def build_model(self) -> Any:
        """The kind's model around ``network_factory``'s network."""
        import tf_keras

        if self.network_factory is None:
            raise RuntimeError(
                f"this {self.kind.name} task has no network: set task.network_factory, or build "
                f"the model with {type(self.kind).__module__}.{self.kind.name.upper()}"
                f".build_model(task, network)"
            )
        shape = [None, *self.task_config.model.input_size]  # type: ignore[attr-defined]
        return self.kind.build_model(
            self, self.network_factory(tf_keras.layers.InputSpec(shape=shape))
        )


class OptionTable:
    """The ``task.options`` table every kind checks alike, whatever its framework.

    A kind sets ``name`` and ``options`` (its own knobs); the knobs its spaces declare are added
    (``kfnas.spaces.declared_options``), unknown keys are refused naming the valid ones, and
    ``extra_problems`` holds the kind's rules across knobs.
    """

    name: ClassVar[str]
    options: ClassVar[Mapping[str, Option]]

    def option_problems(
        self, task: TaskSpec, space_options: Mapping[str, Option] | None = None
    ) -> list[str]:
        """Unknown keys (naming the valid ones), bad values, then ``extra_problems``.

        Args:
            task: The task spec.
            space_options: The knobs the experiment's spaces declare; ``None``: every registered
                space's (``kfnas.spaces.declared_options``).
        """
        out = table_problems(self.name, task.options, self.option_table(space_options))
        if "augmentation" in self.options and "augmentation" in task.options:
            out.extend(augmentation_problems(task.options["augmentation"], self.name))
        return out or self.extra_problems(task, self.resolved_options(task))

    def option_table(self, space_options: Mapping[str, Option] | None = None) -> dict[str, Option]:
        """Every knob ``task.options`` may set: the task's own (whose check wins) and the spaces'.

        Args:
            space_options: The knobs the experiment's spaces declare; ``None``: every registered
                space's (``kfnas.spaces.declared_options``).
        """
        if space_options is None:
            space_options = declared_options(self.name)
        return {**space_options, **self.options}

    def extra_problems(self, task: TaskSpec, opts: dict[str, Any]) -> list[str]:
        """Rules across knobs, checked once every value is valid (``opts``: resolved)."""
        return []

    def resolved_options(self, task: TaskSpec) -> dict[str, Any]:
        """``task.options`` over the defaults of ``options`` (space knobs left out unless set)."""
        return resolve(task.options, self.options)

    def check(
        self, task: TaskSpec, space_options: Mapping[str, Option] | None = None
    ) -> dict[str, Any]:
        """The resolved options; raises ``SpecError`` listing ``option_problems``."""
        problems = self.option_problems(task, space_options)
        if problems:
            raise SpecError(
                f"the {self.name} task options are not valid:\n  - " + "\n  - ".join(problems)
            )
        return self.resolved_options(task)


class OfficialTask(OptionTable):
    """What the tf-models-official task kinds share (see the module docstring).

    Class attributes a kind sets: ``name``, ``default_metric``, ``metric_names`` (the metrics its
    evaluation logs report, under those names), ``options`` (its own knobs), ``serving_export``,
    ``augmentation_space``, ``known_limits``; the recipe: ``base_rate`` (``(rate, batch)``: the
    default rate is ``rate * batch_size / batch``), ``schedules`` and ``default_schedule``,
    ``warmup_share`` and ``warmup_cap`` (default warm-up ``min(cap, steps // share)``) and
    ``warmup_start_share`` (warm-up start rate / rate).
    """

    name: ClassVar[str]
    default_metric: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    options: ClassVar[Mapping[str, Option]]
    framework: ClassVar[str] = "tensorflow"
    serving_export: ClassVar[ServingExport | None] = None
    augmentation_space: ClassVar[str | None] = None
    known_limits: ClassVar[tuple[str, ...]] = ()
    base_rate: ClassVar[tuple[float, int]]
    schedules: ClassVar[Mapping[str, Callable[[float, int], dict[str, Any]]]] = {"cosine": cosine}
    default_schedule: ClassVar[str] = "cosine"
    warmup_share: ClassVar[int] = 10
    warmup_cap: ClassVar[int | None] = None
    warmup_start_share: ClassVar[float] = 0.0

    def build_task(
        self,
        task: TaskSpec,
        data: DataSpec,
        budget: BudgetSpec,
        space_options: Mapping[str, Option] | None = None,
    ) -> Any:
        """The ``searched_task_class`` around ``task_config`` (options checked first).

        Raises:
            SpecError: ``option_problems`` found problems.
        """
        opts = self.check(
            task, space_options
        )  # Before importing TensorFlow: bad options fail fast.
        official_task = self.searched_task_class()(self.task_config(task, data, budget, opts))
        official_task.augmentation = opts.get("augmentation")
        return official_task

    def task_config(
        self, task: TaskSpec, data: DataSpec, budget: BudgetSpec, opts: dict[str, Any]
    ) -> Any:
        """The tf-models task config (``opts``: the resolved options)."""
        raise NotImplementedError

    def searched_task_class(self) -> type:
        """The tf-models task class, with ``SearchedTask`` mixed in."""
        raise NotImplementedError

    def optimizer_config(
        self,
        task: TaskSpec,
        budget: BudgetSpec,
        space_options: Mapping[str, Option] | None = None,
    ) -> Any:
        """The options' optimizer and schedule, with a linear warm-up, over the budget's steps."""
        opts = self.check(task, space_options)
        from official.modeling import optimization

        steps = max(1, budget.train_steps)
        base, per = self.base_rate
        rate = float(opts.get("learning_rate", base * budget.batch_size / per))
        config: dict[str, Any] = {
            "optimizer": OPTIMIZERS[opts.get("optimizer", "sgd")](float(opts.get("momentum", 0.9))),
            "learning_rate": self.schedules[opts.get("lr_schedule", self.default_schedule)](
                rate, steps
            ),
        }
        default_warmup = steps // self.warmup_share
        if self.warmup_cap is not None:
            default_warmup = min(self.warmup_cap, default_warmup)
        warmup = int(opts.get("warmup_steps", default_warmup))
        if warmup > 0:
            start = float(opts.get("warmup_learning_rate", rate * self.warmup_start_share))
            config["warmup"] = {
                "type": "linear",
                "linear": {"warmup_steps": warmup, "warmup_learning_rate": start},
            }
        return optimization.OptimizationConfig(config)

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """``(image_size, image_size, 3)``."""
        return (task.image_size, task.image_size, 3)

    def measured_model(self, model: Any) -> Any:
        """What the measurement step times: the whole model (see ``TaskKind``)."""
        return model


__all__ = [
    "AUGMENTATION_OPTIONS",
    "COMMON_OPTIONS",
    "DEFAULT_SIGNATURES",
    "IMAGE_INPUTS",
    "OPTIMIZERS",
    "ModelInputs",
    "OfficialTask",
    "OptionTable",
    "SearchedTask",
    "ServingExport",
    "TaskKind",
    "cosine",
    "level_problems",
    "scale_jitter_problems",
    "step_decay",
]
