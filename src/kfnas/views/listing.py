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
from kfnas.records.trial import TrialSpec
from kfnas.store import Experiment, open_experiment
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
    return [row for _, row in study_trials(exp, study)]


def study_trials(exp: Experiment, study: str) -> list[tuple[TrialSpec | None, TrialRow]]:
    """Every trial of ``study`` in id order: its spec (``None`` when unreadable) and its row.

    A trial whose ``trial.json`` or ``result.json`` cannot be read is a ``CORRUPT`` row naming the
    file and its repair (the warnings ``TrialRecords`` gives for them are left to the rows).
    """
    metric = exp.spec.objectives.metric
    corrupt = {bad.trial_id: bad for bad in exp.records.corrupt(study)}
    with warnings.catch_warnings():  # The CORRUPT rows say it, with the repair.
        warnings.simplefilter("ignore", CorruptRecordWarning)
        specs = {spec.trial_id: (spec, result) for spec, result in exp.records.history(study)}
    out: list[tuple[TrialSpec | None, TrialRow]] = []
    for trial_id in sorted({*corrupt, *specs}):
        spec, result = specs.get(trial_id, (None, None))
        if trial_id in corrupt:
            out.append((spec, corrupt_row(corrupt[trial_id], metric, spec)))
        else:
            out.append((spec, trial_row(trial_id, result, metric, spec)))
    return out
