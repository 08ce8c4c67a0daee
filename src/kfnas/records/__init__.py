"""Stored records: the versioned JSON documents kfnas writes and reads back.

``trial`` holds ``TrialSpec`` (``trial.json``), ``TrialResult`` (``result.json``) and
``TrialStatus``. Records are frozen dataclasses with a ``schema_version``: a reader upgrades older
versions and refuses newer ones with a message that says to upgrade kfnas.
"""

from kfnas.records.trial import RecordError, TrialResult, TrialSpec, TrialStatus

__all__ = ["RecordError", "TrialResult", "TrialSpec", "TrialStatus"]
