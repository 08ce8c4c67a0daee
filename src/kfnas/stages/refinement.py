"""Stages of the optional refinement studies (``scaling``, ``augmentation``) and the winner.

``propose_refinement`` proposes a refinement study's one round; ``select_winner`` picks the trial
the final training retrains from the last study of the chain that completed a trial.
"""

from __future__ import annotations

from kfnas.config.studies import FINAL, VALIDATION
from kfnas.stages._common import best_trials, propose_round
from kfnas.store import open_experiment


def propose_refinement(experiment_uri: str, study: str) -> list[int]:
    """Proposes the one round of an optional refinement study (``scaling``, ``augmentation``).

    Its trials retrain the best trial of the study before it with the task changed by each
    proposed point (see ``kfnas.spaces.base.RefinementSpace``).

    Returns:
        The trial ids; empty when the experiment has no such study (the run switched it off).
    """
    exp = open_experiment(experiment_uri)
    if study not in exp.spec.studies:
        return []
    return propose_round(exp, study, 1)


def select_winner(experiment_uri: str) -> tuple[str, list[int]]:
    """The trial the final training retrains: the best of the last study before ``final``.

    The chain is ``validation`` and then the refinement studies the experiment has, each refining
    the best of the one before; the winner comes from the last of them with a completed trial (a
    refinement study whose every trial failed falls back to the study before it).

    Returns:
        ``(study, [trial id])``.

    Raises:
        StudyStoppedError: Not even the validation study has a completed trial.
    """
    exp = open_experiment(experiment_uri)
    names = list(exp.spec.studies)
    chain = names[names.index(VALIDATION) : names.index(FINAL)] if FINAL in names else [VALIDATION]
    for study in reversed(chain[1:]):
        if any(r is not None and r.completed for _, r in exp.records.history(study)):
            return study, best_trials(exp.records.history(study), study, 1)
    return VALIDATION, best_trials(exp.records.history(VALIDATION), VALIDATION, 1)
