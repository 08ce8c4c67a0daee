"""Listing a study's trials from the store, for ``kfnas trials`` (like Vertex's list-trials).

``list_trials(experiment_uri, study)`` reads every trial of one study, in id order, into
``TrialRow``s (``views/rows.py``: id, round, status, the objective metric, reward, latency, FLOPs,
parameters, duration, what it retrains and why it failed; ``PENDING`` without a ``result.json``
yet; ``CORRUPT`` when its ``trial.json`` or ``result.json`` cannot be read, the error naming the
file and how to repair it: ``TrialRecords.corrupt``). ``TrialRow.to_dict`` is the JSON form,
one object per trial. Everything comes from the store, so it works on any store, during a run or
after it.

To show another value: add it to ``TrialRow`` (``views/rows.py``).
"""

from __future__ import annotations

import warnings

from kfnas.config.spec import SpecError
from kfnas.store import open_experiment
from kfnas.store.trials import CorruptRecordWarning
from kfnas.views.rows import TrialRow, corrupt_row, trial_row


def list_trials(experiment_uri: str, study: str) -> list[TrialRow]:
    """Every trial of ``study`` in the experiment's store, in id order.

    Raises:
        SpecError: No experiment at the URI, or no such study (the message lists the studies).
    """
    exp = open_experiment(experiment_uri)
    if study not in exp.spec.studies:
        raise SpecError(
            f"experiment {experiment_uri} has no study {study!r}; its studies: "
            f"{', '.join(exp.spec.studies)} (kfnas trials URI --study NAME)"
        )
    metric = exp.spec.objectives.metric
    corrupt = {bad.trial_id: bad for bad in exp.records.corrupt(study)}
    with warnings.catch_warnings():  # The CORRUPT rows say it, with the repair.
        warnings.simplefilter("ignore", CorruptRecordWarning)
        specs = {spec.trial_id: (spec, result) for spec, result in exp.records.history(study)}
    rows = []
    for trial_id in sorted({*corrupt, *specs}):
        spec, result = specs.get(trial_id, (None, None))
        if trial_id in corrupt:
            rows.append(corrupt_row(corrupt[trial_id], metric, spec))
        else:
            rows.append(trial_row(trial_id, result, metric, spec))
    return rows
