"""The export stage: a completed trial as a SavedModel with its handoff, ``export/latest`` last."""

from __future__ import annotations

from kfnas.stages._common import export_trial
from kfnas.store import open_experiment


def export_model(
    experiment_uri: str,
    study: str,
    trial_id: int,
    version: str,
    run_id: str = "",
    image: str = "",
    serving: str = "",
) -> str:
    """Exports a completed trial as a SavedModel to the experiment's ``export/<version>`` folder.

    The trial's model is rebuilt from its ``arch_json``, its checkpoint restored and the SavedModel
    written with its serving signatures and ``export.json`` (``kfnas.export.saved_model``); then
    the handoff package is added (``kfnas.export.package``: the KServe manifest
    ``serving/inferenceservice.yaml`` serving the SavedModel, ``model_card.md``, ``handoff.json``)
    and, last, the experiment's ``export/latest`` pointer moves to this version. Earlier versions
    stay. An export already finished in that folder is kept: running this again returns its URI
    (and completes a handoff that a stopped run left unwritten).

    Args:
        experiment_uri: From ``init_experiment``.
        study: The trial's study (the search pipeline exports its ``final`` trial).
        trial_id: A COMPLETED trial.
        version: The export's folder name, e.g. ``v1`` (letters, digits, ``.``, ``-``, ``_``).
        run_id: The KFP run id recorded in ``handoff.json`` (default: ``$KFNAS_RUN_ID`` or none).
        image: The runtime image reference recorded in ``handoff.json`` (default: none).
        serving: How KServe serves the model: the JSON of ``kfnas.export.kserve.ServingSettings``
            (the pipeline compiles the cluster profile's ``serving`` section into it); empty:
            kfnas's defaults (1 CPU, 2Gi), which the manifest and the model card state.

    Returns:
        The URI of the export folder.

    Raises:
        ValueError: The trial is not COMPLETED, the version is not a valid folder name, the
            folder holds the export of another trial (export to a new version), or ``serving``
            is not valid serving settings.
    """
    exp = open_experiment(experiment_uri)
    return export_trial(exp, study, trial_id, version, run_id, image, serving=serving)
