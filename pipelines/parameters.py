"""A compiled pipeline's run parameters, and run arguments checked against them.

``pipeline_parameters(package_yaml)`` reads a compiled pipeline's parameters (name, KFP type,
default, description) from its ``root.inputDefinitions``: the one source of truth for what a run
may set, so nothing here lists the search pipeline's parameters by hand. ``typed_arguments`` turns
what a person gives (a ``--params`` YAML/JSON file and ``--param NAME=VALUE`` strings) into run
arguments of the right types, before anything is sent to a cluster: an unknown name is refused
with the list of parameters, a value of the wrong type with the expected type and an example.

``kfnas submit`` uses it (``pipelines/submit.py``); ``kfnas schedule`` will use it the same way.

To support another KFP parameter type: add its ``parameterType`` to ``_TYPES`` with a
``_ParameterType`` (how it reads a command-line string, which file values it accepts, an example).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kfnas.config.strict import SpecError, load_yaml


class ParameterError(SpecError):
    """A run argument that the pipeline cannot take; the message names it and says what to do."""


@dataclasses.dataclass(frozen=True)
class PipelineParameter:
    """One run parameter of a compiled pipeline.

    Attributes:
        name: The parameter's name.
        type: Its KFP ``parameterType``: ``STRING``, ``NUMBER_INTEGER``, ``NUMBER_DOUBLE``,
            ``BOOLEAN``, ``LIST`` or ``STRUCT``.
        default: Its default as a value of that type; ``None`` for a required parameter.
        description: Its description from the pipeline's docstring.
    """

    name: str
    type: str
    default: Any = None
    description: str = ""

    @property
    def required(self) -> bool:
        """Whether a run must give it (it has no default)."""
        return self.default is None


@dataclasses.dataclass(frozen=True)
class _ParameterType:
    """How a KFP parameter type reads a string, which typed values it accepts, an example."""

    noun: str
    parse: Callable[[str], Any]
    accepts: Callable[[Any], bool]
    example: str
    normalize: Callable[[Any], Any] = lambda value: value


_INTEGER = re.compile(r"^[-+]?[0-9]+$")


def _parse_integer(text: str) -> int:
    if not _INTEGER.match(text.strip()):
        raise ValueError(text)
    return int(text)


def _parse_double(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parse_boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError(text)
    return lowered == "true"


def _parse_json(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = json.loads(text)
        if not isinstance(value, kind):
            raise ValueError(text)
        return value

    return parse


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_TYPES: dict[str, _ParameterType] = {
    "STRING": _ParameterType("a string", str, lambda v: isinstance(v, str), "text"),
    "NUMBER_INTEGER": _ParameterType(
        "an integer",
        _parse_integer,
        lambda v: _is_number(v) and float(v).is_integer(),
        "3",
        normalize=int,
    ),
    "NUMBER_DOUBLE": _ParameterType("a number", _parse_double, _is_number, "0.5", float),
    "BOOLEAN": _ParameterType(
        "true or false", _parse_boolean, lambda v: v is True or v is False, "true"
    ),
    "LIST": _ParameterType(
        "a JSON list", _parse_json(list), lambda v: isinstance(v, list), '["a", "b"]'
    ),
    "STRUCT": _ParameterType(
        "a JSON object", _parse_json(dict), lambda v: isinstance(v, dict), '{"key": "value"}'
    ),
}


def pipeline_parameters(package_yaml: str) -> dict[str, PipelineParameter]:
    """The run parameters of a compiled pipeline, by name.

    Args:
        package_yaml: The compiled pipeline YAML (``kfp.compiler`` output: the pipeline spec,
            then optionally the platform spec).

    Returns:
        Each parameter of ``root.inputDefinitions.parameters``, with its default converted to
        its type (KFP writes integer defaults as ``0.0``).

    Raises:
        ParameterError: The text is not a compiled KFP pipeline, or a parameter has a type this
            module does not know.
    """
    try:
        spec = next(iter(yaml.safe_load_all(package_yaml)), None)
    except yaml.YAMLError as e:
        raise ParameterError(f"the compiled pipeline is not YAML: {e}") from e
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise ParameterError("the compiled pipeline has no pipelineInfo and root: not a KFP spec")
    declared = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    out = {}
    for name, definition in declared.items():
        kind = definition.get("parameterType", "")
        if kind not in _TYPES:
            raise ParameterError(
                f"parameter {name!r} has type {kind!r}, which kfnas cannot check; known types: "
                f"{', '.join(_TYPES)}"
            )
        default = definition.get("defaultValue")
        if default is not None:
            default = _TYPES[kind].normalize(default)
        out[name] = PipelineParameter(name, kind, default, definition.get("description", ""))
    return out


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Reads a ``--params`` file: a YAML or JSON mapping of parameter name -> value.

    Raises:
        ParameterError: The file is missing, does not parse, or is not a mapping with string keys.
    """
    file = Path(path)
    if not file.is_file():
        raise ParameterError(f"parameters file {str(path)!r} does not exist")
    text = file.read_text()
    try:
        data = json.loads(text) if file.suffix == ".json" else load_yaml(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ParameterError(f"parameters file {str(path)!r} does not parse: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise ParameterError(
            f"parameters file {str(path)!r} must be a mapping of parameter name to value, e.g. "
            f"'train_data: gs://bucket/train-*.tfrecord'"
        )
    return data


def parse_param_args(items: Sequence[str]) -> dict[str, str]:
    """Splits ``--param NAME=VALUE`` strings; a later one of the same name wins.

    Raises:
        ParameterError: An item without ``=`` or with an empty name.
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"--param {item!r} must be NAME=VALUE, e.g. --param top_k=2")
        out[name.strip()] = value
    return out


def unknown_name_message(name: str, parameters: Mapping[str, PipelineParameter]) -> str:
    """The message refusing parameter ``name``: close match and every parameter of the pipeline."""
    close = difflib.get_close_matches(name, parameters, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"the pipeline has no parameter {name!r}{hint}; its parameters: "
        f"{', '.join(sorted(parameters))}"
    )


def typed_arguments(
    parameters: Mapping[str, PipelineParameter],
    values: Mapping[str, Any] | None = None,
    strings: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Checks run arguments against the pipeline's parameters and gives them their types.

    Args:
        parameters: From ``pipeline_parameters``.
        values: Typed values (a ``--params`` file): each must already have the parameter's type
            (an integer is accepted for a number, ``3.0`` for an integer).
        strings: Command-line strings (``--param NAME=VALUE``), read by type: text as it is,
            integers and numbers as written, ``true``/``false``, JSON for lists and objects.
            They win over ``values``.

    Returns:
        The arguments, by name, as values of their parameter's type.

    Raises:
        ParameterError: Every unknown name or badly typed value, in one message.
    """
    out, problems = {}, []
    given = [(name, value, False) for name, value in (values or {}).items()]
    given += [(name, value, True) for name, value in (strings or {}).items()]
    for name, value, from_string in given:
        if name not in parameters:
            problems.append(unknown_name_message(name, parameters))
            continue
        kind = _TYPES[parameters[name].type]
        if from_string:
            try:
                out[name] = kind.normalize(kind.parse(value))
            except ValueError:
                problems.append(
                    f"--param {name}={value}: {name} is {kind.noun} "
                    f"({parameters[name].type}), e.g. --param {name}={kind.example}"
                )
        elif kind.accepts(value):
            out[name] = kind.normalize(value)
        else:
            problems.append(
                f"{name}: {value!r} is not {kind.noun} ({parameters[name].type}); write e.g. "
                f"{name}: {kind.example}"
                + (" (quote text in YAML)" if kind.noun == "a string" else "")
            )
    missing = [p.name for p in parameters.values() if p.required and p.name not in out]
    problems += [f"parameter {name!r} has no default: give it with --param" for name in missing]
    if problems:
        raise ParameterError("the run parameters are not valid:\n  - " + "\n  - ".join(problems))
    return out
