"""Following an experiment from its store: what happened since the last look, as readable lines.

The store is the single source of truth, so progress needs no hook into the runner: ``StoreWatcher``
lists the studies' trials and reports each new ``trial.json`` (proposed), each new ``result.json``
(finished, with the objective metric and reward) and the report once it is written. ``kfnas run``
polls it while ``kfp.local`` runs the pipeline; it works the same on any store.

To report another event: add a check to ``StoreWatcher.poll`` that yields one line per new thing
and remembers it in ``_seen``.
"""

from __future__ import annotations

from collections.abc import Iterator

from kfnas.config.spec import SpecError
from kfnas.records.trial import RecordError, TrialSpec
from kfnas.store import Experiment, ObjectNotFound, open_experiment
from kfnas.views.rows import describe_result


class StoreWatcher:
    """Reports what is new in an experiment's store on each ``poll()``.

    Args:
        experiment_uri: The experiment to follow; it may not exist yet.
    """

    def __init__(self, experiment_uri: str):
        self.experiment_uri = experiment_uri
        self._experiment: Experiment | None = None
        self._seen: set[tuple[object, ...]] = set()

    def poll(self) -> list[str]:
        """The lines describing what appeared since the last call (none if nothing did)."""
        return list(self._lines())

    def _lines(self) -> Iterator[str]:
        if self._experiment is None:
            try:
                self._experiment = open_experiment(self.experiment_uri)
            except SpecError:
                return
            yield f"experiment {self.experiment_uri}: spec and data checked"
        exp = self._experiment
        for study in exp.spec.studies:
            for trial_id in exp.records.trial_ids(study):
                try:
                    yield from self._trial_lines(exp, study, trial_id)
                except (ObjectNotFound, RecordError):
                    # Caught between two writes (the next poll sees it whole) or corrupt (kfnas
                    # trials lists it as CORRUPT): the later trials are reported all the same.
                    continue
        report = f"{exp.layout.reports_dir()}/report.html"
        if ("report",) not in self._seen and exp.store.exists(report):
            self._seen.add(("report",))
            yield f"report: {exp.store.uri(report)}"

    def _trial_lines(self, exp: Experiment, study: str, trial_id: int) -> Iterator[str]:
        if (study, trial_id, "spec") not in self._seen:
            spec = exp.records.read_spec(study, trial_id)
            self._seen.add((study, trial_id, "spec"))
            yield f"{study} trial {trial_id}: proposed{_origin(spec)}"
        if (study, trial_id, "result") not in self._seen:
            result = exp.records.read_result(study, trial_id)
            if result is not None:
                self._seen.add((study, trial_id, "result"))
                metric = exp.spec.objectives.metric
                yield f"{study} trial {trial_id}: {describe_result(result, metric)}"


def _origin(spec: TrialSpec) -> str:
    if spec.source_trial is None:
        return f" (round {spec.round})"
    steps = spec.budget.get("train_steps")
    return f" (retrains {spec.source_study} trial {spec.source_trial}, {steps} steps)"
