"""The study chain of a run, declared once: which studies run, in which order, and what each does.

The search pipeline (and ``kfnas run``) runs ``CHAIN`` in order. ``proxy`` searches a space with the
proxy budget; ``validation`` trains its best architectures with the full budget; the optional
refinement studies (``scaling``, ``augmentation``), when a run switches them on, each retrain the
best trial of the study before them with a point of their space; ``final`` trains the winner once
more and is exported. ``retraining`` is outside the chain: the retraining pipeline's one study, a
trial per run, in the experiment an exported model came from.

``kfnas.validation.complete_studies`` adds the studies of the chain a spec does not define. To add a
study to the chain: declare it in ``CHAIN`` here (its role says how the pipeline treats it).
"""

from __future__ import annotations

import dataclasses

#: The study the search pipeline searches in, and the two that retrain its best architectures.
PROXY = "proxy"
VALIDATION = "validation"
FINAL = "final"
#: The optional refinement studies the pipeline runs between validation and final training.
SCALING = "scaling"
AUGMENTATION = "augmentation"
#: The study of an experiment that holds the retraining pipeline's trials.
RETRAINING = "retraining"


@dataclasses.dataclass(frozen=True)
class StudyRole:
    """One study of the chain.

    Attributes:
        name: The study's name in the spec and the store.
        role: ``search`` (proposes from its space), ``retrain`` (trains trials of the study
            before it again, with its own budget) or ``refine`` (retrains the best trial of the
            study before it with each point of a refinement space).
        optional: Whether a run may leave it out (the refinement studies).
    """

    name: str
    role: str
    optional: bool = False


#: The chain, in the order the search pipeline runs it.
CHAIN: tuple[StudyRole, ...] = (
    StudyRole(PROXY, "search"),
    StudyRole(VALIDATION, "retrain"),
    StudyRole(SCALING, "refine", optional=True),
    StudyRole(AUGMENTATION, "refine", optional=True),
    StudyRole(FINAL, "retrain"),
)

#: The scaling study's space. The augmentation study's is the task kind's ``augmentation_space``
#: (``kfnas.tasks``) unless the settings' ``augmentation_space`` picks another.
SCALING_SPACE = "spinenet_scaling"
#: Evaluations of an augmentation trial (it reports the best) unless ``augmentation_evaluations``.
AUGMENTATION_EVALUATIONS = 3

#: A validation study the spec does not define trains this many times the proxy study's steps.
FULL_TRAINING_STEPS_FACTOR = 10
