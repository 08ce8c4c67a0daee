"""The L2 weight decay every space and task applies, in one place.

Its own module, not ``kfnas.spaces.base``: the search controller imports that one and must never
import TensorFlow, not even lazily.
"""

from __future__ import annotations

from typing import Any


def l2_regularizer(decay: float) -> Any:
    """A ``tf_keras`` L2 regularizer of ``decay / 2``, or ``None`` when ``decay`` is 0.

    Halved as official.vision's tasks do, so that it matches ``tf.nn.l2_loss`` (``sum(w**2) / 2``).
    """
    import tf_keras

    return tf_keras.regularizers.l2(decay / 2.0) if decay else None


__all__ = ["l2_regularizer"]
