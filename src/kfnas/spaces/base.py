"""The search-space interface and the functions that turn a DNA into a stored architecture.

A space is any object with the attributes of ``SearchSpace`` (a ``typing.Protocol``; no base class
to inherit), which builds networks, or of ``RefinementSpace``, which changes how an already chosen
network is trained (scaling, augmentation). It must not import TensorFlow at module import time:
proposing trials only needs ``hyper()``. A space that reads ``task.options`` knobs no task kind
reads (SpineNet's ``resample_alpha``, NAS-FPN's ``decoder_num_repeats``, ...) declares them in a
``task_options`` attribute (``{name: kfnas.spaces.options.Option}``; ``declared_options`` reads
it): validation accepts a knob when the task or one of the experiment's spaces declares it.

To extend the interface: add the member here with its contract, then implement it in every built-in
space; the conformance suite checks every registered space against this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyglove as pg

from kfnas.spaces.options import Option


@dataclass(frozen=True)
class Network:
    """The searched part of a model, as a space builds it for one architecture.

    Attributes:
        backbone: A ``tf_keras.Model`` with official.vision backbone semantics: ``output_specs``
            and a dict of multi-level features keyed by level string (``"3"`` ... ``"7"``).
        decoder: A ``tf_keras.Model`` with official.vision decoder semantics (multi-level features
            in and out), or ``None`` to let the task use its own (identity, FPN, ...). Spaces that
            search the decoder (NAS-FPN) set it; backbone spaces leave it ``None``.
    """

    backbone: Any
    decoder: Any = None


@runtime_checkable
class SearchSpace(Protocol):
    """A search space.

    Attributes:
        name: The registry name, as users write it in a spec.
        tasks: The task kinds the space serves (``"detection"``, ``"segmentation"``, ...).
    """

    name: str
    tasks: tuple[str, ...]

    def hyper(self) -> Any:
        """Returns the PyGlove hyper value (``pg.one_of``/``pg.manyof`` inside symbolic objects).

        Must return an equal value on every call: decision ids and candidate order are the contract
        between the controller and the trials.
        """
        ...

    def reference(self) -> Any | None:
        """The published architecture the space was built around, materialized from the space.

        ``None`` when the published architecture does not lie inside the space (SpineNet-49 has
        10 intermediate blocks and an output at level 2; the SpineNet spaces have neither). The
        conformance suite checks that a returned reference materializes from a DNA of the space.
        """
        ...

    def task_problems(self, task: Any) -> list[str]:
        """What stops this space from serving ``task`` (a ``kfnas.config.spec.TaskSpec``), as fixes.

        Called before any trial, with ``task.kind`` already among ``tasks``. For example, a space
        that searches the decoder names the fixed backbones it can sit on
        (``task.options.backbone``); a space that searches the backbone refuses that option.
        Must not import TensorFlow.
        """
        ...

    def build_network(self, arch: Any, task: Any, input_specs: Any) -> Network:
        """Builds the searched network for one architecture, importing TensorFlow lazily.

        Args:
            arch: A materialized architecture of this space (``pg.materialize(hyper(), dna)``, or
                ``pg.from_json_str`` of a trial's ``arch_json``).
            task: The experiment's ``kfnas.config.spec.TaskSpec`` (model knobs are in
            ``task.options``).
            input_specs: A ``tf_keras.layers.InputSpec`` of the batched model input.

        Returns:
            The ``Network``: the backbone, and the decoder when the space searches one. The task
            kind (``kfnas.tasks``) wraps it into its official.vision model.
        """
        ...


@runtime_checkable
class RefinementSpace(Protocol):
    """A space that refines a trained trial instead of defining a network: scaling, augmentation.

    A study over a refinement space starts from the best trial of the study before it (say the
    validated winner). Each of its trials trains that trial's network again, with the task
    changed by the point it proposes: ``task_overrides`` turns the point into dotted overrides
    of the experiment's ``task`` (image size, head width, ``task.options.augmentation``, ...),
    stored in the trial's ``TrialSpec.task_overrides`` and kept by every later retraining.

    Attributes:
        name: The registry name.
        tasks: The task kinds it applies to.
        default_algorithm: The algorithm its studies use unless the spec names one (``grid`` for
            small spaces).
    """

    name: str
    tasks: tuple[str, ...]
    default_algorithm: str

    def hyper(self) -> Any:
        """Returns the PyGlove hyper value; equal on every call (see ``SearchSpace.hyper``)."""
        ...

    def reference(self) -> Any | None:
        """The published default point of the space, or ``None`` (see ``SearchSpace``)."""
        ...

    def task_problems(self, task: Any) -> list[str]:
        """What stops this space from serving ``task`` (see ``SearchSpace.task_problems``)."""
        ...

    def base_problems(self, space_name: str) -> list[str]:
        """What stops this space from refining trials of the space ``space_name``, as fixes.

        Scaling, for example, only applies to SpineNet architectures. Empty when it applies.
        """
        ...

    def objective_problems(self, objectives: Any) -> list[str]:
        """What the experiment's objectives (``kfnas.config.spec.ObjectiveSpec``) lack here.

        Scaling, for example, trades accuracy for latency, so its reward needs a latency target.
        Empty when they suffice.
        """
        ...

    def task_overrides(self, point: Any, task: Any) -> list[str]:
        """The dotted ``task.*=value`` overrides that apply ``point`` to ``task``.

        Args:
            point: A materialized point of ``hyper()``.
            task: The experiment's ``kfnas.config.spec.TaskSpec``, before the overrides.

        Returns:
            Overrides such as ``["task.image_size=384", "task.options.head_num_convs=2"]``; every
            value is YAML (lists and mappings in flow style), as ``--set`` reads it.
        """
        ...


def declared_options(space: Any) -> Mapping[str, Option]:
    """The ``task.options`` knobs ``space`` declares it reads (none unless ``task_options``)."""
    return getattr(space, "task_options", {})


def is_refinement(space: Any) -> bool:
    """Whether ``space`` refines trained trials (``RefinementSpace``) rather than builds one."""
    return isinstance(space, RefinementSpace) and not isinstance(space, SearchSpace)


def dna_spec(space: SearchSpace | RefinementSpace) -> pg.DNASpec:
    """The DNA spec of ``space`` (what algorithms search over)."""
    return pg.dna_spec(space.hyper())


def materialize(space: SearchSpace | RefinementSpace, dna: pg.DNA) -> Any:
    """The architecture that ``dna`` selects in ``space``."""
    return pg.materialize(space.hyper(), dna)


def architecture_json(space: SearchSpace | RefinementSpace, dna: pg.DNA) -> str:
    """The architecture selected by ``dna``, serialized so it can be rebuilt without the search."""
    return pg.to_json_str(materialize(space, dna), json_indent=2, hide_default_values=False)
