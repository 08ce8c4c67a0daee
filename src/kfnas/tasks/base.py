"""The interface of a task kind (see ``kfnas.tasks``).

A ``TaskKind`` must not import TensorFlow at module import time; its methods import it lazily, so
``init_experiment`` can look a task up cheaply and only pays for TensorFlow when it checks data.

To extend the interface: add the member here with its contract and implement it in every task kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from kfnas.config.spec import BudgetSpec, DataSpec, TaskSpec
    from kfnas.spaces.base import Network


@runtime_checkable
class TaskKind(Protocol):
    """A kind of task.

    Attributes:
        name: The registry name (``TaskSpec.kind``).
        metric_names: Every metric its evaluation reports (e.g. AP, AP50, ... for detection).
        default_metric: The metric a search maximizes unless the spec says otherwise.
    """

    name: str
    metric_names: tuple[str, ...]
    default_metric: str

    def build_task(self, task: TaskSpec, data: DataSpec, budget: BudgetSpec) -> Any:
        """A configured ``official.core.base_task.Task`` for one trial.

        Its ``task_config`` holds the model knobs of ``task.options`` (input size, levels, head
        convs and filters, ...), the train and validation data of ``data`` and the batch size of
        ``budget``.
        """
        ...

    def build_model(self, official_task: Any, network: Network) -> Any:
        """The full ``tf_keras.Model`` of ``official_task`` around a searched ``network``.

        ``network.backbone`` is always set; ``network.decoder`` is ``None`` unless the space
        searches the decoder, and then the task uses it in place of its own.
        """
        ...

    def optimizer_config(self, task: TaskSpec, budget: BudgetSpec) -> Any:
        """The optimizer, learning-rate schedule and warm-up for ``budget.train_steps`` steps.

        Returns an ``official.modeling.optimization.OptimizationConfig``.
        """
        ...

    def input_shape(self, task: TaskSpec) -> tuple[int, ...]:
        """The shape of one model input, without the batch dimension (e.g. ``(64, 64, 3)``)."""
        ...

    def option_problems(self, task: TaskSpec) -> list[str]:
        """What is wrong with ``task.options``, without importing TensorFlow.

        Unknown keys (listing the valid ones), wrong types or ranges, an input size the model
        cannot take.
        """
        ...

    def data_problems(self, task: TaskSpec, data: DataSpec) -> list[str]:
        """What is wrong with the user's data, as messages naming the problem and the fix.

        Checks that each pattern matches files, that records parse in the task's TFRecord format
        and that labels fit ``task.num_classes``. Reads a bounded number of records.
        """
        ...
