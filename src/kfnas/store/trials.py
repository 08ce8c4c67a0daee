"""``TrialRecords``: the trial contract (trial.json first, result.json last) on top of any store.

- ``trial.json`` (a ``TrialSpec``) is written once by ``propose_trials``; writing the same spec
  again is a no-op (a resumed proposal), a different one is an error (proposals must be
  deterministic).
- ``result.json`` (a ``TrialResult``) is written last, create-only: its existence marks the trial
  done, and a finished trial is never overwritten.
- Trial ids come from the trial folder names, in numeric order.

To extend: add a method that reads or writes another per-trial record through ``ExperimentLayout``
paths, with ``if_absent=True`` for anything that must not change once written.
"""

from __future__ import annotations

from kfnas.records.trial import RecordError, TrialResult, TrialSpec
from kfnas.store.base import ArtifactStore, ObjectExists, ObjectNotFound
from kfnas.store.layout import ExperimentLayout


class TrialConflict(ObjectExists):
    """A trial.json already exists with a different spec than the one being written."""


class TrialAlreadyFinished(ObjectExists):
    """A result.json already exists: a finished trial is never overwritten."""


class TrialNotProposed(ObjectNotFound):
    """A result was written for a trial whose trial.json does not exist."""


class TrialRecords:
    """Reads and writes the trial records of one experiment in a store.

    Args:
        store: Where the records lie.
        layout: The experiment's paths.
    """

    def __init__(self, store: ArtifactStore, layout: ExperimentLayout):
        self.store = store
        self.layout = layout

    def __repr__(self) -> str:
        return f"TrialRecords({self.store!r}, {self.layout!r})"

    def _describe(self, study: str, trial_id: int) -> str:
        return f"trial {trial_id} of study {study!r} in experiment {self.layout.experiment!r}"

    def write_spec(self, spec: TrialSpec) -> None:
        """Writes ``trial.json`` once; writing an identical spec again does nothing.

        Raises:
            ValueError: ``spec.experiment`` is not this layout's experiment.
            TrialConflict: The trial already has a different ``trial.json``.
        """
        if spec.experiment != self.layout.experiment:
            raise ValueError(
                f"trial spec belongs to experiment {spec.experiment!r}, not "
                f"{self.layout.experiment!r}"
            )
        path = self.layout.trial_spec(spec.study, spec.trial_id)
        try:
            self.store.write_text(path, spec.to_json(), if_absent=True)
        except ObjectExists as e:
            try:
                existing: TrialSpec | None = TrialSpec.from_json(self.store.read_text(path))
            except RecordError:
                existing = None
            if existing != spec:
                raise TrialConflict(
                    f"{self._describe(spec.study, spec.trial_id)} already has a different "
                    f"trial.json at {self.store.uri(path)}; proposals must be the same when a run "
                    f"resumes (same seed and history), or use a new experiment name"
                ) from e

    def write_result(self, study: str, result: TrialResult) -> None:
        """Writes ``result.json``, the trial's last file, create-only.

        Raises:
            TrialNotProposed: The trial has no ``trial.json``.
            TrialAlreadyFinished: The trial already has a ``result.json``.
        """
        spec_path = self.layout.trial_spec(study, result.trial_id)
        if not self.store.exists(spec_path):
            raise TrialNotProposed(
                f"cannot record a result for {self._describe(study, result.trial_id)}: its "
                f"trial.json ({self.store.uri(spec_path)}) does not exist; write the spec first"
            )
        path = self.layout.trial_result(study, result.trial_id)
        try:
            self.store.write_text(path, result.to_json(), if_absent=True)
        except ObjectExists as e:
            raise TrialAlreadyFinished(
                f"{self._describe(study, result.trial_id)} is already finished "
                f"({self.store.uri(path)} exists); a finished trial is never overwritten"
            ) from e

    def read_spec(self, study: str, trial_id: int) -> TrialSpec:
        """Reads the trial's ``trial.json``.

        Raises:
            ObjectNotFound: There is no such trial.
            RecordError: The file is not a valid ``TrialSpec`` (the message names it).
        """
        path = self.layout.trial_spec(study, trial_id)
        text = self.store.read_text(path)
        try:
            return TrialSpec.from_json(text)
        except RecordError as e:
            raise RecordError(f"{self.store.uri(path)}: {e}") from e

    def read_result(self, study: str, trial_id: int) -> TrialResult | None:
        """Reads the trial's ``result.json``, or returns ``None`` if the trial is not done.

        Raises:
            RecordError: The file is not a valid ``TrialResult`` (the message names it).
        """
        path = self.layout.trial_result(study, trial_id)
        try:
            text = self.store.read_text(path)
        except ObjectNotFound:
            return None
        try:
            return TrialResult.from_json(text)
        except RecordError as e:
            raise RecordError(f"{self.store.uri(path)}: {e}") from e

    def trial_ids(self, study: str) -> list[int]:
        """The ids of the trial folders of ``study`` in numeric order (others names are skipped)."""
        ids = []
        for name in self.store.list_children(self.layout.trials_dir(study)):
            try:
                ids.append(self.layout.parse_trial_id(name))
            except ValueError:
                continue
        return sorted(ids)

    def history(self, study: str) -> list[tuple[TrialSpec, TrialResult | None]]:
        """Every trial of ``study`` in id order, with its result or ``None`` if not done.

        Raises:
            ObjectNotFound: A trial folder has no ``trial.json``.
        """
        return [
            (self.read_spec(study, trial_id), self.read_result(study, trial_id))
            for trial_id in self.trial_ids(study)
        ]

    def next_trial_id(self, study: str) -> int:
        """The id for the next proposed trial: one more than the largest, or 1 for a new study."""
        ids = self.trial_ids(study)
        return ids[-1] + 1 if ids else 1
