"""The ``export_model`` step: the final trial as a SavedModel in the store's ``export/<version>``.

The stage also writes the handoff package beside the SavedModel (``model_card.md``,
``handoff.json``) and moves the store's ``export/latest`` pointer to this version. The ``model``
artifact carries the handoff manifest's fields in its ``metadata``
(``kfnas.export.handoff.Handoff``: task, signatures, metrics, latency, FLOPs, parameters,
architecture, lineage, run id, image) and ``store_uri``, the export folder, so the KFP UI and a
model registry link a run to its model without copying the SavedModel. To record the run and image,
a pipeline passes ``run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER`` and ``image=IMAGE`` (the image it was
compiled for; a default here would be evaluated in the container, where this module's globals are
gone); without them the step records neither. ``serving`` is the cluster profile's ``serving``
section as JSON (``kfnas.pipelines.profiles.serving_settings``), compiled in likewise: the KServe
manifest the stage writes (``serving/inferenceservice.yaml``) asks for its resources; empty: kfnas's
defaults.
"""

from kfp import dsl
from kfp.dsl import Model, Output

from kfnas.components._image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_model(
    experiment_uri: str,
    study: str,
    trial_id: int,
    version: str,
    model: Output[Model],
    run_id: str = "",
    image: str = "",
    serving: str = "",
) -> str:
    """Exports the trial (at once if already exported); returns the export folder's URI."""
    from kfnas import stages
    from kfnas.export.handoff import read_handoff

    # Not kfnas.components here: it imports kfp.dsl, which the executor's kfp does not have.
    uri = stages.export_model(experiment_uri, study, int(trial_id), version, run_id, image, serving)
    model.metadata.update(read_handoff(uri).to_dict())
    model.metadata.update({"store_uri": uri, "version": version})
    return uri
