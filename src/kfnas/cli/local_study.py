"""Running a study in this process, stage after stage: the local stand-in for the KFP pipeline.

``run_study`` chains ``propose_trials`` and ``run_trial`` for each round and ends with
``select_top``, exactly the calls the pipeline's steps make, so a laptop run proves the flow the
cluster will run. Every stage is resumable, so running it again on the same store finishes what is
left and trains nothing twice. Progress goes to a callback, so the CLI can show it and tests can
record it.

To extend: new steps of the flow belong in ``kfnas.stages`` first; call them here in the order the
pipeline does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from kfnas.records.trial import TrialResult
from kfnas.stages import propose_trials, run_trial, select_top
from kfnas.store import open_experiment

#: Receives ``(round_index, trial_id, result)`` after each trial.
Progress = Callable[[int, int, TrialResult], None]


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """What ``run_study`` did.

    Attributes:
        trial_ids: Every trial of the study, in id order.
        results: Each trial's result, by id.
        top: The best trial ids by reward, best first.
    """

    trial_ids: list[int]
    results: dict[int, TrialResult]
    top: list[int]


def run_study(
    experiment_uri: str,
    study: str,
    *,
    rounds: int | None = None,
    top_k: int = 1,
    progress: Progress | None = None,
) -> StudyRun:
    """Runs (or resumes) every round of a study in-process, then selects its best trials.

    Args:
        experiment_uri: From ``init_experiment``.
        study: The study's name.
        rounds: How many rounds (default: the study's ``budget.rounds``).
        top_k: How many of the best trials to select.
        progress: Called after each trial (also for trials finished by an earlier run).

    Returns:
        The study's trials, their results and the top ``top_k`` ids.
    """
    spec = open_experiment(experiment_uri).spec.study(study)
    assert spec.budget is not None  # resolved
    results: dict[int, TrialResult] = {}
    for round_index in range(1, (rounds or spec.budget.rounds) + 1):
        for trial_id in propose_trials(experiment_uri, study, round_index):
            results[trial_id] = run_trial(experiment_uri, study, trial_id)
            if progress is not None:
                progress(round_index, trial_id, results[trial_id])
    top = select_top(experiment_uri, study, top_k)
    return StudyRun(sorted(results), results, top)
