"""The search-space interface and the functions that turn a DNA into a stored architecture.

A space is any object with the attributes of ``SearchSpace`` (a ``typing.Protocol``; no base class
to inherit), which builds networks, or of ``RefinementSpace``, which changes how an already chosen
network is trained (scaling, augmentation). It must not import TensorFlow at module import time:
proposing trials only needs ``hyper()``. A space that reads ``task.options`` knobs no task kind
reads (SpineNet's ``resample_alpha``, NAS-FPN's ``decoder_num_repeats``, ...) declares them in a
``task_options`` attribute (``{name: kfnas.spaces.options.Option}``; ``declared_options`` reads
it): validation accepts a knob when the task or one of the experiment's spaces declares it.

Stored records are data, not code. ``load_architecture(space, arch_json)`` and
``load_dna(dna_json)`` are the only ways kfnas decodes a stored ``arch_json`` or ``dna_json``:
before PyGlove sees the text, every ``_type`` in its JSON tree is checked against an allow-list,
so a record naming a foreign class (``{"_type": "some_module.Payload"}``, a pickled opaque
object, a marshalled function) is refused with ``RecordError`` naming the type and the file, and
the foreign module is never imported. The allow-list of an architecture is the classes its space
declares (``architecture_types(space)``): a space may list them in an ``architecture_types``
attribute (a collection of classes); by default they are the symbolic classes found in its own
``hyper()`` and ``reference()`` values, which covers every built-in space. A space whose
architectures hold other classes (a value built in ``build_network`` from a ``pg.one_of`` over
plain data is fine; a class chosen by a custom hyper is not found by the walk) lists them in
``architecture_types``. A DNA may hold ``pg.DNA`` objects only.

To extend the interface: add the member here with its contract, then implement it in every built-in
space; the conformance suite checks every registered space against this protocol.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pyglove as pg

from kfnas.records.base import RecordError
from kfnas.spaces.options import Option

#: The key under which PyGlove's JSON names the class of an object.
TYPE_KEY = "_type"


@dataclass(frozen=True)
class Network:
    """The searched part of a model, as a space builds it for one architecture.

    Attributes:
        backbone: A ``tf_keras.Model`` with official.vision backbone semantics: ``output_specs``
            and a dict of multi-level features keyed by level string (``"3"`` ... ``"7"``).
        decoder: A ``tf_keras.Model`` with official.vision decoder semantics (multi-level features
            in and out), or ``None`` to let the task use its own (identity, FPN, ...). Spaces that
            search the decoder (NAS-FPN) set it; backbone spaces leave it ``None``.
        featurizer: A ``tf_keras`` layer mapping the points of each pillar
            ``[batch, pillars, points, features]`` (and an optional float mask
            ``[batch, pillars, points]``, 1 for a real point) to one feature vector per pillar
            ``[batch, pillars, channels]`` (PointNet: shared per-point layers, then the max over
            the pillar's real points); set by point-cloud spaces (pointpillars), else ``None``.
    """

    backbone: Any
    decoder: Any = None
    featurizer: Any = None


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
                ``load_architecture`` of a trial's ``arch_json``).
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


def architecture_types(space: SearchSpace | RefinementSpace) -> frozenset[type]:
    """The classes an architecture (a materialized point) of ``space`` may hold.

    The space's ``architecture_types`` attribute when it has one; otherwise every symbolic class
    (``pg.Object`` subclass, hyper primitives left out) found in ``space.hyper()`` and
    ``space.reference()``. Cached per space object.
    """
    cached = _TYPES.get(id(space))
    if cached is not None and cached[0] is space:
        return cached[1]
    declared = getattr(space, "architecture_types", None)
    if declared is not None:
        found = frozenset(declared)
    else:
        found = frozenset(_symbolic_types(space.hyper())) | frozenset(
            _symbolic_types(space.reference())
        )
    _TYPES[id(space)] = (space, found)
    return found


_TYPES: dict[int, tuple[Any, frozenset[type]]] = {}


def _symbolic_types(value: Any) -> Iterator[type]:
    """The ``pg.Object`` classes inside ``value`` (hyper primitives are walked, not yielded)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, pg.Symbolic):
            if isinstance(item, pg.Object) and not isinstance(item, pg.hyper.HyperValue):
                yield type(item)
            stack.extend(item.sym_values())
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def type_names(classes: Collection[type]) -> frozenset[str]:
    """Every ``_type`` name PyGlove may write for ``classes`` (module path and registered keys)."""
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in classes}
    names |= {name for name, cls in pg.JSONConvertible.registered_types() if cls in classes}
    return frozenset(names)


def architecture_type_names(space: SearchSpace | RefinementSpace) -> frozenset[str]:
    """``type_names(architecture_types(space))``, cached per space object."""
    cached = _NAMES.get(id(space))
    if cached is None or cached[0] is not space:
        cached = _NAMES[id(space)] = (space, type_names(architecture_types(space)))
    return cached[1]


_NAMES: dict[int, tuple[Any, frozenset[str]]] = {}


@functools.cache
def _dna_type_names() -> frozenset[str]:
    """The ``_type`` names of ``pg.DNA`` (children are DNA too): all a stored DNA may hold."""
    return type_names([pg.DNA])


def foreign_types(tree: Any, allowed: Collection[str]) -> list[str]:
    """The ``_type`` names in a decoded JSON tree that ``allowed`` lacks, in order, each once.

    A ``_type`` that is not a string (PyGlove would call it) is reported as its ``repr``.
    """
    found: dict[str, None] = {}
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if TYPE_KEY in item:
                name = item[TYPE_KEY]
                if not isinstance(name, str) or name not in allowed:
                    found[name if isinstance(name, str) else repr(name)] = None
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return list(found)


def _short(names: Collection[str]) -> str:
    """The allowed names for a message: module paths only (aliases left out)."""
    dotted = sorted(n for n in names if n.count(".") > 1) or sorted(names)
    return ", ".join(dotted) or "none"


def _checked_tree(text: str, allowed: Collection[str], what: str, source: str) -> Any:
    """``text`` parsed as JSON, refused if it names a ``_type`` outside ``allowed``."""
    try:
        tree = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        raise RecordError(f"{source}: {what} is not valid JSON: {e}") from e
    if foreign := foreign_types(tree, allowed):
        raise RecordError(
            f"{source}: {what} names the type(s) {', '.join(foreign)}, which it may not hold "
            f"(allowed: {_short(allowed)}); stored records are decoded "
            f"without importing anything else, so nothing was imported. The record was not "
            f"written by kfnas for this space: delete or restore it"
        )
    return tree


def load_architecture(
    space: SearchSpace | RefinementSpace, arch_json: str, source: str = "arch_json"
) -> Any:
    """Decodes a stored architecture of ``space``, allowing only the classes the space declares.

    Args:
        space: The trial's space (``get_space(trial.space)``).
        arch_json: The serialized architecture (a trial's or a handoff's ``arch_json``).
        source: Where the text came from (a URI), for messages.

    Raises:
        RecordError: The text is not JSON, names a ``_type`` that ``architecture_types(space)``
            lacks (checked before anything is imported), or does not decode.
    """
    allowed = architecture_type_names(space)
    tree = _checked_tree(arch_json, allowed, "arch_json", source)
    try:
        return pg.from_json(tree, auto_import=False)
    except (TypeError, ValueError, KeyError) as e:
        raise RecordError(f"{source}: arch_json does not decode: {e}") from e


def load_dna(dna_json: str, source: str = "dna_json") -> pg.DNA:
    """Decodes a stored DNA, allowing only ``pg.DNA`` objects (a DNA's children are DNA).

    Args:
        dna_json: The serialized DNA (a trial's ``dna_json``, ``pg.to_json_str(dna)``).
        source: Where the text came from (a URI or ``trial N``), for messages.

    Raises:
        RecordError: The text is not JSON, names another ``_type`` (checked before anything is
            imported), does not decode, or decodes to something other than a ``pg.DNA``.
    """
    tree = _checked_tree(dna_json, _dna_type_names(), "dna_json", source)
    try:
        dna = pg.from_json(tree, auto_import=False)
    except (TypeError, ValueError, KeyError) as e:
        raise RecordError(f"{source}: dna_json is not a serialized DNA: {e}") from e
    if not isinstance(dna, pg.DNA):
        raise RecordError(f"{source}: dna_json holds a {type(dna).__name__}, not a DNA")
    return dna


#: The types a decision's value keeps in ``decision_values`` (anything else becomes its text).
DecisionValue = int | float | bool | str


def decision_values(
    space: SearchSpace | RefinementSpace, dna_json: str, *, spec: pg.DNASpec | None = None
) -> dict[str, DecisionValue]:
    """A trial's decisions as ``{decision id: chosen value}``, in the space's decision order.

    The ids are the paths PyGlove gives the space's decision points (``blocks[0].kernel_size``,
    ``intermediate_blocks[3].level``): readable and stable for a space. Values are the chosen
    literal: numbers and booleans stay numbers, strings lose their quotes, anything else becomes
    its text. This is what reports, the live view and TensorBoard's HParams dashboard show.

    Args:
        space: The space the DNA was proposed in (the trial's study's space).
        dna_json: The trial's ``dna_json``; empty (a given architecture, a retrained copy without
            one) gives ``{}``.
        spec: ``dna_spec(space)``, when the caller decodes many DNAs of one space (building the
            spec of a large space takes a good part of a second).

    Raises:
        RecordError: ``dna_json`` does not decode, or does not fit the space.
    """
    if not dna_json:
        return {}
    spec = spec if spec is not None else dna_spec(space)
    literal = _flat_literals(spec, dna_json)
    if literal is None:  # a conditional space, or an unusual record: PyGlove decodes it
        dna = load_dna(dna_json)
        try:
            dna.use_spec(spec)
            literal = dna.to_dict(key_type="id", value_type="literal")
        except (ValueError, KeyError, TypeError) as e:
            raise RecordError(f"dna_json does not fit the space: {e}") from e
    out: dict[str, DecisionValue] = {}
    for key, value in literal.items():
        if (
            isinstance(value, str)
            and len(value) >= 2
            and value[0] == value[-1]
            and value[0] in "'\""
        ):
            value = value[1:-1]
        out[str(key)] = value if isinstance(value, int | float | bool | str) else str(value)
    return out


def _flat_literals(spec: pg.DNASpec, dna_json: str) -> dict[str, Any] | None:
    """``decision_values``'s fast path: a compact DNA of a space without conditional choices.

    Such a DNA's value, flattened, is one candidate index per decision point in order, so the
    literals are read straight from the spec (PyGlove's decoding takes some 30 ms a DNA, which a
    report of a thousand trials cannot afford). ``None`` whenever that does not hold exactly.
    """
    points = _flat_points(spec)
    try:
        data = json.loads(dna_json)
    except ValueError:
        return None
    if points is None or not isinstance(data, dict) or data.get("format") != "compact":
        return None
    if data.get(TYPE_KEY) not in _dna_type_names() or set(data) - {TYPE_KEY, "format", "value"}:
        return None
    indices: list[Any] = []
    pending = [data.get("value")]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(reversed(item))
        else:
            indices.append(item)
    if len(indices) != len(points):
        return None
    out = {}
    for (name, literals), index in zip(points, indices, strict=True):
        if type(index) is not int or not 0 <= index < len(literals):
            return None
        out[name] = literals[index]
    return out


def _flat_points(spec: pg.DNASpec) -> list[tuple[str, list[Any]]] | None:
    """Each decision point's id and literal values, if none has conditional children."""
    held = _FLAT_POINTS.get(id(spec))
    if held is not None and held[0] is spec:
        return held[1]
    points: list[tuple[str, list[Any]]] | None = []
    for point in spec.decision_points:
        if not isinstance(point, pg.geno.Choices) or point.num_choices != 1:
            points = None
            break
        if any(candidate.elements for candidate in point.candidates):
            points = None
            break
        points.append((str(point.id), list(point.literal_values)))
    if len(_FLAT_POINTS) > 32:
        _FLAT_POINTS.clear()
    _FLAT_POINTS[id(spec)] = (spec, points)  # the spec is held, so its id is not reused
    return points


# id(spec) -> (spec, its flat points or None): the specs a process decodes DNAs of.
_FLAT_POINTS: dict[int, tuple[pg.DNASpec, list[tuple[str, list[Any]]] | None]] = {}
