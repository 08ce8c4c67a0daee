"""Search: the algorithms (PyGlove ``DNAGenerator`` factories) and the stateless controller.

``propose(study, history, n, round_index=r)`` rebuilds the study's algorithm from its spec, seed and
history on every call, so trials never talk to a running controller. ``propose_with_state`` does the
same from a ``SearchSnapshot`` of an earlier proposal, replaying only the trials since it, and
returns the new snapshot: the proposals are the same, the cost stays flat as the history grows.
Algorithms live in the ``ALGORITHMS`` registry; add one in ``kfnas.search.algorithms`` (a
``StateAdapter``, or ``snapshot_state``/``restore_state`` on its generator, makes it snapshot). This
package never imports TensorFlow or kfp.
"""

from __future__ import annotations

from kfnas.search.algorithms import ALGORITHMS, Algorithm, Replayed, StateAdapter, derive_seed
from kfnas.search.controller import (
    HistoryEntry,
    Proposal,
    SearchSnapshot,
    SpaceExhausted,
    history_from_records,
    propose,
    propose_with_state,
)

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "HistoryEntry",
    "Proposal",
    "Replayed",
    "SearchSnapshot",
    "SpaceExhausted",
    "StateAdapter",
    "derive_seed",
    "history_from_records",
    "propose",
    "propose_with_state",
]
