"""Search: the algorithms (PyGlove ``DNAGenerator`` factories) and the stateless controller.

``propose(study, history, n, round_index=r)`` rebuilds the study's algorithm from its spec, seed and
history on every call, so trials never talk to a running controller. Algorithms live in the
``ALGORITHMS`` registry; add one in ``kfnas.search.algorithms``. This package never imports
TensorFlow or kfp.
"""

from __future__ import annotations

from kfnas.search.algorithms import ALGORITHMS, Algorithm, derive_seed
from kfnas.search.controller import (
    HistoryEntry,
    SpaceExhausted,
    history_from_records,
    propose,
)

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "HistoryEntry",
    "SpaceExhausted",
    "derive_seed",
    "history_from_records",
    "propose",
]
