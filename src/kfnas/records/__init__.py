"""Stored records: the versioned JSON documents kfnas writes and reads back.

Every stored JSON document is a ``Record`` (``base``): a frozen dataclass with a kind name and a
``SCHEMA_VERSION``, read back only if it is of that version or older (older ones are upgraded) and
refused with a ``RecordError`` that names the problem otherwise (a newer kfnas, unknown or missing
fields). The kinds: ``trial`` (``TrialSpec``, ``TrialResult``), ``retraining``
(``RetrainingRecord``), ``kfnas.export.handoff.Handoff`` and
``kfnas.export.saved_model.ExportRecord`` (those two stay beside the code that writes them).

To add a record kind: a module here (or beside its writer) with a frozen dataclass subclassing
``Record``; to add a field: see ``base``. ``tests/golden/records`` holds each kind's JSON as
released: a kind must keep reading and rewriting it byte for byte.
"""

from kfnas.records.base import Record, RecordError
from kfnas.records.retraining import RetrainingRecord, RetrainingStatus
from kfnas.records.trial import TrialResult, TrialSpec, TrialStatus

__all__ = [
    "Record",
    "RecordError",
    "RetrainingRecord",
    "RetrainingStatus",
    "TrialResult",
    "TrialSpec",
    "TrialStatus",
]
