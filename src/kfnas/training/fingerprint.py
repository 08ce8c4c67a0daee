"""What a measured model computes, as a digest: ``inference_fingerprint``.

Two models with the same fingerprint run the same inference computation: the same ops in the same
order with the same attributes (strides, paddings, constants), wired the same way, on weights of
the same shapes and dtypes, for the same input signature. Their weights' VALUES may differ (two
trainings of one architecture), and so may every name: Keras numbers its layers per process
(``conv2d``, ``conv2d_1``...), so node names, function names and name-like attributes are left
out, and so are control inputs (they order stateful ops; how many a trace gets depends on how
its variables were restored). Timing, FLOPs and parameters of such models are the same
measurement repeated, which is what lets the measurement step reuse one
(``kfnas.training.protocol.measure_model``'s ``known``).

To make the digest see more (a new attribute that carries a name, or a capture kind): change
``_IGNORED_ATTRS`` or ``_captures``; a change alters every fingerprint, so stored measurements
are simply not found again and are measured anew.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any

import tensorflow as tf

#: Node attributes that name things rather than say what is computed.
_IGNORED_ATTRS = frozenset(
    {"_class", "_user_specified_name", "shared_name", "container", "_gradient_op_type"}
)


def inference_fingerprint(concrete: Any) -> str:
    """The sha256 hex digest of what ``concrete`` (a traced inference function) computes.

    Args:
        concrete: A concrete function, e.g. ``kfnas.training.measure.trace_inference``'s.
    """
    graph_def = concrete.graph.as_graph_def()
    functions = {f.signature.name: f for f in graph_def.library.function}
    digests: dict[str, str] = {}

    def function_digest(name: str) -> str:
        if name not in functions:  # a registered op or an outside function: its name is its own
            return name
        if name not in digests:
            digests[name] = ""  # a recursive reference digests to empty, not forever
            function = functions[name]
            signature = function.signature
            positions = _positions(function.node_def)
            body = _nodes_digest(function.node_def, positions, function_digest)
            outputs = [_input_text(function.ret[a.name], positions) for a in signature.output_arg]
            digests[name] = _sha([*(f"in {a.type}" for a in signature.input_arg), body, *outputs])
        return digests[name]

    parts = [
        _nodes_digest(graph_def.node, _positions(graph_def.node), function_digest),
        *(str(spec) for spec in tf.nest.flatten(concrete.structured_input_signature)),
        *_captures(concrete),
    ]
    return _sha(parts)


def _captures(concrete: Any) -> Iterable[str]:
    """The dtypes and shapes of the weights and tensors the function captured, in its order.

    A captured weight is its variable's handle; ``concrete.variables`` is not in capture order.
    """
    variables = {id(v.handle): v for v in concrete.variables}
    for tensor in concrete.captured_inputs:
        captured = variables.get(id(tensor), tensor)
        yield f"{captured.dtype.name} {captured.shape.as_list()}"


def _positions(nodes: Iterable[Any]) -> dict[str, int]:
    return {node.name: i for i, node in enumerate(nodes)}


def _input_text(name: str, positions: dict[str, int]) -> str:
    """A node input with the producing node's name replaced by its position."""
    node, _, port = name.partition(":")
    where = positions.get(node)
    return f"{node if where is None else f'#{where}'}:{port}"


def _nodes_digest(
    nodes: Any, positions: dict[str, int], function_digest: Callable[[str], str]
) -> str:
    parts = []
    for node in nodes:
        parts.append(function_digest(node.op))  # a call of a library function by its op name
        # Control inputs only order stateful ops (how many depends on the variables' restore).
        parts.extend(_input_text(i, positions) for i in node.input if not i.startswith("^"))
        for key in sorted(node.attr):
            if key in _IGNORED_ATTRS:
                continue
            value = tf.compat.v1.AttrValue()
            value.CopyFrom(node.attr[key])
            if value.HasField("func"):
                value.func.name = function_digest(value.func.name)
            for function in value.list.func:
                function.name = function_digest(function.name)
            parts.append(f"{key}={value.SerializeToString(deterministic=True).hex()}")
        parts.append(";")
    return _sha(parts)


def _sha(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()
