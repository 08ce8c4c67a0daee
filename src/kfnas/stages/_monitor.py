"""What a training trial does at each evaluation: store its curve, and ask the stopping rule.

``TrialMonitor(exp, trial)`` is the ``on_evaluation`` callback ``run_trial`` hands the trainer.
At each evaluation it appends the point to the trial's ``curve.json`` (``TrialCurve``; a promoted
trial starts from its parent's curve, a resumed one from its own) with the trial's training
seconds by then (all attempts) and, when the study has an early-stopping rule
(``studies.<s>.early_stopping``), builds the rule's ``StopContext`` from the study's other trials
(by trial id too) and returns the rule's reason to stop (empty: go on).

Cost per evaluation, in store reads: the trial ids (one listing), then ``result.json`` and
``curve.json`` of each trial not yet known to be finished; a finished trial's curve never changes,
so it is read once per trial process. The first evaluation of a trial in a study of N trials reads
about 2N small objects; each later one about twice the trials still running.

To extend: a rule needs nothing here (``kfnas.search.stopping``); another per-evaluation action
goes into ``__call__``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from kfnas.records.trial import TRAIN_SECONDS, TrialCurve, TrialSpec
from kfnas.search.stopping import Curve, StopContext, should_stop
from kfnas.store import Experiment

log = logging.getLogger(__name__)


class TrialMonitor:
    """The ``on_evaluation`` callback of one trial (see the module doc).

    Args:
        exp: The trial's experiment.
        trial: The trial.
    """

    def __init__(self, exp: Experiment, trial: TrialSpec) -> None:
        self.exp, self.trial = exp, trial
        self.study = trial.study
        self.metric = exp.spec.objectives.metric
        # A study outside the spec (the retraining pipeline's) has no early stopping.
        known = self.study in exp.spec.studies
        self.stopping = exp.spec.study(self.study).early_stopping if known else None
        self.train_steps = int(trial.budget.get("train_steps", 0))
        self.curve = self._start_curve()
        self.finished: dict[int, Curve] = {}  # curves that no longer change
        self.offset: float | None = None  # training seconds before this process

    def _start_curve(self) -> TrialCurve:
        records = self.exp.records
        own = records.read_curve(self.study, self.trial.trial_id)
        if own is not None and own.metric == self.metric:
            return own
        parent = self.trial.promoted_from
        inherited = None if parent is None else records.read_curve(self.study, parent)
        if inherited is not None and inherited.metric == self.metric:
            return TrialCurve(
                self.trial.trial_id,
                self.metric,
                inherited.steps,
                inherited.values,
                inherited.metrics,
            )
        return TrialCurve(self.trial.trial_id, self.metric)

    def __call__(self, step: int, metrics: Mapping[str, float]) -> str:
        """Stores the evaluation at ``step``; the reason to stop training now, or ``""``.

        ``metrics[TRAIN_SECONDS]``, when given, is this process's training time: the point
        stores it plus the time of the earlier attempts (the curve's last point before the first
        step this process evaluates; a promotion's, its parent's).
        """
        point = dict(metrics)
        if self.offset is None:
            earlier = [s for at, s in self.curve.seconds() if at < step]
            self.offset = earlier[-1] if earlier else 0.0
        if TRAIN_SECONDS in point:
            point[TRAIN_SECONDS] += self.offset
        self.curve = self.curve.with_point(step, point)
        self.exp.records.write_curve(self.study, self.curve)
        if self.stopping is None or not self.stopping.rule or self.metric not in metrics:
            return ""
        finished, running = self._others()
        context = StopContext(
            step=step,
            train_steps=self.train_steps,
            curve=self.curve.points(),
            finished=list(finished.values()),
            running=list(running.values()),
            trial_id=self.trial.trial_id,
            by_trial={**finished, **running},
            seconds=point.get(TRAIN_SECONDS),
        )
        reason = should_stop(self.stopping.rule, self.stopping.options, context)
        if reason:
            log.info("%s trial %d stops early: %s", self.study, self.trial.trial_id, reason)
        return reason

    def _others(self) -> tuple[dict[int, Curve], dict[int, Curve]]:
        """The curves of the study's other COMPLETED trials, and of those still training."""
        records = self.exp.records
        running = {}
        for trial_id in records.trial_ids(self.study):
            if trial_id == self.trial.trial_id or trial_id in self.finished:
                continue
            result = records.read_result(self.study, trial_id)
            curve = records.read_curve(self.study, trial_id)
            points = curve.points() if curve is not None and curve.metric == self.metric else []
            if result is None:
                if points:
                    running[trial_id] = points
            elif result.completed:
                self.finished[trial_id] = points
            else:
                self.finished[trial_id] = []  # failed: no reference
        return {t: c for t, c in self.finished.items() if c}, running
