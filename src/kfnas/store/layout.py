"""Where everything of an experiment lies in a store: the only code that builds store paths.

Every path is relative to the store root::

    <experiment>/experiment.json
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/trial.json   (written first)
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/result.json  (written last: done)
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/model/ and logs/
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/launch.json  (its job, pod and log)
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/curve.json   (evaluations so far)
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/checkpoints/ (resumable checkpoints)
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/attempts/<n>.json (one per attempt)
    <experiment>/studies/<study>/trials/<trial id, 6 digits>/lease.json   (its one runner's lease)
    <experiment>/studies/<study>/controller.json    the search controller's state (its lease)
    <experiment>/studies/<study>/stop.json          asks the controller to stop launching trials
    <experiment>/studies/<study>/search_snapshot.json  the search algorithm's state (a cache)
    <experiment>/studies/<study>/plan.json          a proxy-task tool's plan (model selection)
    <experiment>/measurements/<latency device>/<key>.json  a model measurement, for reuse
    <experiment>/reports/
    <experiment>/export/<version>/                 one exported model version (kept for good)
    <experiment>/export/<version>/serving/model/1/ its SavedModel (the KServe storageUri: model/)
    <experiment>/export/<version>/serving/inferenceservice.yaml  its KServe InferenceService
    <experiment>/export/<version>/model_card.md    its model card
    <experiment>/export/<version>/handoff.json     its handoff manifest (written last: done)
    <experiment>/export/latest                     names the newest finished version (JSON)
    <experiment>/retraining/<version>.json         one retraining run and how it ended (JSON)

To extend: add a method here that returns the new path (built from the ones above), and use it
everywhere instead of formatting paths by hand.
"""

from __future__ import annotations

import hashlib
import re

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TRIAL_DIGITS = 6
#: The name of the export folder's pointer file; no version may take it.
LATEST = "latest"


def check_name(name: str, kind: str) -> str:
    """Returns ``name`` if it is a valid experiment or study name.

    Args:
        name: The name to check.
        kind: What the name is, for the message ("experiment", "study").

    Raises:
        ValueError: ``name`` is empty or has characters other than letters, digits, '-' and '_'.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"{kind} name {name!r} is not valid: use only letters, digits, '-' and '_' "
            f"(for example 'my-{kind}_1')"
        )
    return name


def check_trial_id(trial_id: int) -> int:
    """Returns ``trial_id`` if it is an integer >= 0.

    Raises:
        ValueError: It is not an int (bools are refused) or it is negative.
    """
    if not isinstance(trial_id, int) or isinstance(trial_id, bool) or trial_id < 0:
        raise ValueError(f"trial id must be an integer >= 0, got {trial_id!r}")
    return trial_id


class ExperimentLayout:
    """The store paths of one experiment.

    Args:
        experiment: The experiment name (letters, digits, '-' and '_').

    Raises:
        ValueError: The experiment name is not valid.
    """

    def __init__(self, experiment: str):
        self.experiment = check_name(experiment, "experiment")

    def __repr__(self) -> str:
        return f"ExperimentLayout({self.experiment!r})"

    def experiment_dir(self) -> str:
        """The folder of the experiment: ``<experiment>``."""
        return self.experiment

    def experiment_json(self) -> str:
        """The resolved experiment spec, written once by the first step."""
        return f"{self.experiment}/experiment.json"

    def studies_dir(self) -> str:
        """The folder holding one folder per study."""
        return f"{self.experiment}/studies"

    def study_dir(self, study: str) -> str:
        """The folder of one study: ``<experiment>/studies/<study>``."""
        return f"{self.studies_dir()}/{check_name(study, 'study')}"

    def trials_dir(self, study: str) -> str:
        """The folder holding one folder per trial of ``study``."""
        return f"{self.study_dir(study)}/trials"

    @staticmethod
    def trial_dir_name(trial_id: int) -> str:
        """The folder name of a trial: its id zero-padded to 6 digits (``7`` -> ``000007``)."""
        return f"{check_trial_id(trial_id):0{_TRIAL_DIGITS}d}"

    @staticmethod
    def parse_trial_id(name: str) -> int:
        """The trial id of a trial folder name made by ``trial_dir_name``.

        Raises:
            ValueError: ``name`` is not a zero-padded id of at least 6 digits (``000007``).
        """
        if not (isinstance(name, str) and name.isascii() and name.isdigit()):
            raise ValueError(f"{name!r} is not a trial folder name: expected digits like '000007'")
        trial_id = int(name)
        if ExperimentLayout.trial_dir_name(trial_id) != name:
            raise ValueError(
                f"{name!r} is not a trial folder name: ids are zero-padded to {_TRIAL_DIGITS} "
                f"digits, so trial {trial_id} is {ExperimentLayout.trial_dir_name(trial_id)!r}"
            )
        return trial_id

    def trial_dir(self, study: str, trial_id: int) -> str:
        """The folder of one trial: ``.../trials/000007``."""
        return f"{self.trials_dir(study)}/{self.trial_dir_name(trial_id)}"

    def trial_spec(self, study: str, trial_id: int) -> str:
        """The trial's ``TrialSpec``, written first by ``propose_trials``."""
        return f"{self.trial_dir(study, trial_id)}/trial.json"

    def trial_result(self, study: str, trial_id: int) -> str:
        """The trial's ``TrialResult``, written last: its existence marks the trial done."""
        return f"{self.trial_dir(study, trial_id)}/result.json"

    def trial_trained(self, study: str, trial_id: int) -> str:
        """The trial's ``TrialTraining``: trained and evaluated, waiting for its measurement."""
        return f"{self.trial_dir(study, trial_id)}/trained.json"

    def trial_curve(self, study: str, trial_id: int) -> str:
        """The trial's evaluations so far (``TrialCurve``), rewritten at each evaluation."""
        return f"{self.trial_dir(study, trial_id)}/curve.json"

    def trial_launch(self, study: str, trial_id: int) -> str:
        """Where the trial's job runs and logs, written by the search controller when it starts."""
        return f"{self.trial_dir(study, trial_id)}/launch.json"

    def trial_checkpoints_dir(self, study: str, trial_id: int) -> str:
        """The trial's checkpoints during training, each complete once its marker is written."""
        return f"{self.trial_dir(study, trial_id)}/checkpoints"

    def trial_attempts_dir(self, study: str, trial_id: int) -> str:
        """The folder of the trial's attempt records."""
        return f"{self.trial_dir(study, trial_id)}/attempts"

    def trial_attempt(self, study: str, trial_id: int, attempt: int) -> str:
        """The record of one attempt (1-based) to run the trial: who, when, from which step."""
        return f"{self.trial_attempts_dir(study, trial_id)}/{attempt:03d}.json"

    def trial_lease(self, study: str, trial_id: int) -> str:
        """The lease of the one runner training the trial (renewed while it trains)."""
        return f"{self.trial_dir(study, trial_id)}/lease.json"

    def study_controller(self, study: str) -> str:
        """The search controller's state: run, heartbeat, slots and running trials."""
        return f"{self.study_dir(study)}/controller.json"

    def study_stop(self, study: str) -> str:
        """A request (from ``kfnas stop``) that the study's controller stop launching trials."""
        return f"{self.study_dir(study)}/stop.json"

    def study_plan(self, study: str) -> str:
        """A proxy-task tool's plan for its study (model selection's schedule), written once."""
        return f"{self.study_dir(study)}/plan.json"

    def study_snapshot(self, study: str) -> str:
        """The search algorithm's snapshot (``kfnas.search.SearchSnapshot``), rewritten per round.

        A cache: deleting it only makes the next proposal replay the whole history.
        """
        return f"{self.study_dir(study)}/search_snapshot.json"

    def trial_model_dir(self, study: str, trial_id: int) -> str:
        """The folder of the trial's trained model or checkpoint."""
        return f"{self.trial_dir(study, trial_id)}/model"

    def trial_logs_dir(self, study: str, trial_id: int) -> str:
        """The folder of the trial's logs (TensorBoard events and the like)."""
        return f"{self.trial_dir(study, trial_id)}/logs"

    def measurement(self, device: str, key: str) -> str:
        """A measurement made on a latency device, stored for reuse under its key.

        A device name with characters other than letters, digits, ``-`` and ``_`` (profiles may
        name devices freely) becomes those characters and a digest of the whole name.

        Raises:
            ValueError: ``key`` is not a name (the protocol's keys are hex digests).
        """
        folder = device
        if not _NAME.fullmatch(device):
            digest = hashlib.sha256(device.encode()).hexdigest()[:12]
            folder = f"{re.sub(r'[^A-Za-z0-9_-]+', '_', device).strip('_')[:40]}-{digest}"
        return f"{self.experiment}/measurements/{folder}/{check_name(key, 'measurement key')}.json"

    def reports_dir(self) -> str:
        """The folder of the experiment's reports."""
        return f"{self.experiment}/reports"

    def report_html(self) -> str:
        """The experiment's HTML report: ``<experiment>/reports/report.html``."""
        return f"{self.reports_dir()}/report.html"

    def report_markdown(self) -> str:
        """The top-candidates table: ``<experiment>/reports/top_candidates.md``."""
        return f"{self.reports_dir()}/top_candidates.md"

    def export_dir(self, version: str) -> str:
        """The folder of one exported model version: ``<experiment>/export/<version>``.

        Raises:
            ValueError: ``version`` is not letters, digits, '.', '-' and '_' starting with a letter
                or digit (for example ``v1`` or ``2024.06.01``), or it is the reserved ``latest``.
        """
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            raise ValueError(
                f"export version {version!r} is not valid: use letters, digits, '.', '-' and '_', "
                f"starting with a letter or digit (for example 'v1' or '2024.06.01')"
            )
        if version == LATEST:
            raise ValueError(
                f"export version {LATEST!r} is reserved for the pointer to the newest version; "
                f"choose another name (for example 'v1')"
            )
        return f"{self.exports_dir()}/{version}"

    def exports_dir(self) -> str:
        """The folder holding every exported version and the ``latest`` pointer."""
        return f"{self.experiment}/export"

    def export_latest(self) -> str:
        """The pointer to the newest finished export: ``<experiment>/export/latest`` (JSON)."""
        return f"{self.exports_dir()}/{LATEST}"

    def model_card(self, version: str) -> str:
        """The model card of an exported version: ``.../export/<version>/model_card.md``."""
        return f"{self.export_dir(version)}/model_card.md"

    def inference_service(self, version: str) -> str:
        """The KServe ``InferenceService`` of an exported version: ``.../serving/...yaml``."""
        return f"{self.export_dir(version)}/serving/inferenceservice.yaml"

    def handoff_json(self, version: str) -> str:
        """The handoff manifest of an exported version, written last of its files."""
        return f"{self.export_dir(version)}/handoff.json"

    def retrainings_dir(self) -> str:
        """The folder of the retraining records: ``<experiment>/retraining``."""
        return f"{self.experiment}/retraining"

    def retraining_record(self, version: str) -> str:
        """The record of the retraining that makes ``version``: ``retraining/<version>.json``.

        Raises:
            ValueError: ``version`` is not a valid export version (see ``export_dir``).
        """
        self.export_dir(version)  # the same rules as the version's export folder
        return f"{self.retrainings_dir()}/{version}.json"
