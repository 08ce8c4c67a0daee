"""Running a study in this process, stage after stage: the local stand-in for the KFP pipeline.

``run_study`` chains ``propose_trials`` and ``run_trial`` one round at a time, one trial at a time,
until the study's budget (``rounds x trials_per_round`` trials) is proposed (with multi-fidelity,
each trial is followed by the ASHA promotions it makes possible: ``promote_trials``), and ends with
``select_top``: the calls the search controller makes, without its parallel slots, so a laptop run
proves the flow the cluster will run. Every stage is resumable, so running it again on the same
store finishes what is left and trains nothing twice. Progress goes to a callback, so the CLI can
show it and tests can record it.

To extend: new steps of the flow belong in ``kfnas.stages`` first; call them here in the order the
pipeline does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from kfnas.records.trial import TrialResult
from kfnas.stages import promote_trials, propose_trials, run_trial, select_top
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
    """Runs (or resumes) a study in-process until its budget, then selects its best trials.

    Trials already proposed are run (or, finished, returned) first, in id order; then rounds of
    ``trials_per_round`` are proposed until ``rounds x trials_per_round`` trials exist.

    Args:
        experiment_uri: From ``init_experiment``.
        study: The study's name.
        rounds: The budget in rounds (default: the study's ``budget.rounds``).
        top_k: How many of the best trials to select.
        progress: Called after each trial (also for trials finished by an earlier run).

    Returns:
        The study's trials, their results and the top ``top_k`` ids.
    """
    exp = open_experiment(experiment_uri)
    budget = exp.spec.study(study).budget
    assert budget is not None  # resolved
    total = (rounds or budget.rounds) * budget.trials_per_round
    results: dict[int, TrialResult] = {}
    proposed: set[int] = set()  # new architectures (ASHA's promotions come on top)

    def run(round_index: int, trial_id: int) -> None:
        results[trial_id] = run_trial(experiment_uri, study, trial_id)
        if progress is not None:
            progress(round_index, trial_id, results[trial_id])

    def promote() -> None:
        # ASHA with one slot: a freed slot goes to a promotion before a new architecture.
        while ids := promote_trials(experiment_uri, study, 1):
            run(exp.records.read_spec(study, ids[0]).round, ids[0])

    # First the trials already proposed, whoever proposed them (an earlier run, or the search
    # controller, whose rounds are as large as its free slots were), then new rounds.
    history = exp.records.history(study)
    for spec, _ in sorted(history, key=lambda h: h[0].trial_id):
        run(spec.round, spec.trial_id)
        if spec.promoted_from is None:
            proposed.add(spec.trial_id)
    promote()
    next_round = max((spec.round for spec, _ in history), default=0) + 1
    while len(proposed) < total:
        wanted = min(budget.trials_per_round, total - len(proposed))
        ids = propose_trials(experiment_uri, study, next_round, n=wanted)
        if not ids:  # the space has no new point left
            break
        for trial_id in ids:
            run(next_round, trial_id)
            proposed.add(trial_id)
            promote()
        next_round += 1
    top = select_top(experiment_uri, study, top_k)
    return StudyRun(sorted(results), results, top)
