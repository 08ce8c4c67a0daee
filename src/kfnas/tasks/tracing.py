"""Building graphs without AutoGraph, and with it only where the code needs it.

AutoGraph rewrites every Python function TensorFlow traces (``tf.data`` map functions, each Keras
layer's ``call`` while a functional model is built) so that Python ``if``/``for``/``while`` on
tensors become graph control flow. tf-models' input parsers and layers branch on their configs
only, so the rewriting buys nothing there, and it costs: on a demo-sized detection proxy trial,
converting the input parsers took ~4 s of a ~5.5 s setup, and the model's layers ~0.6 s of its
build (``benchmarks/trial_fixed_cost.py``).

``without_autograph(build)`` runs ``build`` with AutoGraph off. Code whose Python branches on
tensors fails that trace with a ``TypeError`` (TensorFlow's ``OperatorNotAllowedInGraphError``:
a tensor used as a Python bool or iterated); ``build`` then runs again with AutoGraph on, so such
code works as before, only without the saving. ``build`` must be safe to run twice (it builds
datasets or models: a failed trace leaves nothing behind that the second run reads).

The trainer traces its training step the same way (``kfnas.training.trainer``).

``unoptimized_on_cpu()`` runs a block with Grappler (TensorFlow's graph optimizer) off when the
process has no GPU or TPU. Grappler optimizes each function graph the first time it runs: on a
demo-sized detection proxy trial that took ~1.7 s of the first training step's ~3 s, and the
steps after it ran no faster on 2 cores (with oneDNN's kernels 72-75 ms a step with it, 68-72 ms
without; with TensorFlow's own, which local trials use, 32-53 ms either way: noise;
``benchmarks/trial_fixed_cost.py`` runs both side by side). On a GPU its layout optimizer and
fused kernels pay for themselves, so there it stays on. It does not touch the measurement step's
inference graph (``kfnas.training.protocol``): latency is timed as a deployed model runs.

``plain_swish_on_cpu()`` builds a CPU trial's model with Keras's ``swish`` (and ``silu``)
computed as ``x * sigmoid(x)``, differentiated by TensorFlow's own gradients (official's
``simple_swish``), instead of ``tf.nn.silu``, whose custom gradient saves accelerator memory by
recomputing the sigmoid in the backward pass and carries the gradient of its ``beta``. Each
custom-gradient call adds an ``IdentityN`` and ~20 ops to the graph and costs Python time to
trace: on the demo's SpineNet-MBConv proxy (95 swish activations) the training step had 9,719
ops with ``tf.nn.silu`` and 7,703 with the plain form, its trace took 2.4-2.8 s instead of
3.2-3.3 s and its first run 0.6-0.8 s instead of 0.9-1.0 s. Same function, same gradient up to
rounding. Trials with a GPU or TPU keep ``tf.nn.silu`` (memory counts there); the measurement
step and the export build the model as Keras does.

``collect_less()`` is what a trial or measurement process calls first: building and tracing a
model makes hundreds of thousands of Python objects, and with Python's default thresholds
(700, 10, 10) the cyclic garbage collector walked them all again and again. In a demo proxy
trial with its measurement (``gc.callbacks``, 2 cores) it ran 959 young, 87 middle and 4 full
collections, 1.6 s in all, the full ones 1.4 s; with ``GC_THRESHOLDS`` 6 young ones, 0.2 s, and
the same peak memory (1.5 GB). It also freezes what the process holds already (the imports,
inherited from the fork server), so a full collection, when one comes, skips them. Reference
counting still frees every object outside a cycle at once; the measurement worker collects
explicitly between models (``kfnas.training.measurement.release_models``).

``skip_op_tracebacks()`` is the other thing they call first (``lighten_process()`` calls both):
TensorFlow records the Python stack of every graph op it creates (for the "defined at" lines of its
runtime errors) and hands those stacks to the runtime with each function. A demo proxy trial creates
over 10,000 graph ops (its model, its training step's 7,700-9,700, input parsers, checkpoint);
recording their stacks took ~0.4 s of the step's 3.2 s trace and ~0.3 s of its first run's 1.1 s
(measured with the 9,700). Without them a runtime error still names the failing op by its full name
(``retina_net_model/.../conv2d/Conv2D``) and the Python exception's traceback stays whole;
``KFNAS_OP_TRACEBACKS=1`` in the process's environment keeps the stacks, for a trial whose error
needs them (the trial's error message says so).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Off switch: ``False`` traces everything with AutoGraph (what
#: ``benchmarks/trial_fixed_cost.py`` runs as "before").
SKIP_AUTOGRAPH = True

#: Off switch: ``False`` lets Grappler optimize graphs on CPU too (``unoptimized_on_cpu``; what
#: ``benchmarks/trial_fixed_cost.py`` runs as "before").
SKIP_GRAPPLER_ON_CPU = True

#: Off switch: ``False`` keeps ``tf.nn.silu`` for swish in CPU trials too (``plain_swish_on_cpu``;
#: what ``benchmarks/trial_fixed_cost.py`` runs as "before").
PLAIN_SWISH_ON_CPU = True

#: The cyclic garbage collector's thresholds in trial and measurement processes
#: (``collect_less``): a young collection every 100,000 net allocations of container objects
#: (Python's default: 700), a middle one every 20 young ones, a full one every 10 middle ones.
GC_THRESHOLDS = (100_000, 20, 10)

#: The environment variable that keeps TensorFlow's op tracebacks (``skip_op_tracebacks``).
OP_TRACEBACKS_ENV = "KFNAS_OP_TRACEBACKS"


def without_autograph(build: Callable[[], T], what: str) -> T:
    """``build()`` traced without AutoGraph, or with it when the code needs it (module doc).

    Args:
        build: Builds datasets or a model; safe to run twice.
        what: What it builds, for the log line when AutoGraph is needed.

    Returns:
        What ``build`` returns.
    """
    if not SKIP_AUTOGRAPH:
        return build()
    from tensorflow.python.autograph.core import ag_ctx

    try:
        with ag_ctx.ControlStatusCtx(status=ag_ctx.Status.DISABLED):
            return build()
    except TypeError as e:  # e.g. OperatorNotAllowedInGraphError: a tensor as a Python bool
        log.info("%s needs AutoGraph (%s); building it with AutoGraph", what, e)
        return build()


@contextlib.contextmanager
def unoptimized_on_cpu() -> Iterator[bool]:
    """Grappler off while the block runs, when this process has no GPU or TPU (module doc).

    The setting is TensorFlow's process-wide one, read each time a function runs: functions that
    first run inside the block are instantiated without Grappler. It is put back as it was when
    the block ends.

    Yields:
        Whether Grappler is off in the block.
    """
    import tensorflow as tf

    if not SKIP_GRAPPLER_ON_CPU or has_accelerator():
        yield False
        return
    before = bool(tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer"))
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    try:
        yield True
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": before})


@contextlib.contextmanager
def plain_swish_on_cpu() -> Iterator[bool]:
    """Models built in the block get the plain swish, on a process without GPU or TPU (module doc).

    Keras resolves ``"swish"`` and ``"silu"`` when a layer is built (``tf_keras.activations``),
    so the layers keep the plain form after the block; outside it Keras's own is back.

    Yields:
        Whether the block builds with the plain form.
    """
    if not PLAIN_SWISH_ON_CPU or has_accelerator():
        yield False
        return
    from tf_keras.src import activations

    before = activations.swish, activations.silu
    activations.swish = activations.silu = _plain_swish
    try:
        yield True
    finally:
        activations.swish, activations.silu = before


def _plain_swish(x: Any) -> Any:
    """``x * sigmoid(x)``, differentiated by TensorFlow's own gradients."""
    import tensorflow as tf

    x = tf.convert_to_tensor(x)
    return x * tf.sigmoid(x)


# Named as Keras's own, so a layer's config reads as with Keras's swish, and resolves (Keras looks
# a function up by module and name) to the plain form in the block and to Keras's after it.
_plain_swish.__name__ = _plain_swish.__qualname__ = "swish"
_plain_swish.__module__ = "tf_keras.src.activations"


def has_accelerator() -> bool:
    """Whether this process sees a GPU or TPU (TensorFlow's logical devices)."""
    import tensorflow as tf

    return any(tf.config.list_logical_devices(kind) for kind in ("GPU", "TPU"))


def collect_less() -> None:
    """Freezes the objects this process holds and sets ``GC_THRESHOLDS`` (module doc).

    For the first thing a trial or measurement process does (``lighten_process``): the setting
    is the whole process's and stays.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def lighten_process() -> None:
    """What a trial or measurement process does first: ``collect_less``, ``skip_op_tracebacks``.

    Called by ``kfnas.stages.worker`` and ``kfnas.stages.measure_worker`` once their arguments
    (and a trial's ``TF_CONFIG``) check out; both settings are the whole process's and stay.
    """
    collect_less()
    skip_op_tracebacks()


def skip_op_tracebacks() -> bool:
    """Graph ops created from now on record no Python stack (module doc); process-wide.

    For the first thing a trial or measurement process does (``lighten_process``). Nothing
    changes when ``KFNAS_OP_TRACEBACKS`` is set to anything but ``0`` or empty, or when this
    TensorFlow records the stacks elsewhere than ``tensorflow.python.framework.ops``.

    Returns:
        Whether the stacks are skipped now.
    """
    if os.environ.get(OP_TRACEBACKS_ENV, "") not in ("", "0"):
        return False
    from tensorflow.python.framework import ops
    from tensorflow.python.util import tf_stack

    recorder = getattr(ops, "tf_stack", None)
    if getattr(recorder, "extract_stack", None) is not tf_stack.extract_stack:
        return isinstance(recorder, _NoStacks)  # already skipped, or recorded some other way
    ops.tf_stack = _NoStacks(tf_stack.extract_stack(stacklevel=1 << 30))
    return True


def op_tracebacks_hint() -> str:
    """What a trial's TensorFlow runtime error adds when op stacks were skipped; else ``""``."""
    from tensorflow.python.framework import ops

    if not isinstance(getattr(ops, "tf_stack", None), _NoStacks):
        return ""
    return (
        f" (ops' Python stacks were not recorded: set {OP_TRACEBACKS_ENV}=1 in the trial's "
        "environment to see where the failing op was defined)"
    )


class _NoStacks:
    """Stands in for ``tf_stack`` in ``tensorflow.python.framework.ops``: every stack is empty."""

    def __init__(self, empty: object):
        self._empty = empty

    def extract_stack(self, stacklevel: int = 1) -> object:
        """The empty stack (TensorFlow's own type), whatever ``stacklevel``."""
        return self._empty
