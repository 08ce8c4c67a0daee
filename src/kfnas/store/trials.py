"""``TrialRecords``: the trial contract (trial.json first, result.json last) on top of any store.

- ``trial.json`` (a ``TrialSpec``) is written once by ``propose_trials``; writing the same spec
  again is a no-op (a resumed proposal), a different one is an error (proposals must be
  deterministic).
- ``trained.json`` (a ``TrialTraining``) is written when the trial's training and evaluation
  ended well; its measurement then writes ``result.json``.
- ``result.json`` (a ``TrialResult``) is written last, create-only: its existence marks the trial
  done, and a finished trial is never overwritten.
- Trial ids come from the trial folder names, in numeric order.

Stored records are data, not code, and one bad record never stops a study:

- A trial's ``space`` is a built-in name or, when it names a user's space as ``module:object``,
  one the experiment's own spec (``experiment.json``, what the user submitted) names as a study
  space. ``read_spec`` refuses any other ``module:object`` (``RecordError`` naming the file)
  before anything imports it, so a crafted ``trial.json`` cannot make a pod import a module.
- A record that cannot be read (truncated, not a record, newer schema, untrusted space) is set
  aside: ``history`` leaves it out or stands in for it, with a ``CorruptRecordWarning`` naming the
  file and how to repair it, and ``corrupt(study)`` lists every such record. Its file is never
  overwritten or moved: repair is deleting it or restoring it from a copy.

  * a corrupt ``result.json``: the trial counts as FAILED (error ``corrupt record: ...``) for the
    search, the selection and the report; ``read_result`` returns that stand-in (``strict=True``
    raises instead), so a rerun of the trial returns it rather than training again;
  * a corrupt or missing ``trial.json``: the trial is left out of ``history`` (it has no
    architecture to train or rank), and its id stays taken: ``next_trial_id`` never reuses it.

To extend: add a method that reads or writes another per-trial record through ``ExperimentLayout``
paths, with ``if_absent=True`` for anything that must not change once written.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable

from kfnas.config.spec import ExperimentSpec, SpecError
from kfnas.records.trial import (
    RecordError,
    TrialCurve,
    TrialResult,
    TrialSpec,
    TrialStatus,
    TrialTraining,
)
from kfnas.store.base import ArtifactStore, ObjectExists, ObjectNotFound
from kfnas.store.layout import ExperimentLayout


class TrialConflict(ObjectExists):
    """A trial.json already exists with a different spec than the one being written."""


class TrialAlreadyFinished(ObjectExists):
    """A result.json already exists: a finished trial is never overwritten."""


class TrialNotProposed(ObjectNotFound):
    """A result was written for a trial whose trial.json does not exist."""


class CorruptRecordWarning(UserWarning):
    """A stored trial record that cannot be read was set aside; the message says how to fix it."""


#: How the stand-in result of a trial with a corrupt ``result.json`` starts its ``error``.
CORRUPT_REASON = "corrupt record"


@dataclasses.dataclass(frozen=True)
class CorruptRecord:
    """A trial record that cannot be read, as ``TrialRecords.corrupt`` lists it.

    Attributes:
        study: The trial's study.
        trial_id: The trial's id.
        uri: The unreadable file (``.../trial.json`` or ``.../result.json``).
        error: Why it cannot be read.
    """

    study: str
    trial_id: int
    uri: str
    error: str

    @property
    def is_result(self) -> bool:
        """Whether the unreadable file is the trial's ``result.json`` (else its ``trial.json``)."""
        return self.uri.endswith("result.json")

    @property
    def repair(self) -> str:
        """What to do about it, in one sentence."""
        if self.is_result:
            return (
                f"delete or restore {self.uri}; until then the trial counts as FAILED, and once "
                f"deleted a rerun of the trial trains it again"
            )
        return (
            f"delete or restore {self.uri}; until then the trial is left out of the study (its "
            f"id is not reused)"
        )


class TrialRecords:
    """Reads and writes the trial records of one experiment in a store.

    Args:
        store: Where the records lie.
        layout: The experiment's paths.
        spaces: The space names the experiment's spec gives its studies (what the user
            submitted); ``None``: read them from ``experiment.json`` when a trial names a
            ``module:object`` space.
    """

    def __init__(
        self, store: ArtifactStore, layout: ExperimentLayout, spaces: Iterable[str] | None = None
    ):
        self.store = store
        self.layout = layout
        self._spaces = None if spaces is None else frozenset(spaces)

    def __repr__(self) -> str:
        return f"TrialRecords({self.store!r}, {self.layout!r})"

    def _describe(self, study: str, trial_id: int) -> str:
        return f"trial {trial_id} of study {study!r} in experiment {self.layout.experiment!r}"

    def write_spec(self, spec: TrialSpec) -> None:
        """Writes ``trial.json`` once; writing an identical spec again does nothing.

        Raises:
            ValueError: ``spec.experiment`` is not this layout's experiment.
            RecordError: ``spec.space`` is a ``module:object`` the experiment's spec does not
                name (a handoff or record naming another space: nothing is written or imported).
            TrialConflict: The trial already has a different ``trial.json``.
        """
        if spec.experiment != self.layout.experiment:
            raise ValueError(
                f"trial spec belongs to experiment {spec.experiment!r}, not "
                f"{self.layout.experiment!r}"
            )
        path = self.layout.trial_spec(spec.study, spec.trial_id)
        self._check_space(spec.space, self.store.uri(path), writing=True)
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

    def write_trained(self, study: str, trained: TrialTraining) -> None:
        """Writes ``trained.json``: the trial trained and evaluated, waiting for its measurement.

        A rerun's training (the first one's record lost with its pod) replaces it.
        """
        path = self.layout.trial_trained(study, trained.trial_id)
        self.store.write_text(path, trained.to_json())

    def read_trained(self, study: str, trial_id: int) -> TrialTraining | None:
        """The trial's ``trained.json``; ``None`` when it has none or it cannot be read.

        An unreadable one (truncated, newer schema) warns and reads as absent: the trial is
        then trained again rather than measured from a record it cannot trust.
        """
        path = self.layout.trial_trained(study, trial_id)
        try:
            return TrialTraining.from_json(self.store.read_text(path))
        except ObjectNotFound:
            return None
        except RecordError as e:
            warnings.warn(
                f"{self.store.uri(path)} cannot be read ({e}); the trial trains again",
                CorruptRecordWarning,
                stacklevel=2,
            )
            return None

    def write_curve(self, study: str, curve: TrialCurve) -> None:
        """Writes the trial's ``curve.json`` (its evaluations so far), replacing the last one."""
        self.store.write_text(self.layout.trial_curve(study, curve.trial_id), curve.to_json())

    def read_curve(self, study: str, trial_id: int) -> TrialCurve | None:
        """The trial's ``curve.json``; ``None`` when it has none or it cannot be read (warned)."""
        path = self.layout.trial_curve(study, trial_id)
        try:
            return TrialCurve.from_json(self.store.read_text(path))
        except ObjectNotFound:
            return None
        except RecordError as e:
            warnings.warn(
                f"{self.store.uri(path)} cannot be read ({e}); the trial's curve is left out",
                CorruptRecordWarning,
                stacklevel=2,
            )
            return None

    def read_spec(self, study: str, trial_id: int) -> TrialSpec:
        """Reads the trial's ``trial.json``.

        Raises:
            ObjectNotFound: There is no such trial.
            RecordError: The file is not a valid ``TrialSpec``, or names a ``module:object``
                space the experiment's spec does not (the message names the file).
        """
        path = self.layout.trial_spec(study, trial_id)
        text = self.store.read_text(path)
        try:
            spec = TrialSpec.from_json(text)
        except RecordError as e:
            raise RecordError(f"{self.store.uri(path)}: {e}") from e
        self._check_space(spec.space, self.store.uri(path))
        return spec

    def submitted_spaces(self) -> frozenset[str]:
        """The space names the experiment's spec gives its studies (empty without a spec)."""
        if self._spaces is None:
            try:
                text = self.store.read_text(self.layout.experiment_json())
                spec = ExperimentSpec.from_json(text)
            except (ObjectNotFound, SpecError, ValueError):
                return frozenset()
            self._spaces = frozenset(s.space for s in spec.studies.values() if s.space)
        return self._spaces

    def _check_space(self, space: str, uri: str, *, writing: bool = False) -> None:
        """Refuses a ``module:object`` space that the experiment's spec does not name."""
        if ":" not in space or space in self.submitted_spaces():
            return
        named = ", ".join(sorted(self.submitted_spaces())) or "none"
        fix = "nothing was written" if writing else f"nothing was imported. Delete or restore {uri}"
        raise RecordError(
            f"{uri}: space {space!r} is not a space of the experiment's spec (its spaces: "
            f"{named}); a space given as module:object is imported only from the spec the user "
            f"submitted, never from a stored record or a handoff, so {fix}"
        )

    def read_result(self, study: str, trial_id: int, *, strict: bool = False) -> TrialResult | None:
        """Reads the trial's ``result.json``, or returns ``None`` if the trial is not done.

        A file that is not a valid ``TrialResult`` (truncated, damaged, newer schema) makes the
        trial FAILED: the result returned stands in for it (its ``error`` starts with
        ``corrupt record`` and names the file), with a ``CorruptRecordWarning``; the file itself
        is left as it is.

        Args:
            study: The trial's study.
            trial_id: The trial's id.
            strict: Raise for an unreadable file instead of standing in for it.

        Raises:
            RecordError: ``strict`` and the file is not a valid ``TrialResult`` (the message
                names it).
        """
        path = self.layout.trial_result(study, trial_id)
        try:
            text = self.store.read_text(path)
        except ObjectNotFound:
            return None
        try:
            return TrialResult.from_json(text)
        except RecordError as e:
            if strict:
                raise RecordError(f"{self.store.uri(path)}: {e}") from e
            bad = CorruptRecord(study, trial_id, self.store.uri(path), str(e))
            _warn(bad)
            return TrialResult(
                trial_id=trial_id,
                status=TrialStatus.FAILED,
                error=f"{CORRUPT_REASON}: {bad.error}; {bad.repair}",
            )

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
        """Every readable trial of ``study`` in id order, with its result or ``None`` if not done.

        A trial whose ``trial.json`` is missing or cannot be read (see ``corrupt``) is left out
        with a ``CorruptRecordWarning``; one whose ``result.json`` cannot be read comes with a
        FAILED stand-in result (see ``read_result``).
        """
        history = []
        for trial_id in self.trial_ids(study):
            spec = self._spec_or_none(study, trial_id, warn=True)
            if spec is not None:
                history.append((spec, self.read_result(study, trial_id)))
        return history

    def corrupt(self, study: str) -> list[CorruptRecord]:
        """The records of ``study`` that cannot be read, in trial id order, without warnings.

        A missing ``trial.json`` in a trial folder counts: the folder has no readable spec.
        """
        found = []
        for trial_id in self.trial_ids(study):
            if (bad := self._spec_problem(study, trial_id)) is not None:
                found.append(bad)
                continue
            path = self.layout.trial_result(study, trial_id)
            try:
                self.read_result(study, trial_id, strict=True)
            except RecordError as e:
                found.append(CorruptRecord(study, trial_id, self.store.uri(path), str(e)))
        return found

    def _spec_problem(self, study: str, trial_id: int) -> CorruptRecord | None:
        """Why the trial's ``trial.json`` cannot be read, or ``None`` if it can."""
        return self._read_spec_checked(study, trial_id)[1]

    def _read_spec_checked(
        self, study: str, trial_id: int
    ) -> tuple[TrialSpec | None, CorruptRecord | None]:
        """The trial's spec, or why its ``trial.json`` cannot be read."""
        uri = self.store.uri(self.layout.trial_spec(study, trial_id))
        try:
            return self.read_spec(study, trial_id), None
        except ObjectNotFound:
            return None, CorruptRecord(study, trial_id, uri, "the trial folder has no trial.json")
        except RecordError as e:
            return None, CorruptRecord(study, trial_id, uri, str(e))

    def _spec_or_none(self, study: str, trial_id: int, *, warn: bool) -> TrialSpec | None:
        """The trial's spec, or ``None`` (with a warning if ``warn``) when it cannot be read."""
        spec, bad = self._read_spec_checked(study, trial_id)
        if bad is not None and warn:
            _warn(bad)
        return spec

    def next_trial_id(self, study: str) -> int:
        """The id for the next proposed trial: one more than the largest, or 1 for a new study.

        Every trial folder counts, readable or not, so a corrupt trial's id is never reused.
        """
        ids = self.trial_ids(study)
        return ids[-1] + 1 if ids else 1


def _warn(bad: CorruptRecord) -> None:
    warnings.warn(
        f"{bad.study} trial {bad.trial_id}: {bad.uri} cannot be read ({bad.error}); {bad.repair}",
        CorruptRecordWarning,
        stacklevel=3,
    )
