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
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Off switch: ``False`` traces everything with AutoGraph (what
#: ``benchmarks/trial_fixed_cost.py`` runs as "before").
SKIP_AUTOGRAPH = True


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
